"""Online estimation of sparse structure from the last queries' attention (no O(seq^2) memory).

Every pattern's index is estimated from the input itself: softmax(Q[-L:] K^T / sqrt(d)) for the last
L (64) queries, causally masked, is `(B, Hq, L, Sk)`: linear in the sequence length."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def last_query_attention(q: torch.Tensor, k: torch.Tensor, last: int = 64, scale: float | None = None,
                         query_end: int | None = None) -> torch.Tensor:
    """Causal attention probabilities of the `last` queries ending at `query_end` (default: the
    end of q), float32 `(B, Hq, L, Sk)`; keys past the last query's causal limit get 0.

    q `(B, Hq, Sq, D)`, k `(B, Hkv, Sk, D)` (GQA handled by grouping, no K copy). A segment's own
    last queries (e.g. a video's) estimate that segment's pattern."""
    batch, q_heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    query_end = seq_q if query_end is None else query_end
    if not 1 <= query_end <= seq_q:
        raise ValueError(f"query_end must be in [1, {seq_q}], got {query_end}")
    last = min(last, query_end)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    q_last = q[:, :, query_end - last:query_end].float().reshape(batch, kv_heads, q_heads // kv_heads * last, dim)
    scores = torch.matmul(q_last, k.float().transpose(-1, -2)).reshape(batch, q_heads, last, seq_k) * scale
    query_pos = torch.arange(query_end - last, query_end, device=q.device) + (seq_k - seq_q)
    scores.masked_fill_(torch.arange(seq_k, device=q.device)[None, :] > query_pos[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def vertical_slash_from_estimate(probs: torch.Tensor, seq_q: int, num_vertical: int, num_slash: int,
                                 force_sink: int = 30, force_local: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Top key columns and diagonals of an estimate `(B, H, L, Sk)`.

    Returns int32 `vertical (B, H, NV)` key positions and `slash (B, H, NS)` distances, both sorted
    ascending, with the first `force_sink` keys and the `force_local` nearest diagonals forced in."""
    batch, heads, last, seq_k = probs.shape
    vertical_score = probs.sum(dim=2)
    vertical_score[..., :force_sink] = float("inf")
    # Query row r (absolute position seq_k - last + r) meets diagonal d at key seq_k - last + r - d.
    distance = (torch.arange(last, device=probs.device)[:, None] + seq_k - last) - torch.arange(seq_k, device=probs.device)[None, :]
    slash_score = torch.zeros(batch, heads, seq_k, device=probs.device)
    valid = distance >= 0
    slash_score.index_add_(2, distance[valid], probs[..., valid])
    slash_score[..., :force_local] = float("inf")
    nv, ns = min(num_vertical, seq_k), min(num_slash, seq_k)
    vertical = torch.topk(vertical_score, nv, dim=-1).indices.sort(dim=-1).values
    slash = torch.topk(slash_score, ns, dim=-1).indices.sort(dim=-1).values
    return vertical.to(torch.int32), slash.to(torch.int32)


def grid_from_estimate(probs: torch.Tensor, span: tuple[int, int], candidate_strides: Sequence[int],
                       tolerance: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head stride and phase of the strongest periodic key-column pattern inside `span`.

    For stride s the key mass of the span is folded into (lines, s); a phase's score is the median
    mass of its lines over the span's mean mass per key (a lift: small strides do not win by
    covering more keys, and the median keeps one recent, locally boosted line from deciding).
    Multiples of the true stride score as high, so the smallest stride within `tolerance` of the
    best lift wins. Returns int32 `stride (B, H)` and `phase (B, H)`."""
    start, end = span
    column_mass = probs.sum(dim=2)[..., start:end]  # (B, H, n)
    n = end - start
    mean_mass = column_mass.sum(-1, keepdim=True) / n
    lifts, phases = [], []
    for s in candidate_strides:
        lines = n // s
        if lines < 2:
            raise ValueError(f"candidate stride {s} leaves fewer than 2 lines in a span of {n} tokens")
        folded = column_mass[..., : lines * s].reshape(*column_mass.shape[:2], lines, s).median(dim=2).values
        best, phase = folded.max(dim=-1)
        lifts.append(best / mean_mass.squeeze(-1).clamp_min(1e-30))
        phases.append(phase)
    lift = torch.stack(lifts, dim=-1)  # (B, H, candidates)
    ok = lift >= tolerance * lift.max(dim=-1, keepdim=True).values
    strides = torch.tensor(list(candidate_strides), device=probs.device)
    choice = torch.where(ok, strides, torch.iinfo(torch.int64).max).argmin(dim=-1)
    stride = strides[choice]
    phase = torch.gather(torch.stack(phases, dim=-1), -1, choice[..., None]).squeeze(-1)
    return stride.to(torch.int32), phase.to(torch.int32)
