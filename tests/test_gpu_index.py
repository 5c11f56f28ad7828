"""CUDA index builders and estimation against their CPU ops.

The builders must give the CPU's int outputs exactly (valid entries up to the counts, the counts,
and the full permutations); the estimation must match the CPU's float32 scores to 1e-3 (each
estimating row's probabilities sum to 1). Bad input raises the CPU's exceptions.
"""

import random
import re

import pytest
import torch

from mminference import ops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch._C._dispatch_has_kernel_for_dispatch_key("mminference::build_grid_index", "CUDA"),
        reason="mminference was built without its CUDA kernels",
    ),
]


def _sorted_sample(r: random.Random, upper: int, n: int, forced: int) -> list[int]:
    values = set(range(min(forced, upper)))
    n = max(min(n, upper), len(values))
    while len(values) < n:
        values.add(r.randrange(upper))
    return sorted(values)


def _head_lists(r, batch, heads, upper, n, forced) -> torch.Tensor:
    lists = [[_sorted_sample(r, upper, n, forced) for _ in range(heads)] for _ in range(batch)]
    return torch.tensor(lists, dtype=torch.int32).reshape(batch, heads, -1)


def _valid(entries: torch.Tensor, count: torch.Tensor, dims_after: int) -> torch.Tensor:
    """Entries of slot index < count along the dim after (b, h, qb); padding zeroed."""
    slots = torch.arange(entries.shape[3]).view(1, 1, 1, -1, *([1] * (dims_after - 1)))
    mask = slots < count.view(*count.shape, 1, *([1] * (dims_after - 1)))
    return torch.where(mask, entries, torch.zeros_like(entries))


@pytest.mark.parametrize("seed", range(24))
def test_vertical_slash_matches_cpu(seed):
    r = random.Random(seed)
    batch, heads = 2, r.randint(1, 3)
    seq_q = r.randint(1, 1500)
    seq_k = seq_q + r.choice([0, r.randint(1, 1000)])
    block_q, block_k = r.choice([1, 16, 64, 100, 128]), r.choice([1, 7, 32, 64, 128])
    forced = r.choice([0, 64])
    vertical = _head_lists(r, batch, heads, seq_k, r.randint(0, 200), forced)
    slash = _head_lists(r, batch, heads, seq_k, r.randint(0, 400), forced)
    # None: capacity that never overflows; small caps make blocks extend their last range.
    max_ranges = r.choice([None, 1, 2, 3]) if slash.shape[-1] > 0 else None
    kwargs = dict(block_q=block_q, block_k=block_k, max_ranges=max_ranges)
    want = ops.build_vertical_slash_index(vertical, slash, seq_q, seq_k, **kwargs)
    got = ops.build_vertical_slash_index(vertical.cuda(), slash.cuda(), seq_q, seq_k, **kwargs)
    assert got.kv_ranges.is_cuda and got.kv_columns.is_cuda
    assert torch.equal(got.kv_range_count.cpu(), want.kv_range_count)
    assert torch.equal(got.kv_column_count.cpu(), want.kv_column_count)
    assert torch.equal(_valid(got.kv_ranges.cpu(), want.kv_range_count, 2),
                       _valid(want.kv_ranges, want.kv_range_count, 2))
    assert torch.equal(_valid(got.kv_columns.cpu(), want.kv_column_count, 1),
                       _valid(want.kv_columns, want.kv_column_count, 1))


@pytest.mark.parametrize("seed", range(24))
def test_grid_matches_cpu(seed):
    r = random.Random(1000 + seed)
    batch, heads = 2, r.randint(1, 3)
    seq = r.randint(1, 3000)
    span_start = r.randrange(seq)
    span_end = r.randint(span_start + 1, seq)
    strides = [r.randint(1, min(span_end - span_start, 200)) for _ in range(batch * heads)]
    stride = torch.tensor(strides, dtype=torch.int32).view(batch, heads)
    phase = torch.tensor([r.randrange(s) for s in strides], dtype=torch.int32).view(batch, heads)
    kwargs = dict(block_q=r.choice([1, 5, 64, 128]), block_k=r.choice([1, 3, 32, 64]),
                  span=(span_start, span_end), sink=r.choice([0, 1, 64, 10**6]),
                  local=r.choice([1, 7, 300, 10**6]), use_hlines=r.random() < 0.5,
                  use_vlines=r.random() < 0.5)
    want = ops.build_grid_index(stride, phase, seq, **kwargs)
    got = ops.build_grid_index(stride.cuda(), phase.cuda(), seq, **kwargs)
    assert torch.equal(got.q_perm.cpu(), want.q_perm)
    assert torch.equal(got.k_perm.cpu(), want.k_perm)
    assert torch.equal(got.kv_range_count.cpu(), want.kv_range_count)
    assert torch.equal(_valid(got.kv_ranges.cpu(), want.kv_range_count, 2),
                       _valid(want.kv_ranges, want.kv_range_count, 2))


