"""Boundary composition of the search from per-(query modality, key modality) kept mass, and the
choice among boundary types (mminference/search/boundaries.py)."""

import pytest
import torch

from mminference import AShape, Grid, Modality, QBoundary, TwoDBoundary, VerticalSlash
from mminference.search import CostModel, SearchOptions
from mminference.search.boundaries import choose_boundary, composites
from mminference.search.evaluate import Candidate, LayerContext

import search_plants as plants

T, V = int(Modality.TEXT), int(Modality.VIDEO)


@pytest.fixture(scope="module")
def layer():
    q, k, v = plants.planted_qk(["a_shape", "grid"])
    return LayerContext(q, k, v, plants.layout(), SearchOptions(cost_model=CostModel(block_q=32, block_k=16)), 1.0)


def _kept(layer, table):
    """(R, M) kept mass: table[(query modality, key modality)] for every row of that modality."""
    rows = layer.row_modality
    kept = torch.zeros(len(rows), 3, dtype=torch.float64)
    for (mq, mk), value in table.items():
        kept[rows == mq, mk] = value
    return kept


def _candidates(layer):
    vs_text = VerticalSlash(40, 60, 10, 20)
    vs_video = VerticalSlash(20, 80, 10, 20)
    return {
        "vs_text": Candidate(vs_text, "vs_text", 1, 1.0,
                             _kept(layer, {(T, T): 0.9, (T, V): 0.0, (V, T): 0.1, (V, V): 0.3}), 0.1),
        "vs_video": Candidate(vs_video, "vs_video", 1, 1.0,
                              _kept(layer, {(T, T): 0.2, (T, V): 0.5, (V, T): 0.0, (V, V): 0.2}), 0.1),
        "grid": Candidate(Grid(strides=(32,), sink=16), "grid", 2, 1.0,
                          _kept(layer, {(T, T): 0.3, (T, V): 0.1, (V, T): 0.05, (V, V): 0.9}), 0.1),
        "a_shape": Candidate(AShape(16, 64), "a_shape", 0, 1.0,
                             _kept(layer, {(T, T): 0.5, (T, V): 0.1, (V, T): 0.3, (V, V): 0.1}), 0.1),
    }


def test_composites_pick_the_best_family_per_part(layer):
    out = composites(layer, [_candidates(layer), {}])
    assert set(out["q"]) == {0} and 1 not in out["k"]  # a head without candidates gets none
    q_pattern, label = out["q"][0]
    # text rows: vs_text keeps 0.9, vs_video 0.7, grid 0.4, a_shape 0.6; video rows: grid 0.95.
    assert q_pattern == QBoundary({Modality.TEXT: VerticalSlash(40, 60, 10, 20), Modality.VIDEO: Grid(strides=(32,))})
    assert label == "q[text=vs_text,video=grid]"
    k_pattern, _ = out["k"][0]
    # text keys: vs_text (0.9 + 0.1 over rows) vs a_shape (0.5 + 0.5): the simpler a_shape wins
    # only within tolerance, so vs_text; video keys: grid.
    assert isinstance(k_pattern, TwoDBoundary)
    image_rows = {pair[1]: p for pair, p in k_pattern.per_pair.items() if pair[0] == Modality.IMAGE}
    assert image_rows == {Modality.TEXT: VerticalSlash(40, 60, 10, 20), Modality.VIDEO: Grid(strides=(32,))}


def test_2d_vertical_slash_pairs_of_one_query_modality_are_unified(layer):
    out = composites(layer, [_candidates(layer)])
    pattern, _ = out["2d"][0]
    per_pair = pattern.per_pair
    # text->text prefers vs_text, text->video vs_video: one list per query modality, so both take
    # the VS with the best text-row mass (vs_text: 0.9 vs vs_video: 0.7).
    assert per_pair[(Modality.TEXT, Modality.TEXT)] == per_pair[(Modality.TEXT, Modality.VIDEO)] == \
        VerticalSlash(40, 60, 10, 20)
    assert per_pair[(Modality.VIDEO, Modality.VIDEO)] == Grid(strides=(32,))
    assert per_pair[(Modality.VIDEO, Modality.TEXT)] == AShape(16, 64)  # 0.3 beats vs_text's 0.1


def _choice(error, mass, layer):
    return Candidate(AShape(16, 64), "x", 0, 1.0, _kept(layer, {(T, T): mass, (V, T): mass}), error)


def test_choose_boundary_prefers_simpler_types_unless_clearly_better(layer):
    options = SearchOptions(error_tolerance=0.1, error_floor=0.001, mass_tolerance=0.005)
    base = {"none": _choice(0.10, 0.90, layer)}
    assert choose_boundary({**base, "q": _choice(0.095, 0.95, layer)}, options) == "none"  # within tolerance
    assert choose_boundary({**base, "q": _choice(0.05, 0.95, layer)}, options) == "q"
    assert choose_boundary({**base, "q": _choice(0.05, 0.80, layer)}, options) == "none"  # loses kept mass
    assert choose_boundary({**base, "k": _choice(0.05, 0.95, layer), "2d": _choice(0.01, 0.96, layer)},
                           options) == "2d"
    assert choose_boundary({"q": _choice(0.2, 0.9, layer)}, options) == "q"
