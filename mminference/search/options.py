"""Options of the per-layer pattern search."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .cost import CostModel

BOUNDARY_ORDER = ("none", "k", "q", "2d")


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """Knobs of the per-layer search (defaults as used by the CLI).

    rows_per_modality: sampled query rows per modality (statistics: H x R x S floats).
    last: estimating queries of the online indexes (as at inference).
    mass_tolerance: no-boundary families within this kept mass (recall) of the best: simplest wins.
    error_tolerance, error_floor: a more complex boundary type must have error * (1 + tol) + floor
        below the simpler choice's (and no less kept mass, within mass_tolerance).
    boundaries: which boundary types to consider.
    shrink_factor, max_shrinks: how composites are fitted to the budget.
    """

    rows_per_modality: int = 64
    last: int = 64
    cost_model: CostModel = CostModel()
    mass_tolerance: float = 0.005
    error_tolerance: float = 0.1
    error_floor: float = 1e-3
    boundaries: tuple[str, ...] = BOUNDARY_ORDER
    a_shape_sinks: Optional[tuple[int, ...]] = None  # None: (1, 4) key tiles (64, 256 at block_k 64)
    vertical_shares: tuple[float, ...] = (0.25, 0.5, 0.9)
    shrink_factor: float = 0.7
    max_shrinks: int = 8
    seed: int = 0

    def __post_init__(self):
        for name, minimum in (("rows_per_modality", 1), ("last", 1), ("max_shrinks", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        for name in ("mass_tolerance", "error_tolerance", "error_floor"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.shrink_factor < 1:
            raise ValueError(f"shrink_factor must be in (0, 1), got {self.shrink_factor!r}")
        bad = [b for b in self.boundaries if b not in BOUNDARY_ORDER]
        if bad or "none" not in self.boundaries:
            raise ValueError(f"boundaries must include 'none' and be among {BOUNDARY_ORDER}, got {self.boundaries!r}")
