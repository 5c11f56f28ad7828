"""One layer's whole sparse prefill attention at long lengths on one GPU, through the library's
entry point (`sparse_attention_for_layout`: online estimation, per-head pattern choice, index
building and the kernel), for several head configs on a text + video + text prompt.

Shapes are Qwen2.5-VL-7B's (28 query heads, 4 kv heads, head dim 128, bf16); the video segment is
a grid of 16 x 16 patch tokens per frame. Reports the time (CUDA events, median after a warm-up)
and the peak GPU memory of each config next to that of the inputs and output, and writes JSON.

    python benchmarks/layer_long.py --tokens 262144 1048576
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import mminference as mmi  # noqa: E402
from mminference import AShape, Grid, Modality, QBoundary, TwoDBoundary, VerticalSlash  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM = 28, 4, 128
ROWS = COLS = 16
TEXT = 2048  # text tokens before and after the video


def prompt_layout(tokens: int) -> mmi.ModalityLayout:
    frames = (tokens - 2 * TEXT) // (ROWS * COLS)
    video = frames * ROWS * COLS
    seq = 2 * TEXT + video
    segments = (
        mmi.Segment(Modality.TEXT, 0, TEXT),
        mmi.Segment(Modality.VIDEO, TEXT, TEXT + video, mmi.VisualGrid(frames, ROWS, COLS)),
        mmi.Segment(Modality.TEXT, TEXT + video, seq),
    )
    return mmi.ModalityLayout(seq, segments)


def head_configs() -> dict:
    text_video = (Modality.TEXT, Modality.VIDEO)
    return {
        "auto": "auto",
        "a_shape": AShape(sink=1024, local=4096),
        "vertical_slash": VerticalSlash(num_vertical=1000, num_slash=4096),
        "grid": Grid(local=1024),
        "q_boundary": QBoundary({Modality.TEXT: VerticalSlash(1000, 4096), Modality.VIDEO: Grid(local=1024)}),
        "2d_boundary": TwoDBoundary({
            (Modality.VIDEO, Modality.VIDEO): Grid(local=1024),
            (Modality.VIDEO, Modality.TEXT): AShape(sink=TEXT, local=0),
            (Modality.TEXT, Modality.TEXT): AShape(sink=1024, local=4096),
            (text_video[0], text_video[1]): VerticalSlash(1000, 4096),
        }),
    }


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[262144, 1048576])
    parser.add_argument("--configs", nargs="+", default=list(head_configs()))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    device = torch.device("cuda")
    configs = head_configs()
    rows = []
    for tokens in args.tokens:
        layout = prompt_layout(tokens)
        seq = layout.seq_len
        gen = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(1, Q_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
        k = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
        v = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device=device, dtype=torch.bfloat16, generator=gen)
        io_gib = (q.numel() * 2 + k.numel() + v.numel()) * 2 / 2**30  # q, k, v and the output
        for name in args.configs:
            run = lambda: mmi.sparse_attention_for_layout(q, k, v, layout, configs[name])  # noqa: E731
            run()  # warm-up (and compilation of anything lazy)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            ms = median_ms(run, args.reps)
            peak_gib = (torch.cuda.max_memory_allocated() - base) / 2**30
            _, choices = mmi.sparse_attention_for_layout(q, k, v, layout, configs[name], return_choices=True)
            kinds = sorted({type(c.pattern).__name__ for c in choices})
            rows.append(dict(tokens=seq, config=name, ms=ms, peak_extra_gib=peak_gib, inputs_output_gib=io_gib,
                             patterns=kinds))
            print(f"{seq:8d} {name:15s} {ms:10.1f} ms  peak above inputs {peak_gib:6.2f} GiB "
                  f"(inputs + output {io_gib:.1f} GiB)  patterns {','.join(kinds)}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    card = torch.cuda.get_device_name()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"layer_long_{card.replace(' ', '_')}.json")
    with open(path, "w") as f:
        json.dump(dict(meta=dict(card=card, date=datetime.date.today().isoformat(), torch=torch.__version__,
                                 total_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30,
                                 command=" ".join(sys.argv)), rows=rows), f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
