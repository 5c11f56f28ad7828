"""Kernel-level demo (`python -m mminference demo --kernels`): build sparse indexes for a synthetic
video+text prompt and compare each pattern's sparse attention with dense attention (density, time,
error)."""

from __future__ import annotations

import math
import time

import torch

from . import estimate, ops
from .sparse_index import SparseIndex
from .synthetic import video_text_prompt


def _causal_pairs(seq: int) -> int:
    return seq * (seq + 1) // 2


def _timed(fn, repeats: int = 3):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return result, (time.perf_counter() - start) / repeats


def run_kernel_demo(frames: int = 16, tokens_per_frame: int = 256, heads: int = 4, kv_heads: int = 2,
             head_dim: int = 64, seed: int = 0, block_q: int = 128, block_k: int = 64) -> list[dict]:
    """Runs every pattern once on the CPU and returns one row per pattern (also printed)."""
    prompt = video_text_prompt(frames=frames, tokens_per_frame=tokens_per_frame, q_heads=heads,
                               kv_heads=kv_heads, head_dim=head_dim, seed=seed)
    q, k, v = prompt.q, prompt.k, prompt.v
    seq = q.shape[2]
    groups = heads // kv_heads
    dense, dense_seconds = _timed(lambda: torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), is_causal=True))

    start = time.perf_counter()
    vertical_score, slash_score = ops.estimate_vertical_slash_scores(q, k)
    vertical, slash = estimate.vertical_slash_from_scores(vertical_score, slash_score, num_vertical=128, num_slash=32)
    video_columns = ops.estimate_vertical_scores(q, k, query_end=prompt.video_span[1])
    stride, phase = estimate.grid_from_scores(
        video_columns, prompt.video_span, candidate_strides=[64, 128, tokens_per_frame, 2 * tokens_per_frame])
    estimate_seconds = time.perf_counter() - start

    indexes: dict[str, SparseIndex] = {
        "dense (full causal index)": SparseIndex.causal(seq, seq, block_q),
        "A-shape (sink 128, local 1024)": ops.build_a_shape_index(seq, seq, block_q=block_q, block_k=block_k,
                                                                  sink=128, local=1024),
        "vertical-slash (128 + 32)": ops.build_vertical_slash_index(vertical, slash, seq, seq,
                                                                     block_q=block_q, block_k=block_k),
        "grid (detected stride, local 512)": ops.build_grid_index(
            stride, phase, seq, block_q=block_q, block_k=block_k, span=prompt.video_span, sink=64, local=512),
    }
    print(f"synthetic prompt: {seq} tokens = 256 text + {frames} frames x {tokens_per_frame} video + 128 text; "
          f"{heads} query heads, {kv_heads} kv heads, head dim {head_dim}")
    print(f"estimate (last 64 queries): {estimate_seconds * 1e3:.1f} ms; detected grid stride per head: "
          f"{stride.flatten().tolist()} (tokens per frame {tokens_per_frame}), phase {phase.flatten().tolist()}")
    print(f"dense SDPA: {dense_seconds * 1e3:.1f} ms")
    print(f"{'pattern':36s} {'density':>8s} {'time ms':>9s} {'rel. error':>11s}")
    rows = []
    for name, index in indexes.items():
        out, seconds = _timed(lambda: ops.sparse_attention(q, k, v, index))
        heads_in_index = index.kv_ranges.shape[0] * index.kv_ranges.shape[1]
        density = index.computed_pairs(seq) / (heads_in_index * _causal_pairs(seq))
        error = ((out - dense).norm() / dense.norm()).item()
        rows.append(dict(pattern=name, density=density, ms=seconds * 1e3, relative_error=error))
        print(f"{name:36s} {density:8.3f} {seconds * 1e3:9.1f} {error:11.2e}")
    if not math.isfinite(rows[0]["relative_error"]) or rows[0]["relative_error"] > 1e-4:
        raise RuntimeError("the full causal index does not reproduce dense attention")
    return rows
