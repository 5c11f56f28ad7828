"""Attention recall vs density for every per-head pattern on a synthetic video+text prompt (CPU).

The prompt (default) is `video_text_prompt_mrope`: text, a rendered video of moving shapes on a
static background (rows x cols patches per frame) and text, with Qwen2-VL multimodal RoPE on q and k.
`--old-generator` uses the earlier `video_text_prompt` (patch embeddings + noise + register patches,
no RoPE; --tokens-per-frame, 16 columns).

Recall = share of the causal softmax mass (float64) inside a pattern's mask, averaged over query
rows and heads; density = computed pairs (`SparseIndex.computed_pairs`) over causal pairs; error =
relative L2 error of `sparse_attention_for_layout` against dense float64 attention. Baselines: A-shape
only and vertical-slash only (the text-only method); the rest use the layout.

Usage: python benchmarks/recall.py [--frames 14 --rows 16 --cols 16 --head-dim 128 --old-generator
                                   --out benchmarks/results]
Writes recall.json and recall.png and prints a table. About 30 s on 2 CPU cores."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mminference import Modality, ModalityLayout, Segment, SparseIndex, VisualGrid  # noqa: E402
from mminference.attention import build_layout_index  # noqa: E402
from mminference.ops import sparse_attention  # noqa: E402
from mminference.patterns import AShape, Auto, Grid, QBoundary, TwoDBoundary, VerticalSlash  # noqa: E402
from mminference.synthetic import video_text_prompt, video_text_prompt_mrope  # noqa: E402

TEXT, VIDEO = Modality.TEXT, Modality.VIDEO
BLOCK_Q, BLOCK_K = 64, 64


def index_mask(index: SparseIndex, b: int, h: int, seq: int) -> torch.Tensor:
    """Bool `(S, S)` mask in original positions of (b, h), before causality (evaluation only)."""
    pick = lambda t: t[b if t.shape[0] > 1 else 0, h if t.shape[1] > 1 else 0]  # noqa: E731
    q_perm = pick(index.q_perm).long() if index.q_perm is not None else torch.arange(seq)
    k_perm = pick(index.k_perm).long() if index.k_perm is not None else torch.arange(seq)
    ranges, n_r = pick(index.kv_ranges).long(), pick(index.kv_range_count).long()
    cols, n_c = pick(index.kv_columns).long(), pick(index.kv_column_count).long()
    nqb = index.num_q_blocks
    diff = torch.zeros(nqb, seq + 1, dtype=torch.int32)
    valid = torch.arange(ranges.shape[1])[None] < n_r[:, None]
    blocks = torch.arange(nqb)[:, None].expand_as(valid)
    diff.index_put_((blocks[valid], ranges[..., 0][valid]), torch.tensor(1, dtype=torch.int32), accumulate=True)
    diff.index_put_((blocks[valid], ranges[..., 1][valid]), torch.tensor(-1, dtype=torch.int32), accumulate=True)
    slots = diff.cumsum(-1)[:, :seq] > 0
    cvalid = torch.arange(cols.shape[1])[None] < n_c[:, None]
    slots[torch.arange(nqb)[:, None].expand_as(cvalid)[cvalid], cols[cvalid]] = True
    keys = torch.zeros_like(slots)
    keys[:, k_perm] = slots
    mask = torch.zeros(seq, seq, dtype=torch.bool)
    mask[q_perm] = keys.repeat_interleave(index.block_q, 0)[:seq]
    return mask


def configs(tpf: int) -> list[tuple[str, str, object]]:
    """(family, label, pattern) sweeps."""
    out = [("A-shape only", f"sink 64 local {w}", AShape(64, w)) for w in (128, 256, 512, 1024)]
    out += [("vertical-slash only", f"{nv} v + {ns} s", VerticalSlash(nv, ns, 30, min(100, ns)))
            for nv, ns in ((64, 128), (256, 256), (1000, 512), (1000, 1024))]
    out += [("grid", f"local {w}", Grid(local=w, sink=64)) for w in (64, 256, 1024)]
    out += [("Q-boundary", f"text VS 256+{ns}, video grid local {w}",
             QBoundary({TEXT: VerticalSlash(256, ns, 30, 100), VIDEO: Grid(local=w)}))
            for ns, w in ((128, 64), (512, 256), (1024, 1024))]
    out += [("2D-boundary", f"text VS 256+{ns}, video grid local {w} + text sink",
             TwoDBoundary({(TEXT, TEXT): VerticalSlash(256, ns, 30, 100), (TEXT, VIDEO): VerticalSlash(256, ns, 30, 100),
                           (VIDEO, VIDEO): Grid(local=w), (VIDEO, TEXT): AShape(64, w)}))
            for ns, w in ((128, 64), (512, 256), (1024, 1024))]
    out += [("auto", f"A-shape(64, {w}) / VS(256, 512) / grid local {w}",
             Auto(ashape=AShape(64, w), vertical_slash=VerticalSlash(256, 512), grid=Grid(local=w, sink=64)))
            for w in (128, 512)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--rows", type=int, default=16, help="patch rows per frame (mRoPE generator)")
    parser.add_argument("--cols", type=int, default=16, help="patch columns per frame (mRoPE generator)")
    parser.add_argument("--head-dim", type=int, default=128, help="head dim (mRoPE generator)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-generator", action="store_true",
                        help="use video_text_prompt (no RoPE, no rendered video) instead")
    parser.add_argument("--tokens-per-frame", type=int, default=256, help="tokens per frame (--old-generator)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    start_time = time.perf_counter()
    if args.old_generator:
        generator = "video_text_prompt"
        tpf, cols = args.tokens_per_frame, 16
        prompt = video_text_prompt(text_before=256, frames=args.frames, tokens_per_frame=tpf, text_after=256,
                                   seed=args.seed)
    else:
        generator = "video_text_prompt_mrope"
        tpf, cols = args.rows * args.cols, args.cols
        prompt = video_text_prompt_mrope(text_before=256, frames=args.frames, rows=args.rows, cols=args.cols,
                                         text_after=256, head_dim=args.head_dim, seed=args.seed)
    q, k, v = prompt.q, prompt.k, prompt.v
    _, heads, seq, dim = q.shape
    layout = ModalityLayout.from_spans(seq, [Segment(VIDEO, *prompt.video_span,
                                                     VisualGrid(args.frames, tpf // cols, cols))])
    groups = heads // k.shape[1]
    scale = 1.0 / math.sqrt(dim)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    probs, dense = [], []
    for h in range(heads):  # float64 reference, one head at a time
        s = (q[0, h].double() @ k[0, h // groups].double().T) * scale
        p = torch.softmax(s.masked_fill(~causal, -math.inf), -1)
        probs.append(p)
        dense.append(p @ v[0, h // groups].double())
    dense_out = torch.stack(dense)[None]
    rows = []
    for family, label, pattern in configs(tpf):
        index, choices = build_layout_index(q, k, layout, pattern, block_q=BLOCK_Q, block_k=BLOCK_K)
        out = sparse_attention(q, k, v, index).double()
        recall = sum(float((probs[h] * index_mask(index, 0, h, seq)).sum()) for h in range(heads)) / (heads * seq)
        density = index.computed_pairs(seq) / (int(index.kv_ranges.shape[1]) * seq * (seq + 1) / 2)
        error = float((out - dense_out).norm() / dense_out.norm())
        picked = [type(c.pattern).__name__ for c in choices] if family == "auto" else None
        rows.append(dict(family=family, config=label, density=density, recall=recall, relative_error=error,
                         auto_choices=picked))
    print(f"synthetic prompt ({generator}): S={seq} (256 text, {args.frames} frames x {tpf} video, 256 text), "
          f"{heads} heads, head dim {dim}, block {BLOCK_Q}x{BLOCK_K}")
    print(f"{'family':20s} {'config':48s} {'density':>8s} {'recall':>8s} {'rel.err':>9s}")
    for r in rows:
        extra = f"  {r['auto_choices']}" if r["auto_choices"] else ""
        print(f"{r['family']:20s} {r['config']:48s} {r['density']:8.3f} {r['recall']:8.4f} "
              f"{r['relative_error']:9.2e}{extra}")
    os.makedirs(args.out, exist_ok=True)
    meta = dict(generator=generator, seq=seq, heads=heads, head_dim=dim, seed=args.seed, frames=args.frames, tokens_per_frame=tpf, block_q=BLOCK_Q, block_k=BLOCK_K,
                torch=torch.__version__, seconds=time.perf_counter() - start_time)
    with open(os.path.join(args.out, "recall.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for family in dict.fromkeys(r["family"] for r in rows):
            pts = sorted((r["density"], r["recall"]) for r in rows if r["family"] == family)
            ax.plot(*zip(*pts), marker="o", label=family)
        ax.set_xlabel("density (computed pairs / causal pairs)")
        ax.set_ylabel("attention recall (float64 softmax mass kept)")
        ax.set_title(f"synthetic video+text prompt ({generator}), S={seq}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "recall.png"), dpi=120)
    except ImportError:
        print("matplotlib missing: no PNG")
    print(f"wrote {args.out}/recall.json, recall.png in {time.perf_counter() - start_time:.1f} s")


if __name__ == "__main__":
    main()
