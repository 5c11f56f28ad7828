"""Cases and the spawned worker of tests/test_distributed.py (a module of its own so that
torch.multiprocessing's spawned processes can import the worker by name).

The worker joins a 2-rank gloo group, runs every case on its sequence shard and saves
`{case: output shard or (error type, message)}` to `<out_dir>/rank<r>.pt`; the test process
computes the single-process references from the same deterministic inputs."""

from __future__ import annotations

import dataclasses
import datetime
import os
import traceback
from typing import Callable, Optional

import torch
import torch.distributed as dist

from mminference import AShape, Dense, Grid, HeadConfig, Modality, QBoundary, VerticalSlash
from mminference.distributed import (gather_sequence, head_parallel_sparse_attention,
                                     sequence_parallel_sparse_attention, shard_sequence)
from mminference.layout import ModalityLayout, Segment, VisualGrid
from mminference.synthetic import video_text_prompt

WORLD = 2
TEXT_BEFORE, FRAMES, ROWS, COLS = 128, 5, 8, 16  # 128 tokens per frame
VS = VerticalSlash(num_vertical=64, num_slash=128, force_sink=8, force_local=16)
GRID = Grid(local=64)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    config: object
    dtype: torch.dtype = torch.float32
    q_heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    text_after: int = 136  # S = 128 + 640 + 136 = 904 (even shards); odd values give uneven shards


CASES = [
    Case("dense", Dense()),
    Case("a_shape", AShape(sink=64, local=128)),
    Case("vertical_slash_bf16", VS, torch.bfloat16, q_heads=8),
    Case("grid_uneven_shards", GRID, text_after=137),
    Case("q_boundary_bf16", QBoundary({Modality.TEXT: VS, Modality.VIDEO: GRID}), torch.bfloat16, q_heads=8),
    Case("per_head_config", HeadConfig([[Dense(), AShape(sink=64, local=128)], [VS, GRID, AShape(32, 64), VS]])),
    Case("replicated_kv", VS, q_heads=4, kv_heads=1),
    Case("auto", "auto"),
]
LAYER = {"per_head_config": 1}  # the case's layer (others: 0)
HEAD_PARALLEL = ["vertical_slash_bf16", "per_head_config", "replicated_kv", "auto"]  # also run head-parallel
# The patched tiny model (parallel="heads"): one pattern per head of its 4 heads, both layers.
PATCH_FAMILY, PATCH_ITEMS = "qwen2_5_vl", [("image", 8, 8), ("video", 8, 16, 16)]
PATCH_HEADS = (AShape(32, 64), VerticalSlash(64, 64, 16, 16), Grid(local=64), "auto")
PATCH_CONFIG = HeadConfig([PATCH_HEADS, PATCH_HEADS])


def patched_logits(parallel: str) -> tuple[torch.Tensor, int]:
    """Prefill logits of the tiny Qwen2.5-VL model patched with PATCH_CONFIG (deterministic), and how
    many attention calls went through `head_parallel_sparse_attention`."""
    import mminference
    import mminference.distributed as mdist
    from integration_inputs import prompt_for
    from mminference.integration import random_models

    model = random_models.build(PATCH_FAMILY, seed=1)
    prompt = prompt_for(PATCH_FAMILY, PATCH_ITEMS, seed=3)
    calls = []
    original = mdist.head_parallel_sparse_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    mdist.head_parallel_sparse_attention = counted
    state = mminference.patch(model, PATCH_CONFIG, min_prefill_tokens=1, parallel=parallel)
    try:
        with torch.no_grad():
            logits = model(**prompt["inputs"]).logits
    finally:
        mminference.unpatch(model)
        mdist.head_parallel_sparse_attention = original
    assert state.stats.sparse > 0, "the patched prefill never took the sparse path"
    return logits, len(calls)


def layout_for(case: Case) -> ModalityLayout:
    seq = TEXT_BEFORE + FRAMES * ROWS * COLS + case.text_after
    video = Segment(Modality.VIDEO, TEXT_BEFORE, TEXT_BEFORE + FRAMES * ROWS * COLS, VisualGrid(FRAMES, ROWS, COLS))
    return ModalityLayout.from_spans(seq, [video])


