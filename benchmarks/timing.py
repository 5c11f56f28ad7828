"""CUDA-event timing shared by the benchmark scripts: warm-up, then the median of repeats."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def cuda_median_ms(fn: Callable[[], object], budget_ms: float = 2000.0, max_repeats: int = 30,
                   min_repeats: int = 1) -> float:
    """Median wall time of `fn` on the current stream, in ms.

    One warm-up call (compilation, autotuning, allocator) is timed too and sets the repeat count so
    the repeats fit in `budget_ms`; slow calls (seconds each) run once after warm-up."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(stop)
    repeats = max(min_repeats, min(max_repeats, int(budget_ms / max(first, 1e-3))))
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)
