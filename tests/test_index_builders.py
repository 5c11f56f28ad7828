"""Index builders against independent plain-Python re-derivations of their documented rules.

The rules restated here come from the C headers csrc/core/mmi_index_builders.h (the builders) and
csrc/core/mmi_sparse_index.h (the index representation), not from the .c implementations:

  shared:   align(lo, hi) = [floor(lo / block_k) * block_k, min(ceil(hi / block_k) * block_k, limit))
            then ranges are sorted by start and merged when they overlap or touch; never empty.
  A-shape:  query block rows [qs, qe), off = Sk - Sq, limit = qe + off:
            sink keys [0, sink) and the local windows of all rows [qs + off - local + 1, qe + off).
  V-slash:  a_lo = qs + off, a_hi = qe - 1 + off: slash d covers keys [a_lo - d, a_hi - d], clipped
            to [0, qe + off), aligned, merged; verticals v <= a_hi in no range become columns.
  grid:     lines = p in [span_start, span_end) with (p - span_start) % stride == phase; both
            permutations = lines ascending, then the others ascending. Per slot block, see
            `ref_grid` below (hlines branch / union of vlines, sink, local), limit S; the sink
            is clipped to the block's causal limit pmax + 1 (see ref_grid for why).
  modality: stable grouping by id, offsets = exclusive prefix sums of the per-id counts.

Nothing below calls into mminference except the op under test.
"""

from __future__ import annotations

import random
import re

import pytest
import torch

from mminference import ops

SEEDS = list(range(64))


