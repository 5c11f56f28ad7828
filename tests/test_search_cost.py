"""Search building blocks: the cost model and budget, candidate ladders, row sampling and the
per-layer statistics (against float64 re-derivations)."""

import math

import pytest
import torch

import mminference as mmi
from mminference import Modality, ModalityLayout, Segment, VisualGrid
from mminference.search import (Budget, CostModel, dense_cost, fit_cost_model, index_work, layer_statistics,
                                sample_rows)
from mminference.search import candidates


def _causal_tiles(seq, block_q, block_k):
    return sum(math.ceil(min((qb + 1) * block_q, seq) / block_k) for qb in range(math.ceil(seq / block_q)))


def test_dense_cost_and_budget_kinds():
    model = CostModel(tile_seconds=2.0, block_seconds=3.0, block_q=128, block_k=64)
    seq = 1000
    dense = _causal_tiles(seq, 128, 64) * 2.0 + math.ceil(seq / 128) * 3.0
    assert dense_cost(seq, model) == pytest.approx(dense)
    assert Budget("0.25").seconds(seq, model) == pytest.approx(0.25 * dense)
    assert Budget("seconds:7.5").seconds(seq, model) == 7.5
    # ashape:SINK:LOCAL: per query block one sink tile plus the aligned window [qs - 255, qe) (clipped).
    tiles = 0
    for qb in range(math.ceil(seq / 128)):
        qs, qe = qb * 128, min((qb + 1) * 128, seq)
        lo = max(0, (qs - 256 + 1) // 64 * 64)
        hi = min(math.ceil(qe / 64) * 64, seq)
        tiles += math.ceil((hi - lo) / 64) + (1 if lo >= 64 else 0)
    assert Budget("ashape:64:256").seconds(seq, model) == pytest.approx(tiles * 2.0 + math.ceil(seq / 128) * 3.0)


@pytest.mark.parametrize("spec", ["-0.1", "0", "abc", "ashape:1:0", "seconds:-1", "nan"])
def test_bad_budgets(spec):
    with pytest.raises(ValueError, match="budget"):
        Budget(spec)


def test_cost_model_validation_and_fit():
    with pytest.raises(ValueError, match="tile_seconds"):
        CostModel(tile_seconds=-1.0)
    with pytest.raises(ValueError, match="block_k"):
        CostModel(block_k=0)
    samples = [(t, b, 3e-9 * t + 7e-9 * b) for t, b in [(100, 10), (400, 10), (900, 30), (50, 40)]]
    fitted = fit_cost_model(samples)
    assert fitted.tile_seconds == pytest.approx(3e-9, rel=1e-6)
    assert fitted.block_seconds == pytest.approx(7e-9, rel=1e-6)
    with pytest.raises(ValueError, match="samples"):
        fit_cost_model(samples[:1])


def test_index_work_counts_tiles_and_blocks():
    index = mmi.build_a_shape_index(500, 500, block_q=100, block_k=50, sink=50, local=60)
    tiles, blocks = index_work(index, 500, 3, 50)
    expected = 0
    for r, n in zip(index.kv_ranges[0, 0].tolist(), index.kv_range_count[0, 0].tolist()):
        expected += sum(math.ceil((e - s) / 50) for s, e in r[:n])
    assert tiles.tolist() == [expected] * 3 and blocks.tolist() == [5] * 3


def test_ladders_are_decreasing_and_families_nested():
    sizes = candidates.ladder(4096, 64, "vertical_slash")
    assert sizes == sorted(set(sizes), reverse=True) and sizes[0] == 4096 and sizes[-1] == 1
    assert all(s % 64 == 0 for s in sizes[:-1])
    assert candidates.ladder(4096, 64, "dense") == [4096]
    for family in candidates.default_families(64, (64,), (0.25, 0.9)):
        big, small = family.make(sizes[2]), family.make(sizes[5])
        if isinstance(big, mmi.VerticalSlash):
            assert big.num_vertical >= small.num_vertical and big.num_slash >= small.num_slash
            assert big.force_sink <= max(1, big.num_vertical) and big.force_local <= big.num_slash
        elif isinstance(big, (mmi.AShape, mmi.Grid)):
            assert big.local >= small.local
    assert candidates.shrink(mmi.AShape(64, 100), 0.5) == mmi.AShape(64, 50)
    assert candidates.shrink(mmi.Grid(local=1), 0.5) is None
    # At their smallest sizes patterns do not shrink (None, not the same pattern again).
    assert candidates.shrink(mmi.AShape(64, 1), 0.5) == mmi.AShape(64, 0)
    assert candidates.shrink(mmi.AShape(64, 0), 0.5) is None
    assert candidates.shrink(mmi.AShape(0, 1), 0.5) is None
    assert candidates.shrink(mmi.VerticalSlash(0, 1, 0, 0), 0.5) is None
    assert candidates.shrink(mmi.Dense(), 0.5) is None
    assert candidates.inner(mmi.Grid(sink=64)).sink == 0


def _layout():
    return ModalityLayout.from_spans(600, [Segment(Modality.VIDEO, 100, 500, VisualGrid(4, 10, 10))])


def test_sample_rows_are_stratified_and_deterministic():
    layout = _layout()
    rows = sample_rows(layout, 8, seed=3)
    assert torch.equal(rows, sample_rows(layout, 8, seed=3))
    assert not torch.equal(rows, sample_rows(layout, 8, seed=4))
    ids = layout.modality_ids()[rows]
    assert int((ids == int(Modality.VIDEO)).sum()) == 8 and int((ids == int(Modality.TEXT)).sum()) == 8
    video = rows[ids == int(Modality.VIDEO)] - 100
    assert sorted((video // 50).tolist()) == list(range(8))  # one row per stratum of 50 video tokens
    with pytest.raises(ValueError, match="rows_per_modality"):
        sample_rows(layout, 0, seed=0)


def test_layer_statistics_match_float64():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 600, 32, generator=gen)
    k = torch.randn(1, 2, 600, 32, generator=gen)
    v = torch.randn(1, 2, 600, 32, generator=gen)
    rows = sample_rows(_layout(), 5, seed=0)
    stats = layer_statistics(q, k, v, _layout(), rows)
    k64 = k.double().repeat_interleave(2, 1)[0]
    logits = torch.einsum("hrd,hsd->hrs", q.double()[0][:, rows], k64) / math.sqrt(32)
    logits = logits.masked_fill(torch.arange(600)[None, None] > rows[None, :, None], float("-inf"))
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(stats.probs.double(), probs, atol=1e-6, rtol=1e-5)
    out = probs @ v.double().repeat_interleave(2, 1)[0]
    torch.testing.assert_close(stats.dense_out.double(), out, atol=1e-5, rtol=1e-5)
    assert stats.row_modality.tolist() == _layout().modality_ids()[rows].tolist()
    with pytest.raises(ValueError, match="layout"):
        layer_statistics(q[:, :, :500], k[:, :, :500], v[:, :, :500], _layout(), rows)


@pytest.mark.gpu
def test_cost_model_calibrated_by_timing_the_kernel():
    from mminference.search import time_cost_samples

    samples = time_cost_samples(seq=16384, heads=8, kv_heads=2, locals_=(512, 2048, 8192, 16384), repeats=3)
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)  # more local keys, more tiles
    model = fit_cost_model(samples)
    assert model.tile_seconds > 0
    for tiles, blocks, seconds in samples:
        predicted = model.seconds(torch.tensor(tiles), torch.tensor(blocks)).item()
        assert 0.5 < predicted / seconds < 2.0


class _FakeLayer:
    """What `fit_family` uses of a `LayerContext`, with a cost per head linear in the A-shape's local
    window: `cost[h] = slope[h] * local`, dense = 1 s."""

    def __init__(self, slopes):
        self.slopes = torch.tensor(slopes, dtype=torch.float64)
        self.heads, self.seq, self.dense_seconds = len(slopes), 4096, 1.0
        self.model = CostModel(block_q=128, block_k=64)
        self.local = None

    def build(self, pattern, heads):
        self.local = pattern.local
        return mmi.SparseIndex.causal(self.seq, self.seq, 128)

    def cost(self, index, count):
        return self.slopes * self.local

    def score(self, index, heads):
        return torch.zeros(len(heads), 1, 3, dtype=torch.float64), torch.zeros(len(heads), dtype=torch.float64)


def test_fit_family_gives_every_head_its_largest_fitting_size():
    """Per head the largest ladder size within the budget, also when other heads of the layer do not
    fit at the ladder's starting size (a plain scan of the ladder is the reference)."""
    from mminference.search.evaluate import fit_family

    family = candidates.default_families(64, (16,), ())[0]  # A-shape, sink 16, local = size
    ladder = candidates.ladder(4096, 64, family.kind)
    budget = 0.25
    for slopes in ([0.25 / 3000, 1 / 1000], [1 / 1000, 0.25 / 3000, 0.25 / 700], [0.25 / 5000] * 2):
        got = fit_family(_FakeLayer(slopes), family, budget)
        for h, slope in enumerate(slopes):
            want = max(x for x in ladder if slope * x <= budget)
            assert got[h].pattern.local == want and got[h].cost == pytest.approx(slope * want)
