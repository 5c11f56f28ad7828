"""Layout-aware sparse attention: per-head patterns (`mminference.patterns`) estimated online from
the input, compiled by the core builders, combined into ONE `SparseIndex` and run in one call.

    out = sparse_attention_for_layout(q, k, v, layout, HeadConfig([[Grid(), VerticalSlash(), ...]]))
    out, choices = sparse_attention_for_layout(q, k, v, layout, "auto", return_choices=True)

Estimation (never O(S^2) memory: `ops.estimate_vertical_slash_scores` keeps O(B H S)):
  - AShape / VerticalSlash / Auto shares: the last `last` queries of the whole sequence.
  - Grid detection: the gridded modality's own last queries (query_end = end of its last segment),
    folded over its tokens (ranks among the modality, so a video split by timestamps keeps its
    stride) by `estimate.grid_from_scores`. It reads only the column mass, so unless both scores
    of that query_end are needed anyway it is estimated alone (`ops.estimate_vertical_scores`,
    no diagonal sums); grid indexes are built after the others to reuse such a full estimate.
  - Q-/2D-boundary: per query modality, that modality's own last queries (its vertical / slash lists),
    and the grid of every gridded modality as above.

Auto rule (`choose_patterns`, per head, scores averaged over the batch):
  1. ashape_share = share of vertical_score in the first `Auto.ashape.sink` keys + share of
     slash_score in the first `Auto.ashape.local` diagonals; >= `Auto.ashape_share` -> AShape.
  2. else, when the layout has exactly one gridded segment: grid lift (`estimate.grid_lift`: median
     line mass over mean mass, from the segment's own last queries) >= `Auto.grid_lift` -> Grid.
  3. else VerticalSlash.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence, Union

import torch

from . import estimate, ops
from .layout import Modality, ModalityLayout
from .ops import PairKind
from .patterns import (AShape, Auto, Dense, Grid, HeadConfig, Pattern, QBoundary, TwoDBoundary,
                       VerticalSlash)
from .sparse_index import SparseIndex

NUM_MODALITIES = len(Modality)


@dataclasses.dataclass(frozen=True)
class HeadChoice:
    """What a head ran: its resolved pattern and the estimate's statistics (batch means; None when
    not computed). `stride` / `phase` are the detected grid of batch element 0 (phase relative to
    the gridded modality's first token, counted in its tokens)."""

    pattern: Pattern
    ashape_share: Optional[float] = None
    grid_lift: Optional[float] = None
    stride: Optional[int] = None
    phase: Optional[int] = None


class _Scores:
    """Cached last-query estimates `(B, Hq, S)` per query_end: vertical and slash scores
    (`scores(query_end)`), or the vertical ones alone (`scores.vertical(query_end)`: from the cached
    pair when there is one, else estimated without the diagonal sums). Callers needing both at a
    query_end should ask first, or the vertical-only estimate there is computed in vain."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, last: int, scale: float):
        self.q, self.k, self.last, self.scale = q, k, last, scale
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._vertical_only: dict[int, torch.Tensor] = {}

    def __call__(self, query_end: int) -> tuple[torch.Tensor, torch.Tensor]:
        if query_end not in self._cache:
            self._cache[query_end] = ops.estimate_vertical_slash_scores(
                self.q, self.k, last=self.last, query_end=query_end, scale=self.scale)
            self._vertical_only.pop(query_end, None)
        return self._cache[query_end]

    def vertical(self, query_end: int) -> torch.Tensor:
        if query_end in self._cache:
            return self._cache[query_end][0]
        if query_end not in self._vertical_only:
            self._vertical_only[query_end] = ops.estimate_vertical_scores(
                self.q, self.k, last=self.last, query_end=query_end, scale=self.scale)
        return self._vertical_only[query_end]


def _gridded_modality(layout: Optional[ModalityLayout]) -> Optional[Modality]:
    """The modality whose grid the no-boundary Grid uses: VIDEO if gridded, else IMAGE, else None."""
    if layout is None:
        return None
    for m in (Modality.VIDEO, Modality.IMAGE):
        if layout.tokens_per_frame(m):
            return m
    return None


def candidate_strides(grid: Grid, tokens_per_frame: Optional[int], span_len: int) -> list[int]:
    """`grid.strides`, or tokens_per_frame with its multiples and divisors (>= 2) up to max_stride
    (tokens_per_frame itself always), or powers of two without a layout; each leaves >= 2 lines."""
    if grid.strides is not None:
        out = set(grid.strides)
    elif tokens_per_frame:
        out = {tokens_per_frame}
        out |= {tokens_per_frame * i for i in range(2, grid.max_stride // tokens_per_frame + 1)}
        out |= {d for d in range(2, tokens_per_frame) if tokens_per_frame % d == 0 and d <= grid.max_stride}
    else:
        out = {2 ** i for i in range(1, int(math.log2(grid.max_stride)) + 1)}
    return sorted(s for s in out if 1 <= s <= span_len // 2)


def _detect_grid(scores: _Scores, layout: Optional[ModalityLayout], modality: Optional[Modality], grid: Grid,
                 seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stride, phase (int32 `(B, Hq)`, phase in ranks among `modality`'s tokens) and lift (float32
    `(B, Hq)`) of `modality`'s grid (None: the whole sequence), from its own last queries."""
    if modality is None:
        positions, query_end, tpf = None, seq, None
    else:
        spans = layout.spans(modality)
        positions = torch.cat([torch.arange(s, e) for s, e in spans])
        query_end, tpf = spans[-1][1], layout.tokens_per_frame(modality)
    vertical_score = scores.vertical(query_end)
    mass = vertical_score if positions is None else vertical_score[..., positions.to(vertical_score.device)]
    span = (0, mass.shape[-1])
    strides = candidate_strides(grid, tpf, span[1])
    if not strides:
        raise ValueError(f"strides: no candidate stride leaves 2 or more lines in the {span[1]} gridded tokens")
    return estimate.detect_grid(mass, span, strides)  # one fused op, no host sync on CUDA


def _single_span(layout: Optional[ModalityLayout], modality: Optional[Modality], seq: int) -> tuple[int, int]:
    if modality is None:
        return 0, seq
    spans = layout.spans(modality)
    if len(spans) != 1:
        raise ValueError(f"layout: a no-boundary Grid needs one {modality.name} segment, got {len(spans)}; "
                         f"use QBoundary / TwoDBoundary (their grid counts ranks across segments)")
    return spans[0]


def choose_patterns(scores: _Scores, layout: Optional[ModalityLayout], heads: Sequence[int], auto: Auto,
                    seq: int) -> list[HeadChoice]:
    """The Auto rule (module docstring) for the given heads."""
    vertical_score, slash_score = scores(seq)
    sink, local = auto.ashape.sink, auto.ashape.local
    share = (vertical_score[..., :sink].sum(-1) / vertical_score.sum(-1).clamp_min(1e-30)
             + slash_score[..., :local].sum(-1) / slash_score.sum(-1).clamp_min(1e-30)).mean(0)
    modality = _gridded_modality(layout)
    lift = stride = phase = None
    if modality is not None and len(layout.spans(modality)) == 1:
        try:
            stride, phase, lift_bh = _detect_grid(scores, layout, modality, auto.grid, seq)
            lift = lift_bh.mean(0)
        except ValueError:
            lift = None
    choices = []
    for h in heads:
        a = float(share[h])
        g = None if lift is None else float(lift[h])
        if a >= auto.ashape_share:
            pattern: Pattern = auto.ashape
        elif g is not None and g >= auto.grid_lift:
            pattern = auto.grid
        else:
            pattern = auto.vertical_slash
        choices.append(HeadChoice(pattern, a, g, None if stride is None else int(stride[0, h]),
                                  None if phase is None else int(phase[0, h])))
    return choices


def _pair_entry(pattern) -> tuple[int, ...]:
    if isinstance(pattern, Dense):
        return (PairKind.DENSE,)
    if isinstance(pattern, AShape):
        return (PairKind.A_SHAPE, pattern.sink, pattern.local)
    if isinstance(pattern, Grid):
        return (PairKind.LINES, int(pattern.use_hlines), int(pattern.use_vlines), pattern.local)
    return (PairKind.VERTICAL_SLASH,)


def _build_boundary(pattern: Union[QBoundary, TwoDBoundary], heads: list[int], scores: _Scores,
                    layout: ModalityLayout, batch: int, seq: int, block_q: int, block_k: int) -> SparseIndex:
    if isinstance(pattern, QBoundary):
        table = {int(m): _pair_entry(p) for m, p in pattern.per_modality.items()}
        inner = {(m, None): p for m, p in pattern.per_modality.items()}
    else:
        table = {(int(a), int(b)): _pair_entry(p) for (a, b), p in pattern.per_pair.items()}
        inner = dict(pattern.per_pair)
    pair_table = ops.pair_pattern(table, NUM_MODALITIES)
    g, m_count = len(heads), NUM_MODALITIES
    int32 = dict(dtype=torch.int32)
    vs_by_mq: dict[int, VerticalSlash] = {}
    for (mq, _), p in inner.items():
        if isinstance(p, VerticalSlash):
            vs_by_mq[int(mq)] = p
    nv = max([p.num_vertical for p in vs_by_mq.values()], default=0)
    ns = max([min(p.num_slash, seq) for p in vs_by_mq.values()], default=0)
    vertical = torch.full((batch, g, m_count, min(nv, seq)), -1, **int32)
    slash = torch.full((batch, g, m_count, ns), -1, **int32)
    for mq, p in vs_by_mq.items():
        spans = layout.spans(Modality(mq))
        if not spans:
            continue
        v_score, s_score = scores(spans[-1][1])
        vert, sl = estimate.vertical_slash_from_scores(v_score[:, heads], s_score[:, heads], p.num_vertical,
                                                       p.num_slash, p.force_sink, p.force_local)
        vertical[:, :, mq, : vert.shape[-1]] = vert.cpu()
        slash[:, :, mq, : sl.shape[-1]] = sl.cpu()
    # Grids after the vertical-slash lists: a modality's column mass reuses their full estimate.
    grid_stride = torch.zeros((batch, g, m_count), **int32)
    grid_phase = torch.zeros((batch, g, m_count), **int32)
    grids = [p for p in inner.values() if isinstance(p, Grid)]
    if grids:
        for m in (Modality.TEXT, Modality.IMAGE, Modality.VIDEO):
            if layout.spans(m) and layout.tokens_per_frame(m):
                stride, phase, _ = _detect_grid(scores, layout, m, grids[0], seq)
                grid_stride[..., m], grid_phase[..., m] = stride[:, heads].cpu(), phase[:, heads].cpu()
    modality = layout.modality_ids().expand(batch, seq).contiguous()
    index, _ = ops.build_boundary_index(modality, pair_table, grid_stride=grid_stride, grid_phase=grid_phase,
                                        vertical=vertical, slash=slash, num_modalities=m_count,
                                        block_q=block_q, block_k=block_k)
    return index


def build_head_index(pattern: Pattern, heads: list[int], scores: _Scores, layout: Optional[ModalityLayout],
                     batch: int, seq: int, block_q: int = 128, block_k: int = 64) -> SparseIndex:
    """The index of `heads` (all of one resolved pattern): leading dims `(B|1, len(heads)|1)`."""
    if isinstance(pattern, Dense):
        return SparseIndex.causal(seq, seq, block_q)
    if isinstance(pattern, AShape):
        return ops.build_a_shape_index(seq, seq, block_q=block_q, block_k=block_k, sink=pattern.sink,
                                       local=pattern.local)
    if isinstance(pattern, VerticalSlash):
        v_score, s_score = scores(seq)
        vert, sl = estimate.vertical_slash_from_scores(v_score[:, heads], s_score[:, heads], pattern.num_vertical,
                                                       pattern.num_slash, pattern.force_sink, pattern.force_local)
        return ops.build_vertical_slash_index(vert, sl, seq, seq, block_q=block_q, block_k=block_k)
    if isinstance(pattern, Grid):
        modality = _gridded_modality(layout)
        span = _single_span(layout, modality, seq)
        stride, phase, _ = _detect_grid(scores, layout, modality, pattern, seq)
        return ops.build_grid_index(stride[:, heads].contiguous(), phase[:, heads].contiguous(), seq,
                                    block_q=block_q, block_k=block_k, span=span, sink=pattern.sink,
                                    local=pattern.local, use_hlines=pattern.use_hlines,
                                    use_vlines=pattern.use_vlines)
    if isinstance(pattern, (QBoundary, TwoDBoundary)):
        if layout is None:
            raise ValueError(f"layout: a {type(pattern).__name__} pattern needs a ModalityLayout")
        return _build_boundary(pattern, heads, scores, layout, batch, seq, block_q, block_k)
    raise ValueError(f"head_config: unresolved pattern {pattern!r}")


def combine_indexes(parts: Sequence[tuple[Sequence[int], SparseIndex]], batch: int, heads: int, seq_q: int,
                    seq_k: int, device: torch.device) -> SparseIndex:
    """One `SparseIndex` `(B, H, ...)` from per-head-group indexes `(B|1, G|1, ...)` of one block_q:
    range / column capacities padded to the maximum (counts unchanged), identity permutations
    (arange) for groups without one when any group has one."""
    block_q = parts[0][1].block_q
    nqb = parts[0][1].num_q_blocks
    if any(p.block_q != block_q or p.num_q_blocks != nqb for _, p in parts):
        raise ValueError("parts: every index must have the same block_q and query blocks")
    r = max(int(p.kv_ranges.shape[3]) for _, p in parts)
    c = max(int(p.kv_columns.shape[3]) for _, p in parts)
    i32 = dict(dtype=torch.int32, device=device)
    ranges = torch.zeros((batch, heads, nqb, r, 2), **i32)
    range_count = torch.zeros((batch, heads, nqb), **i32)
    columns = torch.zeros((batch, heads, nqb, c), **i32)
    column_count = torch.zeros((batch, heads, nqb), **i32)
    need_q = any(p.q_perm is not None for _, p in parts)
    need_k = any(p.k_perm is not None for _, p in parts)
    q_perm = torch.arange(seq_q, **i32).expand(batch, heads, seq_q).clone() if need_q else None
    k_perm = torch.arange(seq_k, **i32).expand(batch, heads, seq_k).clone() if need_k else None
    for head_list, p in parts:
        idx = torch.tensor(list(head_list), dtype=torch.long, device=device)
        g = len(head_list)
        fit = lambda t: t.to(device).expand(batch, g, *t.shape[2:])  # noqa: E731
        pr = p.kv_ranges.shape[3]
        ranges[:, idx, :, :pr] = fit(p.kv_ranges)
        range_count[:, idx] = fit(p.kv_range_count)
        pc = p.kv_columns.shape[3]
        if pc:
            columns[:, idx, :, :pc] = fit(p.kv_columns)
        column_count[:, idx] = fit(p.kv_column_count)
        if p.q_perm is not None:
            q_perm[:, idx] = fit(p.q_perm)
        if p.k_perm is not None:
            k_perm[:, idx] = fit(p.k_perm)
    return SparseIndex(block_q, ranges, range_count, columns, column_count, q_perm=q_perm, k_perm=k_perm)


def _resolve_layout(layout, batch: int) -> Optional[ModalityLayout]:
    if layout is None or isinstance(layout, ModalityLayout):
        return layout
    if isinstance(layout, Sequence) and layout and all(isinstance(x, ModalityLayout) for x in layout):
        if any(x != layout[0] for x in layout):
            raise ValueError("layout: batch elements with different layouts are not supported; call once per "
                             "element (batch 1) or pass one layout shared by the batch")
        if len(layout) not in (1, batch):
            raise ValueError(f"layout: got {len(layout)} layouts for batch {batch}")
        return layout[0]
    raise ValueError(f"layout must be a ModalityLayout, a list of equal ones or None, got {layout!r}")


def build_layout_index(q: torch.Tensor, k: torch.Tensor, layout, head_config="auto", layer: int = 0,
                       block_q: int = 128, block_k: int = 64, *, last: int = 64,
                       scale: Optional[float] = None) -> tuple[SparseIndex, list[HeadChoice]]:
    """The combined index `(B, Hq, ...)` of `sparse_attention_for_layout` and each head's choice."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q, k: expected (B, H, S, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    batch, heads, seq, dim = q.shape
    if k.shape[2] != seq:
        raise ValueError(f"k: sequence {k.shape[2]} differs from q's {seq} (prefill without a cache only)")
    layout = _resolve_layout(layout, batch)
    if layout is not None and layout.seq_len != seq:
        raise ValueError(f"layout: seq_len {layout.seq_len} differs from the sequence length {seq}")
    config = head_config if isinstance(head_config, HeadConfig) else HeadConfig(head_config)
    patterns = config.for_layer(layer, heads)
    scores = _Scores(q, k, last, 1.0 / math.sqrt(dim) if scale is None else scale)
    choices: list[Optional[HeadChoice]] = [None] * heads
    autos: dict[int, list[int]] = {}
    for h, p in enumerate(patterns):
        if isinstance(p, Auto):
            autos.setdefault(id(p), []).append(h)
        else:
            choices[h] = HeadChoice(p)
    for hs in autos.values():
        for h, choice in zip(hs, choose_patterns(scores, layout, hs, patterns[hs[0]], seq)):
            choices[h] = choice
    groups: list[tuple[Pattern, list[int]]] = []
    for h, choice in enumerate(choices):
        for pattern, hs in groups:
            if pattern == choice.pattern:
                hs.append(h)
                break
        else:
            groups.append((choice.pattern, [h]))
    # Grid groups last: their column mass then reuses a full estimate of the same query_end.
    groups.sort(key=lambda group: isinstance(group[0], Grid))
    parts = [(hs, build_head_index(p, hs, scores, layout, batch, seq, block_q, block_k)) for p, hs in groups]
    return combine_indexes(parts, batch, heads, seq, seq, q.device), choices


def sparse_attention_for_layout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout, head_config="auto", layer: int = 0,
    block_q: int = 128, block_k: int = 64, *, last: int = 64, scale: Optional[float] = None,
    return_choices: bool = False,
) -> Union[torch.Tensor, tuple[torch.Tensor, list[HeadChoice]]]:
    """Sparse causal prefill attention with per-head patterns estimated from the input.

    Args:
        q: `(B, Hq, S, D)`; k, v: `(B, Hkv, S, D)` (GQA), as `ops.sparse_attention` takes them.
        layout: the prompt's `ModalityLayout` (or a list of equal ones, one per batch element), or
            None (no modalities: Grid searches power-of-two strides over the whole sequence).
        head_config: a `HeadConfig`, one pattern for every head, or "auto".
        layer: which layer of the config.
        last: estimating queries per estimate.
        return_choices: also return a `HeadChoice` per head.
    Returns:
        `(B, Hq, S, D)` (and the choices). Memory O(B H S) for estimates and indexes plus the indexes'
        block tables; no S x S buffer.
    """
    index, choices = build_layout_index(q, k, layout, head_config, layer, block_q, block_k, last=last, scale=scale)
    out = ops.sparse_attention(q, k, v, index, scale=scale)
    return (out, choices) if return_choices else out