ESTIMATE_CASES = [
    # batch, q_heads, kv_heads, seq_q, seq_k, head_dim, last, query_end
    (2, 4, 2, 300, 1000, 64, 64, 300),
    (2, 7, 1, 700, 1300, 128, 17, 500),
    (2, 6, 3, 333, 333, 80, 1, 333),
    (1, 8, 2, 1000, 2501, 96, 40, 999),
]


def _estimate_inputs(case, dtype, seed):
    batch, q_heads, kv_heads, seq_q, seq_k, dim, last, query_end = case
    gen = torch.Generator().manual_seed(seed)
    # q as transformers passes it: a (B, S, H, D) buffer seen as (B, H, S, D).
    q = torch.randn(batch, seq_q, q_heads, dim, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(batch, kv_heads, seq_k, dim, generator=gen)
    k[:, :, ::97] *= 4.0  # a few strong keys so the softmax is not flat
    return q, k.to(dtype), last, query_end


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ESTIMATE_CASES, ids=str)
def test_estimate_matches_cpu(case, dtype):
    q, k, last, query_end = _estimate_inputs(case, dtype, seed=sum(case))
    want_vertical, want_slash = ops.estimate_vertical_slash_scores(q, k, last=last, query_end=query_end)
    got_vertical, got_slash = ops.estimate_vertical_slash_scores(q.cuda(), k.cuda(), last=last,
                                                                 query_end=query_end)
    assert got_vertical.is_cuda and got_vertical.dtype == torch.float32
    torch.testing.assert_close(got_vertical.cpu(), want_vertical, atol=1e-3, rtol=0)
    torch.testing.assert_close(got_slash.cpu(), want_slash, atol=1e-3, rtol=0)
    mass = torch.full(got_vertical.shape[:2], float(last), dtype=torch.float64)
    torch.testing.assert_close(got_vertical.sum(-1).double().cpu(), mass, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(got_slash.sum(-1).double().cpu(), mass, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ESTIMATE_CASES + [(1, 6, 2, 77, 333, 128, 64, 77)], ids=str)
def test_vertical_scores_only_match_full_and_cpu(case, dtype):
    """Without slash scores the kernel's vertical-only pass 2 gives the full pass's vertical
    scores (same column-sum code) and the CPU's to 1e-3."""
    q, k, last, query_end = _estimate_inputs(case, dtype, seed=sum(case) + 1)
    q_gpu, k_gpu = q.cuda(), k.cuda()
    got = ops.estimate_vertical_scores(q_gpu, k_gpu, last=last, query_end=query_end)
    assert got.is_cuda and got.dtype == torch.float32 and got.shape == (q.shape[0], q.shape[1], k.shape[2])
    full, _ = ops.estimate_vertical_slash_scores(q_gpu, k_gpu, last=last, query_end=query_end)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-6)  # expected exact
    want = ops.estimate_vertical_scores(q, k, last=last, query_end=query_end)
    torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=0)
    mass = torch.full(got.shape[:2], float(last), dtype=torch.float64)
    torch.testing.assert_close(got.sum(-1).double().cpu(), mass, atol=1e-3, rtol=1e-4)


def test_estimate_copies_unaligned_keys():
    q, k, last, query_end = _estimate_inputs((1, 4, 2, 200, 450, 64, 32, 200), torch.bfloat16, 7)
    padded = torch.zeros(*k.shape[:3], 68, dtype=k.dtype)
    padded[..., :64] = k
    unaligned = padded.cuda()[..., :64]  # row stride 68 elements: not 16-byte rows
    want = ops.estimate_vertical_slash_scores(q, k, last=last, query_end=query_end)
    got = ops.estimate_vertical_slash_scores(q.cuda(), unaligned, last=last, query_end=query_end)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, atol=1e-3, rtol=0)
    column_mass = ops.estimate_vertical_scores(q.cuda(), unaligned, last=last, query_end=query_end)
    torch.testing.assert_close(column_mass.cpu(), want[0], atol=1e-3, rtol=0)


