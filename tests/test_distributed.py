"""Sequence-parallel sparse attention on 2 gloo ranks (CPU) against the single-process call and a
float64 dense reference; sharding helpers; clear errors (not hangs) for bad calls.

All distributed cases run in ONE spawn of 2 processes (module fixture; start-up dominates)."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

import distributed_cases as dc
from mminference import Dense, VerticalSlash, sparse_attention_for_layout
from mminference.attention import build_layout_index
from mminference.distributed import (HeadPartition, gather_sequence, local_head_config, maybe_sequence_parallel,
                                     sequence_parallel_sparse_attention, shard_bounds, shard_lengths, shard_sequence)
from reference import dense_mask_from_index, masked_attention_float64, relative_error

TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(out_dir, backend: str) -> list[dict]:
    """Runs `distributed_cases.worker` on 2 ranks; every rank's results."""
    context = mp.spawn(dc.worker, args=(_free_port(), str(out_dir), backend), nprocs=dc.WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the 2-rank run did not finish in {TIMEOUT_S} s (a hang)")
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(dc.WORLD)]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("gloo"), "gloo")


@pytest.fixture(scope="module")
def nccl_results(tmp_path_factory):
    if torch.cuda.device_count() < dc.WORLD:
        pytest.skip(f"needs {dc.WORLD} CUDA devices")
    return _spawn(tmp_path_factory.mktemp("nccl"), "nccl")


@pytest.mark.parametrize("name", [c.name for c in dc.CASES])
def test_matches_single_process(rank_results, name):
    case = dc.find(name)
    q, k, v = dc.inputs_for(case)
    layout, layer = dc.layout_for(case), dc.reference_layer(case)
    seq = q.shape[2]
    lengths = shard_lengths(seq, dc.WORLD)
    for r in range(dc.WORLD):
        assert rank_results[r][name].shape == (1, case.q_heads, lengths[r], case.head_dim)
    got = torch.cat([rank_results[r][name] for r in range(dc.WORLD)], dim=2)
    expected = sparse_attention_for_layout(q, k, v, layout, case.config, layer=layer)
    if case.dtype == torch.float32:
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    else:
        assert torch.equal(got, expected)
    # Independent: float64 dense attention under the mask of the single-process index.
    index, _ = build_layout_index(q, k, layout, case.config, layer)
    mask = dense_mask_from_index(index, 1, case.q_heads, seq, seq, causal=True)
    ref, _ = masked_attention_float64(q, k, v, mask, q.shape[-1] ** -0.5)
    assert relative_error(got, ref) < (1e-5 if case.dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("name", dc.HEAD_PARALLEL)
def test_head_parallel_matches_single_process(rank_results, name):
    """Ranks holding the whole sequence split the heads; every rank gets the full single-process output."""
    case = dc.find(name)
    q, k, v = dc.inputs_for(case)
    expected = sparse_attention_for_layout(q, k, v, dc.layout_for(case), case.config, layer=dc.reference_layer(case))
    for r in range(dc.WORLD):
        got = rank_results[r]["heads:" + name]
        if case.dtype == torch.float32:
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(got, expected)


def test_patch_with_parallel_heads_matches_one_process(rank_results):
    """`patch(model, parallel="heads")` under a 2-rank group gives the logits of the same patched
    model in one process (where it runs every head itself)."""
    expected, single_calls = dc.patched_logits("heads")  # no process group here: the single-process path
    assert single_calls == 0
    for r in range(dc.WORLD):
        logits, calls = rank_results[r]["patched_logits"]
        assert calls == len(dc.PATCH_CONFIG.patterns)  # every layer's prefill split its heads
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_after_errors_the_group_still_works(rank_results):
    case = dc.CASES[1]
    q, k, v = dc.inputs_for(case)
    got = torch.cat([rank_results[r]["after_errors"] for r in range(dc.WORLD)], dim=2)
    torch.testing.assert_close(got, sparse_attention_for_layout(q, k, v, dc.layout_for(case), case.config),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, message", [
    ("q_heads_indivisible", "q_heads: 3 query heads cannot be split evenly over 2 ranks"),
    ("kv_group_straddles", "kv_heads: 3 kv heads on 2 ranks"),
    ("head_dim_differs", "q_shard: dtype / B / H / D differs across ranks"),
    ("k_tokens_differ", "rank 1 has q (B=1, S_r=452), k (B=1, S_r=451)"),
    ("layout_differs", "layout: differs across ranks"),
    ("layout_length", "layout: seq_len 775 differs from the 904 tokens of all ranks"),
    ("gather_shape_differs", "x: shape / dtype / seq_dim outside the sequence dim differs across ranks"),
])
def test_errors_on_every_rank(rank_results, name, message):
    for r in range(dc.WORLD):
        kind, text = rank_results[r][name]
        assert kind == "ValueError", (r, kind, text)
        assert message in text, (r, text)


