"""End-to-end time to first token: a Qwen2.5-VL-7B-shaped model (28 layers, hidden 3584, 28 query /
4 kv heads of 128, intermediate 18944, vocab 152064, bf16, random weights, no download) prefilling a
video prompt, dense (its SDPA attention with the cuDNN backend forced) vs `mminference.patch`.

TTFT = one prefill forward (`use_cache=True`, `logits_to_keep=1`) of the language model on a prompt of
text + video + text whose visual embeddings are written into `inputs_embeds` (no vision tower: it
costs the same for both), with the mRoPE positions and the layout from `mm_token_type_ids` /
`video_grid_thw` (256 tokens a frame). The query / key projections follow content
(`random_models.content_attention`) so the online estimates see structured attention. Each
(method, length) is timed once with CUDA events after a warm-up run of the same shapes (cuDNN plans,
allocator); the patched warm-up records the density. One card, one run.

Usage: python benchmarks/e2e.py [--tokens 32768 131072 262144 524288] [--config auto|PATH] [--out DIR]
Writes e2e_<card>.json and e2e_<card>.png under benchmarks/results/ and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mminference  # noqa: E402
from mminference.integration import random_models, video_prompts  # noqa: E402


def build_model(seed: int, self_logit: float):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            random_models.qwen2_5_vl_7b_config(), attn_implementation="sdpa", dtype=torch.bfloat16)
    if self_logit:
        random_models.content_attention(model, self_logit=self_logit, seed=seed)
    return model.eval()


def free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


@torch.no_grad()
def prefill(model, inputs: dict, dense: bool) -> tuple[float, torch.Tensor, float]:
    """One prefill: CUDA-event ms, last-token logits (float32, vocab) and peak GiB allocated."""
    torch.cuda.reset_peak_memory_stats()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    if dense:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = model(**inputs, use_cache=True, logits_to_keep=1)
    else:
        out = model(**inputs, use_cache=True, logits_to_keep=1)
    stop.record()
    torch.cuda.synchronize()
    logits = out.logits[0, -1].float().clone()
    del out  # the KV cache goes with it
    peak = torch.cuda.max_memory_allocated() / 2**30
    free()
    return start.elapsed_time(stop), logits, peak


def bench_length(model, tokens: int, args) -> dict:
    prompt = video_prompts.embedded_prompt(model, tokens, rows=16, cols=16, seed=args.seed)
    inputs = prompt.forward_inputs(model)
    del prompt
    row = dict(tokens=int(inputs["inputs_embeds"].shape[1]), video_tokens=None)
    row["video_tokens"] = int((inputs["mm_token_type_ids"] == 2).sum())
    try:
        prefill(model, inputs, dense=True)  # warm-up
        row["dense_ms"], dense_logits, row["dense_peak_gib"] = prefill(model, inputs, dense=True)
    except torch.cuda.OutOfMemoryError:
        row["dense_ms"], dense_logits, row["dense_peak_gib"] = None, None, None
        free()
    state = mminference.patch(model, args.config, min_prefill_tokens=1, track_density=True)
    try:
        prefill(model, inputs, dense=False)  # warm-up, with the density recorded
        densities = [d for _, d in state.stats.densities]
        mminference.patch(model, args.config, min_prefill_tokens=1)
        row["sparse_ms"], sparse_logits, row["sparse_peak_gib"] = prefill(model, inputs, dense=False)
    except torch.cuda.OutOfMemoryError:
        row["sparse_ms"], sparse_logits, densities = None, None, []
        free()
    finally:
        mminference.unpatch(model)
    row["density"] = sum(densities) / len(densities) if densities else None
    row["layer_density"] = densities
    if row["dense_ms"] and row["sparse_ms"]:
        row["speedup"] = row["dense_ms"] / row["sparse_ms"]
        row["logits_relative_error"] = float((sparse_logits - dense_logits).norm() / dense_logits.norm())
        row["top1_agrees"] = bool(sparse_logits.argmax() == dense_logits.argmax())
    del inputs
    free()
    return row


def plot(rows: list[dict], path: str, card: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("dense_ms", "dense (SDPA cuDNN)"), ("sparse_ms", "mminference.patch")):
        pts = [(r["tokens"], r[key] / 1e3) for r in rows if r.get(key)]
        if pts:
            ax_t.plot(*zip(*pts), marker="o", label=label)
    pts = [(r["tokens"], r["speedup"]) for r in rows if r.get("speedup")]
    if pts:
        ax_s.plot(*zip(*pts), marker="o", color="C2")
    for ax in (ax_t, ax_s):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
    ax_t.set_ylabel("time to first token (s)")
    ax_t.legend()
    ax_s.set_ylabel("TTFT speedup vs dense")
    ax_s.axhline(1.0, color="gray", lw=0.5)
    fig.suptitle(f"Qwen2.5-VL-7B shape, bf16, random weights, video prompt, {card}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32768, 131072, 262144])
    parser.add_argument("--config", default="auto", help="head config: 'auto' or a JSON file")
    parser.add_argument("--self-logit", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/e2e.py needs a CUDA device")
    card = torch.cuda.get_device_name()
    model = build_model(args.seed, args.self_logit)
    rows = []
    for tokens in args.tokens:
        print(f"{tokens} tokens ...", flush=True)
        rows.append(bench_length(model, tokens, args))
        print(json.dumps(rows[-1]), flush=True)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"\n{'tokens':>8s} {'dense ms':>10s} {'patched ms':>11s} {'speedup':>8s} {'density':>8s} "
          f"{'logit err':>10s} {'top-1':>6s} {'peak GiB d/p':>14s}")
    for r in rows:
        print(f"{r['tokens']:8d} {fmt(r['dense_ms'], '10.1f')} {fmt(r['sparse_ms'], '11.1f')} "
              f"{fmt(r.get('speedup'), '8.2f')} {fmt(r['density'], '8.3f')} "
              f"{fmt(r.get('logits_relative_error'), '10.2e')} {str(r.get('top1_agrees', '-')):>6s} "
              f"{fmt(r.get('dense_peak_gib'), '6.1f')}/{fmt(r.get('sparse_peak_gib'), '6.1f')}")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"e2e_{card.replace(' ', '_')}")
    meta = dict(card=card, date=datetime.date.today().isoformat(), torch=torch.__version__,
                command=" ".join(sys.argv), model="Qwen2.5-VL-7B shape, random weights, bf16",
                config=args.config, self_logit=args.self_logit)
    with open(stem + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    plot(rows, stem + ".png", card)
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
