"""Typed wrappers over the torch.ops.mminference operators, and their fake (meta) kernels.

Wrappers and fakes follow the schema order of csrc/ext/schemas.cpp. Argument validation lives in the
compiled ops (csrc/ext/tensor_checks.cpp and the C core), once for every backend; the fakes only
compute output shapes so that `torch.compile(fullgraph=True)` can trace through the ops.
"""

from __future__ import annotations

import enum
import math
from typing import Mapping, Optional, Sequence

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


def _estimation_args(q: torch.Tensor, last: int, query_end: Optional[int],
                     scale: Optional[float]) -> tuple[int, int, float]:
    """The estimation ops' (last, query_end, scale): defaults Sq and 1 / sqrt(D), last <= query_end."""
    query_end = q.shape[2] if query_end is None else query_end
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return min(last, query_end), query_end, float(scale)


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
    return _ops.estimate_vertical_slash_scores(q, k, *_estimation_args(q, last, query_end, scale))


@torch.library.register_fake("mminference::estimate_vertical_slash_scores")
def _estimate_vertical_slash_scores_fake(q, k, last, query_end, scale):
    shape = (q.shape[0], q.shape[1], k.shape[2])
    return q.new_empty(shape, dtype=torch.float32), q.new_empty(shape, dtype=torch.float32)


