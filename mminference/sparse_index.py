"""`SparseIndex`: the Python face of the one sparse-index representation (csrc/core/mmi_sparse_index.h).

Every pattern (A-shape, vertical-slash, grid, Q-boundary, 2D-boundary, dense) compiles to it. Per
(batch, query head, query block of `block_q` slots) it lists half-open key-slot ranges and single key
slots; optional permutations map slots to original positions. Causality is judged on original
positions. A leading dim of size 1 broadcasts over batch or heads.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class SparseIndex:
    """Block-sparse key sets per query block.

    Attributes (B: batch or 1, H: query heads or 1, NQB = ceil(Sq / block_q)):
        block_q: query block height in slots.
        kv_ranges: int32 `(B, H, NQB, R, 2)` half-open `[start, end)` key-slot ranges, sorted, disjoint.
        kv_range_count: int32 `(B, H, NQB)` valid ranges per block.
        kv_columns: int32 `(B, H, NQB, C)` single key slots, strictly increasing, outside the ranges.
        kv_column_count: int32 `(B, H, NQB)` valid columns per block.
        q_perm: optional int32 `(B, H, Sq)`: original query position of each query slot.
        k_perm: optional int32 `(B, H, Sk)`: original key position of each key slot.
    """

    block_q: int
    kv_ranges: torch.Tensor
    kv_range_count: torch.Tensor
    kv_columns: torch.Tensor
    kv_column_count: torch.Tensor
    q_perm: Optional[torch.Tensor] = None
    k_perm: Optional[torch.Tensor] = None

    @property
    def num_q_blocks(self) -> int:
        return int(self.kv_ranges.shape[2])

    @staticmethod
    def from_ranges(
        block_q: int,
        kv_ranges: torch.Tensor,
        kv_range_count: torch.Tensor,
        q_perm: Optional[torch.Tensor] = None,
        k_perm: Optional[torch.Tensor] = None,
    ) -> "SparseIndex":
        """An index with ranges only (no single columns)."""
        lead = kv_range_count.shape
        return SparseIndex(
            block_q=block_q,
            kv_ranges=kv_ranges,
            kv_range_count=kv_range_count,
            kv_columns=torch.zeros((*lead, 0), dtype=torch.int32, device=kv_ranges.device),
            kv_column_count=torch.zeros(lead, dtype=torch.int32, device=kv_ranges.device),
            q_perm=q_perm,
            k_perm=k_perm,
        )

    @staticmethod
    def causal(seq_q: int, seq_k: int, block_q: int, device: torch.device | str = "cpu") -> "SparseIndex":
        """The full causal index: each query block attends every key up to its causal limit."""
        if seq_q < 1 or seq_k < seq_q:
            raise ValueError(f"seq_q must be >= 1 and seq_k >= seq_q, got seq_q={seq_q}, seq_k={seq_k}")
        num_blocks = -(-seq_q // block_q)
        block_end = torch.clamp((torch.arange(num_blocks) + 1) * block_q, max=seq_q) + (seq_k - seq_q)
        ranges = torch.stack([torch.zeros_like(block_end), block_end], dim=-1)
        ranges = ranges.to(torch.int32).reshape(1, 1, num_blocks, 1, 2).to(device)
        count = torch.ones((1, 1, num_blocks), dtype=torch.int32, device=device)
        return SparseIndex.from_ranges(block_q, ranges, count)

    def to(self, device: torch.device | str) -> "SparseIndex":
        """The same index with every tensor on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            kv_ranges=move(self.kv_ranges),
            kv_range_count=move(self.kv_range_count),
            kv_columns=move(self.kv_columns),
            kv_column_count=move(self.kv_column_count),
            q_perm=move(self.q_perm),
            k_perm=move(self.k_perm),
        )

    def computed_pairs(self, seq_q: int) -> int:
        """Number of (query row, key slot) pairs the kernel visits, before causal masking inside
        visited tiles: the work measure of the index, summed over the index's own (B, H) entries (a
        broadcast dim of size 1 counts once). Host-side; reads the index once."""
        ranges = self.kv_ranges.long()
        r = torch.arange(ranges.shape[3], device=ranges.device)
        valid = r < self.kv_range_count.long().unsqueeze(-1)
        keys = ((ranges[..., 1] - ranges[..., 0]) * valid).sum(-1) + self.kv_column_count.long()
        rows = torch.clamp(seq_q - torch.arange(self.num_q_blocks, device=keys.device) * self.block_q,
                           max=self.block_q)
        return int((keys * rows).sum())
