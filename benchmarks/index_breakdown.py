"""Where the online index time goes: each stage of the vertical-slash and grid indexes built from
the input itself (as at run time), next to the sparse attention they feed, on one card.

Stages: last-64-query estimation (vertical + slash scores, and vertical only where the grid needs
no diagonals), top-k of columns / diagonals, the vertical-slash builder, stride / phase detection
and the grid builder. Shapes as benchmarks/kernels.py (28 q / 4 kv heads, D = 128, bf16).

Usage: python benchmarks/index_breakdown.py [--seqs 131072 262144] [--out benchmarks/results]
Writes index_breakdown_<card>.json and prints one line per stage."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mminference as mmi  # noqa: E402
from mminference import estimate, ops  # noqa: E402
from kernels import BLOCK_K, BLOCK_Q, GRID_LOCAL, HEAD_DIM, KV_HEADS, NUM_SLASH, NUM_VERTICAL, Q_HEADS  # noqa: E402
from timing import cuda_median_ms  # noqa: E402

GRID_CANDIDATES = [64, 128, 256, 512, 1024]


def breakdown(seq: int) -> list[dict]:
    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(seq)
    q = torch.randn(1, Q_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    rows = []

    def stage(pattern: str, name: str, fn) -> float:
        ms = cuda_median_ms(fn, budget_ms=300)
        rows.append(dict(seq=seq, pattern=pattern, stage=name, ms=ms))
        print(f"  {seq:8d} {pattern:15s} {name:40s} {ms:8.3f} ms", flush=True)
        return ms

    vertical_score, slash_score = ops.estimate_vertical_slash_scores(q, k)
    vertical, slash = estimate.vertical_slash_from_scores(vertical_score, slash_score, NUM_VERTICAL, NUM_SLASH)
    vs_index = ops.build_vertical_slash_index(vertical, slash, seq, seq, block_q=BLOCK_Q, block_k=BLOCK_K,
                                              max_ranges=8)
    stage("vertical_slash", "estimation (vertical + slash)", lambda: ops.estimate_vertical_slash_scores(q, k))
    stage("vertical_slash", "top-k", lambda: estimate.vertical_slash_from_scores(
        vertical_score, slash_score, NUM_VERTICAL, NUM_SLASH))
    stage("vertical_slash", "build", lambda: ops.build_vertical_slash_index(
        vertical, slash, seq, seq, block_q=BLOCK_Q, block_k=BLOCK_K, max_ranges=8))
    stage("vertical_slash", "sparse attention (its own index)", lambda: mmi.sparse_attention(q, k, v, vs_index))

    column_mass = estimate.column_mass(q, k) if hasattr(estimate, "column_mass") else vertical_score
    stride, phase = estimate.grid_from_scores(column_mass, (0, seq), GRID_CANDIDATES)
    grid_index = ops.build_grid_index(stride, phase, seq, block_q=BLOCK_Q, block_k=BLOCK_K, local=GRID_LOCAL)
    if hasattr(estimate, "column_mass"):
        stage("grid", "estimation (vertical only)", lambda: estimate.column_mass(q, k))
    stage("grid", "stride / phase detection", lambda: estimate.grid_from_scores(column_mass, (0, seq),
                                                                              GRID_CANDIDATES))
    stage("grid", "build", lambda: ops.build_grid_index(stride, phase, seq, block_q=BLOCK_Q, block_k=BLOCK_K,
                                                      local=GRID_LOCAL))
    stage("grid", "sparse attention (its own index)", lambda: mmi.sparse_attention(q, k, v, grid_index))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[131072])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("index_breakdown.py needs a CUDA device")
    card = torch.cuda.get_device_name()
    rows = []
    for seq in args.seqs:
        rows += breakdown(seq)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"index_breakdown_{card.replace(' ', '_')}.json")
    with open(path, "w") as f:
        json.dump(dict(card=card, date=datetime.date.today().isoformat(), torch=torch.__version__,
                       command=" ".join(sys.argv), rows=rows), f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