def estimate_vertical_scores(
    q: torch.Tensor, k: torch.Tensor, *, last: int = 64, query_end: Optional[int] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """`estimate_vertical_slash_scores` without the diagonal sums: only float32 `vertical_score
    (B, Hq, Sk)`, the same values (the column mass a grid's stride detection reads). Cheaper:
    no slash output, and the CUDA kernel's second pass forms no diagonal sums."""
    return _ops.estimate_vertical_scores(q, k, *_estimation_args(q, last, query_end, scale))


@torch.library.register_fake("mminference::estimate_vertical_scores")
def _estimate_vertical_scores_fake(q, k, last, query_end, scale):
    return q.new_empty((q.shape[0], q.shape[1], k.shape[2]), dtype=torch.float32)


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


class PairKind(enum.IntEnum):
    """Kinds of a (query modality, key modality) pattern; see csrc/core/mmi_boundary_index.h."""

    NONE = 0            # no key of the key modality
    DENSE = 1           # every causal key of the key modality
    A_SHAPE = 2         # (sink, local)
    LINES = 3           # (use_hlines, use_vlines, local): the key modality's grid
    VERTICAL_SLASH = 4  # the query modality's vertical / slash lists, restricted to the key modality


MAX_MODALITIES = 8


def pair_pattern(patterns: Mapping, num_modalities: int = 3,
                 default: Sequence[int] = (PairKind.DENSE, 0, 0, 0)) -> torch.Tensor:
    """A pattern table int32 `(1, 1, M, M, 4)` for `build_boundary_index`.

    Args:
        patterns: `{mq: (kind, a, b, c)}` sets the pattern of query modality `mq` over every key
            modality (Q-boundary); `{(mq, mk): (kind, a, b, c)}` sets one pair (2D-boundary) and
            takes precedence over an `mq` entry. Shorter tuples are padded with zeros.
        default: the pattern of pairs not mentioned (DENSE: exact attention).
    """
    def entry(value):
        value = [int(x) for x in value]
        if not 1 <= len(value) <= 4:
            raise ValueError(f"patterns: an entry must be (kind[, a, b, c]), got {value}")
        return value + [0] * (4 - len(value))

    table = [[entry(default) for _ in range(num_modalities)] for _ in range(num_modalities)]
    for key, value in sorted(patterns.items(), key=lambda kv: isinstance(kv[0], tuple)):
        pairs = [key] if isinstance(key, tuple) else [(key, mk) for mk in range(num_modalities)]
        for mq, mk in pairs:
            if not (0 <= mq < num_modalities and 0 <= mk < num_modalities):
                raise ValueError(f"patterns: modality pair {(mq, mk)} is outside [0, {num_modalities})")
            table[mq][mk] = entry(value)
    return torch.tensor(table, dtype=torch.int32).reshape(1, 1, num_modalities, num_modalities, 4)


def _with_rank(t: torch.Tensor, rank: int) -> torch.Tensor:
    """Leading size-1 dims added up to `rank` (broadcast over batch / heads)."""
    while t.dim() < rank:
        t = t.unsqueeze(0)
    return t


def boundary_index_capacity(num_modalities: int, seq: int, block_q: int, block_k: int,
                            num_vertical: int, num_slash: int) -> tuple[int, int]:
    """Default (max_ranges, max_columns) of `build_boundary_index`: capacities no block exceeds.

    Ranges: a block's merged ranges start at distinct block_k multiples or class offsets, so at
    most ceil(S / block_k) + 2M; and each of its (at most min(2M, block_q)) query classes adds at
    most max(5, 2 NS) ranges per key modality. Columns: at most min(M, block_q) vertical lists
    (one per query modality in the block), and at most S distinct slots.
    """
    m = num_modalities
    by_start = -(-seq // block_k) + 2 * m if block_k > 0 else seq
    by_source = min(2 * m, block_q) * m * max(5, 2 * min(num_slash, seq))
    max_ranges = max(1, min(by_start, by_source))
    max_columns = min(seq, min(m, block_q) * num_vertical)
    return max_ranges, max(0, max_columns)


def build_boundary_index(
    modality: torch.Tensor, pair_pattern: torch.Tensor, *,
    grid_stride: Optional[torch.Tensor] = None, grid_phase: Optional[torch.Tensor] = None,
    vertical: Optional[torch.Tensor] = None, slash: Optional[torch.Tensor] = None,
    num_modalities: Optional[int] = None, block_q: int = 128, block_k: int = 64,
    max_ranges: Optional[int] = None, max_columns: Optional[int] = None,
) -> tuple[SparseIndex, torch.Tensor]:
    """Modality-boundary index (Q-boundary / 2D-boundary) through a modality-class permutation.

    Tokens are grouped into classes 2m (grid lines of modality m) and 2m + 1 (its other tokens); the
    same permutation orders queries and keys by (class, position). Each (query modality, key
    modality) pair has its own pattern (`PairKind`); causality stays on original positions. The
    full rules: csrc/core/mmi_boundary_index.h.

    Args:
        modality: int32 `(B, S)` (or `(S,)`) modality ids in [0, M), e.g. `ModalityLayout.modality_ids()`.
        pair_pattern: int32 `(B|1, H|1, M, M, 4)` rows (kind, a, b, c); `pair_pattern(...)` builds one.
            Lower ranks get leading size-1 dims.
        grid_stride, grid_phase: int32 `(B|1, H|1, M)` per-modality grid (stride 0: none), counted
            in ranks among the modality's tokens. Default: no grid.
        vertical: int32 `(B|1, H|1, M, NV)` per query modality key positions, strictly increasing,
            -1 padding at the end; slash: `(B|1, H|1, M, NS)` diagonal distances, same rules.
        num_modalities: M (<= 8), default `pair_pattern.shape[-2]`.
        max_ranges, max_columns: capacities. Default: the exact ones, from a first counting pass
            of the builder (under torch.compile tracing: `boundary_index_capacity(...)`, a bound
            no block exceeds but O(S / block_k) ranges per block). Smaller ones bound memory:
            extra ranges merge into the last one (a superset), extra columns (highest key slots
            first) are dropped.
    Returns:
        `(index, class_offsets)`: a `SparseIndex` with `q_perm`, `k_perm` `(B, H, S)`, ranges
        `(B, H, NQB, R, 2)` and columns `(B, H, NQB, C)`, H the largest head dim of the inputs;
        and int32 `(B, H, 2M + 1)` class slot offsets. Built on the CPU, returned on modality's device.
    """
    device = modality.device
    modality = _with_rank(modality, 2)
    pair_pattern = _with_rank(pair_pattern, 5)
    m = int(pair_pattern.shape[-2]) if num_modalities is None else num_modalities
    int32 = dict(dtype=torch.int32, device=pair_pattern.device)
    if grid_stride is None:
        grid_stride = torch.zeros((1, 1, m), **int32)
    if grid_phase is None:
        grid_phase = torch.zeros((1, 1, m), **int32)
    if vertical is None:
        vertical = torch.zeros((1, 1, m, 0), **int32)
    if slash is None:
        slash = torch.zeros((1, 1, m, 0), **int32)
    grid_stride, grid_phase = _with_rank(grid_stride, 3), _with_rank(grid_phase, 3)
    vertical, slash = _with_rank(vertical, 4), _with_rank(slash, 4)
    seq = int(modality.shape[-1])
    if max_ranges is not None and (isinstance(max_ranges, bool) or not isinstance(max_ranges, int) or max_ranges < 1):
        raise ValueError(f"max_ranges must be an int >= 1 (None: exact capacities), got {max_ranges!r}")
    cpu = lambda t: t.cpu()  # noqa: E731  (the builder is a CPU op)
    if (max_ranges is None or max_columns is None) and not torch.compiler.is_compiling():
        # Count pass (max_ranges = max_columns = 0): every block's exact range / column counts.
        counts = _ops.build_boundary_index(
            cpu(modality), cpu(grid_stride), cpu(grid_phase), cpu(pair_pattern), cpu(vertical), cpu(slash),
            m, block_q, block_k, 0, 0)
        exact_ranges, exact_columns = max(1, int(counts[3].max())), int(counts[5].max())
        max_ranges = exact_ranges if max_ranges is None else max_ranges
        max_columns = exact_columns if max_columns is None else max_columns
    default_ranges, default_columns = boundary_index_capacity(
        m, seq, block_q, block_k, int(vertical.shape[-1]), int(slash.shape[-1]))
    max_ranges = default_ranges if max_ranges is None else max_ranges
    max_columns = default_columns if max_columns is None else max_columns
    q_perm, k_perm, ranges, range_count, columns, column_count, offsets = _ops.build_boundary_index(
        cpu(modality), cpu(grid_stride), cpu(grid_phase), cpu(pair_pattern), cpu(vertical), cpu(slash),
        m, block_q, block_k, max_ranges, max_columns)
    index = SparseIndex(block_q, ranges, range_count, columns, column_count, q_perm=q_perm, k_perm=k_perm)
    return (index.to(device), offsets.to(device)) if device.type != "cpu" else (index, offsets)


@torch.library.register_fake("mminference::build_boundary_index")
def _build_boundary_index_fake(modality, grid_stride, grid_phase, pair_pattern, vertical, slash,
                               num_modalities, block_q, block_k, max_ranges, max_columns):
    batch, seq = modality.shape
    inputs = (grid_stride, grid_phase, pair_pattern, vertical, slash)
    heads = max(1, *(t.shape[1] for t in inputs))
    nqb = num_q_blocks(seq, block_q)
    new = lambda *shape: modality.new_empty(shape, dtype=torch.int32)  # noqa: E731
    return (new(batch, heads, seq), new(batch, heads, seq), new(batch, heads, nqb, max_ranges, 2),
            new(batch, heads, nqb), new(batch, heads, nqb, max_columns), new(batch, heads, nqb),
            new(batch, heads, 2 * num_modalities + 1))


def detect_grid(
    vertical_score: torch.Tensor, span: tuple[int, int], candidate_strides: Sequence[int], *,
    tolerance: float = 0.5, max_lines: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head stride and phase of the strongest periodic key-column pattern in `span`, in one op
    (rules: csrc/core/mmi_grid_detect.h; on CUDA a few kernel launches and no host sync).

    For each candidate s the last `max_lines` whole periods of the span are folded into
    (lines, s); a phase scores the lower median of its lines, the candidate its best phase over the
    window's mean mass (its lift); the smallest stride whose lift is >= tolerance x the best wins.

    Args:
        vertical_score: float32 `(B, H, Sk)` per-key column mass (`estimate_vertical_slash_scores`).
        span: `(start, end)` with 0 <= start < end <= Sk: the keys searched (n = end - start).
        candidate_strides: each >= 1, any order; those above n // 2 (fewer than 2 lines) are
            skipped, and at least one must remain.
        tolerance: in (0, 1]. max_lines: >= 1.
    Returns:
        int32 `stride (B, H)`, int32 `phase (B, H)` (relative to span[0]) and float32 `lift (B, H)`:
        the chosen grid's lift over the whole span, exactly `grid_lift(vertical_score, span, stride,
        phase)`.
    """
    start, end = span
    return _ops.detect_grid(vertical_score, int(start), int(end), [int(s) for s in candidate_strides],
                            float(tolerance), int(max_lines))


@torch.library.register_fake("mminference::detect_grid")
def _detect_grid_fake(vertical_score, span_start, span_end, candidate_strides, tolerance, max_lines):
    torch._check_type(vertical_score.dtype == torch.float32,
                      lambda: f"vertical_score: dtype must be float32, got {vertical_score.dtype}")
    torch._check_value(vertical_score.dim() == 3, lambda: "vertical_score: expected 3 dims (batch, heads, seq_k)")
    torch._check_value(0 <= span_start, lambda: f"span_start must be >= 0, got {span_start}")
    torch._check_value(span_start < span_end, lambda: "span [span_start, span_end) must be non-empty")
    torch._check_value(span_end <= vertical_score.shape[2], lambda: "span_end must be <= seq_k")
    torch._check_value(0 < tolerance <= 1, lambda: f"tolerance must be in (0, 1], got {tolerance}")
    torch._check_value(max_lines >= 1, lambda: f"max_lines must be >= 1, got {max_lines}")
    torch._check_value(all(s >= 1 for s in candidate_strides), lambda: "candidate_strides: each must be >= 1")
    torch._check_value(any(s <= (span_end - span_start) // 2 for s in candidate_strides),
                       lambda: "candidate_strides: no candidate stride leaves 2 or more lines in the span")
    batch, heads = vertical_score.shape[:2]
    return (vertical_score.new_empty((batch, heads), dtype=torch.int32),
            vertical_score.new_empty((batch, heads), dtype=torch.int32),
            vertical_score.new_empty((batch, heads)))


def grid_lift(vertical_score: torch.Tensor, span: tuple[int, int], stride: torch.Tensor,
              phase: torch.Tensor) -> torch.Tensor:
    """Lift of given per-head grids: the lower median of the line masses
    vertical_score[..., start + phase + l * stride] (l < n // stride, n = end - start) over the
    span's mean mass per key (about 1 without periodic structure; csrc/core/mmi_grid_detect.h).

    Args:
        vertical_score: float32 `(B, H, Sk)`; span: `(start, end)`, 0 <= start < end <= Sk.
        stride, phase: int32 `(B, H)` on vertical_score's device, 1 <= stride <= n,
            0 <= phase < stride (on CUDA checked on the device, read back with one small copy).
    Returns:
        float32 `(B, H)`.
    """
    start, end = span
    return _ops.grid_lift(vertical_score, int(start), int(end), stride, phase)


@torch.library.register_fake("mminference::grid_lift")
def _grid_lift_fake(vertical_score, span_start, span_end, stride, phase):
    torch._check_type(vertical_score.dtype == torch.float32,
                      lambda: f"vertical_score: dtype must be float32, got {vertical_score.dtype}")
    torch._check_value(vertical_score.dim() == 3, lambda: "vertical_score: expected 3 dims (batch, heads, seq_k)")
    torch._check_value(0 <= span_start, lambda: f"span_start must be >= 0, got {span_start}")
    torch._check_value(span_start < span_end, lambda: "span [span_start, span_end) must be non-empty")
    torch._check_value(span_end <= vertical_score.shape[2], lambda: "span_end must be <= seq_k")
    for name, t in (("stride", stride), ("phase", phase)):
        torch._check_type(t.dtype == torch.int32, lambda: f"{name}: dtype must be int32, got {t.dtype}")
        torch._check_value(t.device == vertical_score.device, lambda: f"{name}: expected vertical_score's device")
        torch._check_value(t.dim() == 2 and t.shape == vertical_score.shape[:2],
                           lambda: f"{name}: shape must be vertical_score's (batch, heads)")
    return vertical_score.new_empty(vertical_score.shape[:2])


def search_score(
    probs: torch.Tensor, row_pos: torch.Tensor, modality: torch.Tensor, index: SparseIndex, *,
    value: Optional[torch.Tensor] = None, num_modalities: int = 3, block_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores one candidate index against sampled attention rows (the pattern search's statistics;
    semantics in csrc/core/mmi_search.h). Prefill only (Sq = Sk = S); batch element 0 of the index.

    Args:
        probs: float32 `(H, R, S)` causal attention probabilities of R sampled query rows per head.
        row_pos: int32 `(R,)` the rows' query positions.
        modality: int32 `(S,)` modality id of every position, in [0, num_modalities).
        index: the candidate's `SparseIndex`, leading dims `(1, H|1)`.
        value: optional float32 `(Hkv, S, D)` values (GQA: H a multiple of Hkv).
        block_k: the kernel's key tile width for the tile count.
    Returns:
        `kept_mass` float32 `(H, R, num_modalities)`: kept probability per key modality;
        `kept_out` float32 `(H, R, D)` (D = 0 without value): sum of kept p * v (unnormalised);
        `block_tiles` int32 `(H, NQB)`: key tiles the kernel visits per query block.
    """
    return _ops.search_score(probs, row_pos, modality, value, index.kv_ranges, index.kv_range_count,
                             index.kv_columns, index.kv_column_count, index.q_perm, index.k_perm,
                             index.block_q, block_k, num_modalities)


@torch.library.register_fake("mminference::search_score")
def _search_score_fake(probs, row_pos, modality, value, kv_ranges, kv_range_count, kv_columns,
                       kv_column_count, q_perm, k_perm, block_q, block_k, num_modalities):
    heads, rows, seq = probs.shape
    dim = value.shape[-1] if value is not None else 0
    return (probs.new_empty((heads, rows, num_modalities)), probs.new_empty((heads, rows, dim)),
            probs.new_empty((heads, num_q_blocks(seq, block_q)), dtype=torch.int32))
