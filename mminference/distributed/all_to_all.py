"""Sequence-sharded <-> head-sharded exchange with `torch.distributed.all_to_all_single`.

    sequence-sharded (B, H, S_r, D)   rank r: every head, its tokens [start_r, end_r)
    head-sharded     (B, H_r, S, D)   rank r: its heads (`HeadPartition`), every token

Both directions flatten the per-destination blocks into one buffer so ranks with different token
counts (`sharding.shard_lengths`, or any contiguous split) need no padding: the split sizes of the
1-D all_to_all carry the lengths. Each direction copies the tensor once to arrange the blocks and
once to restore `(B, H, S, D)`; it is inference-only (no autograd).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from .group import GroupInfo


def sequence_to_heads(x: torch.Tensor, heads_of_rank: Sequence[range], lengths: Sequence[int],
                      info: GroupInfo) -> torch.Tensor:
    """`(B, H, S_r, D)` -> `(B, h, S, D)`: send rank j the heads `heads_of_rank[j]` (each of the
    same count h; ranges may repeat heads, e.g. replicated kv) of this rank's tokens; receive this
    rank's heads of every rank's tokens, concatenated in rank order (`lengths[i]` from rank i)."""
    batch, _, seq_local, dim = x.shape
    per_rank = len(heads_of_rank[0])
    if all(r.start == j * per_rank and len(r) == per_rank for j, r in enumerate(heads_of_rank)):
        selected = x  # heads already in destination order (the split case)
    else:
        order = torch.tensor([h for r in heads_of_rank for h in r], dtype=torch.long, device=x.device)
        selected = x.index_select(1, order)
    # (B, N*h, S_r, D) -> (N, B, h, S_r, D): one contiguous block per destination rank
    send = selected.reshape(batch, info.world, per_rank, seq_local, dim).transpose(0, 1).contiguous()
    block = batch * per_rank * dim
    recv = x.new_empty(block * sum(lengths))
    dist.all_to_all_single(recv, send.view(-1), output_split_sizes=[block * n for n in lengths],
                           input_split_sizes=[block * seq_local] * info.world, group=info.group)
    out = x.new_empty(batch, per_rank, sum(lengths), dim)
    start = 0
    for chunk, n in zip(recv.split([block * n for n in lengths]), lengths):
        out[:, :, start:start + n].copy_(chunk.view(batch, per_rank, n, dim))
        start += n
    return out


def heads_to_sequence(y: torch.Tensor, lengths: Sequence[int], info: GroupInfo) -> torch.Tensor:
    """`(B, h, S, D)` -> `(B, N*h, S_r, D)`: the inverse of `sequence_to_heads` for disjoint,
    rank-ordered head ranges (query heads / outputs): rank j gets tokens `[start_j, end_j)` of this
    rank's heads; the received heads are stacked in rank order."""
    batch, per_rank, seq, dim = y.shape
    if sum(lengths) != seq:
        raise ValueError(f"lengths: sum {sum(lengths)} differs from the sequence length {seq}")
    block = batch * per_rank * dim
    send = y.new_empty(y.numel())  # per destination j: its tokens of this rank's heads, (B, h, S_j, D)
    offset = 0
    for chunk, n in zip(y.split(list(lengths), dim=2), lengths):
        send[offset:offset + block * n].view(batch, per_rank, n, dim).copy_(chunk)
        offset += block * n
    own = lengths[info.rank]
    recv = y.new_empty(info.world * block * own)
    dist.all_to_all_single(recv, send, output_split_sizes=[block * own] * info.world,
                           input_split_sizes=[block * n for n in lengths], group=info.group)
    # (N, B, h, S_r, D) -> (B, N*h, S_r, D)
    return recv.view(info.world, batch, per_rank, own, dim).transpose(0, 1).reshape(batch, -1, own, dim)
