"""Sequence-parallel sparse prefill attention: head-parallel attention between sequence shards.

    rank r holds q (B, Hq, S_r, D), k / v (B, Hkv, S_r, D): every head of its contiguous tokens
      -> all_to_all: rank r holds its heads (`HeadPartition`) of ALL tokens  (B, Hq/N, S, D)
      -> `sparse_attention_for_layout` on those heads (estimation, index, kernel: all per head)
      -> all_to_all back: (B, Hq, S_r, D)

Each head's index is estimated from that head's own last queries over the whole sequence, so the
local heads get exactly the indexes (and outputs) the single-process call gives them. Every rank
must pass the same layout (of the whole sequence), head_config and options; shapes and these
settings are checked with one small all_gather first, so a mismatch is a ValueError on every rank,
not a hang.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist

from .. import attention as single
from ..layout import ModalityLayout
from ..patterns import HeadConfig
from .all_to_all import heads_to_sequence, sequence_to_heads
from .collective_checks import describe_mismatch, fingerprint, gather_ints, shape_descriptor
from .group import GroupInfo, parallel_group, require_group
from .heads import HeadPartition

_SHAPE_LABELS = ["ndim", "dtype", "B", "H", "S", "D"]


def local_head_config(head_config, layer: int, q_heads: int, heads: range) -> HeadConfig:
    """A one-layer `HeadConfig` holding `head_config`'s patterns of `layer` for the global query
    heads `heads` (in order; the same pattern objects, so `Auto` heads still share one rule)."""
    config = head_config if isinstance(head_config, HeadConfig) else HeadConfig(head_config)
    patterns = config.for_layer(layer, q_heads)
    return HeadConfig([tuple(patterns[h] for h in heads)])


def _check_tensors(q, k, v) -> None:
    for name, t in (("q_shard", q), ("k_shard", k), ("v_shard", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _agree(info: GroupInfo, q, k, v, layout, head_config, settings: tuple) -> list[int]:
    """All-gathers shapes and settings, checks them on every rank (identical errors everywhere),
    returns every rank's token count."""
    local = [d for t in (q, k, v) for d in shape_descriptor(t)[:6]]
    local += [fingerprint(layout), fingerprint(head_config), fingerprint(settings)]
    rows = gather_ints(local, q.device, info)
    names = ("q_shard", "k_shard", "v_shard")
    for i, name in enumerate(names):
        part = [row[6 * i: 6 * i + 6] for row in rows]
        for r, p in enumerate(part):
            if p[0] != 4:
                raise ValueError(f"{name}: expected (B, H, S_r, D) on every rank, rank {r} has {p[0]} dims")
        sans_seq = [p[:4] + p[5:] for p in part]
        if any(p != sans_seq[0] for p in sans_seq):
            raise ValueError(f"{name}: " + describe_mismatch("dtype / B / H / D", part, _SHAPE_LABELS))
    for r, row in enumerate(rows):
        qd, kd, vd = row[0:6], row[6:12], row[12:18]
        if not (qd[2] == kd[2] == vd[2] and qd[4] == kd[4] == vd[4]):
            raise ValueError(f"k_shard, v_shard: rank {r} has q (B={qd[2]}, S_r={qd[4]}), k (B={kd[2]}, S_r={kd[4]}), "
                             f"v (B={vd[2]}, S_r={vd[4]}); batch and tokens must match")
        if not (qd[5] == kd[5] == vd[5]) or kd[3] != vd[3] or qd[1] != kd[1] or qd[1] != vd[1]:
            raise ValueError(f"k_shard, v_shard: rank {r}: q {qd[1:]}, k {kd[1:]}, v {vd[1:]} "
                             f"(dtype, B, H, S_r, D): need one dtype, one head dim and as many k as v heads")
    for label, col in (("layout", 18), ("head_config", 19), ("layer / block_q / block_k / last / scale", 20)):
        if any(row[col] != rows[0][col] for row in rows):
            raise ValueError(f"{label}: differs across ranks (every rank must pass the same value)")
    return [row[4] for row in rows]


