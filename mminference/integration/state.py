"""What `patch` leaves on a model (`model._mminference`): the head config, options, counters and what
`unpatch` must restore."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..patterns import HeadConfig
from .families import Family
from .options import PatchOptions


@dataclasses.dataclass
class PatchStats:
    """Attention calls of the language model since `patch` (or `reset`): `sparse` ran the sparse
    prefill, `dense` the model's own implementation (decode, chunked or short prefill, padding rows
    are not counted separately). `densities`: `(layer, density)` per sparse call with
    `track_density=True`, density = (query, key) pairs the kernel visits / those of the full causal
    index at the same tile size (`SparseIndex.computed_pairs`), averaged over heads."""

    sparse: int = 0
    dense: int = 0
    densities: list = dataclasses.field(default_factory=list)

    def reset(self) -> None:
        self.sparse, self.dense = 0, 0
        self.densities.clear()

    def mean_density(self) -> Optional[float]:
        return sum(d for _, d in self.densities) / len(self.densities) if self.densities else None


@dataclasses.dataclass
class PatchState:
    """`family` None: an unsupported model left dense (`unsupported="dense"`)."""

    family: Optional[Family]
    head_config: HeadConfig
    options: PatchOptions
    text_config: Any = None
    dense_implementation: Optional[str] = None
    saved_implementations: list = dataclasses.field(default_factory=list)  # (config, _attn_implementation_internal)
    saved_forward: Any = None  # the instance-level forward before patching (None: the class's)
    saved_generate: Any = None  # same for generate
    stats: PatchStats = dataclasses.field(default_factory=PatchStats)
