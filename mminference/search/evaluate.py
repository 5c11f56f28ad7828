"""Measuring candidates for one layer: the layer's statistics and estimates (`LayerContext`), the
inference-time index of a pattern, its modelled cost and its scores (C core `ops.search_score`), and
the fitting of a candidate family to the budget (`fit_family`)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Optional, Sequence

import torch

from .. import attention, ops
from ..config import head_to_dict
from ..layout import Modality, ModalityLayout
from ..patterns import Grid, Pattern
from ..sparse_index import SparseIndex
from . import candidates
from .cost import dense_cost, index_work
from .options import SearchOptions
from .stats import LayerStatistics, layer_statistics, sample_rows


@dataclasses.dataclass
class Candidate:
    """A pattern scored for one head."""

    pattern: Pattern
    family: str
    rank: int
    cost: float
    kept_mass: torch.Tensor  # (R, M) float64, CPU
    output_error: float


def pattern_key(pattern: Pattern) -> str:
    return json.dumps(head_to_dict(pattern), sort_keys=True)


def select_heads(index: SparseIndex, heads: Sequence[int]) -> SparseIndex:
    """`index` restricted to `heads` (head-broadcast arrays stay broadcast)."""
    sel = torch.tensor(list(heads), dtype=torch.long, device=index.kv_ranges.device)

    def pick(t):
        return t if t is None or t.shape[1] == 1 else t.index_select(1, sel)
    return SparseIndex(index.block_q, pick(index.kv_ranges), pick(index.kv_range_count), pick(index.kv_columns),
                       pick(index.kv_column_count), q_perm=pick(index.q_perm), k_perm=pick(index.k_perm))


class LayerContext:
    """One layer's inputs, statistics and estimates, and the build / price / score operations."""

    def __init__(self, q, k, v, layout: ModalityLayout, options: SearchOptions, scale: Optional[float]):
        self.layout, self.options = layout, options
        self.model = options.cost_model
        self.heads, self.seq, dim = q.shape[1], q.shape[2], q.shape[3]
        self.scale = 1.0 / math.sqrt(dim) if scale is None else scale
        rows = sample_rows(layout, options.rows_per_modality, options.seed)
        self.stats: LayerStatistics = layer_statistics(q, k, v, layout, rows, self.scale)
        self.row_modality = self.stats.row_modality.cpu()
        self.scores = attention._Scores(q, k, options.last, self.scale)
        self.device = q.device
        self.dense_seconds = dense_cost(self.seq, self.model)
        self.present = [m for m in Modality if layout.spans(m)]
        self.query_modalities = [m for m in Modality if bool((self.row_modality == int(m)).any())]

    def build(self, pattern: Pattern, heads: Sequence[int]) -> Optional[SparseIndex]:
        """The inference-time index of `pattern` for `heads` (None when the pattern does not apply
        to this input, e.g. a grid without two or more lines)."""
        try:
            index = attention.build_head_index(pattern, list(heads), self.scores, self.layout, 1, self.seq,
                                               self.model.block_q, self.model.block_k)
        except ValueError:
            return None
        return index.to(self.device)

    def cost(self, index: SparseIndex, count: int) -> torch.Tensor:
        tiles, blocks = index_work(index, self.seq, count, self.model.block_k)
        return self.model.seconds(tiles, blocks)

    def score(self, index: SparseIndex, heads: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """kept mass `(G, R, M)` float64 and output error `(G,)` of `index` (leading `(1, G|1)`)."""
        sel = torch.tensor(list(heads), dtype=torch.long, device=self.device)
        probs = self.stats.probs if len(heads) == self.heads else self.stats.probs.index_select(0, sel)
        value = self.stats.value
        if len(heads) != self.heads:  # one value head per selected query head (the op's GQA is h // G)
            group = self.heads // value.shape[0]
            value = value.index_select(0, torch.div(sel, group, rounding_mode="floor"))
        kept_mass, kept_out, _ = ops.search_score(probs, self.stats.row_pos, self.stats.modality, index,
                                                  value=value, num_modalities=len(Modality),
                                                  block_k=self.model.block_k)
        dense = self.stats.dense_out.index_select(0, sel)
        total = kept_mass.sum(-1, keepdim=True)
        sparse = torch.where(total > 0, kept_out / total.clamp_min(1e-30), torch.zeros_like(kept_out))
        error = (sparse - dense).norm(dim=-1) / dense.norm(dim=-1).clamp_min(1e-12)
        return kept_mass.double().cpu(), error.mean(-1).double().cpu()

    def grid_strides(self, grid: Grid) -> Optional[list[int]]:
        """The no-boundary grid's detected stride per head (None when undetectable)."""
        modality = attention._gridded_modality(self.layout)
        try:
            stride, _, _ = attention._detect_grid(self.scores, self.layout, modality, grid, self.seq)
        except ValueError:
            return None
        return [int(s) for s in stride[0].tolist()]


def nominal_fraction(x: int, fixed: int, seq: int, block_q: int) -> float:
    """Rough cost of x + fixed keys per row (plus a query block's diagonal) over dense."""
    return min(1.0, (x + fixed + block_q) / (seq / 2))


def fit_family(layer: LayerContext, family: candidates.Family, budget: float) -> dict[int, Candidate]:
    """Each head's candidate of `family`: the largest ladder size whose real cost fits."""
    sizes = candidates.ladder(layer.seq, layer.model.block_k, family.kind)
    budget_fraction = budget / layer.dense_seconds
    start = next((i for i, x in enumerate(sizes)
                  if nominal_fraction(x, family.fixed_keys, layer.seq, layer.model.block_q) <= 2 * budget_fraction),
                 len(sizes) - 1)
    all_heads = list(range(layer.heads))
    built: dict[int, tuple[Pattern, Optional[SparseIndex], torch.Tensor]] = {}

    def fits(i: int) -> torch.Tensor:
        if i not in built:
            pattern = family.make(sizes[i])
            index = layer.build(pattern, all_heads)
            cost = (layer.cost(index, layer.heads) if index is not None
                    else torch.full((layer.heads,), math.inf, dtype=torch.float64))
            built[i] = (pattern, index, cost.expand(layer.heads) if cost.numel() == 1 else cost)
        return built[i][2] <= budget * (1 + 1e-9)

    chosen = [-1] * layer.heads
    ok = fits(start)
    if built[start][1] is None:  # the family does not apply to this input
        return {}
    for h in torch.nonzero(ok).flatten().tolist():
        chosen[h] = start
    # Heads that fit at the start grow while some still fit (even when other heads did not fit:
    # their costs differ, e.g. per-head grids and vertical lists) ...
    j = start - 1
    while j >= 0 and bool(ok.any()):
        ok_j = fits(j)
        if not bool(ok_j.any()):
            break
        for h in torch.nonzero(ok_j).flatten().tolist():
            chosen[h] = j
        j -= 1
    # ... and those that did not shrink until they fit.
    j = start + 1
    while j < len(sizes) and min(chosen) < 0:
        ok_j = fits(j)
        for h in torch.nonzero(ok_j).flatten().tolist():
            if chosen[h] < 0:
                chosen[h] = j
        j += 1
    strides = None
    if family.kind == "grid":
        strides = layer.grid_strides(built[start][0])
    out: dict[int, Candidate] = {}
    for i in sorted(set(c for c in chosen if c >= 0)):
        pattern, index, cost = built[i]
        heads = [h for h in all_heads if chosen[h] == i]
        kept, error = layer.score(select_heads(index, heads), heads)
        for g, h in enumerate(heads):
            p = pattern
            if isinstance(p, Grid) and strides is not None:
                p = dataclasses.replace(p, strides=(strides[h],))
            out[h] = Candidate(p, family.name, family.rank, float(cost[h]), kept[g], float(error[g]))
    return out


def row_share(layer: LayerContext, kept: torch.Tensor, mq: Optional[Modality], mk: Optional[Modality]) -> float:
    """Mean over the rows of query modality mq (all rows: None) of the mass kept on keys of mk
    (all keys: None)."""
    rows = torch.ones_like(layer.row_modality, dtype=torch.bool) if mq is None else layer.row_modality == int(mq)
    if not bool(rows.any()):
        return 0.0
    part = kept[rows] if mk is None else kept[rows][:, int(mk)]
    return float(part.sum(-1).mean()) if mk is None else float(part.mean())


def best(options: list[Candidate], key, tolerance: float) -> Candidate:
    """The simplest candidate whose key is within `tolerance` of the best (then the cheaper)."""
    values = [key(c) for c in options]
    best = max(values)
    near = [c for c, v in zip(options, values) if v >= best - tolerance]
    return min(near, key=lambda c: (c.rank, c.cost))
