"""Per-head patterns through `sparse_attention_for_layout`: outputs against float64 masked attention
(masks re-derived from the pattern rules for A-shape and grid), planted-structure recall, the auto
rule, and config validation. CPU, small S."""

from __future__ import annotations

import math

import pytest
import torch

from mminference import Modality, ModalityLayout, Segment, VisualGrid, ops, sparse_attention
from mminference.attention import build_layout_index, sparse_attention_for_layout
from mminference.patterns import (AShape, Auto, Dense, Grid, HeadConfig, QBoundary, TwoDBoundary,
                                  VerticalSlash)
from reference import dense_mask_from_index, masked_attention_float64, relative_error

TEXT, VIDEO = Modality.TEXT, Modality.VIDEO


def planted(seq_before: int = 256, tpf: int = 128, frames: int = 28, text_after: int = 64, phase: int = 5,
            heads: int = 1, text_columns: tuple[int, ...] = (), seed: int = 0):
    """q, k, v `(1, heads, S, 64)` and the layout: video queries put large logits (10^2 / 8) on the
    grid lines (video keys at rank % tpf == phase); trailing text queries attend text keys (all of
    them mildly, `text_columns` strongly); everything else is noise."""
    seq = seq_before + tpf * frames + text_after
    start, end = seq_before, seq_before + tpf * frames
    gen = torch.Generator().manual_seed(seed)
    q = 0.3 * torch.randn(1, heads, seq, 64, generator=gen)
    k = 0.3 * torch.randn(1, heads, seq, 64, generator=gen)
    lines = torch.arange(start + phase, end, tpf)
    k[..., lines, 0] += 10.0
    q[..., start:end, 0] += 10.0
    text = torch.cat([torch.arange(0, start), torch.arange(end, seq)])
    k[..., text, 1] += 3.0
    q[..., end:, 1] += 3.0
    if text_columns:
        k[..., list(text_columns), 2] += 10.0
        q[..., text, 2] += 10.0
    layout = ModalityLayout.from_spans(seq, [Segment(VIDEO, start, end, VisualGrid(frames, tpf // 8, 8))])
    return q, k, torch.randn(1, heads, seq, 64, generator=gen), layout


def recall_density(q, k, index) -> tuple[float, float]:
    """Share of the float64 causal softmax mass inside the index's mask (mean over rows and heads),
    and computed pairs over causal pairs."""
    heads, seq = q.shape[1], q.shape[2]
    mask = dense_mask_from_index(index, 1, heads, seq, seq, True)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    probs = torch.softmax(scores.masked_fill(~causal, -math.inf), -1)
    return (float((probs * mask).sum() / (seq * heads)),
            index.computed_pairs(seq) / (heads * seq * (seq + 1) / 2))


def check_output(q, k, v, index, mask):
    got = sparse_attention(q, k, v, index)
    ref, _ = masked_attention_float64(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]))
    assert relative_error(got, ref) < 1e-5


# ---- (a) outputs equal dense float64 attention under each pattern's mask -------------------------

def a_shape_mask(seq, block_q, block_k, sink, local) -> torch.Tensor:
    """The A-shape rule: per query block [qs, qe), keys [0, ceil(sink / bk) bk) and
    [floor((qs - local + 1) / bk) bk, qe), clipped to the block's causal limit; then causal."""
    mask = torch.zeros(seq, seq, dtype=torch.bool)
    for qs in range(0, seq, block_q):
        qe = min(qs + block_q, seq)
        if sink:
            mask[qs:qe, : min(-(-sink // block_k) * block_k, qe)] = True
        lo = max(0, (qs - local + 1) // block_k * block_k)
        mask[qs:qe, lo:qe] = True
    return mask & torch.ones(seq, seq, dtype=torch.bool).tril()


def grid_mask(seq, span, stride, phase, block_q, block_k, sink, local, hlines, vlines) -> torch.Tensor:
    """The grid rule (mmi_index_builders.h) in plain Python: lines first in slot order, ranges per
    query block in slot space, aligned outward to block_k; then causal on original positions."""
    start, end = span
    is_line = [start <= p < end and (p - start) % stride == phase for p in range(seq)]
    lines = [p for p in range(seq) if is_line[p]]
    others = [p for p in range(seq) if not is_line[p]]
    perm, n = lines + others, len(lines)
    count_l = lambda x: sum(1 for p in lines if p < x)  # noqa: E731
    count_o = lambda x: sum(1 for p in others if p < x)  # noqa: E731
    mask = torch.zeros(seq, seq, dtype=torch.bool)
    for a in range(0, seq, block_q):
        rows = perm[a: a + block_q]
        pmin, pmax = min(rows), max(rows)
        if hlines and a < n:
            ranges = [(0, count_l(pmax + 1)), (n, n + count_o(pmax + 1))]
        else:
            ranges = [(0, count_l(pmax + 1))] if vlines else []
            e = min(sink, pmax + 1)
            ranges += [(0, count_l(e)), (n, n + count_o(e))]
            lo = pmin - local + 1
            ranges += [(count_l(lo), count_l(pmax + 1)), (n + count_o(lo), n + count_o(pmax + 1))]
        keys = set()
        for s, t in ranges:
            if s < t:
                keys.update(perm[s // block_k * block_k: min(-(-t // block_k) * block_k, seq)])
        keys = sorted(keys)
        for r in rows:
            mask[r, keys] = True
    return mask & torch.ones(seq, seq, dtype=torch.bool).tril()


def small_input(seed=0, heads=2):
    return planted(seq_before=64, tpf=32, frames=8, text_after=64, phase=3, heads=heads, seed=seed)


def test_a_shape_matches_rule():
    q, k, v, layout = small_input()
    index, _ = build_layout_index(q, k, layout, AShape(sink=40, local=100), block_q=32, block_k=16)
    seq = q.shape[2]
    mask = a_shape_mask(seq, 32, 16, 40, 100).expand(1, 2, seq, seq)
    assert torch.equal(dense_mask_from_index(index, 1, 2, seq, seq, True), mask)
    check_output(q, k, v, index, mask)


@pytest.mark.parametrize("hlines,vlines", [(True, True), (False, True), (True, False)])
def test_grid_matches_rule_with_detected_stride_and_phase(hlines, vlines):
    q, k, v, layout = small_input()
    pattern = Grid(local=40, sink=8, use_hlines=hlines, use_vlines=vlines)
    index, _ = build_layout_index(q, k, layout, pattern, block_q=32, block_k=16)
    seq = q.shape[2]
    # Planted: stride 32 (tokens per frame), phase 3 within the video span [64, 320).
    mask = grid_mask(seq, (64, 320), 32, 3, 32, 16, 8, 40, hlines, vlines).expand(1, 2, seq, seq)
    assert torch.equal(dense_mask_from_index(index, 1, 2, seq, seq, True), mask)
    check_output(q, k, v, index, mask)


@pytest.mark.parametrize("pattern", [
    Dense(),
    VerticalSlash(num_vertical=24, num_slash=40, force_sink=4, force_local=16),
    QBoundary({TEXT: VerticalSlash(24, 40, 4, 16), VIDEO: Grid(local=40)}),
    TwoDBoundary({(VIDEO, VIDEO): Grid(local=40), (VIDEO, TEXT): AShape(sink=16, local=0),
                  (TEXT, TEXT): VerticalSlash(24, 40, 4, 16), (TEXT, VIDEO): VerticalSlash(24, 40, 4, 16)}),
])
def test_index_patterns_match_float64(pattern):
    q, k, v, layout = small_input()
    index, _ = build_layout_index(q, k, layout, pattern, block_q=32, block_k=16)
    seq = q.shape[2]
    mask = dense_mask_from_index(index, 1, 2, seq, seq, True)
    if isinstance(pattern, Dense):
        assert torch.equal(mask, torch.ones(1, 2, seq, seq, dtype=torch.bool).tril())
    check_output(q, k, v, index, mask)


def test_mixed_heads_combine_into_one_index():
    """Each head of a mixed config computes what it computes alone (capacities padded, identity
    permutations materialised), in one sparse_attention call."""
    q, k, v, layout = small_input(heads=4)
    patterns = [AShape(16, 64), Grid(local=40), VerticalSlash(24, 40, 4, 16),
                QBoundary({TEXT: VerticalSlash(24, 40, 4, 16), VIDEO: Grid(local=40)})]
    out = sparse_attention_for_layout(q, k, v, layout, HeadConfig([patterns]), block_q=32, block_k=16)
    index, choices = build_layout_index(q, k, layout, HeadConfig([patterns]), block_q=32, block_k=16)
    assert [c.pattern for c in choices] == patterns and index.q_perm.shape == (1, 4, q.shape[2])
    for h, p in enumerate(patterns):
        sl = slice(h, h + 1)
        alone = sparse_attention_for_layout(q[:, sl], k[:, sl], v[:, sl], layout, p, block_q=32, block_k=16)
        torch.testing.assert_close(out[:, sl], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("use_layout,patterns,want", [
    # A lone grid estimates its video's column mass only (the video span ends at 320).
    (True, [Grid(local=40)] * 2, [("estimate_vertical_scores", 320)]),
    # A grid and a vertical-slash head at one query_end share one full estimate, grid head first.
    (False, [Grid(local=40), VerticalSlash(24, 40, 4, 16)], [("estimate_vertical_slash_scores", 384)]),
    (True, [QBoundary({TEXT: VerticalSlash(24, 40, 4, 16), VIDEO: Grid(local=40)})] * 2,
     [("estimate_vertical_slash_scores", 384), ("estimate_vertical_scores", 320)]),
])
def test_grids_skip_the_diagonal_sums(monkeypatch, use_layout, patterns, want):
    """Grid detection reads column mass only: it is estimated without diagonal sums unless both
    scores of that query_end are needed anyway, and then the full estimate is reused."""
    q, k, _, layout = small_input()
    calls = []

    def counted(name):
        real = getattr(ops, name)

        def call(*args, **kwargs):
            calls.append((name, kwargs["query_end"]))
            return real(*args, **kwargs)
        return call

    for name in ("estimate_vertical_slash_scores", "estimate_vertical_scores"):
        monkeypatch.setattr(ops, name, counted(name))
    build_layout_index(q, k, layout if use_layout else None, HeadConfig([patterns]), block_q=32, block_k=16)
    assert calls == want


# ---- (b) planted structure ---------------------------------------------------------------------

def test_planted_grid_detected_exactly():
    q, k, v, layout = planted(phase=5)
    _, choices = build_layout_index(q, k, layout, Auto(ashape=AShape(64, 128)), block_q=64, block_k=32)
    assert isinstance(choices[0].pattern, Grid)
    assert (choices[0].stride, choices[0].phase) == (128, 5)
    assert choices[0].grid_lift > 10


def test_grid_recall_beats_text_only_vertical_slash():
    """Grid keeps >= 95% of the mass at <= 10% density. Vertical-slash (the text-only method: lists
    from the prompt's last queries, here trailing text that attends text keys) at the same or higher
    density misses the lines the video queries attend. (With an oracle estimate VS could list the
    28 line columns too: its shortfall here is the estimate, which the grid takes from the video's
    own last queries.)"""
    q, k, _, layout = planted(phase=5)
    grid, _ = build_layout_index(q, k, layout, Grid(local=32), block_q=64, block_k=32)
    grid_recall, grid_density = recall_density(q, k, grid)
    assert grid_recall >= 0.95 and grid_density <= 0.10
    vs, _ = build_layout_index(q, k, layout, VerticalSlash(64, 64, 30, 64), block_q=64, block_k=32)
    vs_recall, vs_density = recall_density(q, k, vs)
    assert vs_density >= grid_density and vs_recall < 0.5


def _matched_baseline(q, k, layout, density, make):
    """The first of make(i), i = 0, 1, ... whose density reaches `density`: (recall, density)."""
    for i in range(12):
        index, _ = build_layout_index(q, k, layout, make(i), block_q=64, block_k=32)
        r, d = recall_density(q, k, index)
        if d >= density:
            return r, d
    raise AssertionError("no baseline reached the density")


@pytest.mark.parametrize("kind", ["q", "2d"])
def test_boundary_beats_no_boundary_at_matched_density(kind):
    """Text queries attend a few text columns (VS-like), video queries the grid lines: a boundary
    head gives each modality its own pattern and estimate; each no-boundary head, given at least as
    many computed pairs, loses one modality's structure."""
    q, k, v, layout = planted(phase=5, text_columns=(7, 50, 91, 130, 177, 201))
    vs = VerticalSlash(32, 64, 8, 64)
    pattern = (QBoundary({TEXT: vs, VIDEO: Grid(local=32)}) if kind == "q" else
               TwoDBoundary({(VIDEO, VIDEO): Grid(local=32), (VIDEO, TEXT): AShape(sink=8, local=0),
                             (TEXT, TEXT): vs, (TEXT, VIDEO): vs}))
    index, _ = build_layout_index(q, k, layout, pattern, block_q=64, block_k=32)
    recall, density = recall_density(q, k, index)
    assert recall >= 0.95
    grid_r, _ = _matched_baseline(q, k, layout, density, lambda i: Grid(local=32 * 2 ** i, sink=8))
    vs_r, _ = _matched_baseline(q, k, layout, density, lambda i: VerticalSlash(32 * 2 ** i, 64, 8, 64))
    assert recall > grid_r + 0.01 and recall > vs_r + 0.01, (recall, grid_r, vs_r)


# ---- (c) auto ------------------------------------------------------------------------------------

def test_auto_picks_the_planted_pattern():
    auto = Auto(ashape=AShape(sink=64, local=128), vertical_slash=VerticalSlash(64, 128, 8, 64), grid=Grid(local=64))
    q, k, v, layout = planted(seq_before=256, tpf=64, frames=16, text_after=256, phase=9, heads=3,
                              text_columns=(100, 300))
    seq = q.shape[2]
    # head 0: grid (as planted); head 1: A-shape (sink + strong locality); head 2: vertical-slash
    # (a few scattered columns for every query, no period).
    gen = torch.Generator().manual_seed(1)
    pos = torch.arange(seq, dtype=torch.float64)
    q[0, 1] = 0.1 * torch.randn(seq, 64, generator=gen)
    k[0, 1] = 0.1 * torch.randn(seq, 64, generator=gen)
    for j in range(16):  # rotary-like features: logits peak at distance 0
        freq = 1.0 / (2.0 ** (j / 2)) / 4
        q[0, 1, :, 2 * j] += 3 * torch.cos(pos * freq).float(); q[0, 1, :, 2 * j + 1] += 3 * torch.sin(pos * freq).float()
        k[0, 1, :, 2 * j] += 3 * torch.cos(pos * freq).float(); k[0, 1, :, 2 * j + 1] += 3 * torch.sin(pos * freq).float()
    k[0, 1, 0, 40] += 30.0; q[0, 1, :, 40] += 1.0  # sink
    q[0, 2] = 0.3 * torch.randn(seq, 64, generator=gen)
    k[0, 2] = 0.3 * torch.randn(seq, 64, generator=gen)
    cols = torch.tensor([17, 333, 700, 1001, 1234])
    k[0, 2, cols, 3] += 10.0; q[0, 2, :, 3] += 10.0
    out, choices = sparse_attention_for_layout(q, k, v, layout, auto, block_q=64, block_k=32, return_choices=True)
    kinds = [type(c.pattern) for c in choices]
    assert kinds == [Grid, AShape, VerticalSlash], choices
    assert out.shape == q.shape and torch.isfinite(out).all()


# ---- (d) validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("make,field", [
    (lambda: AShape(sink=-1), "sink"),
    (lambda: AShape(sink=0, local=0), "local"),
    (lambda: VerticalSlash(num_vertical=-5), "num_vertical"),
    (lambda: VerticalSlash(num_slash=0), "num_slash"),
    (lambda: VerticalSlash(num_slash=50, force_local=100), "force_local"),
    (lambda: Grid(strides=()), "strides"),
    (lambda: Grid(strides=(64, 0)), r"strides\[1\]"),
    (lambda: Grid(local=0), "local"),
    (lambda: Grid(use_hlines=1), "use_hlines"),
    (lambda: Grid(max_stride=0), "max_stride"),
    (lambda: QBoundary({}), "per_modality"),
    (lambda: QBoundary({TEXT: QBoundary({TEXT: Dense()})}), r"per_modality\[TEXT\]"),
    (lambda: QBoundary({VIDEO: Grid(sink=4)}), r"per_modality\[VIDEO\]\.sink"),
    (lambda: QBoundary({7: Dense()}), "per_modality key"),
    (lambda: TwoDBoundary({TEXT: Dense()}), "per_pair"),
    (lambda: TwoDBoundary({(TEXT, TEXT): VerticalSlash(40, 100), (TEXT, VIDEO): VerticalSlash(50, 100)}), "per_pair"),
    (lambda: Auto(grid_lift=0), "grid_lift"),
    (lambda: Auto(ashape="x"), "ashape"),
    (lambda: HeadConfig(3), "patterns"),
    (lambda: HeadConfig([[Dense(), "dense"]]), r"patterns\[0\]\[1\]"),
    (lambda: HeadConfig(AShape(sink=4, local=0)), "patterns.local"),
    (lambda: HeadConfig([[Dense()] * 3]).for_layer(0, 4), "num_heads"),
    (lambda: HeadConfig([Dense()]).for_layer(1, 4), "layer"),
])
def test_bad_configs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_bad_calls_raise():
    q, k, v, layout = small_input()
    other = ModalityLayout.from_spans(q.shape[2], [Segment(VIDEO, 0, 32)])
    with pytest.raises(ValueError, match="layout"):
        sparse_attention_for_layout(q.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1),
                                    [layout, other], Dense())
    with pytest.raises(ValueError, match="layout"):
        sparse_attention_for_layout(q, k, v, None, QBoundary({TEXT: Dense()}))
    with pytest.raises(ValueError, match="seq_len"):
        sparse_attention_for_layout(q[:, :, :100], k[:, :, :100], v[:, :, :100], layout, Dense())


def test_batch_with_one_layout():
    q, k, v, layout = small_input()
    qb, kb, vb = (torch.cat([t, t.flip(2)]) for t in (q, k, v))
    out = sparse_attention_for_layout(qb, kb, vb, [layout, layout], Grid(local=40), block_q=32, block_k=16)
    alone = sparse_attention_for_layout(qb[1:], kb[1:], vb[1:], layout, Grid(local=40), block_q=32, block_k=16)
    torch.testing.assert_close(out[1:], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", [
    AShape(sink=40, local=100),
    Grid(local=40, sink=8),
    VerticalSlash(num_vertical=24, num_slash=40, force_sink=4, force_local=16),
    QBoundary({TEXT: VerticalSlash(24, 40, 4, 16), VIDEO: Grid(local=40)}),
    TwoDBoundary({(VIDEO, VIDEO): Grid(local=40), (VIDEO, TEXT): AShape(sink=16, local=0),
                  (TEXT, TEXT): VerticalSlash(24, 40, 4, 16), (TEXT, VIDEO): VerticalSlash(24, 40, 4, 16)}),
])
def test_patterns_on_gpu_match_float64(pattern):
    """On the GPU (estimation, builders and kernel there, bf16): the output equals dense float64
    attention under the mask of the index the head actually used."""
    q, k, v, layout = small_input()
    q, k, v = (t.to("cuda", torch.bfloat16) for t in (q, k, v))
    index, _ = build_layout_index(q, k, layout, pattern, block_q=64, block_k=32)
    got = sparse_attention(q, k, v, index.to("cuda"))
    seq = q.shape[2]
    mask = dense_mask_from_index(index.to("cpu"), 1, 2, seq, seq, True)
    ref, _ = masked_attention_float64(q.cpu(), k.cpu(), v.cpu(), mask, 1.0 / math.sqrt(q.shape[-1]))
    assert relative_error(got.cpu(), ref) < 1e-2
