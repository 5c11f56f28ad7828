"""Modality-boundary index builder against plain-Python re-derivations of its documented rules.

The rules restated here come from csrc/core/mmi_boundary_index.h, not from the .c file:

  classes:  rank(p) = earlier positions of p's modality m; p is a line when m has a grid
            (stride > 0) and rank % stride == phase; class = 2m + (line ? 0 : 1).
  perm:     q_perm = k_perm = positions sorted by (class, position); class c owns slots
            [off[c], off[c + 1]); cnt_c(x) = positions < x of class c.
  block:    per query class cq in the block, pmin / pmax of its rows, e = pmax + 1; per key modality
            mk the pair's position intervals (DENSE, A_SHAPE, LINES, VERTICAL_SLASH), clipped to
            [0, e), mapped to slots per key class, aligned outward to block_k inside
            [off[c], off[c] + cnt_c(e)), merged; over max_ranges the last kept range absorbs the
            rest. Verticals <= pmax of a VERTICAL_SLASH pair's key modality become columns (slots)
            unless inside a range; sorted, deduplicated, the highest dropped past max_columns.

Three independent checks: the exact slot-level re-derivation (`ref_boundary`), the row-level
semantics (`required_mask`: what each query position must see, with no blocks or slots at all),
and dense float64 attention under the re-derived mask.
"""

from __future__ import annotations

import bisect
import random
import re

import pytest
import torch

import mminference as mmi
from mminference import ops
from mminference.layout import Modality, ModalityLayout, Segment, VisualGrid, stack_modality_ids
from mminference.ops import PairKind
from reference import masked_attention_float64, relative_error

NONE, DENSE, A_SHAPE, LINES, VS = (int(k) for k in PairKind)
SEEDS = list(range(64))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def merge(ranges):
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [tuple(r) for r in out]


# ---------------------------------------------------------------------------------------------
# Re-derivation (plain Python)


def ref_classes(mod_row, strides, phases):
    """Class of every position (rule above)."""
    rank = {}
    classes = []
    for m in mod_row:
        r = rank.get(m, 0)
        rank[m] = r + 1
        line = strides[m] > 0 and r % strides[m] == phases[m]
        classes.append(2 * m + (0 if line else 1))
    return classes