def inputs_for(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full q `(1, Hq, S, D)`, k / v `(1, Hkv, S, D)` with a video grid (deterministic)."""
    p = video_text_prompt(TEXT_BEFORE, FRAMES, ROWS * COLS, case.text_after, case.q_heads, case.kv_heads,
                          case.head_dim, seed=3, dtype=case.dtype)
    return p.q, p.k, p.v


def _shards(q, k, v, device: torch.device):
    return tuple(shard_sequence(t, seq_dim=2).to(device) for t in (q, k, v))


def _error_cases(rank: int, device: torch.device) -> dict[str, Callable[[], object]]:
    """Calls that must fail with a ValueError on EVERY rank (a hang would time the test out)."""
    base = Case("base", VS)
    layout = layout_for(base)
    q, k, v = _shards(*inputs_for(base), device)
    odd = Case("odd", VS, q_heads=3, kv_heads=1)
    straddle = Case("straddle", VS, q_heads=6, kv_heads=3)
    head_dim = Case("d32", VS, head_dim=32) if rank == 1 else base
    other_layout = ModalityLayout.from_spans(layout.seq_len, [Segment(Modality.VIDEO, 0, 640, VisualGrid(5, 8, 16))])
    attend = sequence_parallel_sparse_attention

    def shards_of(case: Case):
        return _shards(*inputs_for(case), device)

    return {
        "q_heads_indivisible": lambda: attend(*shards_of(odd), layout_for(odd), VS),
        "kv_group_straddles": lambda: attend(*shards_of(straddle), layout_for(straddle), VS),
        "head_dim_differs": lambda: attend(*shards_of(head_dim), layout, VS),
        "k_tokens_differ": lambda: attend(q, k[:, :, 1:] if rank == 1 else k, v, layout, VS),
        "layout_differs": lambda: attend(q, k, v, other_layout if rank == 1 else layout, VS),
        "layout_length": lambda: attend(q, k, v, layout_for(Case("short", VS, text_after=7)), VS),
        "gather_shape_differs": lambda: gather_sequence(torch.zeros(1, 5, 3 + rank, device=device)),
    }


def _run(rank: int, device: torch.device) -> dict:
    results: dict[str, object] = {}
    for case in CASES:
        q, k, v = _shards(*inputs_for(case), device)
        results[case.name] = sequence_parallel_sparse_attention(q, k, v, layout_for(case), case.config,
                                                                layer=LAYER.get(case.name, 0)).cpu()
    for name in HEAD_PARALLEL:
        case = find(name)
        q, k, v = (t.to(device) for t in inputs_for(case))
        results["heads:" + name] = head_parallel_sparse_attention(q, k, v, layout_for(case), case.config,
                                                                  layer=LAYER.get(name, 0)).cpu()
    if device.type == "cpu":
        results["patched_logits"] = patched_logits("heads")
    full = torch.arange(2 * 13 * 3, dtype=torch.float32, device=device).reshape(2, 13, 3)
    results["shard"] = shard_sequence(full).cpu()
    results["gather"] = gather_sequence(shard_sequence(full)).cpu()
    for name, call in _error_cases(rank, device).items():
        try:
            call()
            results[name] = ("no error", "")
        except Exception as error:  # noqa: BLE001 - recorded for the test to check its type and message
            results[name] = (type(error).__name__, str(error))
    # The group still works after the errors (no rank left inside a collective).
    case = CASES[1]
    results["after_errors"] = sequence_parallel_sparse_attention(*_shards(*inputs_for(case), device),
                                                                 layout_for(case), case.config).cpu()
    return results


def worker(rank: int, port: int, out_dir: str, backend: str = "gloo") -> None:
    """Rank `rank` of 2: gloo on CPU, or NCCL on cuda:<rank> (NVLink multicast off)."""
    torch.set_num_threads(1)  # two ranks on two cores
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60), device_id=device if backend == "nccl" else None)
    try:
        torch.save(_run(rank, device), os.path.join(out_dir, f"rank{rank}.pt"))
    except Exception:
        with open(os.path.join(out_dir, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


def reference_layer(case: Case) -> int:
    return LAYER.get(case.name, 0)


def find(name: str) -> Optional[Case]:
    return next((c for c in CASES if c.name == name), None)
