"""Turning last-query attention statistics into pattern parameters.

Every pattern's index is estimated from the input itself: `ops.estimate_vertical_slash_scores`
reduces softmax(Q[-L:] K^T / sqrt(d)) of the last L (64) queries to per-key (vertical) and
per-diagonal (slash) mass, `(B, Hq, Sk)` each, never storing L x Sk; grids read only the per-key
mass (`column_mass`, which skips the diagonal sums). This module picks top-k lists and grid strides
from those scores."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import ops


def column_mass(q: torch.Tensor, k: torch.Tensor, *, last: int = 64, query_end: Optional[int] = None,
                scale: Optional[float] = None) -> torch.Tensor:
    """Per-key attention mass float32 `(B, Hq, Sk)` of the `last` queries ending at `query_end`:
    the `vertical_score` of `ops.estimate_vertical_slash_scores` without its diagonal sums
    (`ops.estimate_vertical_scores`), all that `grid_from_scores` / `detect_grid` need."""
    return ops.estimate_vertical_scores(q, k, last=last, query_end=query_end, scale=scale)


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
    # Unsorted selection: the indices are sorted by position below anyway.
    vertical = torch.topk(vertical_score, nv, dim=-1, sorted=False).indices.sort(dim=-1).values
    slash = torch.topk(slash_score, ns, dim=-1, sorted=False).indices.sort(dim=-1).values
    return vertical.to(torch.int32), slash.to(torch.int32)


def _usable_strides(candidate_strides: Sequence[int], n: int) -> list[int]:
    """Distinct candidates leaving at least 2 lines in a span of n keys, ascending."""
    usable = sorted({int(s) for s in candidate_strides if 1 <= s <= n // 2})
    if not usable:
        raise ValueError(f"no candidate stride leaves 2 or more lines in a span of {n} tokens")
    return usable


def detect_grid(vertical_score: torch.Tensor, span: tuple[int, int], candidate_strides: Sequence[int],
                tolerance: float = 0.5,
                max_lines: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`grid_from_scores` and the chosen grid's `grid_lift` in one op (`ops.detect_grid`; on CUDA no
    host sync). Returns int32 `stride (B, H)`, int32 `phase (B, H)` and float32 `lift (B, H)`."""
    start, end = span
    return ops.detect_grid(vertical_score.float(), (start, end), _usable_strides(candidate_strides, end - start),
                           tolerance=tolerance, max_lines=max_lines)


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
    `phase (B, H)`.

    One fused op (`ops.detect_grid`, rules in csrc/core/mmi_grid_detect.h); scores are used as
    float32."""
    stride, phase, _ = detect_grid(vertical_score, span, candidate_strides, tolerance, max_lines)
    return stride, phase


def grid_lift(vertical_score: torch.Tensor, span: tuple[int, int], stride: torch.Tensor,
              phase: torch.Tensor) -> torch.Tensor:
    """The lift of a detected grid: median mass of its lines in `span` (all n // stride of them)
    over the span's mean mass
    per key (the score `grid_from_scores` maximises; about 1 without periodic structure).

    Args: vertical_score float `(B, H, Sk)`; stride, phase int `(B, H)` (phase relative to span[0]).
    Returns float32 `(B, H)` (`ops.grid_lift`; `detect_grid` returns it for the detected grid)."""
    device = vertical_score.device
    return ops.grid_lift(vertical_score.float(), span, stride.to(device=device, dtype=torch.int32),
                         phase.to(device=device, dtype=torch.int32))