def ref_head(mod_row, strides, phases, pattern, vertical, slash, M, block_q, block_k, max_ranges,
             max_columns):
    """(perm, offsets, blocks) of one (b, h). vertical / slash: [M] lists of valid entries."""
    S = len(mod_row)
    cls = ref_classes(mod_row, strides, phases)
    perm = sorted(range(S), key=lambda p: (cls[p], p))
    slot_of = {p: s for s, p in enumerate(perm)}
    by_class = [[p for p in range(S) if cls[p] == c] for c in range(2 * M)]
    off = [0]
    for c in range(2 * M):
        off.append(off[-1] + len(by_class[c]))

    def cnt(c, x):
        return bisect.bisect_left(by_class[c], x)

    blocks = []
    for qb in range(ceil_div(S, block_q)):
        a, z = qb * block_q, min((qb + 1) * block_q, S)
        raw, cands = [], set()
        for cq in range(2 * M):
            s0, s1 = max(a, off[cq]), min(z, off[cq + 1])
            if s0 >= s1:
                continue
            pmin, pmax = perm[s0], perm[s1 - 1]
            e, mq, line_rows = pmax + 1, cq // 2, cq % 2 == 0
            for mk in range(M):
                kind, pa, pb, pc = pattern[mq][mk]
                ivs = []  # (lo, hi, line class only)
                if kind == DENSE:
                    ivs.append((0, e, False))
                elif kind == A_SHAPE:
                    ivs.append((0, min(pa, e), False))
                    if pb >= 1:
                        ivs.append((pmin - pb + 1, e, False))
                elif kind == LINES:
                    if pb:
                        ivs.append((0, e, True))
                    if pa and line_rows:
                        ivs.append((0, e, False))
                    if pc >= 1:
                        ivs.append((pmin - pc + 1, e, False))
                elif kind == VS:
                    ivs += [(pmin - d, pmax - d + 1, False) for d in slash[mq]]
                    cands |= {slot_of[v] for v in vertical[mq] if v <= pmax and mod_row[v] == mk}
                for lo, hi, lines_only in ivs:
                    lo, hi = max(lo, 0), min(hi, e)
                    if lo >= hi:
                        continue
                    for c in ([2 * mk] if lines_only else [2 * mk, 2 * mk + 1]):
                        s, t = off[c] + cnt(c, lo), off[c] + cnt(c, hi)
                        if s < t:
                            limit = off[c] + cnt(c, e)
                            raw.append((max(s // block_k * block_k, off[c]),
                                        min(ceil_div(t, block_k) * block_k, limit)))
        ranges = merge(raw)
        if len(ranges) > max_ranges:
            ranges = ranges[:max_ranges - 1] + [(ranges[max_ranges - 1][0], ranges[-1][1])]
        cols = sorted(c for c in cands if not any(lo <= c < hi for lo, hi in ranges))[:max_columns]
        blocks.append((ranges, cols))
    return perm, off, blocks


def required_mask(mod_row, strides, phases, pattern, vertical, slash, M):
    """Row-level semantics (no blocks): bool (S, S) in positions, query i may attend key j."""
    S = len(mod_row)
    mod = torch.tensor(mod_row)
    cls = torch.tensor(ref_classes(mod_row, strides, phases))
    is_line = cls % 2 == 0
    i = torch.arange(S)[:, None]
    j = torch.arange(S)[None, :]
    causal = j <= i
    out = torch.zeros(S, S, dtype=torch.bool)
    for mq in range(M):
        for mk in range(M):
            kind, pa, pb, pc = pattern[mq][mk]
            if kind == DENSE:
                pair = torch.ones(S, S, dtype=torch.bool)
            elif kind == A_SHAPE:
                pair = (j < pa) | ((j >= i - pb + 1) if pb >= 1 else False)
            elif kind == LINES:
                pair = torch.zeros(S, S, dtype=torch.bool)
                if pb:
                    pair |= is_line[None, :]
                if pa:
                    pair |= is_line[:, None]
                if pc >= 1:
                    pair |= j >= i - pc + 1
            elif kind == VS:
                pair = torch.zeros(S, S, dtype=torch.bool)
                for v in vertical[mq]:
                    pair |= j == v
                for d in slash[mq]:
                    pair |= (i - j) == d
            else:
                continue
            out |= pair & (mod == mq)[:, None] & (mod == mk)[None, :]
    return out & causal


def expand(blocks, perm, S, block_q):
    """(S, S) bool in positions: block key sets expanded through the (shared) permutation."""
    slot_mask = torch.zeros(S, S, dtype=torch.bool)
    for qb, (ranges, cols) in enumerate(blocks):
        a, z = qb * block_q, min((qb + 1) * block_q, S)
        for lo, hi in ranges:
            slot_mask[a:z, lo:hi] = True
        if cols:
            slot_mask[a:z, torch.tensor(cols)] = True
    p = torch.tensor(perm)
    mask = torch.zeros(S, S, dtype=torch.bool)
    mask[p[:, None], p[None, :]] = slot_mask
    return mask


def read_blocks(index, b, h):
    rng, rc = index.kv_ranges[b, h].tolist(), index.kv_range_count[b, h].tolist()
    col, cc = index.kv_columns[b, h].tolist(), index.kv_column_count[b, h].tolist()
    return [([tuple(r) for r in rng[qb][:rc[qb]]], col[qb][:cc[qb]]) for qb in range(len(rc))]


# ---------------------------------------------------------------------------------------------
# Random cases


def random_modality_row(r, S, M):
    """Interleaved runs (text / video / text / video...), some modalities absent."""
    style = r.random()
    present = r.sample(range(M), r.randint(1, M))
    if style < 0.15:
        return [r.choice(present) for _ in range(S)]
    row = []
    while len(row) < S:
        m = r.choice(present)
        length = r.choice([1, r.randint(1, 8), r.randint(1, max(1, S // 2))])
        row += [m] * length
    return row[:S]


def random_list(r, S, n):
    """A strictly increasing list of valid entries padded with -1 to length n."""
    k = r.randint(0, min(n, S))
    vals = sorted(r.sample(range(S), k))
    if vals and r.random() < 0.3:
        vals[0] = 0
    vals = sorted(set(vals))
    return vals + [-1] * (n - len(vals))


def random_pattern(r, S, sparse=False):
    kinds = [NONE, VS, VS, VS] if sparse else [NONE, DENSE, A_SHAPE, A_SHAPE, LINES, LINES, VS, VS]
    kind = r.choice(kinds)
    if kind == A_SHAPE:
        return [kind, r.choice([0, 1, r.randint(0, 40), S + 3]), r.choice([0, 1, r.randint(1, 40), S + 1]), 0]
    if kind == LINES:
        return [kind, r.randint(0, 1), r.randint(0, 1), r.choice([0, 1, r.randint(1, 30)])]
    return [kind, r.randint(-5, 5) if kind != DENSE else 0, 0, 0]  # unused params are ignored


def boundary_case(seed):
    r = random.Random(seed)
    M = r.choice([1, 2, 3, 3, 3, r.randint(1, 8)])
    B, H = r.choice([(1, 1), (1, 3), (2, 1), (2, 2)])
    S = r.choice([1, r.randint(1, 30), r.randint(1, 200), r.randint(100, 257)])
    mod = [random_modality_row(r, S, M) for _ in range(B)]
    gb, gh = r.choice([1, B]), r.choice([1, H])
    stride = [[[0] * M for _ in range(gh)] for _ in range(gb)]
    phase = [[[0] * M for _ in range(gh)] for _ in range(gb)]
    for b in range(gb):
        for h in range(gh):
            for m in range(M):
                st = r.choice([0, 0, 1, 2, r.randint(1, 12), r.randint(1, S + 3)])
                stride[b][h][m] = st
                phase[b][h][m] = r.randint(0, st - 1) if st else 0
    pb, ph = r.choice([1, B]), r.choice([1, H])
    sparse = r.random() < 0.3  # mostly VERTICAL_SLASH pairs: many columns
    pattern = [[[[random_pattern(r, S, sparse) for _ in range(M)] for _ in range(M)] for _ in range(ph)]
               for _ in range(pb)]
    if r.random() < 0.25:  # Q-boundary: one pattern per query modality
        for b in range(pb):
            for h in range(ph):
                for mq in range(M):
                    pattern[b][h][mq] = [pattern[b][h][mq][0]] * M
    nv, ns = r.choice([0, 3, r.randint(1, 16)]), r.choice([0, 1, r.randint(0, 8)])
    lb, lh = r.choice([1, B]), r.choice([1, H])
    vertical = [[[random_list(r, S, nv) for _ in range(M)] for _ in range(lh)] for _ in range(lb)]
    slash = [[[random_list(r, S, ns) for _ in range(M)] for _ in range(lh)] for _ in range(lb)]
    block_q = r.choice([1, 3, 16, 64, r.randint(1, 80)])
    block_k = r.choice([1, 5, 16, 64, r.randint(1, 80)])
    max_ranges = r.choice([None, None, 1, 2, r.randint(1, 6)])
    max_columns = r.choice([None, None, 0, 1, r.randint(0, 4)])
    return dict(mod=mod, stride=stride, phase=phase, pattern=pattern, vertical=vertical, slash=slash,
                M=M, block_q=block_q, block_k=block_k, max_ranges=max_ranges, max_columns=max_columns)


def tensors(case):
    t = lambda x, rank: torch.tensor(x, dtype=torch.int32).reshape(  # noqa: E731
        *_shape(x, rank))
    return (t(case["mod"], 2), t(case["stride"], 3), t(case["phase"], 3), t(case["pattern"], 5),
            t(case["vertical"], 4), t(case["slash"], 4))


def _shape(x, rank):
    shape = []
    for _ in range(rank):
        shape.append(len(x))
        x = x[0] if len(x) else []
    return shape


def run(case, **overrides):
    mod, stride, phase, pattern, vertical, slash = tensors(case)
    kwargs = dict(grid_stride=stride, grid_phase=phase, vertical=vertical, slash=slash,
                  num_modalities=case["M"], block_q=case["block_q"], block_k=case["block_k"],
                  max_ranges=case["max_ranges"], max_columns=case["max_columns"])
    kwargs.update(overrides)
    return ops.build_boundary_index(mod, pattern, **kwargs)


def expanded_inputs(case, b, h):
    """(strides, phases, pattern, vertical lists, slash lists) of (b, h), broadcast applied."""
    pick = lambda x: x[b if len(x) > 1 else 0][h if len(x[0]) > 1 else 0]  # noqa: E731
    valid = lambda rows: [[v for v in row if v >= 0] for row in rows]  # noqa: E731
    return (pick(case["stride"]), pick(case["phase"]), pick(case["pattern"]),
            valid(pick(case["vertical"])), valid(pick(case["slash"])))


def capacities(case, S):
    """The capacities `build_boundary_index` must use: the case's, or by default the exact ones,
    re-derived here as the largest uncapped range / column count of any block."""
    if case["max_ranges"] is not None and case["max_columns"] is not None:
        return case["max_ranges"], case["max_columns"]
    uncapped = 1 << 30
    R, C = 1, 0
    for b in range(len(case["mod"])):
        for h in range(heads_of(case)):
            _, _, blocks = ref_head(case["mod"][b], *expanded_inputs(case, b, h), case["M"], case["block_q"],
                                    case["block_k"], uncapped, uncapped)
            R = max(R, *(len(ranges) for ranges, _ in blocks))
            C = max(C, *(len(cols) for _, cols in blocks))
    return (R if case["max_ranges"] is None else case["max_ranges"],
            C if case["max_columns"] is None else case["max_columns"])


def heads_of(case):
    return max(len(case[k][0]) for k in ("stride", "phase", "pattern", "vertical", "slash"))


# ---------------------------------------------------------------------------------------------
# Exact re-derivation


def check_structure(blocks, off, S, block_k, R, C, ctx):
    for qb, (ranges, cols) in enumerate(blocks):
        where = f"{ctx} qb={qb} ranges={ranges} cols={cols}"
        assert len(ranges) <= R and len(cols) <= C, where
        prev = 0
        for lo, hi in ranges:
            assert prev <= lo < hi <= S, where  # sorted, disjoint, non-empty
            assert lo % block_k == 0 or lo in off, where  # starts: block_k multiples or class starts
            prev = hi
        assert all(c0 < c1 for c0, c1 in zip(cols, cols[1:])), where
        assert all(0 <= c < S and not any(lo <= c < hi for lo, hi in ranges) for c in cols), where


@pytest.mark.parametrize("seed", SEEDS)
def test_matches_rule(seed):
    case = boundary_case(seed)
    index, offsets = run(case)
    B, S, M = len(case["mod"]), len(case["mod"][0]), case["M"]
    H = heads_of(case)
    R, C = capacities(case, S)
    nqb = ceil_div(S, case["block_q"])
    assert tuple(index.q_perm.shape) == (B, H, S) and tuple(index.k_perm.shape) == (B, H, S)
    assert tuple(index.kv_ranges.shape) == (B, H, nqb, R, 2)
    assert tuple(index.kv_columns.shape) == (B, H, nqb, C)
    assert tuple(index.kv_range_count.shape) == tuple(index.kv_column_count.shape) == (B, H, nqb)
    assert tuple(offsets.shape) == (B, H, 2 * M + 1) and offsets.dtype == torch.int32
    assert index.block_q == case["block_q"]
    for b in range(B):
        for h in range(H):
            ctx = f"seed={seed} b={b} h={h} M={M} S={S} bq={case['block_q']} bk={case['block_k']}"
            inputs = expanded_inputs(case, b, h)
            perm, off, blocks = ref_head(case["mod"][b], *inputs, M, case["block_q"], case["block_k"], R, C)
            assert index.q_perm[b, h].tolist() == perm, ctx
            assert index.k_perm[b, h].tolist() == perm, ctx
            assert offsets[b, h].tolist() == off, ctx
            got = read_blocks(index, b, h)
            check_structure(got, off, S, case["block_k"], R, C, ctx)
            assert got == blocks, ctx
            # the same key sets, expanded to original positions per query row
            assert torch.equal(expand(got, index.q_perm[b, h].tolist(), S, case["block_q"]),
                               expand(blocks, perm, S, case["block_q"])), ctx


@pytest.mark.parametrize("seed", SEEDS[:32])
def test_contains_row_semantics(seed):
    """Default capacities: every key the row-level rule requires is in the block's key set, and no
    key lies past the block's causal limit (the largest query position of the block)."""
    case = boundary_case(1000 + seed)
    case.update(max_ranges=None, max_columns=None)
    index, _ = run(case)
    S, M, bq = len(case["mod"][0]), case["M"], case["block_q"]
    for b in range(len(case["mod"])):
        for h in range(heads_of(case)):
            perm = index.q_perm[b, h]
            mask = expand(read_blocks(index, b, h), perm.tolist(), S, bq)
            required = required_mask(case["mod"][b], *expanded_inputs(case, b, h), M)
            missing = (required & ~mask).nonzero().tolist()
            assert not missing, f"seed={seed} b={b} h={h}: (query, key) missing {missing[:5]}"
            block_limit = torch.zeros(S, dtype=torch.long)
            for qb in range(ceil_div(S, bq)):
                rows = perm[qb * bq:(qb + 1) * bq].long()
                block_limit[rows] = int(rows.max())
            assert not (mask & (torch.arange(S)[None, :] > block_limit[:, None])).any()


@pytest.mark.parametrize("seed", SEEDS[:32])
def test_single_row_blocks_are_exact(seed):
    """block_q = block_k = 1 and default capacities: the key set of each row is exactly the
    row-level rule (up to causally masked keys)."""
    case = boundary_case(2000 + seed)
    case.update(block_q=1, block_k=1, max_ranges=None, max_columns=None)
    index, _ = run(case)
    S, M = len(case["mod"][0]), case["M"]
    causal = torch.arange(S)[None, :] <= torch.arange(S)[:, None]
    for b in range(len(case["mod"])):
        for h in range(heads_of(case)):
            mask = expand(read_blocks(index, b, h), index.q_perm[b, h].tolist(), S, 1) & causal
            required = required_mask(case["mod"][b], *expanded_inputs(case, b, h), M)
            assert torch.equal(mask, required), f"seed={seed} b={b} h={h}"


def test_overflowing_caps_keep_a_superset_of_ranges():
    # 2D-boundary with many scattered pieces; max_ranges = 1 merges everything into one range.
    case = boundary_case(7)
    case.update(max_ranges=None, max_columns=None)
    full, _ = run(case)
    capped, _ = run(case, max_ranges=1)
    S, bq = len(case["mod"][0]), case["block_q"]
    for b in range(full.kv_range_count.shape[0]):
        for h in range(full.kv_range_count.shape[1]):
            a = expand([(r, []) for r, _ in read_blocks(full, b, h)], full.q_perm[b, h].tolist(), S, bq)
            c = expand([(r, []) for r, _ in read_blocks(capped, b, h)], capped.q_perm[b, h].tolist(), S, bq)
            assert not (a & ~c).any()
    assert int(capped.kv_range_count.max()) <= 1


# ---------------------------------------------------------------------------------------------
# Layout-driven and hand-computed cases


def interleaved_layout(seq=211):
    """text, video (frames 0-2), 5 timestamp tokens, video (frames 3-4), text; 20 tokens per frame
    (4 x 4 patches + a newline after each row)."""
    grid3 = VisualGrid(frames=3, rows=4, cols=4, separator_every=4, separators=1)
    grid2 = VisualGrid(frames=2, rows=4, cols=4, separator_every=4, separators=1)
    return ModalityLayout.from_spans(seq, [
        Segment(Modality.VIDEO, 17, 77, grid3),
        Segment(Modality.VIDEO, 82, 122, grid2),
    ])


def test_video_split_by_text_keeps_its_stride():
    layout = interleaved_layout()
    assert layout.tokens_per_frame(Modality.VIDEO) == 20
    ids = layout.modality_ids()
    stride = torch.tensor([0, 0, 20], dtype=torch.int32)
    phase = torch.tensor([0, 0, 3], dtype=torch.int32)
    index, off = ops.build_boundary_index(ids, ops.pair_pattern({}), grid_stride=stride,
                                          grid_phase=phase, block_q=16, block_k=16)
    # video lines: rank 3 of every frame; ranks continue across the timestamp text
    lines = [17 + 3 + 20 * f for f in range(3)] + [82 + 3 + 20 * f for f in range(2)]
    assert lines == [20, 40, 60, 85, 105]
    n_text = 211 - 100
    assert off.tolist() == [[[0, 0, n_text, n_text, n_text, n_text + 5, 211]]]
    perm = index.q_perm[0, 0].tolist()
    assert perm[n_text:n_text + 5] == lines
    assert perm[:n_text] == [p for p in range(211) if ids[p] == 0]


def test_layout_driven_attention_q_and_2d_boundary():
    """Interleaved text / video / text / video / text, batch 2 with different layouts, 2 heads with
    different grids; Q-boundary text heads and 2D-boundary video heads; attention vs dense float64."""
    layouts = [interleaved_layout(), ModalityLayout.from_spans(211, [
        Segment(Modality.IMAGE, 3, 19, VisualGrid(1, 4, 4)),
        Segment(Modality.VIDEO, 40, 200, VisualGrid(frames=10, rows=4, cols=4))])]
    ids = stack_modality_ids(layouts)
    assert tuple(ids.shape) == (2, 211)
    stride = torch.tensor([[[0, 4, 20], [0, 0, 5]], [[0, 4, 16], [0, 2, 8]]], dtype=torch.int32)
    phase = torch.tensor([[[0, 1, 0], [0, 0, 2]], [[0, 3, 15], [0, 1, 0]]], dtype=torch.int32)
    head0 = ops.pair_pattern({0: (A_SHAPE, 8, 24), 1: (LINES, 1, 1, 8), 2: (LINES, 1, 1, 8)})
    head1 = ops.pair_pattern({0: (VS,), (2, 0): (A_SHAPE, 16, 0), (2, 2): (LINES, 0, 1, 12),
                              (1, 1): (DENSE,), (2, 1): (NONE,)})
    pattern = torch.cat([head0, head1], dim=1)
    vertical = torch.tensor([[[[0, 5, 30, -1]] * 3, [[1, 2, 100, 150]] * 3]], dtype=torch.int32)
    slash = torch.tensor([[[[0, -1]] * 3, [[0, 20]] * 3]], dtype=torch.int32)
    case = dict(mod=ids.tolist(), stride=stride.tolist(), phase=phase.tolist(),
                pattern=pattern.tolist(), vertical=vertical.tolist(), slash=slash.tolist(), M=3,
                block_q=16, block_k=8, max_ranges=None, max_columns=None)
    index, _ = run(case)
    _check_attention(case, index)
    # exact re-derivation too
    R, C = capacities(case, 211)
    for b in range(2):
        for h in range(2):
            perm, off, blocks = ref_head(case["mod"][b], *expanded_inputs(case, b, h), 3, 16, 8, R, C)
            assert read_blocks(index, b, h) == blocks


def test_hand_computed():
    # positions 0-1 text, 2-7 video, 8-9 text; video grid stride 3 phase 1: video ranks 1, 4 are
    # lines -> positions 3, 6. Classes: text others {0, 1, 8, 9}, video lines {3, 6}, video others
    # {2, 4, 5, 7}. Slots -> positions [0, 1, 8, 9, 3, 6, 2, 4, 5, 7], offsets [0, 0, 4, 4, 4, 6, 10]
    # with M = 3 (no image).
    mod = torch.tensor([[0, 0, 2, 2, 2, 2, 2, 2, 0, 0]], dtype=torch.int32)
    stride = torch.tensor([0, 0, 3], dtype=torch.int32)
    phase = torch.tensor([0, 0, 1], dtype=torch.int32)
    pattern = ops.pair_pattern({0: (A_SHAPE, 1, 1), (2, 2): (LINES, 1, 1, 1), (2, 0): (A_SHAPE, 2, 0)})
    index, off = ops.build_boundary_index(mod, pattern, grid_stride=stride, grid_phase=phase,
                                          block_q=2, block_k=1)
    assert index.q_perm.tolist() == [[[0, 1, 8, 9, 3, 6, 2, 4, 5, 7]]]
    assert off.tolist() == [[[0, 0, 4, 4, 4, 6, 10]]]
    assert read_blocks(index, 0, 0) == [
        # text rows 0, 1: sink [0, 1) + local [0, 2) on text; text -> video A-shape: video keys < 1
        # (none) and video keys in [0, 2) (none)
        ([(0, 2)], []),
        # text rows 8, 9: text sink position 0 -> slot 0, local [8, 10) -> slots [2, 4);
        # video keys in [8, 10): none
        ([(0, 1), (2, 4)], []),
        # video line rows 3, 6 (e = 7): text A-shape sink 2 -> text positions 0, 1 (slots 0, 1);
        # video LINES with hlines: all video keys < 7 -> lines {3, 6} slots [4, 6), others
        # {2, 4, 5} slots [6, 9); image pairs: DENSE default, but no image tokens
        ([(0, 2), (4, 9)], []),
        # video other rows 2, 4 (e = 5): text sink slots [0, 2); vlines < 5: {3} -> slot 4;
        # local 1 on video: [2, 5) -> others {2, 4} -> slots [6, 8)
        ([(0, 2), (4, 5), (6, 8)], []),
        # video other rows 5, 7 (e = 8): text sink [0, 2); vlines {3, 6} -> [4, 6);
        # local [5, 8) -> others {5, 7} -> slots [8, 10)
        ([(0, 2), (4, 6), (8, 10)], []),
    ]


def test_block_alignment_stays_inside_the_class():
    # All DENSE, no grid, block_k = 64 (larger than S): alignment would round every range out to
    # [0, 10), but it is clipped to the key class and to the class's causal slot limit.
    mod = torch.tensor([[2, 2, 2, 0, 0, 0, 0, 2, 2, 2]], dtype=torch.int32)
    pattern = ops.pair_pattern({}, default=(DENSE,))
    index, off = ops.build_boundary_index(mod, pattern, block_q=4, block_k=64)
    # slots -> positions: text [3, 4, 5, 6], then video [0, 1, 2, 7, 8, 9]
    assert index.q_perm.tolist() == [[[3, 4, 5, 6, 0, 1, 2, 7, 8, 9]]]
    assert off.tolist() == [[[0, 0, 4, 4, 4, 4, 10]]]
    assert read_blocks(index, 0, 0) == [
        # text rows 3..6 (e = 7): text slots [0, 4); video keys 0, 1, 2 -> slots [4, 7), whose
        # aligned start 0 is clipped to the class start 4 and end 64 to the causal limit 7
        ([(0, 7)], []),
        # video rows 0, 1, 2, 7 (e = 8): text [0, 4) + video {0, 1, 2, 7} = [4, 8)
        ([(0, 8)], []),
        ([(0, 10)], []),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_no_boundary_reproduces_a_shape_and_vertical_slash(seed):
    """M = 1 without a grid: identity permutation, and the A_SHAPE / VERTICAL_SLASH tables give
    exactly the A-shape / vertical-slash builders' indexes (same alignment and causal clip)."""
    r = random.Random(3000 + seed)
    S = r.randint(1, 300)
    bq, bk = r.choice([1, 16, 64, 128, r.randint(1, 70)]), r.choice([1, 16, 64, r.randint(1, 70)])
    sink, local = r.randint(0, 80), r.randint(1, 120)
    mod = torch.zeros(1, S, dtype=torch.int32)
    index, off = ops.build_boundary_index(mod, ops.pair_pattern({0: (A_SHAPE, sink, local)}, 1),
                                          block_q=bq, block_k=bk)
    assert index.q_perm.tolist() == [[list(range(S))]] and off.tolist() == [[[0, 0, S]]]
    want = ops.build_a_shape_index(S, S, block_q=bq, block_k=bk, sink=sink, local=local)
    assert read_blocks(index, 0, 0) == read_blocks(want, 0, 0)

    v = sorted(r.sample(range(S), min(S, r.randint(0, 10))))
    s = sorted(r.sample(range(S), min(S, r.randint(1, 10))))
    vt = torch.tensor(v, dtype=torch.int32).reshape(1, 1, 1, -1)
    st = torch.tensor(s, dtype=torch.int32).reshape(1, 1, 1, -1)
    index, _ = ops.build_boundary_index(mod, ops.pair_pattern({0: (VS,)}, 1), vertical=vt, slash=st,
                                        block_q=bq, block_k=bk, max_ranges=len(s),
                                        max_columns=len(v))
    want = ops.build_vertical_slash_index(vt[0], st[0], S, S, block_q=bq, block_k=bk, max_ranges=len(s))
    assert read_blocks(index, 0, 0) == read_blocks(want, 0, 0)


def test_q_boundary_equals_unrestricted_pattern():
    """A Q-boundary table (one pattern per query modality over all key modalities) has the
    row-level key set of the unrestricted pattern: text rows A-shape over all keys, video rows
    vertical lines over all keys."""
    layout = interleaved_layout(150)
    mod = layout.modality_ids()
    stride = torch.tensor([0, 0, 20], dtype=torch.int32)
    pattern = ops.pair_pattern({0: (A_SHAPE, 4, 10), 2: (LINES, 0, 1, 6)})
    index, _ = ops.build_boundary_index(mod, pattern, grid_stride=stride, block_q=1, block_k=1)
    mask = expand(read_blocks(index, 0, 0), index.q_perm[0, 0].tolist(), 150, 1)
    i, j = torch.arange(150)[:, None], torch.arange(150)[None, :]
    is_video_line = torch.zeros(150, dtype=torch.bool)
    is_video_line[[p for p in range(150) if mod[p] == 2 and (int((mod[:p] == 2).sum()) % 20 == 0)]] = True
    text_rows = (mod == 0)[:, None]
    want = torch.where(text_rows, (j < 4) | (j >= i - 9), is_video_line[None, :] | (j >= i - 5))
    assert torch.equal(mask & (j <= i), want & (j <= i))


# ---------------------------------------------------------------------------------------------
# Attention


def _check_attention(case, index):
    mod = case["mod"]
    B, S, M = len(mod), len(mod[0]), case["M"]
    H = index.q_perm.shape[1]
    gen = torch.Generator().manual_seed(len(mod[0]) * 31 + H)
    D = 64
    q = torch.randn(B, 2 * H, S, D, generator=gen)
    kv_heads = H  # GQA: two query heads per key/value head
    k = torch.randn(B, kv_heads, S, D, generator=gen)
    v = torch.randn(B, kv_heads, S, D, generator=gen)
    # the index has H heads; attention has 2H query heads -> repeat the index per query head
    rep = lambda t: None if t is None else t.repeat_interleave(2, dim=1)  # noqa: E731
    full = mmi.SparseIndex(index.block_q, rep(index.kv_ranges), rep(index.kv_range_count),
                           rep(index.kv_columns), rep(index.kv_column_count),
                           q_perm=rep(index.q_perm), k_perm=rep(index.k_perm))
    out, lse = mmi.sparse_attention(q, k, v, full, scale=0.125, return_lse=True)
    R, C = capacities(case, S)
    mask = torch.zeros(B, 2 * H, S, S, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            perm, _, blocks = ref_head(mod[b], *expanded_inputs(case, b, h), M, case["block_q"],
                                       case["block_k"], R, C)
            mask[b, 2 * h] = mask[b, 2 * h + 1] = expand(blocks, perm, S, case["block_q"])
    mask &= torch.arange(S)[None, :] <= torch.arange(S)[:, None]
    ref_out, ref_lse = masked_attention_float64(q, k, v, mask, 0.125)
    assert relative_error(out, ref_out) < 1e-5
    empty = ~mask.any(-1)
    assert torch.equal(torch.isinf(lse) & (lse < 0), empty)
    assert torch.allclose(lse[~empty].double(), ref_lse[~empty], atol=1e-4)
    assert not out[empty].any()


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_attention_matches_dense_reference(seed):
    case = boundary_case(4000 + seed)
    index, _ = run(case)
    _check_attention(case, index)


# ---------------------------------------------------------------------------------------------
# Threads, broadcasting, devices of the wrapper


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_threads_and_broadcast_are_consistent(seed):
    """One thread or many, broadcast (size-1) inputs or materialized ones: the same index."""
    case = boundary_case(seed)
    mod, *rest = tensors(case)
    B, H = mod.shape[0], heads_of(case) + 2
    base = dict(num_modalities=case["M"], block_q=case["block_q"], block_k=case["block_k"],
                max_ranges=case["max_ranges"], max_columns=case["max_columns"])

    def build(stride, phase, pattern, vertical, slash):
        return ops.build_boundary_index(mod, pattern, grid_stride=stride, grid_phase=phase,
                                        vertical=vertical, slash=slash, **base)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = build(*rest)
    finally:
        torch.set_num_threads(threads)
    many = build(*rest)
    # every input materialized at (B, H') with H' = H if the case has several heads, else 3
    H = heads_of(case) if heads_of(case) > 1 else 3
    full = build(*(t.expand(B, H, *t.shape[2:]).contiguous() for t in rest))
    for field in ("q_perm", "k_perm", "kv_ranges", "kv_range_count", "kv_columns", "kv_column_count"):
        a, b, c = getattr(one[0], field), getattr(many[0], field), getattr(full[0], field)
        assert torch.equal(a, b), field
        assert torch.equal(c, a.expand_as(c)), field
    assert torch.equal(one[1], many[1])


@pytest.mark.parametrize("seed", SEEDS[:16])
def test_exact_capacities_build_the_same_index_as_the_static_bound(seed):
    """The default (counted, exact) capacities hold every block uncapped: the same blocks as with
    `boundary_index_capacity`'s static bound, in at most as much memory."""
    case = dict(boundary_case(seed), max_ranges=None, max_columns=None)
    S = len(case["mod"][0])
    nv, ns = len(case["vertical"][0][0][0]), len(case["slash"][0][0][0])
    bound = ops.boundary_index_capacity(case["M"], S, case["block_q"], case["block_k"], nv, ns)
    exact, _ = run(case)
    static, _ = run(case, max_ranges=bound[0], max_columns=bound[1])
    assert exact.kv_ranges.shape[3] <= bound[0] and exact.kv_columns.shape[3] <= bound[1]
    assert exact.kv_ranges.shape[3] == max(1, int(static.kv_range_count.max()))
    assert exact.kv_columns.shape[3] == int(static.kv_column_count.max())
    for b in range(exact.q_perm.shape[0]):
        for h in range(exact.q_perm.shape[1]):
            assert read_blocks(exact, b, h) == read_blocks(static, b, h)


def test_count_mode_needs_both_capacities_zero():
    """The op's count mode (max_ranges = max_columns = 0) is internal; any other 0 is an error."""
    mod, stride, phase, pattern, vertical, slash = tensors(boundary_case(3))
    with pytest.raises(ValueError, match="max_ranges"):
        torch.ops.mminference.build_boundary_index(mod, stride, phase, pattern, vertical, slash, 3, 16, 8, 0, 4)


def test_wrapper_defaults_and_lower_ranks():
    ids = interleaved_layout().modality_ids()  # (S,)
    index, off = ops.build_boundary_index(ids, ops.pair_pattern({})[0, 0])  # (M, M, 4)
    assert tuple(index.q_perm.shape) == (1, 1, 211)
    # all DENSE, no grid: each block sees every causal key
    S = 211
    mask = expand(read_blocks(index, 0, 0), index.q_perm[0, 0].tolist(), S, 128)
    causal = torch.arange(S)[None, :] <= torch.arange(S)[:, None]
    assert torch.equal(mask & causal, causal)


@pytest.mark.gpu
def test_wrapper_returns_the_index_on_the_modality_device():
    ids = interleaved_layout().modality_ids().cuda()
    index, off = ops.build_boundary_index(ids, ops.pair_pattern({}).cuda())
    assert index.kv_ranges.is_cuda and index.q_perm.is_cuda and off.is_cuda


# ---------------------------------------------------------------------------------------------
# Errors


def names(exc_info, *candidates):
    msg = str(exc_info.value)
    assert any(re.search(rf"\b{re.escape(c)}\b", msg) for c in candidates), msg


def _call(mod=None, pattern=None, M=3, **kwargs):
    mod = torch.tensor([[0, 0, 2, 2, 2, 1, 0, 2, 2, 0]], dtype=torch.int32) if mod is None else mod
    pattern = ops.pair_pattern({}, M) if pattern is None else pattern
    kwargs.setdefault("num_modalities", M)
    kwargs.setdefault("block_q", 4)
    kwargs.setdefault("block_k", 4)
    return ops.build_boundary_index(mod, pattern, **kwargs)


def _pattern_with(entry, M=3):
    p = ops.pair_pattern({}, M).clone()
    p[0, 0, 2, 1] = torch.tensor(entry, dtype=torch.int32)
    return p


def i32(x):
    return torch.tensor(x, dtype=torch.int32)


BAD = [
    (dict(mod=i32([[0, 3, 1]])), ValueError, ("modality",)),
    (dict(mod=i32([[0, -1, 1]])), ValueError, ("modality",)),
    (dict(mod=torch.zeros(1, 0, dtype=torch.int32)), ValueError, ("modality", "seq")),
    (dict(mod=torch.zeros(1, 1, 4, dtype=torch.int32)), ValueError, ("modality",)),
    (dict(mod=torch.zeros(1, 4, dtype=torch.int64)), TypeError, ("modality",)),
    (dict(M=9, pattern=ops.pair_pattern({}, 9)), ValueError, ("num_modalities",)),
    (dict(M=0, pattern=torch.zeros(1, 1, 0, 0, 4, dtype=torch.int32)), ValueError, ("num_modalities",)),
    (dict(num_modalities=2), ValueError, ("pair_pattern", "grid_stride")),
    (dict(grid_stride=i32([[[0, 0, -1]]])), ValueError, ("grid_stride",)),
    (dict(grid_stride=i32([[[0, 0, 4]]]), grid_phase=i32([[[0, 0, 4]]])), ValueError, ("grid_phase",)),
    (dict(grid_stride=i32([[[0, 0, 4]]]), grid_phase=i32([[[0, 0, -1]]])), ValueError, ("grid_phase",)),
    (dict(grid_phase=i32([[[0, 1, 0]]])), ValueError, ("grid_phase",)),
    (dict(grid_stride=i32([[[0, 0]]])), ValueError, ("grid_stride",)),
    (dict(grid_stride=torch.zeros(1, 1, 3, dtype=torch.int64)), TypeError, ("grid_stride",)),
    (dict(grid_stride=torch.zeros(2, 1, 3, dtype=torch.int32)), ValueError, ("grid_stride",)),
    (dict(grid_stride=torch.zeros(1, 2, 3, dtype=torch.int32),
          grid_phase=torch.zeros(1, 3, 3, dtype=torch.int32)), ValueError, ("grid_phase", "grid_stride")),
    (dict(pattern=_pattern_with([5, 0, 0, 0])), ValueError, ("pair_pattern",)),
    (dict(pattern=_pattern_with([-1, 0, 0, 0])), ValueError, ("pair_pattern",)),
    (dict(pattern=_pattern_with([A_SHAPE, -1, 4, 0])), ValueError, ("pair_pattern", "sink")),
    (dict(pattern=_pattern_with([A_SHAPE, 1, -4, 0])), ValueError, ("pair_pattern", "local")),
    (dict(pattern=_pattern_with([LINES, 2, 0, 0])), ValueError, ("pair_pattern", "use_hlines")),
    (dict(pattern=_pattern_with([LINES, 0, 1, -1])), ValueError, ("pair_pattern", "local")),
    (dict(pattern=torch.zeros(1, 1, 3, 3, 3, dtype=torch.int32)), ValueError, ("pair_pattern",)),
    (dict(vertical=i32([[[[3, 2], [0, 1], [0, 1]]]])), ValueError, ("vertical",)),
    (dict(vertical=i32([[[[2, 2], [0, 1], [0, 1]]]])), ValueError, ("vertical",)),
    (dict(vertical=i32([[[[0, 1], [0, 10], [0, 1]]]])), ValueError, ("vertical",)),
    (dict(vertical=i32([[[[0, 1], [0, 1], [-1, 4]]]])), ValueError, ("vertical",)),
    (dict(vertical=i32([[[[0, 1], [0, 1], [-2, 4]]]])), ValueError, ("vertical",)),
    (dict(vertical=torch.zeros(1, 1, 1, 3, 2, dtype=torch.int32)), ValueError, ("vertical",)),
    (dict(vertical=torch.zeros(1, 1, 2, 2, dtype=torch.int32)), ValueError, ("vertical",)),
    (dict(slash=i32([[[[0, 1], [5, 4], [0, 1]]]])), ValueError, ("slash",)),
    (dict(slash=i32([[[[0, 1], [0, 1], [0, 11]]]])), ValueError, ("slash",)),
    (dict(slash=i32([[[[-1, 0], [0, 1], [0, 1]]]])), ValueError, ("slash",)),
    (dict(slash=torch.zeros(1, 1, 3, 1, dtype=torch.int64)), TypeError, ("slash",)),
    (dict(block_q=0), ValueError, ("block_q",)),
    (dict(block_k=0), ValueError, ("block_k",)),
    (dict(block_k=5000), ValueError, ("block_k",)),
    (dict(max_ranges=0), ValueError, ("max_ranges",)),
    (dict(max_columns=-1), ValueError, ("max_columns",)),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: str(b[0].keys()) + str(b[2]))
def test_invalid_inputs_name_the_argument(bad):
    _call()  # the baseline is valid
    kwargs, exc, expected = bad
    with pytest.raises(exc) as e:
        _call(**kwargs)
    names(e, *expected)


def test_error_names_the_entry_of_a_later_head():
    stride = i32([[[0, 0, 4], [0, 0, 5]]])
    phase = i32([[[0, 0, 3], [0, 0, 5]]])
    with pytest.raises(ValueError, match=r"grid_phase\[0, 1, 2\] = 5"):
        _call(grid_stride=stride, grid_phase=phase)
    pattern = ops.pair_pattern({}).repeat(1, 2, 1, 1, 1)
    pattern[0, 1, 1, 2, 0] = 9
    with pytest.raises(ValueError, match=r"pair_pattern\[0, 1, 1, 2\]"):
        _call(pattern=pattern)
