"""Candidate pattern families of the search, each a ladder of sizes.

A family maps a size x (nominal keys per query row beyond its fixed parts) to a pattern; its
patterns are nested in x (a larger x keeps a superset of keys), so cost and kept mass grow with x
and the largest x whose real cost fits the budget is the family's candidate at that budget.

    a_shape(sink=s)          AShape(sink=s, local=x)
    vertical_slash(v=rho)    VerticalSlash(num_vertical=rho x, num_slash=(1 - rho) x)
    grid(h=., v=.)           Grid(local=x, use_hlines, use_vlines, sink=block_k): the slash (local
                             window) shrinks to the diagonal tile at the ladder's bottom (x = 1:
                             "slash off")
    dense                    Dense() (one rung)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from ..patterns import AShape, Dense, Grid, Pattern, VerticalSlash

# Kinds in order of simplicity (a tie in kept mass goes to the simpler, cheaper-to-estimate one).
KIND_RANK = {"a_shape": 0, "vertical_slash": 1, "grid": 2, "dense": 3}


@dataclasses.dataclass(frozen=True)
class Family:
    """`make(x)` is the family's pattern at size x (x >= 1); `name` identifies it in results."""

    name: str
    kind: str
    make: Callable[[int], Pattern]
    fixed_keys: int = 0  # keys per row independent of x (sinks), for the nominal cost

    @property
    def rank(self) -> int:
        return KIND_RANK[self.kind]


def _vertical_slash(share: float, x: int) -> VerticalSlash:
    nv = int(round(share * x))
    ns = max(1, x - nv)
    # Forced sink columns / local diagonals (the method's 30 / 100) take at most half of each list.
    return VerticalSlash(num_vertical=nv, num_slash=ns, force_sink=min(30, nv // 2), force_local=min(100, ns // 2))


def default_families(block_k: int, a_shape_sinks: Sequence[int] = (64, 256),
                     vertical_shares: Sequence[float] = (0.25, 0.5, 0.9),
                     grid_lines: Sequence[tuple[bool, bool]] = ((True, True), (False, True), (True, False)),
                     include_dense: bool = True) -> list[Family]:
    """The search's families: A-shape per sink, vertical-slash per vertical share, grid per
    (horizontal, vertical) line choice with sink `block_k`, and dense."""
    families = [Family(f"a_shape(sink={s})", "a_shape", lambda x, s=s: AShape(sink=s, local=x), s)
                for s in a_shape_sinks]
    families += [Family(f"vertical_slash(v={r})", "vertical_slash", lambda x, r=r: _vertical_slash(r, x))
                 for r in vertical_shares]
    families += [Family(f"grid(h={int(h)},v={int(v)})", "grid",
                        lambda x, h=h, v=v: Grid(local=x, use_hlines=h, use_vlines=v, sink=block_k), block_k)
                 for h, v in grid_lines if h or v]
    if include_dense:
        families.append(Family("dense", "dense", lambda x: Dense()))
    return families


def ladder(seq: int, block_k: int, kind: str) -> list[int]:
    """Sizes x in decreasing order: seq * 2^(-i/2) rounded to block_k multiples (>= block_k), then 1
    (the smallest pattern: a grid's local window off but for the diagonal tile, an A-shape's window
    one tile). Dense: one rung."""
    if kind == "dense":
        return [seq]
    sizes, i = [], 0
    while True:
        x = int(seq * 2 ** (-i / 2))
        x = max(block_k, (x // block_k) * block_k)
        if not sizes or x < sizes[-1]:
            sizes.append(x)
        if x <= block_k:
            break
        i += 1
    sizes.append(1)
    return sizes


def inner(pattern: Pattern) -> Pattern:
    """`pattern` as a part of a boundary pattern (a grid there has no sink)."""
    if isinstance(pattern, Grid) and pattern.sink:
        return dataclasses.replace(pattern, sink=0)
    return pattern


def shrink(pattern: Pattern, factor: float) -> Optional[Pattern]:
    """`pattern` with its sizes scaled by `factor` < 1 (None when it cannot shrink: already at its
    smallest sizes, or not a sized pattern)."""
    def scale(value: int, low: int) -> int:
        return max(low, int(value * factor))
    smaller: Optional[Pattern] = None
    if isinstance(pattern, AShape):
        smaller = AShape(sink=pattern.sink, local=scale(pattern.local, 0 if pattern.sink else 1))
    elif isinstance(pattern, VerticalSlash):
        nv, ns = scale(pattern.num_vertical, 0), scale(pattern.num_slash, 1)
        smaller = VerticalSlash(num_vertical=nv, num_slash=ns, force_sink=min(pattern.force_sink, nv),
                                force_local=min(pattern.force_local, ns))
    elif isinstance(pattern, Grid):
        smaller = dataclasses.replace(pattern, local=scale(pattern.local, 1))
    return None if smaller == pattern else smaller
