"""Turning last-query attention statistics into pattern parameters.

Every pattern's index is estimated from the input itself: `ops.estimate_vertical_slash_scores`
reduces softmax(Q[-L:] K^T / sqrt(d)) of the last L (64) queries to per-key (vertical) and
per-diagonal (slash) mass, `(B, Hq, Sk)` each, never storing L x Sk. This module picks top-k lists
and grid strides from those scores."""

from __future__ import annotations

from typing import Sequence

import torch


def vertical_slash_from_scores(vertical_score: torch.Tensor, slash_score: torch.Tensor, num_vertical: int,
                               num_slash: int, force_sink: int = 30,
                               force_local: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Top key columns and diagonals from float32 scores `(B, H, Sk)`.

    Returns int32 `vertical (B, H, NV)` key positions and `slash (B, H, NS)` distances, both sorted
    ascending, with the first `force_sink` keys and the `force_local` nearest diagonals forced in."""
    seq_k = vertical_score.shape[-1]
    vertical_score = vertical_score.clone()
    slash_score = slash_score.clone()
    vertical_score[..., :force_sink] = float("inf")
    slash_score[..., :force_local] = float("inf")
    nv, ns = min(num_vertical, seq_k), min(num_slash, seq_k)
    vertical = torch.topk(vertical_score, nv, dim=-1).indices.sort(dim=-1).values
    slash = torch.topk(slash_score, ns, dim=-1).indices.sort(dim=-1).values
    return vertical.to(torch.int32), slash.to(torch.int32)


def _robust_line_mass(lines: torch.Tensor, dim: int) -> torch.Tensor:
    """Median over `dim`: one recent, locally boosted line (or a few) cannot move it."""
    return lines.median(dim=dim).values


def grid_from_scores(vertical_score: torch.Tensor, span: tuple[int, int], candidate_strides: Sequence[int],
                     tolerance: float = 0.5, max_lines: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head stride and phase of the strongest periodic key-column pattern inside `span`.

    For stride s the key mass of the span is folded into (lines, s); a phase's score is the median
    mass of its lines over the span's mean mass per key (a lift: small strides do not win by
    covering more keys, and the median keeps recent, locally boosted lines from deciding).
    Multiples of the true stride score at most as high in expectation but can win on noise among
    few lines, while divisors score about half as high, so the smallest stride within `tolerance`
    (default 0.5) of the
    best lift wins; candidates with fewer than 2 lines in the span are ignored. Only the last
    `max_lines` periods of the span are scored (the most recent frames are what the estimating
    queries see best; it bounds the work at any length). Returns int32 `stride (B, H)` and
    `phase (B, H)`."""
    start, end = span
    column_mass = vertical_score[..., start:end]  # (B, H, n)
    n = end - start
    candidate_strides = [s for s in candidate_strides if 1 <= s <= n // 2]  # at least 2 lines each
    if not candidate_strides:
        raise ValueError(f"no candidate stride leaves 2 or more lines in a span of {n} tokens")
    lifts, phases = [], []
    for s in candidate_strides:
        lines = n // s
        first = max(0, lines - max_lines) * s  # a whole number of periods: phases stay span-relative
        window = column_mass[..., first: lines * s]  # (B, H, used lines * s)
        folded = _robust_line_mass(window.reshape(*window.shape[:2], -1, s), dim=2)
        best, phase = folded.max(dim=-1)
        mean_mass = window.mean(-1)
        lifts.append(best / mean_mass.clamp_min(1e-30))
        phases.append(phase)
    lift = torch.stack(lifts, dim=-1)  # (B, H, candidates)
    ok = lift >= tolerance * lift.max(dim=-1, keepdim=True).values
    strides = torch.tensor(list(candidate_strides), device=vertical_score.device)
    choice = torch.where(ok, strides, torch.iinfo(torch.int64).max).argmin(dim=-1)
    stride = strides[choice]
    phase = torch.gather(torch.stack(phases, dim=-1), -1, choice[..., None]).squeeze(-1)
    return stride.to(torch.int32), phase.to(torch.int32)


def grid_lift(vertical_score: torch.Tensor, span: tuple[int, int], stride: torch.Tensor,
              phase: torch.Tensor) -> torch.Tensor:
    """The lift of a detected grid: median mass of its lines in `span` (as in `grid_from_scores`)
    over the span's mean mass
    per key (the score `grid_from_scores` maximises; about 1 without periodic structure).

    Args: vertical_score float `(B, H, Sk)`; stride, phase int `(B, H)` (phase relative to span[0]).
    Returns float32 `(B, H)`."""
    start, end = span
    column_mass = vertical_score[..., start:end].float()
    n = end - start
    mean_mass = column_mass.sum(-1) / n
    lift = torch.zeros(stride.shape, dtype=torch.float32, device=vertical_score.device)
    for b in range(stride.shape[0]):
        for h in range(stride.shape[1]):
            s, p = int(stride[b, h]), int(phase[b, h])
            lines = column_mass[b, h, p::s]
            lines = lines[: n // s] if n // s >= 1 else lines
            lift[b, h] = _robust_line_mass(lines, dim=0) / mean_mass[b, h].clamp_min(1e-30)
    return lift
