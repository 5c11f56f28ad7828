"""Boundary candidates of one head (K, Q and 2D), composed from its no-boundary candidates' kept mass
split by (query modality, key modality), fitted to the budget, and the choice among boundary types."""

from __future__ import annotations

from typing import Optional

from ..layout import Modality
from ..patterns import Pattern, QBoundary, TwoDBoundary, VerticalSlash
from . import candidates
from .evaluate import Candidate, LayerContext, best, pattern_key, row_share, select_heads
from .options import BOUNDARY_ORDER, SearchOptions


def unify_vertical_slash(parts: dict, mq: Modality, cands: list[Candidate], layer: LayerContext,
                         tol: float) -> None:
    """2D pairs of one query modality share one vertical / slash list: every VS pair of `mq`
    takes the VS candidate with the best kept mass over mq's rows."""
    vs_pairs = [pair for pair, c in parts.items() if pair[0] == mq and isinstance(c.pattern, VerticalSlash)]
    if len({pattern_key(parts[p].pattern) for p in vs_pairs}) <= 1:
        return
    vs = [c for c in cands if isinstance(c.pattern, VerticalSlash)]
    chosen = best(vs, lambda c: row_share(layer, c.kept_mass, mq, None), tol)
    for pair in vs_pairs:
        parts[pair] = chosen


def composites(layer: LayerContext,
               per_head: list[dict[str, Candidate]]) -> dict[str, dict[int, tuple[Pattern, str]]]:
    """Boundary composites per type and head: {type: {head: (pattern, family label)}}."""
    tol = layer.options.mass_tolerance
    out: dict[str, dict[int, tuple[Pattern, str]]] = {"k": {}, "q": {}, "2d": {}}
    for h, fams in enumerate(per_head):
        cands = list(fams.values())
        if len(cands) < 2:
            continue
        label = lambda parts: ",".join(f"{k}={c.family}" for k, c in parts.items())  # noqa: E731
        if "q" in layer.options.boundaries and len(layer.query_modalities) > 1:
            parts = {m.name.lower(): best(cands, lambda c, m=m: row_share(layer, c.kept_mass, m, None), tol)
                     for m in layer.query_modalities}
            if len({c.family for c in parts.values()}) > 1:
                out["q"][h] = (QBoundary({Modality[k.upper()]: candidates.inner(c.pattern) for k, c in parts.items()}),
                               f"q[{label(parts)}]")
        if "k" in layer.options.boundaries and len(layer.present) > 1:
            parts = {m.name.lower(): best(cands, lambda c, m=m: row_share(layer, c.kept_mass, None, m), tol)
                     for m in layer.present}
            if len({c.family for c in parts.values()}) > 1 and vs_consistent(parts.values()):
                out["k"][h] = (TwoDBoundary({(mq, Modality[k.upper()]): candidates.inner(c.pattern)
                                             for mq in Modality for k, c in parts.items()}), f"k[{label(parts)}]")
        if "2d" in layer.options.boundaries and len(layer.present) > 1:
            pairs = {(mq, mk): best(cands, lambda c, mq=mq, mk=mk: row_share(layer, c.kept_mass, mq, mk), tol)
                     for mq in layer.query_modalities for mk in layer.present}
            for mq in layer.query_modalities:
                unify_vertical_slash(pairs, mq, cands, layer, tol)
            if len({c.family for c in pairs.values()}) > 1:
                named = {f"{a.name.lower()}->{b.name.lower()}": c for (a, b), c in pairs.items()}
                out["2d"][h] = (TwoDBoundary({pair: candidates.inner(c.pattern) for pair, c in pairs.items()}),
                                f"2d[{label(named)}]")
    return out


def vs_consistent(parts) -> bool:
    """A K-boundary repeats its parts for every query modality: its VS parts must be equal."""
    return len({pattern_key(c.pattern) for c in parts if isinstance(c.pattern, VerticalSlash)}) <= 1


def shrink_boundary(pattern: Pattern, factor: float) -> Optional[Pattern]:
    if isinstance(pattern, QBoundary):
        table = {m: candidates.shrink(p, factor) or p for m, p in pattern.per_modality.items()}
        return None if table == pattern.per_modality else QBoundary(table)
    table = {pair: candidates.shrink(p, factor) or p for pair, p in pattern.per_pair.items()}
    return None if table == pattern.per_pair else TwoDBoundary(table)


def fit_composites(layer: LayerContext, wanted: dict[int, tuple[Pattern, str]],
                   budget: float) -> dict[int, Candidate]:
    """Builds, prices and scores composites (grouping heads with equal ones), shrinking those over
    budget."""
    groups: dict[str, tuple[Pattern, str, list[int]]] = {}
    for h, (pattern, label) in sorted(wanted.items()):
        groups.setdefault(pattern_key(pattern), (pattern, label, []))[2].append(h)
    out: dict[int, Candidate] = {}
    queue = list(groups.values())
    for _ in range(layer.options.max_shrinks + 1):
        retry = []
        for pattern, label, heads in queue:
            index = layer.build(pattern, heads)
            if index is None:
                continue
            cost = layer.cost(index, len(heads)).expand(len(heads))
            fit = [g for g, h in enumerate(heads) if cost[g] <= budget * (1 + 1e-9)]
            if fit:
                fit_heads = [heads[g] for g in fit]
                kept, error = layer.score(select_heads(index, fit), fit_heads)
                for i, (g, h) in enumerate(zip(fit, fit_heads)):
                    out[h] = Candidate(pattern, label, 0, float(cost[g]), kept[i], float(error[i]))
            rest = [h for g, h in enumerate(heads) if g not in fit]
            smaller = shrink_boundary(pattern, layer.options.shrink_factor) if rest else None
            if smaller is not None:
                retry.append((smaller, label, rest))
        queue = retry
        if not queue:
            break
    return out


def choose_boundary(choices: dict[str, Candidate], options: SearchOptions) -> str:
    """The simplest boundary type unless a more complex one clearly lowers the output error
    (error * (1 + error_tolerance) + error_floor below the current one's) without losing more than
    `mass_tolerance` of kept mass."""
    current = next(b for b in BOUNDARY_ORDER if b in choices)
    for kind in BOUNDARY_ORDER[BOUNDARY_ORDER.index(current) + 1:]:
        if kind not in choices:
            continue
        c, cur = choices[kind], choices[current]
        mass, cur_mass = float(c.kept_mass.sum(-1).mean()), float(cur.kept_mass.sum(-1).mean())
        if (c.output_error * (1 + options.error_tolerance) + options.error_floor < cur.output_error
                and mass >= cur_mass - options.mass_tolerance):
            current = kind
    return current
