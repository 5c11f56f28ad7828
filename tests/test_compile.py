"""Every op has a fake kernel, passes torch.library.opcheck, and traces under torch.compile."""

import pytest
import torch

import mminference as mmi
from mminference import ops


def _attention_sample(dtype=torch.float32):
    q = torch.randn(1, 4, 150, 64, dtype=dtype)
    k = torch.randn(1, 2, 150, 64, dtype=dtype)
    v = torch.randn(1, 2, 150, 64, dtype=dtype)
    stride = torch.tensor([[7, 10, 3, 5]], dtype=torch.int32)
    phase = torch.tensor([[1, 0, 2, 4]], dtype=torch.int32)
    index = mmi.build_grid_index(stride, phase, 150, block_q=64, block_k=32, local=40)
    return q, k, v, index


def _attention_args(q, k, v, index):
    return (q, k, v, index.kv_ranges, index.kv_range_count, index.kv_columns, index.kv_column_count,
            index.q_perm, index.k_perm, index.block_q, True, 0.125)


OP_SAMPLES = {
    "sparse_attention": lambda: _attention_args(*_attention_sample()),
    "build_a_shape_index": lambda: (300, 300, 64, 64, 16, 100),
    "build_vertical_slash_index": lambda: (
        torch.tensor([[[0, 5, 77]]], dtype=torch.int32), torch.tensor([[[0, 40]]], dtype=torch.int32),
        200, 200, 64, 32, 2),
    "estimate_vertical_slash_scores": lambda: (torch.randn(1, 4, 90, 64), torch.randn(1, 2, 120, 64), 16, 80, 0.125),
    "estimate_vertical_scores": lambda: (torch.randn(1, 4, 90, 64), torch.randn(1, 2, 120, 64), 16, 80, 0.125),
    "build_grid_index": lambda: (torch.tensor([[16]], dtype=torch.int32), torch.tensor([[3]], dtype=torch.int32),
                                 200, 64, 32, 10, 190, 4, 50, True, True),
    "build_modality_permutation": lambda: (torch.tensor([[0, 1, 1, 0, 2]], dtype=torch.int32), 3),
    "build_boundary_index": lambda: (
        torch.tensor([[0, 0, 2, 2, 2, 2, 2, 2, 0, 1, 1, 0] * 10], dtype=torch.int32),
        torch.tensor([[[0, 0, 3], [0, 2, 4]]], dtype=torch.int32),
        torch.tensor([[[0, 0, 1], [0, 1, 0]]], dtype=torch.int32),
        ops.pair_pattern({0: (ops.PairKind.A_SHAPE, 4, 16), 2: (ops.PairKind.LINES, 1, 1, 8),
                          (1, 0): (ops.PairKind.VERTICAL_SLASH,)}).expand(1, 2, 3, 3, 4).clone(),
        torch.tensor([[[[0, 5, -1], [0, 7, 30], [1, -1, -1]]]], dtype=torch.int32),
        torch.tensor([[[[0, 3], [0, 9], [0, -1]]]], dtype=torch.int32),
        3, 16, 8, 6, 4),
    "detect_grid": lambda: (torch.rand(2, 3, 300), 20, 290, [5, 9, 30, 2, 500], 0.5, 8),
    "grid_lift": lambda: (torch.rand(2, 3, 300), 20, 290, torch.tensor([[5, 9, 30], [1, 2, 270]], dtype=torch.int32),
                          torch.tensor([[4, 0, 29], [0, 1, 0]], dtype=torch.int32)),
    "search_score": lambda: _search_score_args(),
}


def _search_score_args():
    _, _, _, index = _attention_sample()  # grid index with permutations, 4 heads, S = 150
    probs = torch.softmax(torch.randn(4, 6, 150), -1)
    row_pos = torch.tensor([0, 17, 64, 99, 140, 149], dtype=torch.int32)
    modality = torch.tensor([0] * 30 + [2] * 100 + [0] * 20, dtype=torch.int32)
    value = torch.randn(2, 150, 16)
    return (probs, row_pos, modality, value, index.kv_ranges, index.kv_range_count, index.kv_columns,
            index.kv_column_count, index.q_perm, index.k_perm, index.block_q, 32, 3)


def test_every_op_in_the_schema_has_a_sample():
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("mminference::")}
    assert registered == set(OP_SAMPLES)


@pytest.mark.parametrize("name", sorted(OP_SAMPLES))
def test_opcheck(name):
    torch.library.opcheck(getattr(torch.ops.mminference, name).default, OP_SAMPLES[name]())


def test_fullgraph_compile_of_a_function_calling_the_ops():
    q, k, v, index = _attention_sample()

    def attend(q, k, v, stride, phase, vertical, slash):
        grid = ops.build_grid_index(stride, phase, q.shape[2], block_q=64, block_k=32, local=40)
        vs = ops.build_vertical_slash_index(vertical, slash, q.shape[2], k.shape[2], block_q=64, block_k=32)
        vertical_score, slash_score = ops.estimate_vertical_slash_scores(q, k, last=16)
        column_mass = ops.estimate_vertical_scores(q, k, last=8, query_end=100)
        boundary, _ = ops.build_boundary_index(modality, pattern, grid_stride=grid_stride,
                                               block_q=64, block_k=32)
        return (mmi.sparse_attention(q, k, v, grid) + mmi.sparse_attention(q, k, v, vs)
                + mmi.sparse_attention(q, k, v, boundary) + vertical_score.sum() + column_mass.sum())

    stride = torch.tensor([[7, 10, 3, 5]], dtype=torch.int32)
    phase = torch.tensor([[1, 0, 2, 4]], dtype=torch.int32)
    vertical = torch.tensor([[[0, 9, 33]] * 4], dtype=torch.int32)
    slash = torch.tensor([[[0, 1, 64]] * 4], dtype=torch.int32)
    modality = torch.tensor([[0] * 20 + [2] * 100 + [0] * 30], dtype=torch.int32)
    pattern = ops.pair_pattern({0: (ops.PairKind.A_SHAPE, 8, 32), 2: (ops.PairKind.LINES, 1, 1, 16)})
    grid_stride = torch.tensor([[[0, 0, 10]]], dtype=torch.int32)
    torch._dynamo.reset()
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    expected = attend(q, k, v, stride, phase, vertical, slash)
    torch.testing.assert_close(compiled(q, k, v, stride, phase, vertical, slash), expected)
    explanation = torch._dynamo.explain(attend)(q, k, v, stride, phase, vertical, slash)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compile_with_a_sparse_index_argument():
    q, k, v, index = _attention_sample()
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v, index: mmi.sparse_attention(q, k, v, index) * 2,
                             fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, index), mmi.sparse_attention(q, k, v, index) * 2)