# ---------------------------------------------------------------------------------------------
# Shared rule helpers (plain Python).


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def align(lo: int, hi: int, block_k: int, limit: int) -> tuple[int, int]:
    """Outward alignment to block_k, clipped to `limit` (documented shared rule)."""
    lo = max(lo, 0)
    return (lo // block_k) * block_k, min(ceil_div(hi, block_k) * block_k, limit)


def merge(ranges) -> list[tuple[int, int]]:
    """Sort by start, merge ranges that overlap or touch."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def aligned_union(raw, block_k: int, limit: int) -> list[tuple[int, int]]:
    """Clip each raw key range to [0, limit), drop empty ones, align outward, merge."""
    kept = []
    for lo, hi in raw:
        lo, hi = max(lo, 0), min(hi, limit)
        if hi > lo:
            kept.append(align(lo, hi, block_k, limit))
    return merge(kept)


def read_index(index) -> dict:
    """{(b, h): [(ranges, columns) per query block]} from a SparseIndex, valid entries only."""
    rng, rc = index.kv_ranges.tolist(), index.kv_range_count.tolist()
    col, cc = index.kv_columns.tolist(), index.kv_column_count.tolist()
    out = {}
    for b in range(len(rc)):
        for h in range(len(rc[b])):
            out[b, h] = [
                ([tuple(r) for r in rng[b][h][qb][: rc[b][h][qb]]], list(col[b][h][qb][: cc[b][h][qb]]))
                for qb in range(len(rc[b][h]))
            ]
    return out


def check_structure(blocks, limits, block_k: int, max_ranges: int, max_columns: int, ctx: str):
    """Documented invariants: ranges sorted, disjoint, non-empty, aligned, inside [0, limit];
    columns strictly increasing, inside [0, limit), outside every range of the block."""
    assert len(blocks) == len(limits), ctx
    for qb, ((ranges, cols), limit) in enumerate(zip(blocks, limits)):
        where = f"{ctx} qb={qb} ranges={ranges} cols={cols} limit={limit}"
        assert 0 <= len(ranges) <= max_ranges, where
        assert 0 <= len(cols) <= max_columns, where
        prev_end = None
        for lo, hi in ranges:
            assert 0 <= lo < hi <= limit, where
            assert lo % block_k == 0, where
            assert hi % block_k == 0 or hi == limit, where
            if prev_end is not None:
                assert lo >= prev_end, where  # sorted and disjoint
            prev_end = hi
        for c0, c1 in zip(cols, cols[1:]):
            assert c0 < c1, where
        for c in cols:
            assert 0 <= c < limit, where
            assert not any(lo <= c < hi for lo, hi in ranges), where


def block_key_mask(blocks, seq_q: int, seq_k: int, block_q: int) -> torch.Tensor:
    """Dense bool (Sq slots, Sk slots) mask expanded from per-block ranges + columns."""
    mask = torch.zeros(seq_q, seq_k, dtype=torch.bool)
    for qb, (ranges, cols) in enumerate(blocks):
        qs, qe = qb * block_q, min((qb + 1) * block_q, seq_q)
        for lo, hi in ranges:
            mask[qs:qe, lo:hi] = True
        if cols:
            mask[qs:qe, torch.tensor(cols, dtype=torch.long)] = True
    return mask


def names(exc_info, *candidates):
    msg = str(exc_info.value)
    assert any(re.search(rf"\b{re.escape(c)}\b", msg) for c in candidates), msg


# ---------------------------------------------------------------------------------------------
# A-shape


def ref_a_shape(seq_q, seq_k, block_q, block_k, sink, local):
    off = seq_k - seq_q
    out = []
    for qb in range(ceil_div(seq_q, block_q)):
        qs, qe = qb * block_q, min((qb + 1) * block_q, seq_q)
        limit = qe + off
        raw = [(0, sink), (qs + off - local + 1, qe + off)]
        out.append((aligned_union(raw, block_k, limit), []))
    return out


def a_shape_case(seed):
    r = random.Random(seed)
    seq_q = r.choice([1, 2, r.randint(1, 40), r.randint(1, 700)])
    seq_k = seq_q + r.choice([0, 0, r.randint(1, 8), r.randint(1, 400)])
    block_q = r.choice([1, 3, 16, 64, 128, r.randint(1, 200)])
    block_k = r.choice([1, 5, 16, 64, 128, r.randint(1, 200)])
    sink = r.choice([0, 0, 1, r.randint(1, 200), seq_k, seq_k + r.randint(1, 50)])
    local = r.choice([1, 1, r.randint(1, 64), r.randint(1, 600), seq_k + r.randint(0, 50)])
    return seq_q, seq_k, block_q, block_k, sink, local


def a_shape_limits(seq_q, seq_k, block_q):
    return [min((qb + 1) * block_q, seq_q) + seq_k - seq_q for qb in range(ceil_div(seq_q, block_q))]


A_SHAPE_FIXED = [
    (300, 400, 64, 64, 10, 100),
    (1, 1, 1, 1, 0, 1),
    (129, 129, 128, 64, 0, 1),
    (257, 1000, 128, 128, 128, 4096),
    (100, 100, 1, 1, 1, 1),
    (77, 203, 7, 13, 0, 5),
]


@pytest.mark.parametrize("case", [a_shape_case(s) for s in SEEDS] + A_SHAPE_FIXED, ids=str)
def test_a_shape_matches_rule(case):
    seq_q, seq_k, block_q, block_k, sink, local = case
    index = ops.build_a_shape_index(seq_q, seq_k, block_q=block_q, block_k=block_k, sink=sink, local=local)
    nqb = ceil_div(seq_q, block_q)
    assert tuple(index.kv_ranges.shape) == (1, 1, nqb, 2, 2)
    assert tuple(index.kv_range_count.shape) == (1, 1, nqb)
    assert index.kv_ranges.dtype == torch.int32 and index.kv_range_count.dtype == torch.int32
    got = read_index(index)[0, 0]
    check_structure(got, a_shape_limits(seq_q, seq_k, block_q), block_k, 2, 0, f"a_shape{case}")
    assert got == ref_a_shape(*case), f"a_shape{case}"


@pytest.mark.parametrize("seed", SEEDS[:24])
def test_a_shape_dense_mask_contains_row_rule(seed):
    seq_q, seq_k, block_q, block_k, sink, local = case = a_shape_case(1000 + seed)
    index = ops.build_a_shape_index(seq_q, seq_k, block_q=block_q, block_k=block_k, sink=sink, local=local)
    mask = block_key_mask(read_index(index)[0, 0], seq_q, seq_k, block_q)
    off = seq_k - seq_q
    i = torch.arange(seq_q)[:, None] + off  # absolute query position
    j = torch.arange(seq_k)[None, :]
    causal = j <= i
    required = causal & ((j < sink) | (j >= i - local + 1))
    assert not (required & ~mask).any(), f"a_shape{case}: a sink/local key is missing"
    # every row's block key set stays below the block's causal limit
    limits = torch.tensor(a_shape_limits(seq_q, seq_k, block_q)).repeat_interleave(block_q)[:seq_q]
    assert not (mask & (j >= limits[:, None])).any(), f"a_shape{case}: key past the causal limit"


def test_a_shape_hand_computed():
    # off = 100; block 2: rows 128..191, limit 292, local from 228 - 99 = 129 -> aligned 128
    got = read_index(ops.build_a_shape_index(300, 400, block_q=64, block_k=64, sink=10, local=100))
    assert got[0, 0] == [
        ([(0, 164)], []), ([(0, 228)], []), ([(0, 64), (128, 292)], []),
        ([(0, 64), (192, 356)], []), ([(0, 64), (256, 400)], []),
    ]


def test_a_shape_errors():
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(10, 10, block_q=4, block_k=4, sink=-1, local=4)
    names(e, "sink")
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(10, 10, block_q=4, block_k=4, sink=0, local=0)
    names(e, "local")
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(0, 10, block_q=4, block_k=4, sink=0, local=4)
    names(e, "seq_q")
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(10, 9, block_q=4, block_k=4, sink=0, local=4)
    names(e, "seq_k")
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(10, 10, block_q=0, block_k=4, sink=0, local=4)
    names(e, "block_q")
    with pytest.raises(ValueError) as e:
        ops.build_a_shape_index(10, 10, block_q=4, block_k=0, sink=0, local=4)
    names(e, "block_k")


# ---------------------------------------------------------------------------------------------
# Vertical-slash


def ref_vertical_slash(vertical, slash, seq_q, seq_k, block_q, block_k):
    """vertical, slash: nested lists [B][H][n]."""
    off = seq_k - seq_q
    out = {}
    for b in range(len(vertical)):
        for h in range(len(vertical[b])):
            blocks = []
            for qb in range(ceil_div(seq_q, block_q)):
                qs, qe = qb * block_q, min((qb + 1) * block_q, seq_q)
                a_lo, a_hi, limit = qs + off, qe - 1 + off, qe + off
                ranges = aligned_union([(a_lo - d, a_hi - d + 1) for d in slash[b][h]], block_k, limit)
                cols = [v for v in vertical[b][h]
                        if v <= a_hi and not any(lo <= v < hi for lo, hi in ranges)]
                blocks.append((ranges, cols))
            out[b, h] = blocks
    return out


def sorted_sample(r, upper, n):
    n = min(n, upper)
    return sorted(r.sample(range(upper), n))


def with_entry(r, values, entry, upper):
    """`values` (sorted, distinct, in [0, upper)) with `entry` forced in, same length."""
    if entry in values:
        return values
    pool = [x for x in range(upper) if x != entry]
    return sorted(r.sample(pool, len(values) - 1) + [entry])


def vs_case(seed):
    r = random.Random(seed)
    batch, heads = r.choice([(1, 1), (1, 3), (2, 1), (2, 3)])
    seq_q = r.choice([1, r.randint(1, 30), r.randint(1, 500)])
    seq_k = seq_q + r.choice([0, 0, r.randint(1, 10), r.randint(1, 300)])
    block_q = r.choice([1, 4, 16, 64, 128, r.randint(1, 150)])
    block_k = r.choice([1, 8, 16, 64, 128, r.randint(1, 150)])
    nv = r.choice([0, 1, r.randint(0, 12), r.randint(0, 60)])
    # NS = 0 (an empty slash list) is exercised separately: see test_vertical_slash_empty_slash
    ns = r.choice([1, 1, r.randint(1, 12), r.randint(1, 40)])
    nv, ns = min(nv, seq_k), min(ns, seq_k)
    vertical, slash = [], []
    for _ in range(batch):
        vb, sb = [], []
        for _ in range(heads):
            v = sorted_sample(r, seq_k, nv)
            s = sorted_sample(r, seq_k, ns)
            if ns and r.random() < 0.3:  # make sure the main diagonal and the edges show up
                s = with_entry(r, s, 0, seq_k)
            if nv and r.random() < 0.3:
                v = with_entry(r, v, r.choice([0, seq_k - 1]), seq_k)
            vb.append(v)
            sb.append(s)
        vertical.append(vb)
        slash.append(sb)
    return vertical, slash, seq_q, seq_k, block_q, block_k


def vs_tensors(vertical, slash, r):
    v = torch.tensor(vertical, dtype=torch.int32).reshape(len(vertical), len(vertical[0]), -1)
    s = torch.tensor(slash, dtype=torch.int32).reshape(len(slash), len(slash[0]), -1)
    if r.random() < 0.3:  # non-contiguous (B, H) strides are accepted
        v = v.transpose(0, 1).contiguous().transpose(0, 1)
        s = s.transpose(0, 1).contiguous().transpose(0, 1)
    return v, s


VS_FIXED = [
    # slash 0 only (diagonal), verticals sink-like; seq not a multiple of blocks; chunked prefill
    ([[[0, 1, 2, 3]]], [[[0]]], 100, 230, 64, 64),
    ([[[]]], [[[0, 5, 17]]], 1, 1000, 1, 1),
    ([[[0, 64, 128]]], [[[0, 64, 128]]], 129, 129, 128, 64),
]


@pytest.mark.parametrize("seed", SEEDS)
def test_vertical_slash_matches_rule(seed):
    r = random.Random(10_000 + seed)
    vertical, slash, seq_q, seq_k, block_q, block_k = case = vs_case(seed)
    _check_vs(case, r)


@pytest.mark.parametrize("case", VS_FIXED, ids=str)
def test_vertical_slash_fixed(case):
    _check_vs(case, random.Random(0))


@pytest.mark.parametrize("case", [
    ([[[5, 999]]], [[[]]], 1, 1000, 1, 1),
    ([[[]]], [[[]]], 70, 70, 64, 64),
    ([[[0, 3, 9], [1, 2, 40]], [[7, 8, 9], [0, 50, 69]]], [[[], []], [[], []]], 33, 70, 16, 8),
], ids=str)
def test_vertical_slash_empty_slash(case):
    _check_vs(case, random.Random(0))


def _check_vs(case, r):
    vertical, slash, seq_q, seq_k, block_q, block_k = case
    v, s = vs_tensors(vertical, slash, r)
    index = ops.build_vertical_slash_index(v, s, seq_q, seq_k, block_q=block_q, block_k=block_k)
    batch, heads, nv, ns = v.shape[0], v.shape[1], v.shape[2], s.shape[2]
    nqb = ceil_div(seq_q, block_q)
    # Default capacity: min(NS, ceil(Sk / block_k)), which merged aligned bands never exceed.
    assert tuple(index.kv_ranges.shape) == (batch, heads, nqb, min(ns, ceil_div(seq_k, block_k)), 2)
    assert tuple(index.kv_range_count.shape) == (batch, heads, nqb)
    assert tuple(index.kv_columns.shape) == (batch, heads, nqb, nv)
    assert tuple(index.kv_column_count.shape) == (batch, heads, nqb)
    got = read_index(index)
    want = ref_vertical_slash(vertical, slash, seq_q, seq_k, block_q, block_k)
    limits = a_shape_limits(seq_q, seq_k, block_q)
    ctx = f"vs(seq_q={seq_q}, seq_k={seq_k}, block_q={block_q}, block_k={block_k})"
    for key in want:
        check_structure(got[key], limits, block_k, ns, nv, f"{ctx} bh={key}")
        assert got[key] == want[key], (f"{ctx} bh={key} vertical={vertical[key[0]][key[1]]} "
                                       f"slash={slash[key[0]][key[1]]}")


@pytest.mark.parametrize("seed", SEEDS[:24])
def test_vertical_slash_dense_mask_contains_row_rule(seed):
    r = random.Random(20_000 + seed)
    vertical, slash, seq_q, seq_k, block_q, block_k = vs_case(5000 + seed)
    v, s = vs_tensors(vertical, slash, r)
    got = read_index(ops.build_vertical_slash_index(v, s, seq_q, seq_k, block_q=block_q, block_k=block_k))
    off = seq_k - seq_q
    i = torch.arange(seq_q)[:, None] + off
    j = torch.arange(seq_k)[None, :]
    causal = j <= i
    for (b, h), blocks in got.items():
        mask = block_key_mask(blocks, seq_q, seq_k, block_q)
        required = torch.zeros(seq_q, seq_k, dtype=torch.bool)
        for d in slash[b][h]:
            required |= (i - j) == d
        for col in vertical[b][h]:
            required |= j == col
        required &= causal
        missing = (required & ~mask).nonzero().tolist()
        assert not missing, f"b={b} h={h}: (row, key) pairs missing, first {missing[:5]}"
        limits = torch.tensor(a_shape_limits(seq_q, seq_k, block_q)).repeat_interleave(block_q)[:seq_q]
        assert not (mask & (j >= limits[:, None])).any()


def test_vertical_slash_hand_computed():
    # seq 10, blocks of 4 rows, block_k 2. Block 1 (rows 4..7): slash 0 -> [4, 8), slash 5 ->
    # [0, 3) -> [0, 4), touching -> merged. Block 2 (rows 8, 9): slash 5 -> [3, 5) -> [2, 6),
    # verticals 1 and 7 fall in no range -> columns.
    v = torch.tensor([[[1, 7]]], dtype=torch.int32)
    s = torch.tensor([[[0, 5]]], dtype=torch.int32)
    got = read_index(ops.build_vertical_slash_index(v, s, 10, 10, block_q=4, block_k=2))
    assert got[0, 0] == [([(0, 4)], []), ([(0, 8)], []), ([(2, 6), (8, 10)], [1, 7])]


def _vs(vertical, slash, seq_q=20, seq_k=20, dtype=torch.int32):
    v = torch.tensor(vertical, dtype=dtype).reshape(1, 1, -1)
    s = torch.tensor(slash, dtype=dtype).reshape(1, 1, -1)
    return ops.build_vertical_slash_index(v, s, seq_q, seq_k, block_q=4, block_k=4)


@pytest.mark.parametrize("bad", [[5, 3], [3, 3], [0, 20], [-1, 3], [20]], ids=str)
def test_vertical_slash_bad_vertical(bad):
    with pytest.raises(ValueError) as e:
        _vs(bad, [0, 1])
    names(e, "vertical")


@pytest.mark.parametrize("bad", [[5, 3], [3, 3], [0, 20], [-1, 3], [20]], ids=str)
def test_vertical_slash_bad_slash(bad):
    with pytest.raises(ValueError) as e:
        _vs([0, 1], bad)
    names(e, "slash")


def test_vertical_slash_errors():
    # ranges bound to seq_k, not seq_q: 25 is valid with seq_k = 30
    _vs([25], [25], seq_q=20, seq_k=30)
    with pytest.raises(TypeError) as e:
        _vs([0, 1], [0, 1], dtype=torch.int64)
    names(e, "vertical")
    with pytest.raises(TypeError) as e:
        ops.build_vertical_slash_index(torch.zeros(1, 1, 1, dtype=torch.int32),
                                       torch.zeros(1, 1, 1, dtype=torch.int64), 8, 8)
    names(e, "slash")
    with pytest.raises(ValueError) as e:
        ops.build_vertical_slash_index(torch.zeros(1, 2, dtype=torch.int32),
                                       torch.zeros(1, 1, 2, dtype=torch.int32), 8, 8)
    names(e, "vertical")
    with pytest.raises(ValueError) as e:
        ops.build_vertical_slash_index(torch.zeros(1, 1, 1, dtype=torch.int32),
                                       torch.zeros(1, 1, 1, 1, dtype=torch.int32), 8, 8)
    names(e, "slash")
    with pytest.raises(ValueError) as e:
        ops.build_vertical_slash_index(torch.zeros(1, 1, 1, dtype=torch.int32),
                                       torch.zeros(2, 1, 1, dtype=torch.int32), 8, 8)
    names(e, "slash", "vertical")
    with pytest.raises(ValueError) as e:
        _vs([0], [0], seq_q=0, seq_k=20)
    names(e, "seq_q")
    with pytest.raises(ValueError) as e:
        _vs([0], [0], seq_q=21, seq_k=20)
    names(e, "seq_k", "seq_q")
    with pytest.raises(ValueError) as e:
        ops.build_vertical_slash_index(torch.zeros(1, 1, 1, dtype=torch.int32),
                                       torch.zeros(1, 1, 1, dtype=torch.int32), 8, 8, block_k=0)
    names(e, "block_k")
    # an unsorted entry in a later (b, h) row is caught too
    v = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.int32)
    with pytest.raises(ValueError) as e:
        ops.build_vertical_slash_index(v, torch.zeros(1, 2, 1, dtype=torch.int32), 8, 8)
    names(e, "vertical")


# ---------------------------------------------------------------------------------------------
# Grid


def ref_grid(stride, phase, seq, block_q, block_k, span_start, span_end, sink, local, hlines, vlines):
    """stride, phase: nested lists [B][H]. Returns {(b, h): (perm, lines, blocks)}."""
    out = {}
    for b in range(len(stride)):
        for h in range(len(stride[b])):
            st, ph = stride[b][h], phase[b][h]
            lines = [p for p in range(span_start, span_end) if (p - span_start) % st == ph]
            line_set = set(lines)
            others = [p for p in range(seq) if p not in line_set]
            perm = lines + others
            n = len(lines)

            def L(x):
                return sum(1 for p in lines if p < x)

            def O(x):
                return sum(1 for p in others if p < x)

            blocks = []
            for qb in range(ceil_div(seq, block_q)):
                a, e = qb * block_q, min((qb + 1) * block_q, seq)
                pmin, pmax = min(perm[a:e]), max(perm[a:e])
                if hlines and a < n:
                    raw = [(0, L(pmax + 1)), (n + O(0), n + O(pmax + 1))]
                else:
                    raw = []
                    if vlines:
                        raw.append((0, L(pmax + 1)))
                    # The grid paragraph of the header writes the sink as [0, L(sink)) and
                    # [n, n + O(sink)) with limit S; the op also clips it to the block's causal
                    # limit pmax + 1 (the header's shared rule: ranges are "clipped to the block's
                    # causal limit"). Keys in [pmax + 1, sink) are causally dead for every row of
                    # the block, so the clipped form is the one re-derived here.
                    sink_end = min(sink, pmax + 1)
                    raw += [(0, L(sink_end)), (n, n + O(sink_end))]
                    lo = pmin - local + 1
                    raw += [(L(lo), L(pmax + 1)), (n + O(lo), n + O(pmax + 1))]
                blocks.append((aligned_union(raw, block_k, seq), []))
            out[b, h] = (perm, lines, blocks)
    return out


def grid_case(seed):
    r = random.Random(seed)
    batch, heads = r.choice([(1, 1), (1, 2), (2, 1), (2, 3)])
    seq = r.choice([1, r.randint(1, 40), r.randint(1, 400)])
    if r.random() < 0.3:
        span_start, span_end = 0, seq
    else:
        span_start = r.randint(0, seq - 1)
        span_end = r.randint(span_start + 1, seq)
    span_len = span_end - span_start
    stride, phase = [], []
    for _ in range(batch):
        sb, pb = [], []
        for _ in range(heads):
            st = r.choice([1, min(2, span_len), r.randint(1, span_len), span_len, r.randint(1, min(span_len, 12))])
            ph = r.choice([0, st - 1, r.randint(0, st - 1)])
            sb.append(st)
            pb.append(ph)
        stride.append(sb)
        phase.append(pb)
    block_q = r.choice([1, 4, 16, 64, 128, r.randint(1, 100)])
    block_k = r.choice([1, 8, 16, 64, 128, r.randint(1, 100)])
    sink = r.choice([0, 0, 1, r.randint(0, 64), seq + r.randint(0, 10)])
    local = r.choice([1, 1, r.randint(1, 32), r.randint(1, 300)])
    hlines, vlines = r.choice([True, False]), r.choice([True, False])
    return stride, phase, seq, block_q, block_k, span_start, span_end, sink, local, hlines, vlines


def run_grid(case):
    stride, phase, seq, block_q, block_k, span_start, span_end, sink, local, hlines, vlines = case
    return ops.build_grid_index(
        torch.tensor(stride, dtype=torch.int32), torch.tensor(phase, dtype=torch.int32), seq,
        block_q=block_q, block_k=block_k, span=(span_start, span_end), sink=sink, local=local,
        use_hlines=hlines, use_vlines=vlines)


GRID_FIXED = [
    # stride 1 (every span position a line), phase = stride - 1, whole sequence, tiny blocks
    ([[1]], [[0]], 10, 1, 1, 0, 10, 0, 1, True, True),
    ([[1]], [[0]], 10, 1, 1, 0, 10, 0, 1, False, False),
    ([[4]], [[3]], 300, 64, 64, 17, 290, 8, 30, True, True),
    ([[4]], [[3]], 300, 64, 64, 17, 290, 8, 30, False, True),
    ([[7]], [[0]], 129, 128, 64, 0, 129, 0, 1, False, False),
    ([[1]], [[0]], 1, 1, 1, 0, 1, 0, 1, True, True),
]


@pytest.mark.parametrize("seed", SEEDS)
def test_grid_matches_rule(seed):
    _check_grid(grid_case(30_000 + seed))


@pytest.mark.parametrize("case", GRID_FIXED, ids=str)
def test_grid_fixed(case):
    _check_grid(case)


def _check_grid(case):
    stride, phase, seq, block_q, block_k, span_start, span_end, sink, local, hlines, vlines = case
    index = run_grid(case)
    batch, heads = len(stride), len(stride[0])
    nqb = ceil_div(seq, block_q)
    assert tuple(index.q_perm.shape) == (batch, heads, seq)
    assert tuple(index.k_perm.shape) == (batch, heads, seq)
    assert tuple(index.kv_ranges.shape) == (batch, heads, nqb, 4, 2)
    assert tuple(index.kv_range_count.shape) == (batch, heads, nqb)
    got = read_index(index)
    q_perm, k_perm = index.q_perm.tolist(), index.k_perm.tolist()
    want = ref_grid(*case)
    for (b, h), (perm, lines, blocks) in want.items():
        ctx = f"grid{case} bh={(b, h)}"
        qp, kp = q_perm[b][h], k_perm[b][h]
        # bijections of 0..S-1, identical for queries and keys, lines first and ascending
        assert sorted(qp) == list(range(seq)), ctx
        assert sorted(kp) == list(range(seq)), ctx
        assert qp == kp, ctx
        n = len(lines)
        head = qp[:n]
        assert all(span_start <= p < span_end and (p - span_start) % stride[b][h] == phase[b][h]
                   for p in head), ctx
        assert head == sorted(head) and qp[n:] == sorted(qp[n:]), ctx
        assert qp == perm, ctx
        check_structure(got[b, h], [seq] * nqb, block_k, 4, 0, ctx)
        assert got[b, h] == blocks, ctx


@pytest.mark.parametrize("seed", SEEDS[:24])
def test_grid_dense_mask_contains_row_rule(seed):
    case = grid_case(40_000 + seed)
    stride, phase, seq, block_q, block_k, span_start, span_end, sink, local, hlines, vlines = case
    index = run_grid(case)
    got = read_index(index)
    q_perm, k_perm = index.q_perm.long(), index.k_perm.long()
    i = torch.arange(seq)[:, None]
    j = torch.arange(seq)[None, :]
    causal = j <= i
    for (b, h), blocks in got.items():
        slot_mask = block_key_mask(blocks, seq, seq, block_q)
        # map (query slot, key slot) -> (query position, key position)
        mask = torch.zeros(seq, seq, dtype=torch.bool)
        mask[q_perm[b, h][:, None], k_perm[b, h][None, :]] = slot_mask
        pos = torch.arange(seq)
        is_line = ((pos >= span_start) & (pos < span_end)
                   & ((pos - span_start) % stride[b][h] == phase[b][h]))
        base = (j < sink) | (j >= i - local + 1)
        if vlines:
            base |= is_line[None, :]
        if hlines:
            base |= is_line[:, None]
        required = causal & base
        missing = (required & ~mask).nonzero().tolist()
        assert not missing, f"grid{case} bh={(b, h)}: (query, key) positions missing {missing[:5]}"


def _grid_hand(sink, local, hlines, vlines):
    # seq 10, span [2, 10), stride 3, phase 1: lines 3, 6, 9 (n = 3);
    # slots -> positions [3, 6, 9, 0, 1, 2, 4, 5, 7, 8]; blocks of 4 slots, block_k 1.
    index = ops.build_grid_index(torch.tensor([[3]], dtype=torch.int32),
                                 torch.tensor([[1]], dtype=torch.int32), 10, block_q=4, block_k=1,
                                 span=(2, 10), sink=sink, local=local, use_hlines=hlines,
                                 use_vlines=vlines)
    assert index.q_perm.tolist() == [[[3, 6, 9, 0, 1, 2, 4, 5, 7, 8]]]
    assert index.k_perm.tolist() == index.q_perm.tolist()
    return read_index(index)[0, 0]


def test_grid_hand_computed():
    # block 0 holds line slots -> every causal key; block 1 (positions 1, 2, 4, 5): vline 3,
    # sink position 0, local [0, 5]; block 2 (positions 7, 8): vlines 3, 6, sink 0, local [6, 8].
    assert _grid_hand(sink=1, local=2, hlines=True, vlines=True) == [
        ([(0, 10)], []), ([(0, 1), (3, 8)], []), ([(0, 2), (3, 4), (8, 10)], [])]


def test_grid_sink_is_clipped_to_block_causal_limit():
    # sink = 10 covers the whole sequence, but block 1 (positions 1, 2, 4, 5, pmax = 5) only gets
    # the sink keys < pmax + 1 = 6: lines [0, L(6)) = [0, 1), others [3, 3 + O(6)) = [3, 8).
    # The grid paragraph of mmi_index_builders.h, read literally ([0, L(sink)), [n, n + O(sink)),
    # limit S), would give [(0, 10)]; the op follows the header's shared "clipped to the block's
    # causal limit" rule instead (keys past pmax are causally masked for the whole block anyway).
    got = _grid_hand(sink=10, local=1, hlines=False, vlines=False)
    assert got[1] == ([(0, 1), (3, 8)], [])


def _grid(stride=4, phase=1, seq=40, span=(0, 40), sink=0, local=8, dtype=torch.int32,
          shape=(1, 1), block_q=8, block_k=8):
    st = torch.full(shape, stride, dtype=dtype)
    ph = torch.full(shape, phase, dtype=dtype)
    return ops.build_grid_index(st, ph, seq, block_q=block_q, block_k=block_k, span=span,
                                sink=sink, local=local)


def test_grid_errors():
    _grid()  # the baseline is valid
    bad = [
        (dict(stride=0, phase=0), ValueError, ("stride",)),
        (dict(stride=-2, phase=0), ValueError, ("stride",)),
        (dict(stride=4, phase=4), ValueError, ("phase",)),
        (dict(stride=4, phase=-1), ValueError, ("phase",)),
        (dict(stride=11, phase=0, span=(0, 10)), ValueError, ("stride",)),
        (dict(span=(0, 41)), ValueError, ("span", "span_end")),
        (dict(span=(-1, 40)), ValueError, ("span", "span_start")),
        (dict(span=(30, 20)), ValueError, ("span", "span_start", "span_end")),
        (dict(span=(41, 45)), ValueError, ("span", "span_start", "span_end")),
        (dict(sink=-1), ValueError, ("sink",)),
        (dict(local=0), ValueError, ("local",)),
        (dict(seq=0, span=(0, 0)), ValueError, ("seq",)),
        (dict(block_q=0), ValueError, ("block_q",)),
        (dict(block_k=0), ValueError, ("block_k",)),
        (dict(dtype=torch.int64), TypeError, ("stride",)),
        (dict(shape=(1,)), ValueError, ("stride",)),
        (dict(shape=(1, 1, 1)), ValueError, ("stride",)),
    ]
    for kwargs, exc, expected in bad:
        with pytest.raises(exc) as e:
            _grid(**kwargs)
        msg = str(e.value)
        assert any(re.search(rf"\b{x}\b", msg) for x in expected), (kwargs, msg)
    # a bad phase in a later head only, and a phase of the wrong dtype / shape
    st = torch.tensor([[4, 4, 4]], dtype=torch.int32)
    with pytest.raises(ValueError) as e:
        ops.build_grid_index(st, torch.tensor([[0, 1, 4]], dtype=torch.int32), 40)
    names(e, "phase")
    with pytest.raises(TypeError) as e:
        ops.build_grid_index(st, torch.tensor([[0, 1, 2]], dtype=torch.int64), 40)
    names(e, "phase")
    with pytest.raises(ValueError) as e:
        ops.build_grid_index(st, torch.tensor([[0, 1]], dtype=torch.int32), 40)
    names(e, "phase")


# ---------------------------------------------------------------------------------------------
# Modality permutation


def ref_modality(modality, num_modalities):
    perms, offsets = [], []
    for row in modality:
        perm = [p for m in range(num_modalities) for p, x in enumerate(row) if x == m]
        off = [0]
        for m in range(num_modalities):
            off.append(off[-1] + sum(1 for x in row if x == m))
        perms.append(perm)
        offsets.append(off)
    return perms, offsets


def modality_case(seed):
    r = random.Random(50_000 + seed)
    batch = r.choice([1, 1, 2, 4])
    seq = r.choice([1, r.randint(1, 20), r.randint(1, 2000)])
    num = r.choice([1, 2, 3, r.randint(1, 8), 256])
    used = r.sample(range(num), r.randint(1, num)) if num <= 8 else list(range(num))
    rows = []
    for _ in range(batch):
        style = r.random()
        if style < 0.4:  # contiguous segments (text / image / video runs), some ids absent
            row, pos = [], 0
            while pos < seq:
                length = r.randint(1, max(1, seq // 3))
                row += [r.choice(used)] * min(length, seq - pos)
                pos += length
        elif style < 0.5:
            row = [r.choice(used)] * seq
        else:
            row = [r.choice(used) for _ in range(seq)]
        rows.append(row)
    return rows, num


@pytest.mark.parametrize("seed", SEEDS)
def test_modality_permutation_matches_rule(seed):
    rows, num = modality_case(seed)
    perm, offsets = ops.build_modality_permutation(torch.tensor(rows, dtype=torch.int32), num)
    batch, seq = len(rows), len(rows[0])
    assert tuple(perm.shape) == (batch, seq) and perm.dtype == torch.int32
    assert tuple(offsets.shape) == (batch, num + 1) and offsets.dtype == torch.int32
    want_perm, want_off = ref_modality(rows, num)
    got_perm, got_off = perm.tolist(), offsets.tolist()
    for b in range(batch):
        ctx = f"seed={seed} b={b} num={num}"
        assert sorted(got_perm[b]) == list(range(seq)), ctx  # bijection
        off = got_off[b]
        assert off[0] == 0 and off[-1] == seq, ctx
        assert all(x <= y for x, y in zip(off, off[1:])), ctx
        for m in range(num):  # each segment holds exactly modality m, ascending
            seg = got_perm[b][off[m]:off[m + 1]]
            assert all(rows[b][p] == m for p in seg), ctx
            assert seg == sorted(seg), ctx
        assert got_perm[b] == want_perm[b], ctx
        assert off == want_off[b], ctx


def test_modality_permutation_empty_segments():
    perm, offsets = ops.build_modality_permutation(
        torch.tensor([[2, 2, 0, 2, 0], [4, 4, 4, 4, 4]], dtype=torch.int32), 5)
    assert perm.tolist() == [[2, 4, 0, 1, 3], [0, 1, 2, 3, 4]]
    assert offsets.tolist() == [[0, 2, 2, 5, 5, 5], [0, 0, 0, 0, 0, 5]]


def test_modality_permutation_errors():
    def call(mod, num=3, dtype=torch.int32):
        return ops.build_modality_permutation(torch.tensor(mod, dtype=dtype), num)

    for bad in ([[0, 1, 3]], [[0, -1, 2]], [[0, 1, 2], [0, 2, 7]]):
        with pytest.raises(ValueError) as e:
            call(bad)
        names(e, "modality")
    with pytest.raises(TypeError) as e:
        call([[0, 1, 2]], dtype=torch.int64)
    names(e, "modality")
    with pytest.raises(ValueError) as e:
        call([0, 1, 2])
    names(e, "modality")
    with pytest.raises(ValueError) as e:
        ops.build_modality_permutation(torch.zeros(1, 0, dtype=torch.int32), 3)
    names(e, "modality", "seq")
    with pytest.raises(ValueError) as e:
        call([[0, 0]], num=0)
    names(e, "num_modalities")