def sequence_parallel_sparse_attention(
    q_shard: torch.Tensor, k_shard: torch.Tensor, v_shard: torch.Tensor, layout: Optional[ModalityLayout],
    head_config="auto", group: Optional[dist.ProcessGroup] = None, layer: int = 0, block_q: int = 128,
    block_k: int = 64, *, last: int = 64, scale: Optional[float] = None,
) -> torch.Tensor:
    """`sparse_attention_for_layout` of the whole sequence, with the sequence sharded over ranks.

    Collective over `group` (default: the default group); every rank calls it with its shard.
    Args:
        q_shard: `(B, Hq, S_r, D)`, rank r's contiguous tokens (rank order = sequence order; any
            lengths, e.g. `shard_sequence`'s); k_shard, v_shard: `(B, Hkv, S_r, D)`, the same tokens.
            CUDA tensors for NCCL, CPU for gloo.
        layout: the WHOLE prompt's `ModalityLayout` (seq_len = sum of S_r) or None; the same on
            every rank, as are head_config, layer, block_q, block_k, last and scale.
        head_config: as `sparse_attention_for_layout` (per-head configs are sliced to each rank's heads).
    Returns:
        `(B, Hq, S_r, D)`: rank r's rows of the single-process output.
    Raises:
        ValueError (on every rank) for shapes or settings that differ across ranks, a layout of
        another length, or heads that cannot be split (`HeadPartition`: Hq % N == 0 and
        Hkv % N == 0 or N % Hkv == 0).
    """
    _check_tensors(q_shard, k_shard, v_shard)
    info = require_group(group)
    settings = (layer, block_q, block_k, last, None if scale is None else float(scale))
    lengths = _agree(info, q_shard, k_shard, v_shard, layout, head_config, settings)
    total = sum(lengths)
    if layout is not None and isinstance(layout, ModalityLayout) and layout.seq_len != total:
        raise ValueError(f"layout: seq_len {layout.seq_len} differs from the {total} tokens of all ranks "
                         f"(pass the whole prompt's layout; shards {lengths})")
    partition = HeadPartition(q_shard.shape[1], k_shard.shape[1], info.world)
    q_heads = [partition.q_range(r) for r in range(info.world)]
    kv_heads = [partition.kv_range(r) for r in range(info.world)]
    config = local_head_config(head_config, layer, partition.q_heads, q_heads[info.rank])
    if scale is None:
        scale = 1.0 / math.sqrt(q_shard.shape[3])
    q = sequence_to_heads(q_shard, q_heads, lengths, info)
    k = sequence_to_heads(k_shard, kv_heads, lengths, info)
    v = sequence_to_heads(v_shard, kv_heads, lengths, info)
    out = single.sparse_attention_for_layout(q, k, v, layout, config, 0, block_q, block_k, last=last, scale=scale)
    return heads_to_sequence(out, lengths, info)


def head_parallel_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: Optional[ModalityLayout], head_config="auto",
    group: Optional[dist.ProcessGroup] = None, layer: int = 0, block_q: int = 128, block_k: int = 64, *,
    last: int = 64, scale: Optional[float] = None,
) -> torch.Tensor:
    """`sparse_attention_for_layout` split by heads over ranks that all hold the whole sequence (a
    model run on the same inputs on every rank, e.g. `patch(model, parallel="heads")`): rank r runs
    its `HeadPartition` heads and the outputs are all-gathered. Attention work and its index memory
    are divided by the world size; projections and MLP stay replicated.

    Collective over `group`. q `(B, Hq, S, D)`, k / v `(B, Hkv, S, D)`, the same shapes, layout,
    head_config and options on every rank (checked first: ValueError on every rank otherwise).
    Returns the full `(B, Hq, S, D)` on every rank, equal to the single-process output."""
    _check_tensors(q, k, v)
    info = require_group(group)
    settings = (layer, block_q, block_k, last, None if scale is None else float(scale))
    lengths = _agree(info, q, k, v, layout, head_config, settings)
    if any(n != lengths[0] for n in lengths):
        raise ValueError(f"q: head-parallel attention needs the whole sequence on every rank, got {lengths} tokens")
    partition = HeadPartition(q.shape[1], k.shape[1], info.world)
    heads, kv = partition.q_range(info.rank), partition.kv_range(info.rank)
    config = local_head_config(head_config, layer, partition.q_heads, heads)
    out = single.sparse_attention_for_layout(q[:, heads.start:heads.stop], k[:, kv.start:kv.stop],
                                             v[:, kv.start:kv.stop], layout, config, 0, block_q, block_k,
                                             last=last, scale=scale).contiguous()
    parts = [torch.empty_like(out) for _ in range(info.world)]
    dist.all_gather(parts, out, group=info.group)
    return torch.cat(parts, dim=1)


def maybe_sequence_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout, head_config, layer: int,
                            group: Optional[dist.ProcessGroup] = None, **options) -> Optional[torch.Tensor]:
    """The hook for the transformers integration: None when no process group is initialised (or it
    has one rank), so the caller runs its single-process path; otherwise
    `sequence_parallel_sparse_attention(q, k, v, layout, head_config, group, layer, **options)`
    (q, k, v: this rank's sequence shards `(B, H, S_r, D)`; returns `(B, Hq, S_r, D)`)."""
    if parallel_group(group) is None:
        return None
    return sequence_parallel_sparse_attention(q, k, v, layout, head_config, group, layer, **options)
