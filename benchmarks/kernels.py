"""Kernel benchmark: mminference's block-sparse forward against dense and sparse baselines.

One run, one card: dense causal attention with torch SDPA (cuDNN and flash backends), FlexAttention
with the same pattern, and mminference, for full density, A-shape (sink 1024 + local 4096),
vertical-slash (1000 verticals incl. the first 30 keys + the 4096 nearest diagonals) and grid
(256 tokens per frame, horizontal + vertical lines, local 1024), at Qwen2.5-VL-7B shapes (28 query
heads, 4 kv heads, head dim 128, bf16, batch 1). Index building is timed separately.

Usage: python benchmarks/kernels.py [--seqs 32768 131072 ...] [--out benchmarks/results]
Writes kernels_<card>.json and kernels_<card>.png and prints a table (speedups vs cuDNN dense)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mminference as mmi  # noqa: E402
from mminference import estimate, ops  # noqa: E402
from timing import cuda_median_ms  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM = 28, 4, 128
SINK, LOCAL = 1024, 4096
NUM_VERTICAL, NUM_SLASH = 1000, 4096
GRID_STRIDE, GRID_LOCAL = 256, 1024
BLOCK_Q, BLOCK_K = 128, 64


def causal_flops(seq: int) -> float:
    return 2.0 * seq * seq * HEAD_DIM * Q_HEADS


def dense_sdpa(q, k, v, backend):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def verticals(seq: int, device) -> torch.Tensor:
    """1000 key columns: the first 30 keys plus evenly spread others (shared by all heads)."""
    spread = torch.linspace(30, seq - 1, NUM_VERTICAL - 30).long()
    cols = torch.unique(torch.cat([torch.arange(30), spread]))
    return cols.to(torch.int32).reshape(1, 1, -1).to(device)


def build_indexes(seq: int, device) -> dict[str, tuple[mmi.SparseIndex, float]]:
    """Each pattern's index (one head, broadcast to all) and its build time in ms (on the GPU when
    the builders have CUDA kernels, else on the CPU plus the copy)."""
    has_gpu_builders = torch._C._dispatch_has_kernel_for_dispatch_key("mminference::build_grid_index", "CUDA")
    device = device if has_gpu_builders else torch.device("cpu")
    out = {}
    build = {
        "full": lambda: mmi.SparseIndex.causal(seq, seq, BLOCK_Q, device),
        "a_shape": lambda: ops.build_a_shape_index(seq, seq, block_q=BLOCK_Q, block_k=BLOCK_K, sink=SINK,
                                                   local=LOCAL, device=device),
        "vertical_slash": lambda: ops.build_vertical_slash_index(
            verticals(seq, device), torch.arange(NUM_SLASH, dtype=torch.int32, device=device).reshape(1, 1, -1),
            seq, seq, block_q=BLOCK_Q, block_k=BLOCK_K, max_ranges=8),
        "grid": lambda: ops.build_grid_index(
            torch.full((1, 1), GRID_STRIDE, dtype=torch.int32, device=device),
            torch.zeros((1, 1), dtype=torch.int32, device=device), seq, block_q=BLOCK_Q, block_k=BLOCK_K,
            local=GRID_LOCAL, sink=0),
    }
    for name, fn in build.items():
        ms = cuda_median_ms(lambda: fn().to("cuda"), budget_ms=500)
        out[name] = (fn().to("cuda"), ms)
    return out


def online_index_ms(pattern: str, q: torch.Tensor, k: torch.Tensor) -> float | None:
    """Time of building the pattern's index from the input itself, as at run time: last-64-query
    estimation, top-k or stride detection, then the builder (None for static patterns)."""
    seq = q.shape[2]
    if pattern == "vertical_slash":
        def build():
            vertical_score, slash_score = ops.estimate_vertical_slash_scores(q, k)
            vertical, slash = estimate.vertical_slash_from_scores(vertical_score, slash_score, NUM_VERTICAL, NUM_SLASH)
            return ops.build_vertical_slash_index(vertical, slash, seq, seq, block_q=BLOCK_Q, block_k=BLOCK_K,
                                                  max_ranges=8)
    elif pattern == "grid":
        def build():
            column_mass = ops.estimate_vertical_scores(q, k)  # the grid needs no diagonal sums
            stride, phase = estimate.grid_from_scores(column_mass, (0, seq), [64, 128, 256, 512, 1024])
            return ops.build_grid_index(stride, phase, seq, block_q=BLOCK_Q, block_k=BLOCK_K, local=GRID_LOCAL)
    else:
        return None
    return cuda_median_ms(build, budget_ms=500)


def flex_mask_mod(pattern: str, seq: int, device, perm: torch.Tensor | None = None):
    """Token-level mask of each pattern for FlexAttention (original positions, or slots via perm)."""
    if pattern == "full":
        return lambda b, h, q, k: q >= k
    if pattern == "a_shape":
        return lambda b, h, q, k: (q >= k) & ((k < SINK) | (q - k < LOCAL))
    if pattern == "vertical_slash":
        is_vertical = torch.zeros(seq, dtype=torch.bool, device=device)
        is_vertical[verticals(seq, device).flatten().long()] = True
        return lambda b, h, q, k: (q >= k) & (is_vertical[k] | (q - k < NUM_SLASH))
    if pattern == "grid" and perm is None:
        return lambda b, h, q, k: (q >= k) & ((k % GRID_STRIDE == 0) | (q % GRID_STRIDE == 0) | (q - k < GRID_LOCAL))
    if pattern == "grid":
        pos = perm

        def grid_permuted(b, h, qs, ks):
            qp, kp = pos[qs], pos[ks]
            return (qp >= kp) & ((kp % GRID_STRIDE == 0) | (qp % GRID_STRIDE == 0) | (qp - kp < GRID_LOCAL))
        return grid_permuted
    raise ValueError(pattern)


def bench_seq(seq: int, args) -> list[dict]:
    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(seq)
    q = torch.randn(1, Q_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
    flops = causal_flops(seq)
    rows = []

    def record(method, pattern, ms, index_ms=None, kept_flops=None, note=""):
        row = dict(seq=seq, method=method, pattern=pattern, ms=ms, index_ms=index_ms,
                   dense_tflops=flops / ms / 1e9, kept_tflops=None if kept_flops is None else kept_flops / ms / 1e9,
                   note=note)
        rows.append(row)
        print(f"  {method:28s} {pattern:15s} {ms:10.2f} ms" + (f"  (index {index_ms:.2f} ms)" if index_ms else "")
              + (f"  kept-tile {row['kept_tflops']:.0f} TFLOP/s" if kept_flops else "") + (f"  {note}" if note else ""),
              flush=True)

    budget = 3000 if seq <= 131072 else 1
    for name, backend in [("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa_flash", SDPBackend.FLASH_ATTENTION)]:
        if seq > args.dense_max_seq or name not in args.baselines or (name == "sdpa_flash" and seq > args.flash_max_seq):
            continue
        try:
            record(name, "dense", cuda_median_ms(lambda: dense_sdpa(q, k, v, backend), budget_ms=budget))
        except RuntimeError as error:
            record(name, "dense", float("nan"), note=f"failed: {str(error)[:80]}")

    indexes = build_indexes(seq, device)
    print("  index build ms: " + ", ".join(f"{name} {ms:.2f}" for name, (_, ms) in indexes.items()), flush=True)
    flex = torch.compile(flex_attention, dynamic=False)
    for pattern in args.patterns:
        if pattern == "full" and seq > args.full_max_seq:
            continue
        index, index_ms = indexes[pattern]
        heads_factor = Q_HEADS if index.kv_ranges.shape[1] == 1 else 1
        kept = index.computed_pairs(seq) * heads_factor * 4.0 * HEAD_DIM
        online_ms = online_index_ms(pattern, q, k)
        record("mminference", pattern, cuda_median_ms(lambda: mmi.sparse_attention(q, k, v, index), budget_ms=budget),
               index_ms=index_ms if online_ms is None else online_ms, kept_flops=kept,
               note="" if online_ms is None else "index = online estimation + top-k/stride + build")
        if "flex" not in args.baselines or (args.flex_seqs and seq not in args.flex_seqs):
            continue

        def run_flex():
            if pattern == "grid":
                perm = index.q_perm[0, 0].long()
                gather_ms = cuda_median_ms(lambda: (q[:, :, perm], k[:, :, perm], v[:, :, perm]), budget_ms=500)
                qp, kp, vp = q[:, :, perm].contiguous(), k[:, :, perm].contiguous(), v[:, :, perm].contiguous()
                block_mask = create_block_mask(flex_mask_mod(pattern, seq, device, perm), None, None, seq, seq,
                                               device=device, _compile=True)
                ms = cuda_median_ms(lambda: flex(qp, kp, vp, block_mask=block_mask, enable_gqa=True), budget_ms=budget)
                record("flex (permuted inputs)", pattern, ms + gather_ms, note=f"incl. {gather_ms:.2f} ms gathers")
                del qp, kp, vp
                if seq > args.flex_original_grid_max_seq:
                    return
            block_mask = create_block_mask(flex_mask_mod(pattern, seq, device), None, None, seq, seq,
                                           device=device, _compile=True)
            record("flex", pattern, cuda_median_ms(lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=True),
                                                   budget_ms=budget))
            del block_mask

        failure = None
        try:
            run_flex()
        except torch.OutOfMemoryError as error:  # e.g. the permuted grid's S x S mask (128 GiB at 128K)
            failure = str(error)[:60]
        if failure is not None:  # outside the handler: the traceback's frames are gone
            record("flex", pattern, float("nan"), note=f"failed: {failure}")
            torch.cuda.empty_cache()
    return rows


def plot(rows: list[dict], path: str, card: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = {r["seq"]: r["ms"] for r in rows if r["method"] == "sdpa_cudnn"}
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), sharey=False)
    for ax, pattern in zip(axes, ["full", "a_shape", "vertical_slash", "grid"]):
        for method in ["mminference", "flex", "flex (permuted inputs)", "sdpa_flash"]:
            pts = [(r["seq"], dense[r["seq"]] / r["ms"]) for r in rows
                   if r["method"] == method and (r["pattern"] == pattern or (method == "sdpa_flash" and pattern == "full"))
                   and r["seq"] in dense]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_title(pattern)
        ax.set_xlabel("tokens")
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("speedup vs cuDNN dense")
    fig.suptitle(f"mminference kernels, {card}, 28 q / 4 kv heads, d=128, bf16")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_json(rows: list[dict], args, card: str) -> str:
    """Writes the rows so far to <out>/kernels_<card>.json; returns the path without extension."""
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"kernels_{card}")
    meta = dict(card=torch.cuda.get_device_name(), date=datetime.date.today().isoformat(), torch=torch.__version__,
                command=" ".join(sys.argv))
    with open(stem + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seqs", type=int, nargs="+", default=[32768, 131072, 262144, 524288, 1048576])
    parser.add_argument("--patterns", nargs="+", default=["full", "a_shape", "vertical_slash", "grid"])
    parser.add_argument("--baselines", nargs="+", default=["sdpa_cudnn", "sdpa_flash", "flex"])
    parser.add_argument("--flex-seqs", type=int, nargs="*", default=None,
                        help="sequence lengths at which to run FlexAttention (default: all)")
    parser.add_argument("--dense-max-seq", type=int, default=1 << 20)
    parser.add_argument("--flash-max-seq", type=int, default=1 << 20,
                        help="longest sequence for the SDPA flash backend (the full-density comparison)")
    parser.add_argument("--full-max-seq", type=int, default=262144,
                        help="longest sequence for the full-density index (it costs as much as dense)")
    parser.add_argument("--flex-original-grid-max-seq", type=int, default=131072)
    parser.add_argument("--memory-cap-gib", type=float, default=None,
                        help="cap this process's GPU memory (torch's caching allocator), e.g. 76 to show "
                             "that the run fits an 80 GB card; the peak per length is reported either way")
    parser.add_argument("--memory-cap-min-seq", type=int, default=524288,
                        help="apply the cap from this length on (FlexAttention's grid block mask on permuted "
                             "inputs materialises an S x S mask: 128 GiB at 128K)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    card = torch.cuda.get_device_name().replace(" ", "_")
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    rows = []
    for seq in args.seqs:
        print(f"seq {seq}:", flush=True)
        capped = args.memory_cap_gib is not None and seq >= args.memory_cap_min_seq
        if capped:
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib / total_gib))
            print(f"  memory capped at {args.memory_cap_gib:.1f} GiB of {total_gib:.1f}", flush=True)
        torch.cuda.reset_peak_memory_stats()
        seq_rows = bench_seq(seq, args)
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
        print(f"  peak GPU memory at {seq}: {peak_gib:.1f} GiB (all methods, inputs included)", flush=True)
        for row in seq_rows:
            row["seq_peak_gib"] = peak_gib
            row["memory_cap_gib"] = args.memory_cap_gib if capped else None
        rows.extend(seq_rows)
        torch.cuda.empty_cache()
        write_json(rows, args, card)  # after every length: a run cut short keeps what it measured
    dense = {r["seq"]: r["ms"] for r in rows if r["method"] == "sdpa_cudnn"}
    print(f"\n{'seq':>8s} {'method':28s} {'pattern':15s} {'ms':>10s} {'x cuDNN':>8s}")
    for r in rows:
        speedup = dense.get(r["seq"], float("nan")) / r["ms"]
        r["speedup_vs_cudnn"] = speedup
        print(f"{r['seq']:8d} {r['method']:28s} {r['pattern']:15s} {r['ms']:10.2f} {speedup:8.2f}")
    stem = write_json(rows, args, card)
    plot(rows, stem + ".png", card)
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
