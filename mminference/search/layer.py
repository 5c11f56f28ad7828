"""The search's per-layer scoring: every head's best pattern under a per-head kernel-time budget.

Given one layer's q `(1, H, S, D)`, k / v `(1, Hkv, S, D)` and the prompt's layout:

1. Statistics (`stats.layer_statistics`): exact causal attention rows of R sampled queries (a
   stratified sample per modality), their dense outputs, and the last-query estimates that the
   patterns' online indexes are built from (`attention._Scores`, `ops.estimate_vertical_slash_scores`).
2. Intra-modality candidates (no boundary): for each family (`candidates.default_families`), the
   largest size on its ladder whose *real* kernel cost fits the budget, per head: the index is built
   exactly as at inference (`attention.build_head_index`), its tiles are counted and priced by the
   cost model (`cost.CostModel`). Each fitted candidate is scored by the C core (`ops.search_score`):
   kept attention mass per row and key modality, and the sparse output of each row.
3. Boundary candidates per head, composed from step 2's kept mass split by (query modality, key
   modality): K-boundary (best family per key modality), Q-boundary (per query modality) and
   2D-boundary (per pair; a query modality's vertical-slash pairs share one list). Each composite
   is built and priced for real; over budget, its parts shrink (x 0.7) until it fits (or it is
   dropped).
4. Per head, the no-boundary winner is the family with the highest kept mass (the simplest within
   `mass_tolerance`). Boundary types are then tried in the order none, K, Q, 2D: a more complex one
   replaces the current choice only if it clearly lowers the output error against dense (the
   paper's criterion, |sparse - dense|) without losing kept mass (`boundaries.choose_boundary`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..layout import ModalityLayout
from ..patterns import Pattern
from . import candidates
from .boundaries import choose_boundary, composites, fit_composites
from .cost import Budget
from .evaluate import Candidate, LayerContext, best, fit_family
from .options import SearchOptions


@dataclasses.dataclass(frozen=True)
class HeadResult:
    """A head's choice and its measurements on the calibration input.

    kept_mass: mean recall over the sampled rows; output_error: mean relative L2 error of the rows'
    outputs against dense; cost / budget: modelled kernel seconds; cost_fraction: cost over dense.
    family: what was chosen, e.g. "grid(h=1,v=1)" or "q[text=a_shape(sink=64),video=grid(h=1,v=1)]".
    """

    pattern: Pattern
    boundary: str
    family: str
    kept_mass: float
    output_error: float
    cost: float
    cost_fraction: float
    budget: float

    def score(self) -> dict[str, float]:
        """The config file's SCORE object."""
        return {"kept_mass": min(1.0, max(0.0, self.kept_mass)), "output_error": self.output_error,
                "cost": self.cost, "cost_fraction": self.cost_fraction, "budget": self.budget}


def search_layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: ModalityLayout,
                 budget: Union[Budget, float, str], options: SearchOptions = SearchOptions(), *,
                 scale: Optional[float] = None) -> list[HeadResult]:
    """The best pattern of every head of one layer (module docstring).

    Args:
        q: `(1, H, S, D)`; k, v: `(1, Hkv, S, D)` (GQA), any float dtype, CPU or CUDA.
        layout: the prompt's `ModalityLayout` (`layout.seq_len == S`).
        budget: a `Budget`, its spec string, or modelled kernel seconds per head.
        options: `SearchOptions`.
    Returns:
        One `HeadResult` per head; every chosen pattern's modelled cost is within the budget. A
        head where no candidate fits gets the smallest A-shape (one sink tile and the diagonal),
        with family "a_shape(fallback)" and cost > budget.
    """
    if q.dim() != 4 or q.shape[0] != 1:
        raise ValueError(f"q: expected (1, H, S, D), got {tuple(q.shape)}")
    layer = LayerContext(q, k, v, layout, options, scale)
    if isinstance(budget, (str, Budget)):
        budget_seconds = (budget if isinstance(budget, Budget) else Budget(budget)).seconds(layer.seq, layer.model)
    else:
        budget_seconds = float(budget)
        if not budget_seconds > 0:
            raise ValueError(f"budget must be > 0 seconds, got {budget!r}")
    block_k = layer.model.block_k
    sinks = options.a_shape_sinks if options.a_shape_sinks is not None else (block_k, 4 * block_k)
    families = candidates.default_families(block_k, sinks, options.vertical_shares)
    per_head: list[dict[str, Candidate]] = [{} for _ in range(layer.heads)]
    for family in families:
        for h, cand in fit_family(layer, family, budget_seconds).items():
            per_head[h][family.name] = cand
    # No boundary: highest kept mass, the simplest within tolerance.
    choices: list[dict[str, Candidate]] = [{} for _ in range(layer.heads)]
    for h, fams in enumerate(per_head):
        if fams:
            choices[h]["none"] = best(list(fams.values()), lambda c: float(c.kept_mass.sum(-1).mean()),
                                      options.mass_tolerance)
    for kind, wanted in composites(layer, per_head).items():
        for h, cand in fit_composites(layer, wanted, budget_seconds).items():
            choices[h][kind] = cand
    results = []
    for h in range(layer.heads):
        if not choices[h]:
            results.append(_fallback(layer, h, budget_seconds))
            continue
        kind = choose_boundary(choices[h], options)
        c = choices[h][kind]
        results.append(HeadResult(c.pattern, kind, c.family, float(c.kept_mass.sum(-1).mean()), c.output_error,
                                  c.cost, c.cost / layer.dense_seconds, budget_seconds))
    return results


def _fallback(layer: LayerContext, head: int, budget: float) -> HeadResult:
    """Nothing fits: the smallest A-shape (one sink tile, one local tile), reported over budget."""
    pattern = candidates.default_families(layer.model.block_k, (layer.model.block_k,), ())[0].make(1)
    index = layer.build(pattern, [head])
    cost = float(layer.cost(index, 1)[0])
    kept, error = layer.score(index, [head])
    return HeadResult(pattern, "none", "a_shape(fallback)", float(kept[0].sum(-1).mean()), float(error[0]), cost,
                      cost / layer.dense_seconds, budget)


__all__ = ["HeadResult", "SearchOptions", "search_layer"]
