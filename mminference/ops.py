"""Typed wrappers over the torch.ops.mminference operators, and their fake (meta) kernels.

Wrappers and fakes follow the schema order of csrc/ext/schemas.cpp. Argument validation lives in the
compiled ops (csrc/ext/tensor_checks.cpp and the C core), once for every backend; the fakes only
compute output shapes so that `torch.compile(fullgraph=True)` can trace through the ops.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import _extension  # noqa: F401  (registers torch.ops.mminference.*)
from .sparse_index import SparseIndex

_ops = torch.ops.mminference

A_SHAPE_MAX_RANGES = 2
GRID_MAX_RANGES = 4


def num_q_blocks(seq_q: int, block_q: int) -> int:
    """ceil(seq_q / block_q), the number of query blocks of an index."""
    return -(-seq_q // block_q)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: SparseIndex,
    *,
    causal: bool = True,
    scale: Optional[float] = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention forward.

    Args:
        q: `(B, Hq, Sq, D)` float32/float16/bfloat16, any batch/head/seq strides, contiguous D
            (the layout transformers attention functions receive; no copy is made).
        k, v: `(B, Hkv, Sk, D)`, Hq a multiple of Hkv (GQA), same dtype and device as q.
        index: the key set of every query block (see `SparseIndex`).
        causal: mask key positions j > i + (Sk - Sq), judged on original positions.
        scale: softmax scale, default 1/sqrt(D).
        return_lse: also return the natural-log log-sum-exp, float32 `(B, Hq, Sq)`.

    Returns:
        `(B, Hq, Sq, D)` in q's dtype, stored as a contiguous `(B, Sq, Hq, D)` buffer, so
        `out.transpose(1, 2)` is contiguous. Rows with no allowed key are zeros (lse = -inf).
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    out, lse = _ops.sparse_attention(
        q, k, v,
        index.kv_ranges, index.kv_range_count, index.kv_columns, index.kv_column_count,
        index.q_perm, index.k_perm, index.block_q, causal, float(scale),
    )
    return (out, lse) if return_lse else out


@torch.library.register_fake("mminference::sparse_attention")
def _sparse_attention_fake(q, k, v, kv_ranges, kv_range_count, kv_columns, kv_column_count,
                           q_perm, k_perm, block_q, causal, scale):
    # The dispatcher sends mixed real/meta inputs here, so the device rule is enforced here too.
    named = dict(k=k, v=v, kv_ranges=kv_ranges, kv_range_count=kv_range_count, kv_columns=kv_columns,
                 kv_column_count=kv_column_count, q_perm=q_perm, k_perm=k_perm)
    for name, tensor in named.items():
        if tensor is not None and tensor.device != q.device:
            raise ValueError(f"{name}: expected device {q.device}, got {tensor.device}")
    batch, heads, seq_q, dim = q.shape
    out = q.new_empty((batch, seq_q, heads, dim)).transpose(1, 2)
    lse = q.new_empty((batch, heads, seq_q), dtype=torch.float32)
    return out, lse


def build_a_shape_index(
    seq_q: int, seq_k: int, *, block_q: int = 128, block_k: int = 64, sink: int = 128,
    local: int = 4096, device: torch.device | str = "cpu",
) -> SparseIndex:
    """A-shape index shared by all heads: the first `sink` keys plus the `local` keys ending at each
    query (causal, key offset Sk - Sq), block-aligned. Tensors have leading dims `(1, 1)`."""
    ranges, count = _ops.build_a_shape_index(seq_q, seq_k, block_q, block_k, sink, local)
    return SparseIndex.from_ranges(block_q, ranges.to(device), count.to(device))


@torch.library.register_fake("mminference::build_a_shape_index")
def _build_a_shape_index_fake(seq_q, seq_k, block_q, block_k, sink, local):
    nqb = num_q_blocks(seq_q, block_q)
    return (torch.empty((1, 1, nqb, A_SHAPE_MAX_RANGES, 2), dtype=torch.int32),
            torch.empty((1, 1, nqb), dtype=torch.int32))


def build_vertical_slash_index(
    vertical: torch.Tensor, slash: torch.Tensor, seq_q: int, seq_k: int, *,
    block_q: int = 128, block_k: int = 64, max_ranges: Optional[int] = None,
) -> SparseIndex:
    """Vertical-slash index from per-head key columns and diagonal distances.

    Args:
        vertical: int32 `(B, H, NV)` strictly increasing key positions in [0, Sk).
        slash: int32 `(B, H, NS)` strictly increasing distances d = i + (Sk - Sq) - j in [0, Sk).
        max_ranges: range capacity R per query block. Default min(NS, ceil(Sk / block_k)), which
            never overflows; a smaller R bounds memory, and a block with more merged bands extends
            its last range over the rest (more keys, never fewer).
    Returns:
        A `SparseIndex` with ranges `(B, H, NQB, R, 2)` (merged, block-aligned slash bands) and
        columns `(B, H, NQB, NV)` (the verticals not already inside a band).
    """
    if max_ranges is None:
        max_ranges = min(slash.shape[-1], -(-seq_k // block_k)) if block_k > 0 else slash.shape[-1]
    ranges, range_count, columns, column_count = _ops.build_vertical_slash_index(
        vertical, slash, seq_q, seq_k, block_q, block_k, max_ranges)
    return SparseIndex(block_q, ranges, range_count, columns, column_count)


@torch.library.register_fake("mminference::build_vertical_slash_index")
def _build_vertical_slash_index_fake(vertical, slash, seq_q, seq_k, block_q, block_k, max_ranges):
    batch, heads, nv = vertical.shape
    nqb = num_q_blocks(seq_q, block_q)
    new = lambda *shape: vertical.new_empty(shape, dtype=torch.int32)  # noqa: E731
    return new(batch, heads, nqb, max_ranges, 2), new(batch, heads, nqb), new(batch, heads, nqb, nv), \
        new(batch, heads, nqb)


def build_grid_index(
    stride: torch.Tensor, phase: torch.Tensor, seq: int, *, block_q: int = 128, block_k: int = 64,
    span: Optional[tuple[int, int]] = None, sink: int = 0, local: int = 1024,
    use_hlines: bool = True, use_vlines: bool = True,
) -> SparseIndex:
    """Permuted grid index: lines (positions p in `span` with (p - span[0]) % stride == phase) are
    moved to the front of both query and key order so strided lines become contiguous blocks.

    Args:
        stride, phase: int32 `(B, H)` per-head period and offset (1 <= stride, 0 <= phase < stride).
        seq: sequence length S (queries and keys).
        span: `(start, end)` of the gridded segment (a video), default the whole sequence.
        sink, local: attention sink and local window kept for every query.
        use_hlines: line queries attend every causal key; use_vlines: all queries attend line keys.
    Returns:
        A `SparseIndex` with `q_perm`, `k_perm` `(B, H, S)` and ranges `(B, H, NQB, 4, 2)`.
    """
    start, end = span if span is not None else (0, seq)
    q_perm, k_perm, ranges, count = _ops.build_grid_index(
        stride, phase, seq, block_q, block_k, start, end, sink, local, use_hlines, use_vlines)
    return SparseIndex.from_ranges(block_q, ranges, count, q_perm=q_perm, k_perm=k_perm)


@torch.library.register_fake("mminference::build_grid_index")
def _build_grid_index_fake(stride, phase, seq, block_q, block_k, span_start, span_end, sink, local,
                           use_hlines, use_vlines):
    batch, heads = stride.shape
    nqb = num_q_blocks(seq, block_q)
    new = lambda *shape: stride.new_empty(shape, dtype=torch.int32)  # noqa: E731
    return new(batch, heads, seq), new(batch, heads, seq), new(batch, heads, nqb, GRID_MAX_RANGES, 2), \
        new(batch, heads, nqb)


def estimate_vertical_slash_scores(
    q: torch.Tensor, k: torch.Tensor, *, last: int = 64, query_end: Optional[int] = None,
    scale: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and diagonal attention mass of the `last` queries ending at `query_end`.

    Args:
        q: `(B, Hq, Sq, D)`; k: `(B, Hkv, Sk, D)` (GQA), same dtype and device.
        query_end: end (exclusive) of the estimating queries, default Sq; a segment's own last
            queries (e.g. a video's) estimate that segment's pattern.
    Returns:
        float32 `vertical_score (B, Hq, Sk)` (sum of softmax probabilities per key) and
        `slash_score (B, Hq, Sk)` (per diagonal distance d = i + Sk - Sq - j). Memory O(B Hq Sk).
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    query_end = q.shape[2] if query_end is None else query_end
    return _ops.estimate_vertical_slash_scores(q, k, min(last, query_end), query_end, float(scale))


@torch.library.register_fake("mminference::estimate_vertical_slash_scores")
def _estimate_vertical_slash_scores_fake(q, k, last, query_end, scale):
    shape = (q.shape[0], q.shape[1], k.shape[2])
    return q.new_empty(shape, dtype=torch.float32), q.new_empty(shape, dtype=torch.float32)


def build_modality_permutation(modality: torch.Tensor, num_modalities: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable grouping of positions by modality id.

    Args:
        modality: int32 `(B, S)` ids in [0, num_modalities).
    Returns:
        perm int32 `(B, S)` (positions of modality 0, then 1, ..., each ascending) and
        segment_offsets int32 `(B, num_modalities + 1)` (modality m owns slots [off[m], off[m+1])).
    """
    return _ops.build_modality_permutation(modality, num_modalities)


@torch.library.register_fake("mminference::build_modality_permutation")
def _build_modality_permutation_fake(modality, num_modalities):
    batch, seq = modality.shape
    return modality.new_empty((batch, seq)), modality.new_empty((batch, num_modalities + 1))
