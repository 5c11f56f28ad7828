"""One layer's sparse prefill attention, sequence-parallel over the processes torchrun starts.

    torchrun --nproc-per-node 4 examples/torchrun_prefill.py --tokens 1048576 --pattern grid
    python examples/torchrun_prefill.py --tokens 65536          # one process: the single-GPU path

Shapes are Qwen2.5-VL-7B's (28 query heads, 4 kv heads, head dim 128, bf16) on a prompt of text,
a video of 16 x 16 patch tokens per frame, and text; q / k / v are random. Each rank draws the
whole q / k / v from one seed and keeps its contiguous shard (`shard_sequence`), so every world
size sees the same inputs. NCCL on CUDA (NVLink multicast off: NCCL_NVLS_ENABLE=0 unless set),
gloo on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# NVLink multicast (NVLS) can take a shared host's GPUs out of service; keep it off unless the
# caller set otherwise. Must be set before NCCL initialises.
os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import mminference as mmi  # noqa: E402
from mminference import AShape, Grid, Modality, VerticalSlash  # noqa: E402
from mminference.distributed import maybe_sequence_parallel, shard_sequence  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM = 28, 4, 128
ROWS = COLS = 16
TEXT = 2048  # text tokens before and after the video
PATTERNS = {
    "a_shape": AShape(sink=1024, local=4096),
    "vertical_slash": VerticalSlash(num_vertical=1000, num_slash=4096),
    "grid": Grid(local=1024),
    "auto": "auto",
}


def video_layout(tokens: int) -> mmi.ModalityLayout:
    """Text, whole frames of video, text; `seq_len` is `tokens` rounded down to whole frames."""
    frames = max(1, (tokens - 2 * TEXT) // (ROWS * COLS))
    video = frames * ROWS * COLS
    segment = mmi.Segment(Modality.VIDEO, TEXT, TEXT + video, mmi.VisualGrid(frames, ROWS, COLS))
    return mmi.ModalityLayout.from_spans(2 * TEXT + video, [segment])


def init_distributed() -> torch.device:
    """Joins torchrun's group (NCCL on CUDA, gloo on CPU) when launched by it; returns this rank's device."""
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return device


def random_inputs(seq: int, device: torch.device, seed: int = 0,
                  dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, ...]:
    """This rank's shards `(1, H, S_r, 128)` of q (28 heads), k, v (4 heads) drawn whole from `seed`
    (the whole sequence without a process group)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shards = []
    for heads in (Q_HEADS, KV_HEADS, KV_HEADS):
        full = torch.randn(1, heads, seq, HEAD_DIM, device=device, dtype=dtype, generator=gen)
        shards.append(shard_sequence(full, seq_dim=2).clone() if dist.is_initialized() else full)
        del full
    return tuple(shards)


def attention(q, k, v, layout, pattern) -> torch.Tensor:
    """Sequence-parallel when a process group of 2+ ranks is up, single-process otherwise."""
    out = maybe_sequence_parallel(q, k, v, layout, pattern, layer=0)
    return mmi.sparse_attention_for_layout(q, k, v, layout, pattern) if out is None else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="grid")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = init_distributed()
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    layout = video_layout(args.tokens)
    q, k, v = random_inputs(layout.seq_len, device)
    pattern = PATTERNS[args.pattern]
    attention(q, k, v, layout, pattern)  # warm-up
    for rep in range(args.reps):
        if dist.is_initialized():
            dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = attention(q, k, v, layout, pattern)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = torch.tensor([(time.perf_counter() - start) * 1e3], device=device)
        if dist.is_initialized():
            dist.all_reduce(ms, op=dist.ReduceOp.MAX)  # the slowest rank sets the layer's time
        if rank == 0:
            print(f"{layout.seq_len} tokens on {world} rank(s) ({device.type}), {args.pattern}: "
                  f"{ms.item():.1f} ms (rep {rep}); rank 0's output {tuple(out.shape)}", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
