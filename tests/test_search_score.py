"""The search's scoring op (csrc/core/search_score.c, csrc/cuda/search_score.cu) against a plain
float64 re-derivation from the dense mask of the index (tests/reference.py)."""

import math
import random

import pytest
import torch

import mminference as mmi
from mminference import Modality, ModalityLayout, PairKind, Segment, VisualGrid, ops

from reference import dense_mask_from_index, random_sparse_index

SEQ = 300


def _layout():
    grid = VisualGrid(frames=4, rows=5, cols=10)  # 50 tokens per frame
    return ModalityLayout.from_spans(SEQ, [Segment(Modality.VIDEO, 40, 240, grid)])


def _inputs(heads=4, kv_heads=2, rows=9, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    row_pos = torch.tensor(sorted(random.Random(seed).sample(range(SEQ), rows)), dtype=torch.int32)
    logits = torch.randn(heads, rows, SEQ, generator=gen) * 2
    causal = torch.arange(SEQ)[None, :] <= row_pos[:, None].long()
    probs = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
    value = torch.randn(kv_heads, SEQ, dim, generator=gen)
    return probs, row_pos, value


def _reference(probs, row_pos, modality, value, index, heads, block_k):
    """kept mass per key modality, kept output and tile counts, from the expanded mask."""
    mask = dense_mask_from_index(index, 1, heads, SEQ, SEQ, causal=True)[0]  # (H, S, S)
    rows = mask[:, row_pos.long()].double()  # (H, R, S)
    weights = probs.double() * rows
    one_hot = torch.nn.functional.one_hot(modality.long(), 3).double()  # (S, M)
    kept_mass = weights @ one_hot
    group = heads // value.shape[0]
    kept_out = weights @ value.double().repeat_interleave(group, 0)
    tiles = torch.zeros(heads, index.num_q_blocks, dtype=torch.int64)
    pick = lambda t, h: t[0, h if t.shape[1] > 1 else 0]  # noqa: E731
    for h in range(heads):
        for qb in range(index.num_q_blocks):
            n = int(pick(index.kv_range_count, h)[qb])
            lengths = [int(e - s) for s, e in pick(index.kv_ranges, h)[qb, :n].tolist()]
            tiles[h, qb] = sum(math.ceil(x / block_k) for x in lengths) + math.ceil(
                int(pick(index.kv_column_count, h)[qb]) / block_k)
    return kept_mass, kept_out, tiles


def _indexes(heads):
    layout = _layout()
    stride = torch.tensor([[50, 25, 10, 7]], dtype=torch.int32)[:, :heads]
    phase = torch.tensor([[3, 0, 9, 2]], dtype=torch.int32)[:, :heads]
    vertical = torch.tensor([[[0, 3, 77, 150, 201]] * heads], dtype=torch.int32)
    slash = torch.tensor([[[0, 5, 64, 120]] * heads], dtype=torch.int32)
    pattern = ops.pair_pattern({0: (PairKind.A_SHAPE, 8, 40), (2, 2): (PairKind.LINES, 1, 1, 20),
                                (2, 0): (PairKind.VERTICAL_SLASH,)})
    lists = lambda rows: torch.tensor(rows, dtype=torch.int32).expand(1, heads, 3, 3).contiguous()  # noqa: E731
    boundary, _ = ops.build_boundary_index(
        layout.modality_ids(), pattern, grid_stride=layout.grid_strides()[None, None],
        grid_phase=torch.tensor([[[0, 0, 7]]], dtype=torch.int32),
        vertical=lists([[0, 30, 260], [-1, -1, -1], [0, 5, 100]]),
        slash=lists([[0, 2, 60], [-1, -1, -1], [0, 9, -1]]),
        block_q=32, block_k=16)
    rng = random.Random(5)
    return {
        "a_shape": mmi.build_a_shape_index(SEQ, SEQ, block_q=32, block_k=16, sink=20, local=50),
        "vertical_slash": mmi.build_vertical_slash_index(vertical, slash, SEQ, SEQ, block_q=32, block_k=16),
        "grid": mmi.build_grid_index(stride, phase, SEQ, block_q=32, block_k=16, span=(40, 240), sink=4, local=30),
        "boundary": boundary,
        "random_permuted": random_sparse_index(rng, 1, heads, SEQ, SEQ, 32, 4, 6, True, True),
        "random_broadcast": random_sparse_index(rng, 1, heads, SEQ, SEQ, 32, 3, 5, False, False, broadcast=True),
    }


@pytest.mark.parametrize("name", ["a_shape", "vertical_slash", "grid", "boundary", "random_permuted",
                                  "random_broadcast"])
def test_scores_match_the_dense_mask_reference(name):
    heads = 4
    index = _indexes(heads)[name]
    probs, row_pos, value = _inputs(heads)
    modality = _layout().modality_ids()
    kept_mass, kept_out, tiles = ops.search_score(probs, row_pos, modality, index, value=value, block_k=16)
    ref_mass, ref_out, ref_tiles = _reference(probs, row_pos, modality, value, index, heads, 16)
    torch.testing.assert_close(kept_mass.double(), ref_mass, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept_out.double(), ref_out, atol=1e-4, rtol=1e-4)
    assert torch.equal(tiles.long(), ref_tiles)
    assert (kept_mass.sum(-1) <= 1 + 1e-5).all()


def test_without_value_and_without_rows():
    probs, row_pos, value = _inputs(4)
    index = _indexes(4)["grid"]
    modality = _layout().modality_ids()
    kept_mass, kept_out, tiles = ops.search_score(probs, row_pos, modality, index, block_k=16)
    assert kept_out.shape == (4, 9, 0)
    with_value = ops.search_score(probs, row_pos, modality, index, value=value, block_k=16)
    torch.testing.assert_close(kept_mass, with_value[0])
    empty = ops.search_score(probs[:, :0], row_pos[:0], modality, index, block_k=16)
    assert empty[0].shape == (4, 0, 3) and torch.equal(empty[2], tiles)


def test_dense_index_keeps_all_mass_and_counts_every_tile():
    probs, row_pos, _ = _inputs(2, 1)
    dense = mmi.SparseIndex.causal(SEQ, SEQ, 32)
    kept_mass, _, tiles = ops.search_score(probs, row_pos, torch.zeros(SEQ, dtype=torch.int32), dense,
                                           num_modalities=1, block_k=16)
    torch.testing.assert_close(kept_mass[..., 0], torch.ones(2, 9), atol=1e-5, rtol=0)
    expected = [math.ceil(min((qb + 1) * 32, SEQ) / 16) for qb in range(ops.num_q_blocks(SEQ, 32))]
    assert tiles.tolist() == [expected, expected]


def test_bad_inputs_raise_errors_naming_the_argument():
    probs, row_pos, value = _inputs(4)
    index = _indexes(4)["grid"]
    modality = _layout().modality_ids()
    with pytest.raises(ValueError, match="row_pos"):
        ops.search_score(probs, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, SEQ], dtype=torch.int32), modality, index)
    with pytest.raises(ValueError, match="modality"):
        ops.search_score(probs, row_pos, modality.clone().fill_(5), index)
    with pytest.raises(TypeError, match="probs"):
        ops.search_score(probs.double(), row_pos, modality, index)
    with pytest.raises(ValueError, match="row_pos"):
        ops.search_score(probs, row_pos[:3], modality, index)
    with pytest.raises(ValueError, match="value"):
        ops.search_score(probs, row_pos, modality, index, value=value[:, :10])
    with pytest.raises(ValueError, match="value"):
        ops.search_score(probs, row_pos, modality, index, value=torch.randn(3, SEQ, 16))
    with pytest.raises(ValueError, match="kv_ranges"):
        ops.search_score(probs[:3], row_pos, modality, index)
    bad = mmi.SparseIndex(index.block_q, index.kv_ranges, index.kv_range_count, index.kv_columns,
                          index.kv_column_count, q_perm=torch.zeros_like(index.q_perm), k_perm=index.k_perm)
    with pytest.raises(ValueError, match="q_perm"):
        ops.search_score(probs, row_pos, modality, bad)
    with pytest.raises(ValueError, match="block_k"):
        ops.search_score(probs, row_pos, modality, index, block_k=0)
    # A range may end at seq (the message says so), not past it.
    ranges = index.kv_ranges.clone()
    last = index.num_q_blocks - 1
    ranges[0, 0, last, 0] = torch.tensor([SEQ - 5, SEQ + 1], dtype=torch.int32)
    count = index.kv_range_count.clone()
    count[0, 0, last] = 1
    past = mmi.SparseIndex(index.block_q, ranges, count, index.kv_columns,
                           torch.zeros_like(index.kv_column_count))
    with pytest.raises(ValueError, match=rf"kv_ranges\[0, 0, {last}, 0\] = \[{SEQ - 5}, {SEQ + 1}\) is not "
                                         rf"inside \[0, seq = {SEQ}\]"):
        ops.search_score(probs, row_pos, modality, past)
    ranges[0, 0, last, 0, 1] = SEQ
    ops.search_score(probs, row_pos, modality, mmi.SparseIndex(index.block_q, ranges, count, index.kv_columns,
                                                                torch.zeros_like(index.kv_column_count)))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["a_shape", "vertical_slash", "grid", "boundary", "random_permuted",
                                  "random_broadcast"])
def test_cuda_matches_cpu(name):
    heads = 4
    index = _indexes(heads)[name]
    probs, row_pos, value = _inputs(heads, dim=80)
    modality = _layout().modality_ids()
    cpu = ops.search_score(probs, row_pos, modality, index, value=value, block_k=16)
    cuda = ops.search_score(probs.cuda(), row_pos.cuda(), modality.cuda(), index.to("cuda"),
                            value=value.cuda(), block_k=16)
    again = ops.search_score(probs.cuda(), row_pos.cuda(), modality.cuda(), index.to("cuda"),
                             value=value.cuda(), block_k=16)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], atol=1e-4, rtol=1e-4)
    assert torch.equal(cuda[2].cpu(), cpu[2])
    assert all(torch.equal(a, b) for a, b in zip(cuda, again))  # deterministic
