"""Per-layer statistics of the search: exact causal attention rows of a few sampled queries.

Memory O(H * R * S) (R sampled rows, a few hundred), never S x S; computed per KV head group so
the transient logits are one group's `(G, R, S)`."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..layout import Modality, ModalityLayout


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """Sampled attention rows of one layer and one input (batch element 0).

    row_pos: int32 `(R,)` sampled query positions, ascending.
    row_modality: int64 `(R,)` their modalities.
    probs: float32 `(H, R, S)` causal softmax rows.
    value: float32 `(Hkv, S, D)` values (for outputs).
    dense_out: float32 `(H, R, D)` dense attention output of each row.
    modality: int32 `(S,)` modality of every position.
    """

    row_pos: torch.Tensor
    row_modality: torch.Tensor
    probs: torch.Tensor
    value: torch.Tensor
    dense_out: torch.Tensor
    modality: torch.Tensor

    @property
    def heads(self) -> int:
        return int(self.probs.shape[0])

    @property
    def seq(self) -> int:
        return int(self.probs.shape[2])


def sample_rows(layout: ModalityLayout, rows_per_modality: int, seed: int, min_position: int = 0) -> torch.Tensor:
    """Stratified sample of query positions: for every modality present, `rows_per_modality`
    strata of its positions (>= min_position) in order, one position drawn per stratum with a
    generator seeded by `seed` (deterministic). Returns int64 `(R,)` ascending, unique."""
    if rows_per_modality < 1:
        raise ValueError(f"rows_per_modality must be >= 1, got {rows_per_modality}")
    gen = torch.Generator().manual_seed(seed)
    ids = layout.modality_ids()
    picked = []
    for m in Modality:
        positions = torch.nonzero(ids == int(m)).flatten()
        positions = positions[positions >= min_position]
        n = positions.numel()
        if n == 0:
            continue
        count = min(rows_per_modality, n)
        bounds = torch.linspace(0, n, count + 1).floor().long()
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            hi = max(hi, lo + 1)
            picked.append(int(positions[lo + int(torch.randint(hi - lo, (1,), generator=gen))]))
    return torch.tensor(sorted(set(picked)), dtype=torch.int64)


def layer_statistics(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: ModalityLayout,
                     row_pos: torch.Tensor, scale: Optional[float] = None) -> LayerStatistics:
    """Attention rows of `row_pos` for q `(1, H, S, D)`, k / v `(1, Hkv, S, D)` (GQA), in float32."""
    if q.dim() != 4 or q.shape[0] != 1:
        raise ValueError(f"q: expected (1, H, S, D), got {tuple(q.shape)}")
    _, heads, seq, dim = q.shape
    kv_heads = k.shape[1]
    if heads % kv_heads or k.shape[2] != seq or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k, v: expected (1, Hkv, {seq}, D) with Hkv dividing {heads}, got "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if layout.seq_len != seq:
        raise ValueError(f"layout: seq_len {layout.seq_len} differs from the sequence length {seq}")
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    group = heads // kv_heads
    device = q.device
    rows = row_pos.to(device)
    causal = torch.arange(seq, device=device)[None, :] <= rows[:, None]  # (R, S)
    probs = torch.empty((heads, rows.numel(), seq), dtype=torch.float32, device=device)
    value = v[0].float().contiguous()
    for g in range(kv_heads):
        q_rows = q[0, g * group:(g + 1) * group, rows].float()  # (G, R, D)
        logits = torch.matmul(q_rows, k[0, g].float().transpose(0, 1)) * scale  # (G, R, S)
        probs[g * group:(g + 1) * group] = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
        del logits
    dense_out = torch.matmul(probs.view(kv_heads, group * rows.numel(), seq), value).view(heads, rows.numel(), -1)
    modality = layout.modality_ids().to(device)
    return LayerStatistics(row_pos.to(torch.int32).to(device), modality[rows].long(), probs, value,
                           dense_out, modality)
