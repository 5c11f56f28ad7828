"""Bad input to sparse_attention raises a Python exception naming the argument, never a crash."""

import pytest
import torch

import mminference as mmi


def _inputs(seq=100, dim=64, q_heads=4, kv_heads=2, dtype=torch.float32):
    q = torch.randn(1, q_heads, seq, dim, dtype=dtype)
    k = torch.randn(1, kv_heads, seq, dim, dtype=dtype)
    v = torch.randn(1, kv_heads, seq, dim, dtype=dtype)
    return q, k, v, mmi.SparseIndex.causal(seq, seq, 64)


def _with(index, **fields):
    import dataclasses
    return dataclasses.replace(index, **fields)


def _call(q, k, v, index):
    return mmi.sparse_attention(q, k, v, index)


def test_wrong_dtype_names_argument():
    q, k, v, index = _inputs()
    with pytest.raises(TypeError, match="k: dtype"):
        _call(q, k.double(), v, index)
    with pytest.raises(TypeError, match="q: dtype"):
        _call(q.double(), k.double(), v.double(), index)
    with pytest.raises(TypeError, match="kv_ranges: dtype must be int32"):
        _call(q, k, v, _with(index, kv_ranges=index.kv_ranges.long()))


def test_wrong_rank_and_shapes():
    q, k, v, index = _inputs()
    with pytest.raises(ValueError, match="q: expected 4 dims"):
        _call(q[0], k, v, index)
    with pytest.raises(ValueError, match="v: shape"):
        _call(q, k, v[:, :, :50], index)
    with pytest.raises(ValueError, match="query heads"):
        _call(q[:, :3], k, v, index)
    with pytest.raises(ValueError, match="kv_ranges"):
        _call(q, k, v, _with(index, kv_ranges=index.kv_ranges[:, :, :1]))
    with pytest.raises(ValueError, match="q_perm"):
        _call(q, k, v, _with(index, q_perm=torch.arange(99, dtype=torch.int32).reshape(1, 1, 99)))


def test_zero_length_sequence_and_unsupported_head_dim():
    q, k, v, index = _inputs()
    with pytest.raises(ValueError, match="q: sequence length must be > 0"):
        _call(q[:, :, :0], k, v, index)
    q, k, v, index = _inputs(dim=72)
    with pytest.raises(ValueError, match="head_dim 72 is not supported"):
        _call(q, k, v, index)


def test_device_mismatch_is_reported():
    q, k, v, index = _inputs()
    with pytest.raises(ValueError, match="kv_ranges: expected device"):
        _call(q, k, v, _with(index, kv_ranges=index.kv_ranges.to("meta")))


def test_bad_index_values_name_the_entry():
    q, k, v, index = _inputs()
    bad = index.kv_ranges.clone()
    bad[0, 0, 1, 0, 1] = 101
    with pytest.raises(ValueError, match=r"kv_ranges\[0, 0, 1, 0\] = \[0, 101\)"):
        _call(q, k, v, _with(index, kv_ranges=bad))
    bad = index.kv_ranges.clone()
    bad[0, 0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="kv_ranges"):
        _call(q, k, v, _with(index, kv_ranges=bad))
    count = index.kv_range_count.clone()
    count[0, 0, 0] = 2
    with pytest.raises(ValueError, match="kv_range_count"):
        _call(q, k, v, _with(index, kv_range_count=count))


def _columns_index(columns, ranges=((90, 100),)):
    nqb = 2
    ranges_t = torch.tensor([list(ranges)] * nqb, dtype=torch.int32).reshape(1, 1, nqb, len(ranges), 2)
    cols = torch.tensor([columns] * nqb, dtype=torch.int32).reshape(1, 1, nqb, len(columns))
    return mmi.SparseIndex(64, ranges_t, torch.full((1, 1, nqb), len(ranges), dtype=torch.int32), cols,
                           torch.full((1, 1, nqb), len(columns), dtype=torch.int32))


def test_unsorted_duplicate_and_overlapping_columns():
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="kv_columns.*strictly increasing"):
        _call(q, k, v, _columns_index([5, 3]))
    with pytest.raises(ValueError, match="kv_columns.*strictly increasing"):
        _call(q, k, v, _columns_index([3, 3]))
    with pytest.raises(ValueError, match="kv_columns.*inside kv_ranges"):
        _call(q, k, v, _columns_index([3, 95]))
    with pytest.raises(ValueError, match="kv_columns.*outside"):
        _call(q, k, v, _columns_index([3, 100]))
    with pytest.raises(ValueError, match="kv_ranges.*sorted and disjoint"):
        _call(q, k, v, _columns_index([3], ranges=((50, 60), (55, 70))))


def test_bad_permutations():
    q, k, v, index = _inputs()
    perm = torch.arange(100, dtype=torch.int32).reshape(1, 1, 100).clone()
    perm[0, 0, 5] = 6
    with pytest.raises(ValueError, match="q_perm.*not a permutation"):
        _call(q, k, v, _with(index, q_perm=perm))
    perm[0, 0, 5] = 100
    with pytest.raises(ValueError, match=r"k_perm\[0, 0, 5\] = 100 is outside"):
        _call(q, k, v, _with(index, k_perm=perm))


def test_causal_needs_seq_k_at_least_seq_q():
    q = torch.randn(1, 1, 100, 64)
    k = v = torch.randn(1, 1, 50, 64)
    with pytest.raises(ValueError, match="seq_k >= seq_q"):
        _call(q, k, v, mmi.SparseIndex.causal(100, 100, 64))


def test_non_contiguous_head_dim_is_rejected():
    q, k, v, index = _inputs()
    q_strided = torch.randn(1, 4, 100, 128)[..., ::2]
    with pytest.raises(ValueError, match="q: head_dim must be contiguous"):
        _call(q_strided, k, v, index)


def test_differently_broadcast_index_arrays_are_checked_pair_by_pair():
    # kv_ranges per head, kv_range_count per batch: the pair met at (b=1, h=1) must be checked too.
    q = torch.randn(2, 2, 64, 64)
    k = v = torch.randn(2, 2, 64, 64)
    ranges = torch.tensor([[0, 64], [-1000, 1000]], dtype=torch.int32).reshape(1, 2, 1, 1, 2)
    count = torch.tensor([0, 1], dtype=torch.int32).reshape(2, 1, 1)
    index = mmi.SparseIndex.from_ranges(64, ranges, count)
    with pytest.raises(ValueError, match=r"kv_ranges\[1, 1, 0, 0\]"):
        _call(q, k, v, index)