def _message(exc_info) -> str:
    return str(exc_info.value).splitlines()[0]


def test_bad_lists_raise_the_cpu_errors():
    r = random.Random(5)
    vertical = _head_lists(r, 2, 3, 600, 20, 0)
    slash = _head_lists(r, 2, 3, 600, 30, 0)
    bad_slash = slash.clone()
    bad_slash[1, 2, 5], bad_slash[1, 2, 6] = slash[1, 2, 6], slash[1, 2, 5]
    bad_vertical = vertical.clone()
    bad_vertical[1, 0, -1] = 600
    for v, s, name in [(vertical, bad_slash, "slash"), (bad_vertical, slash, "vertical")]:
        with pytest.raises(ValueError) as cpu:
            ops.build_vertical_slash_index(v, s, 500, 600, block_q=64, block_k=32)
        with pytest.raises(ValueError, match=rf"\b{name}\b") as gpu:
            ops.build_vertical_slash_index(v.cuda(), s.cuda(), 500, 600, block_q=64, block_k=32)
        assert _message(gpu) == _message(cpu)
        if name == "slash":
            assert re.search(r"slash\[1, 2, :\] must be strictly increasing", _message(gpu))


def test_bad_grid_parameters_raise_the_cpu_errors():
    for bad_stride, bad_phase, name in [([[16, 0]], [[3, 0]], "stride"), ([[16, 8]], [[3, 8]], "phase")]:
        st, ph = torch.tensor(bad_stride, dtype=torch.int32), torch.tensor(bad_phase, dtype=torch.int32)
        with pytest.raises(ValueError) as cpu:
            ops.build_grid_index(st, ph, 200, span=(10, 190))
        with pytest.raises(ValueError, match=rf"\b{name}\[0, 1\]") as gpu:
            ops.build_grid_index(st.cuda(), ph.cuda(), 200, span=(10, 190))
        assert _message(gpu) == _message(cpu)


def test_estimate_rejections():
    q = torch.randn(1, 2, 100, 64, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(1, 2, 100, 64, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="last"):
        ops.estimate_vertical_slash_scores(q, k, last=65)
    with pytest.raises(TypeError, match="q: dtype"):
        ops.estimate_vertical_slash_scores(q.float(), k.float())
    with pytest.raises(ValueError, match="head_dim"):
        ops.estimate_vertical_slash_scores(q[..., :48], k[..., :48])
    with pytest.raises(ValueError, match="query_end"):
        ops.estimate_vertical_slash_scores(q, k, query_end=101)
    with pytest.raises(ValueError, match="last"):
        ops.estimate_vertical_scores(q, k, last=65)
    with pytest.raises(TypeError, match="q: dtype"):
        ops.estimate_vertical_scores(q.float(), k.float())


@pytest.mark.parametrize("name", ["build_vertical_slash_index", "build_grid_index",
                                  "estimate_vertical_slash_scores", "estimate_vertical_scores"])
def test_opcheck_on_cuda(name):
    samples = {
        "build_vertical_slash_index": lambda: (
            torch.tensor([[[0, 5, 77]]], dtype=torch.int32, device="cuda"),
            torch.tensor([[[0, 40]]], dtype=torch.int32, device="cuda"), 200, 200, 64, 32, 2),
        "build_grid_index": lambda: (
            torch.tensor([[16]], dtype=torch.int32, device="cuda"),
            torch.tensor([[3]], dtype=torch.int32, device="cuda"), 200, 64, 32, 10, 190, 4, 50, True, True),
        "estimate_vertical_slash_scores": lambda: (
            torch.randn(1, 4, 90, 64, dtype=torch.bfloat16, device="cuda"),
            torch.randn(1, 2, 120, 64, dtype=torch.bfloat16, device="cuda"), 16, 80, 0.125),
        "estimate_vertical_scores": lambda: (
            torch.randn(1, 4, 90, 64, dtype=torch.bfloat16, device="cuda"),
            torch.randn(1, 2, 120, 64, dtype=torch.bfloat16, device="cuda"), 16, 80, 0.125),
    }
    torch.library.opcheck(getattr(torch.ops.mminference, name).default, samples[name]())
