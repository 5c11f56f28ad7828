"""Scaling of one layer's sequence-parallel sparse attention over GPUs (head-parallel all_to_all).

    python benchmarks/distributed.py --tokens 1048576                          # 1 GPU, no process group
    torchrun --nproc-per-node 2 benchmarks/distributed.py --tokens 1048576     # 2 GPUs (NCCL)
    torchrun --nproc-per-node 4 benchmarks/distributed.py --tokens 1048576     # 4 GPUs, then the table

Qwen2.5-VL-7B shapes (28 q / 4 kv heads, head dim 128, bf16), text + video (16 x 16 tokens per
frame) + text, random q / k / v drawn whole from one seed on every rank (so every world size sees
the same inputs; `examples/torchrun_prefill.py`). Per config: `sparse_attention_for_layout` on one
GPU, or `sequence_parallel_sparse_attention` on each rank's shard (exchanges, estimation, index,
kernel). Time: CUDA events around each call after a warm-up call, ranks aligned by a barrier
before each call; a call's time is the slowest rank's; reported: the median over calls.
Writes `<out>/distributed_<card>_<tokens>tok_<N>gpu.json` and prints, from every such file of the
same card and tokens in `<out>`, the table of time and scaling efficiency = t_1 / (N * t_N).
`--check` also gathers the N-GPU output and compares it with the single-GPU call on rank 0.
NVLink multicast stays off (NCCL_NVLS_ENABLE=0 unless set). `--device cpu` runs the same on gloo
(smoke test only).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # before NCCL initialises
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import mminference as mmi  # noqa: E402
from mminference.distributed import gather_sequence  # noqa: E402
from torchrun_prefill import PATTERNS, attention, init_distributed, random_inputs, video_layout  # noqa: E402


def timed_calls(fn, device: torch.device, warmup: int, reps: int) -> list[float]:
    """This rank's ms per call (CUDA events on the current stream; perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if dist.is_initialized():
            dist.barrier()
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(stop))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return times


def across_ranks(times: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's list of call times, `[rank][call]`."""
    if not dist.is_initialized():
        return [times]
    local = torch.tensor(times, dtype=torch.float64, device=device)
    rows = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, local)
    return [r.tolist() for r in rows]


def check_against_single(q, k, v, layout, pattern, out) -> float:
    """Max |gathered N-rank output - single-process output| (on rank 0; -1 elsewhere)."""
    full = gather_sequence(out, seq_dim=2)
    qf, kf, vf = (gather_sequence(t, seq_dim=2) for t in (q, k, v))
    if dist.get_rank() != 0:
        return -1.0
    expected = mmi.sparse_attention_for_layout(qf, kf, vf, layout, pattern)
    return (full.float() - expected.float()).abs().max().item()


def print_table(out_dir: str, card: str, tokens: int) -> None:
    runs = {}
    for path in glob.glob(os.path.join(out_dir, f"distributed_{card}_{tokens}tok_*gpu.json")):
        with open(path) as f:
            data = json.load(f)
        runs[data["meta"]["world"]] = {row["config"]: row["ms"] for row in data["rows"]}
    worlds = sorted(runs)
    configs = sorted({c for r in runs.values() for c in r})
    print(f"\n{card}, {tokens} tokens: ms per layer (scaling efficiency t_1 / (N t_N))")
    print("| config | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in worlds) + " |")
    print("|---" * (len(worlds) + 1) + "|")
    for config in configs:
        one = runs.get(1, {}).get(config)
        cells = []
        for n in worlds:
            ms = runs[n].get(config)
            if ms is None:
                cells.append("")
            elif n > 1 and one is not None:
                cells.append(f"{ms:.1f} ({one / (n * ms):.2f})")
            else:
                cells.append(f"{ms:.1f}")
        print(f"| {config} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1048576)
    parser.add_argument("--configs", nargs="+", choices=sorted(PATTERNS), default=["a_shape", "vertical_slash", "grid"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="compare the N-rank output with one process's")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device (use --device cpu for a smoke test)")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    device = init_distributed() if args.device == "cuda" else _init_cpu()
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    card = torch.cuda.get_device_name(device).replace(" ", "_") if device.type == "cuda" else "cpu"
    layout = video_layout(args.tokens)
    q, k, v = random_inputs(layout.seq_len, device, dtype=getattr(torch, args.dtype))
    rows = []
    for name in args.configs:
        pattern = PATTERNS[name]
        per_rank = across_ranks(timed_calls(lambda: attention(q, k, v, layout, pattern), device, args.warmup,
                                            args.reps), device)
        slowest = [max(r[i] for r in per_rank) for i in range(args.reps)]
        row = dict(config=name, ms=statistics.median(slowest), calls_ms=slowest,
                   rank_median_ms=[statistics.median(r) for r in per_rank])
        if args.check and world > 1:
            row["check_max_abs_diff"] = check_against_single(q, k, v, layout, pattern,
                                                             attention(q, k, v, layout, pattern))
        rows.append(row)
        if rank == 0:
            extra = f", check max |diff| {row['check_max_abs_diff']:.3g}" if "check_max_abs_diff" in row else ""
            print(f"{layout.seq_len} tokens, {world} x {card}, {name}: {row['ms']:.1f} ms "
                  f"(rank medians {', '.join(f'{m:.1f}' for m in row['rank_median_ms'])}){extra}", flush=True)
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"distributed_{card}_{layout.seq_len}tok_{world}gpu.json")
        meta = dict(card=card, world=world, tokens=layout.seq_len, dtype=args.dtype, reps=args.reps,
                    warmup=args.warmup, date=datetime.date.today().isoformat(), torch=torch.__version__,
                    nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"), command=" ".join(sys.argv))
        with open(path, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        print(f"wrote {path}")
        print_table(args.out, card, layout.seq_len)
    if dist.is_initialized():
        dist.destroy_process_group()


def _init_cpu() -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return torch.device("cpu")


if __name__ == "__main__":
    main()
