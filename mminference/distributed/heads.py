"""Which attention heads each rank owns in head-parallel attention (GQA-aware).

With Hq query heads, Hkv kv heads (group size G = Hq / Hkv) and N ranks, rank r owns the
contiguous query heads `[r * Hq/N, (r + 1) * Hq/N)`; Hq must be divisible by N. Its kv heads are
the ones those query heads read:
  - Hkv % N == 0: kv heads are split, rank r owns `[r * Hkv/N, (r + 1) * Hkv/N)` (each query group
    stays whole on one rank; e.g. Qwen2.5-VL-7B, 28 / 4 heads, on 2 or 4 ranks);
  - N % Hkv == 0: N / Hkv ranks share each kv head, which is replicated to them (rank r holds kv
    head `r // (N / Hkv)`; its Hq/N query heads all lie in that head's group);
  - otherwise a query group would straddle ranks: ValueError.
Local query head i reads local kv head `i // G` (split) or 0 (replicated), as the kernel's GQA rule
expects, so the local attention equals the single-process one on those heads.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class HeadPartition:
    """Head ownership for `world` ranks (see the module docstring)."""

    q_heads: int
    kv_heads: int
    world: int

    def __post_init__(self):
        for name in ("q_heads", "kv_heads", "world"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.q_heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.q_heads} query heads are not a multiple of {self.kv_heads} kv heads")
        if self.q_heads % self.world:
            raise ValueError(f"q_heads: {self.q_heads} query heads cannot be split evenly over {self.world} ranks "
                             f"(head-parallel attention needs Hq % world == 0)")
        if self.kv_heads % self.world and self.world % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} kv heads on {self.world} ranks: a query-head group would "
                             f"straddle ranks (needs Hkv % world == 0 or world % Hkv == 0)")

    @property
    def q_per_rank(self) -> int:
        return self.q_heads // self.world

    @property
    def kv_per_rank(self) -> int:
        """kv heads each rank holds: Hkv / N when split, 1 when replicated."""
        return max(1, self.kv_heads // self.world)

    @property
    def kv_replicated(self) -> bool:
        return self.kv_heads < self.world

    def q_range(self, rank: int) -> range:
        """Global query heads of `rank`."""
        return range(rank * self.q_per_rank, (rank + 1) * self.q_per_rank)

    def kv_range(self, rank: int) -> range:
        """Global kv heads `rank` holds (its query heads' groups)."""
        if self.kv_replicated:
            head = rank // (self.world // self.kv_heads)
            return range(head, head + 1)
        return range(rank * self.kv_per_rank, (rank + 1) * self.kv_per_rank)
