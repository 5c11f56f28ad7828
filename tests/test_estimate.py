"""Last-query estimation: the op against a float64 re-derivation, and the pattern pickers."""

import math

import pytest
import torch

import mminference as mmi
from mminference import estimate, ops


def _reference_scores(q, k, last, query_end):
    """Dense float64 softmax of the estimating queries, reduced by column and by diagonal."""
    batch, q_heads, seq_q, dim = q.shape
    seq_k = k.shape[2]
    k64 = k.double().repeat_interleave(q_heads // k.shape[1], 1)
    rows = torch.arange(query_end - last, query_end)
    scores = torch.einsum("bhld,bhkd->bhlk", q.double()[:, :, rows], k64) / math.sqrt(dim)
    abs_pos = rows + seq_k - seq_q
    keys = torch.arange(seq_k)
    scores = scores.masked_fill(keys[None, :] > abs_pos[:, None], float("-inf"))
    probs = torch.softmax(scores, -1)
    vertical = probs.sum(2)
    slash = torch.zeros(batch, q_heads, seq_k, dtype=torch.float64)
    for r, a in enumerate(abs_pos.tolist()):
        slash[..., : a + 1] += probs[:, :, r, : a + 1].flip(-1)
    return vertical, slash


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seq_q,seq_k,last,query_end", [(100, 100, 64, 100), (70, 150, 16, 50), (5, 5, 5, 5)])
def test_estimate_scores_match_float64(dtype, seq_q, seq_k, last, query_end):
    gen = torch.Generator().manual_seed(seq_q + last)
    q = torch.randn(2, 4, seq_q, 64, generator=gen).to(dtype)
    k = torch.randn(2, 2, seq_k, 64, generator=gen).to(dtype)
    vertical, slash = ops.estimate_vertical_slash_scores(q, k, last=last, query_end=query_end)
    ref_vertical, ref_slash = _reference_scores(q, k, last, query_end)
    torch.testing.assert_close(vertical.double(), ref_vertical, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(slash.double(), ref_slash, atol=1e-4, rtol=1e-4)
    # Each estimating row's probabilities sum to one.
    torch.testing.assert_close(vertical.sum(-1).double(), torch.full((2, 4), float(last), dtype=torch.float64),
                               atol=1e-4, rtol=1e-5)


def test_estimate_rejects_bad_arguments():
    q, k = torch.randn(1, 2, 10, 64), torch.randn(1, 2, 10, 64)
    with pytest.raises(ValueError, match="query_end"):
        ops.estimate_vertical_slash_scores(q, k, query_end=11)
    with pytest.raises(ValueError, match="k: device|k: batch"):
        ops.estimate_vertical_slash_scores(q, torch.randn(2, 2, 10, 64))
    with pytest.raises(TypeError, match="k: dtype"):
        ops.estimate_vertical_slash_scores(q, k.double())


VERTICAL_ONLY_CASES = [
    # batch, q_heads, kv_heads, seq_q, seq_k, dim, last, query_end
    (2, 6, 2, 101, 101, 64, 64, 101),   # GQA group 3, odd length
    (1, 7, 1, 37, 203, 80, 13, 29),     # Sq < Sk, estimating rows end before Sq
    (2, 4, 4, 1, 9, 32, 1, 1),          # one query against a few keys
    (1, 3, 3, 64, 64, 128, 64, 64),     # every query estimates
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", VERTICAL_ONLY_CASES, ids=str)
def test_vertical_scores_only(case, dtype):
    """The vertical-only op gives the full op's vertical scores bit for bit, and the float64
    re-derivation's column sums."""
    batch, q_heads, kv_heads, seq_q, seq_k, dim, last, query_end = case
    gen = torch.Generator().manual_seed(sum(case))
    # q as transformers passes it: a (B, S, H, D) buffer seen as (B, H, S, D).
    q = torch.randn(batch, seq_q, q_heads, dim, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(batch, kv_heads, seq_k, dim, generator=gen)
    k[:, :, ::7] *= 3.0  # a few strong keys so the softmax is not flat
    k = k.to(dtype)
    vertical = ops.estimate_vertical_scores(q, k, last=last, query_end=query_end)
    assert vertical.shape == (batch, q_heads, seq_k) and vertical.dtype == torch.float32
    full_vertical, _ = ops.estimate_vertical_slash_scores(q, k, last=last, query_end=query_end)
    assert torch.equal(vertical, full_vertical)
    ref_vertical, _ = _reference_scores(q, k, last, query_end)
    torch.testing.assert_close(vertical.double(), ref_vertical, atol=1e-4, rtol=1e-4)
    assert torch.equal(estimate.column_mass(q, k, last=last, query_end=query_end), vertical)


def test_vertical_scores_only_defaults_and_errors():
    q, k = torch.randn(1, 4, 90, 64), torch.randn(1, 2, 120, 64)
    # last is capped at query_end; the default scale is 1 / sqrt(D).
    torch.testing.assert_close(ops.estimate_vertical_scores(q, k, last=100, query_end=40),
                               ops.estimate_vertical_slash_scores(q, k, last=40, query_end=40)[0], atol=0, rtol=0)
    torch.testing.assert_close(ops.estimate_vertical_scores(q, k, scale=0.125),
                               ops.estimate_vertical_scores(q, k), atol=0, rtol=0)
    with pytest.raises(ValueError, match="query_end"):
        ops.estimate_vertical_scores(q, k, query_end=91)
    with pytest.raises(TypeError, match="k: dtype"):
        ops.estimate_vertical_scores(q, k.double())


def test_vertical_slash_pickers_force_sink_and_local():
    vertical_score = torch.zeros(1, 1, 500)
    slash_score = torch.zeros(1, 1, 500)
    vertical_score[0, 0, 300] = 5.0
    slash_score[0, 0, 250] = 5.0
    vertical, slash = estimate.vertical_slash_from_scores(vertical_score, slash_score, 31, 101,
                                                          force_sink=30, force_local=100)
    assert vertical.tolist() == [[list(range(30)) + [300]]] and vertical.dtype == torch.int32
    assert slash.tolist() == [[list(range(100)) + [250]]]


@pytest.mark.parametrize("stride,phase", [(16, 3), (32, 31), (50, 0)])
def test_grid_detection_finds_planted_stride_and_phase(stride, phase):
    start, end = 40, 40 + stride * 12
    column_mass = torch.rand(1, 2, end + 30, generator=torch.Generator().manual_seed(stride)) * 0.1
    column_mass[..., start + phase:end:stride] += 1.0
    column_mass[..., end - 3] += 5.0  # a strong local peak must not decide the stride
    got_stride, got_phase = estimate.grid_from_scores(column_mass, (start, end), [8, 16, 32, 50, 64, 96, 100])
    assert got_stride.tolist() == [[stride, stride]] and got_phase.tolist() == [[phase, phase]]


def test_vertical_slash_capacity_extends_the_last_range():
    vertical = torch.tensor([[[0]]], dtype=torch.int32)
    slash = torch.tensor([[[0, 300, 600, 900]]], dtype=torch.int32)
    full = ops.build_vertical_slash_index(vertical, slash, 1024, 1024, block_q=64, block_k=64)
    capped = ops.build_vertical_slash_index(vertical, slash, 1024, 1024, block_q=64, block_k=64, max_ranges=2)
    for qb in range(16):
        n = int(full.kv_range_count[0, 0, qb])
        want = full.kv_ranges[0, 0, qb, :n].tolist()
        if n > 2:
            want = [want[0], [want[1][0], want[-1][1]]]
        assert capped.kv_ranges[0, 0, qb, : int(capped.kv_range_count[0, 0, qb])].tolist() == want