def test_shard_and_gather(rank_results):
    full = torch.arange(2 * 13 * 3, dtype=torch.float32).reshape(2, 13, 3)
    assert torch.equal(rank_results[0]["shard"], full[:, 0:7])
    assert torch.equal(rank_results[1]["shard"], full[:, 7:13])
    for r in range(dc.WORLD):
        assert torch.equal(rank_results[r]["gather"], full)


def test_shard_lengths_rule():
    for total in range(0, 30):
        for world in range(1, 6):
            lengths = shard_lengths(total, world)
            assert sum(lengths) == total and max(lengths) - min(lengths) <= 1
            assert lengths == [t.shape[0] for t in torch.arange(total).tensor_split(world)]
            starts = [shard_bounds(total, world, r)[0] for r in range(world)]
            assert starts == [sum(lengths[:r]) for r in range(world)]
    with pytest.raises(ValueError, match="rank must be"):
        shard_bounds(10, 2, 2)
    with pytest.raises(ValueError, match="world must be"):
        shard_lengths(10, 0)


def test_head_partition():
    split = HeadPartition(28, 4, 4)  # Qwen2.5-VL-7B on 4 ranks: 7 query heads, 1 kv head each
    assert [list(split.q_range(r)) for r in (0, 3)] == [list(range(0, 7)), list(range(21, 28))]
    assert [list(split.kv_range(r)) for r in range(4)] == [[0], [1], [2], [3]]
    for r in range(4):  # every local query head's global kv head (h // 7) is held locally
        assert all(h // 7 in split.kv_range(r) for h in split.q_range(r))
    replicated = HeadPartition(8, 2, 4)
    assert replicated.kv_replicated and [list(replicated.kv_range(r)) for r in range(4)] == [[0], [0], [1], [1]]
    for r in range(4):
        assert all(h // 4 in replicated.kv_range(r) for h in replicated.q_range(r))
    with pytest.raises(ValueError, match="q_heads: 28 query heads cannot be split evenly over 8 ranks"):
        HeadPartition(28, 4, 8)
    with pytest.raises(ValueError, match="kv_heads: 6 kv heads on 4 ranks"):
        HeadPartition(12, 6, 4)
    with pytest.raises(ValueError, match="not a multiple"):
        HeadPartition(6, 4, 2)


def test_local_head_config_slices_heads():
    vs = VerticalSlash(num_vertical=64, num_slash=128, force_sink=8, force_local=16)
    config = local_head_config([[Dense(), vs, Dense(), vs]], 0, 4, range(2, 4))
    assert config.for_layer(0, 2) == [Dense(), vs]
    with pytest.raises(ValueError, match="num_heads"):
        local_head_config([[Dense(), vs]], 0, 4, range(0, 2))


def test_without_process_group():
    q = torch.zeros(1, 2, 8, 4)
    assert maybe_sequence_parallel(q, q, q, None, Dense(), 0) is None
    with pytest.raises(ValueError, match="group: torch.distributed is not initialised"):
        sequence_parallel_sparse_attention(q, q, q, None, Dense())
    with pytest.raises(ValueError, match="group: torch.distributed is not initialised"):
        gather_sequence(q)
    with pytest.raises(TypeError, match="k_shard must be a torch.Tensor"):
        sequence_parallel_sparse_attention(q, None, q, None, Dense())
    with pytest.raises(ValueError, match="seq_dim must be"):
        shard_sequence(q, seq_dim=4)


@pytest.mark.gpu
@pytest.mark.parametrize("name", [c.name for c in dc.CASES])
def test_nccl_matches_single_gpu(nccl_results, name):
    """2 GPUs over NCCL against the single-GPU call (kernels may reduce in another order for fewer
    heads, so a tolerance) and the float64 dense reference."""
    case = dc.find(name)
    q, k, v = (t.cuda() for t in dc.inputs_for(case))
    layout, layer = dc.layout_for(case), dc.reference_layer(case)
    got = torch.cat([nccl_results[r][name] for r in range(dc.WORLD)], dim=2)
    expected = sparse_attention_for_layout(q, k, v, layout, case.config, layer=layer).cpu()
    assert relative_error(got, expected) < (1e-5 if case.dtype == torch.float32 else 1e-2)
    index, _ = build_layout_index(q, k, layout, case.config, layer)  # the GPU's own estimate
    mask = dense_mask_from_index(index, 1, case.q_heads, q.shape[2], q.shape[2], causal=True)
    ref, _ = masked_attention_float64(q.cpu(), k.cpu(), v.cpu(), mask, q.shape[-1] ** -0.5)
    assert relative_error(got, ref) < (1e-4 if case.dtype == torch.float32 else 2e-2)


@pytest.mark.gpu
def test_nccl_errors_on_every_rank(nccl_results):
    for name in ("q_heads_indivisible", "head_dim_differs", "k_tokens_differ", "layout_differs"):
        for r in range(dc.WORLD):
            assert nccl_results[r][name][0] == "ValueError", (name, r, nccl_results[r][name])
