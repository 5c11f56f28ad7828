"""The per-layer search returns each head's planted pattern (tests/search_plants.py) within the
budget, deterministically."""

import math

import pytest

from mminference import AShape, Grid, HeadConfig, QBoundary, VerticalSlash
from mminference.attention import build_layout_index
from mminference.search import Budget, CostModel, SearchOptions, search_layer

import search_plants as plants

MODEL = CostModel(block_q=32, block_k=16)
OPTIONS = SearchOptions(cost_model=MODEL)
KINDS = ["a_shape", "vertical_slash", "grid", "boundary"]


@pytest.fixture(scope="module", params=[0, 3])
def planted(request):
    q, k, v = plants.planted_qk(KINDS, seed=request.param)
    results = search_layer(q, k, v, plants.layout(), Budget("0.3"), OPTIONS, scale=1.0)
    return q, k, v, results


def _python_cost(index, heads: int, seq: int) -> list[float]:
    """Modelled seconds per head from the index's ranges and columns (plain Python)."""
    out = []
    for h in range(heads):
        pick = lambda t: t[0, h if t.shape[1] > 1 else 0]  # noqa: E731
        tiles = blocks = 0
        for qb in range(index.num_q_blocks):
            n = int(pick(index.kv_range_count)[qb])
            block = sum(math.ceil((e - s) / MODEL.block_k) for s, e in pick(index.kv_ranges)[qb, :n].tolist())
            block += math.ceil(int(pick(index.kv_column_count)[qb]) / MODEL.block_k)
            tiles += block
            blocks += block > 0
        out.append(tiles * MODEL.tile_seconds + blocks * MODEL.block_seconds)
    return out


def test_planted_patterns_are_found(planted):
    _, _, _, results = planted
    a_shape, vertical_slash, grid, boundary = results
    assert a_shape.boundary == "none" and isinstance(a_shape.pattern, AShape)
    assert vertical_slash.boundary == "none" and isinstance(vertical_slash.pattern, VerticalSlash)
    assert grid.boundary == "none" and isinstance(grid.pattern, Grid)
    assert grid.pattern.strides == (plants.STRIDE,)
    # The boundary head (text rows: text columns, video rows: grid lines) needs a boundary pattern
    # whose video part is the planted grid.
    assert boundary.boundary in ("k", "q", "2d")
    parts = (boundary.pattern.per_modality if isinstance(boundary.pattern, QBoundary)
             else boundary.pattern.per_pair).values()
    assert any(isinstance(p, Grid) and p.strides == (plants.STRIDE,) for p in parts)
    for r in results:
        assert r.kept_mass > 0.94 and r.output_error < 0.06


def test_boundary_beats_every_no_boundary_pattern(planted):
    q, k, v, results = planted
    options = SearchOptions(cost_model=MODEL, boundaries=("none",))
    no_boundary = search_layer(q, k, v, plants.layout(), Budget("0.3"), options, scale=1.0)
    assert no_boundary[3].boundary == "none"
    assert results[3].output_error < 0.5 * no_boundary[3].output_error
    assert results[3].kept_mass > no_boundary[3].kept_mass + 0.01
    for h in range(3):  # heads without a boundary get the same choice
        assert no_boundary[h].pattern == results[h].pattern


def test_budget_is_respected_by_the_real_index(planted):
    q, k, v, results = planted
    budget = Budget("0.3").seconds(plants.SEQ, MODEL)
    config = HeadConfig([[r.pattern for r in results]])
    index, _ = build_layout_index(q, k, plants.layout(), config, block_q=MODEL.block_q, block_k=MODEL.block_k,
                                  scale=1.0)
    costs = _python_cost(index, len(results), plants.SEQ)
    dense = (sum(math.ceil(min((qb + 1) * 32, plants.SEQ) / 16) for qb in range(plants.SEQ // 32))
             * MODEL.tile_seconds + plants.SEQ // 32 * MODEL.block_seconds)
    for r, cost in zip(results, costs):
        assert cost <= budget * (1 + 1e-9)
        assert r.cost == pytest.approx(cost, rel=1e-9)
        assert r.budget == pytest.approx(budget) and budget == pytest.approx(0.3 * dense)
        assert r.cost_fraction == pytest.approx(cost / dense)


def test_cost_grows_with_the_budget_and_stays_inside(planted):
    q, k, v, results = planted
    wide = search_layer(q, k, v, plants.layout(), Budget("0.6"), OPTIONS, scale=1.0)
    for narrow_r, wide_r in zip(results, wide):
        assert wide_r.cost <= wide_r.budget * (1 + 1e-9)
        assert wide_r.kept_mass >= narrow_r.kept_mass - 0.01
    assert sum(r.cost for r in wide) > sum(r.cost for r in results)


def test_search_is_deterministic(planted):
    q, k, v, results = planted
    again = search_layer(q, k, v, plants.layout(), Budget("0.3"), OPTIONS, scale=1.0)
    assert [(r.pattern, r.kept_mass, r.output_error, r.cost) for r in again] == \
        [(r.pattern, r.kept_mass, r.output_error, r.cost) for r in results]


def test_a_budget_below_every_candidate_falls_back_and_says_so():
    q, k, v = plants.planted_qk(["a_shape"])
    results = search_layer(q, k, v, plants.layout(), Budget("0.01"), OPTIONS, scale=1.0)
    assert results[0].family == "a_shape(fallback)" and results[0].cost > results[0].budget


def test_bad_arguments():
    q, k, v = plants.planted_qk(["a_shape"])
    with pytest.raises(ValueError, match="budget"):
        search_layer(q, k, v, plants.layout(), "-0.2", OPTIONS)
    with pytest.raises(ValueError, match="budget"):
        search_layer(q, k, v, plants.layout(), -1.0, OPTIONS)
    with pytest.raises(ValueError, match="q: expected"):
        search_layer(q[0], k, v, plants.layout(), "0.3", OPTIONS)
    with pytest.raises(ValueError, match="boundaries"):
        SearchOptions(boundaries=("q",))
    with pytest.raises(ValueError, match=r"max_shrinks must be an int >= 0, got -1"):
        SearchOptions(max_shrinks=-1)
    with pytest.raises(ValueError, match=r"rows_per_modality must be an int >= 1, got 0"):
        SearchOptions(rows_per_modality=0)
    assert SearchOptions(max_shrinks=0).max_shrinks == 0  # no shrinking is allowed
    with pytest.raises(ValueError, match="layout"):
        search_layer(q[:, :, :512], k[:, :, :512], v[:, :, :512], plants.layout(), "0.3", OPTIONS)


@pytest.mark.gpu
def test_planted_patterns_on_cuda(planted):
    q, k, v, results = planted
    cuda = search_layer(q.cuda().bfloat16(), k.cuda().bfloat16(), v.cuda().bfloat16(), plants.layout(),
                        Budget("0.3"), OPTIONS, scale=1.0)
    assert isinstance(cuda[0].pattern, AShape) and isinstance(cuda[1].pattern, VerticalSlash)
    assert isinstance(cuda[2].pattern, Grid) and cuda[2].pattern.strides == (plants.STRIDE,)
    assert cuda[3].boundary != "none"
    for r in cuda:
        assert r.cost <= r.budget * (1 + 1e-9)
