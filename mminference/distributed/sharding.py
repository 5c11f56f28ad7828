"""Contiguous sequence shards: rank r of N holds the r-th contiguous chunk of the sequence.

Rule (`shard_lengths`, the same as `torch.tensor_split`): with S tokens on N ranks the first S % N
ranks hold ceil(S / N) tokens and the rest floor(S / N); no padding is ever added, so a rank may
hold zero tokens when S < N. The sequence-parallel attention accepts any contiguous split (it
gathers every rank's length first); these helpers produce and invert this one.

How a model runs sequence-sharded: embeddings, norms, the q/k/v/o projections and the MLP act on
each token on its own, so each rank runs them on its shard `x_r = shard_sequence(h, group)`
`(B, S_r, hidden)` unchanged; rotary embeddings take the shard's global positions
(`shard_bounds`); attention, the one op that mixes tokens, runs through
`sequence_parallel_sparse_attention` on the shards `(B, H, S_r, D)`; the final hidden states (or
only the last token's logits) come back with `gather_sequence`. Activation memory per rank is 1/N.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .collective_checks import describe_mismatch, gather_ints, shape_descriptor
from .group import require_group


def shard_lengths(total: int, world: int) -> list[int]:
    """Tokens per rank: `[ceil(total / world)] * (total % world) + [floor(total / world)] * rest`."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total must be an int >= 0, got {total!r}")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")
    base, extra = divmod(total, world)
    return [base + 1 if r < extra else base for r in range(world)]


def shard_bounds(total: int, world: int, rank: int) -> tuple[int, int]:
    """Half-open `[start, end)` global token positions of `rank`'s shard."""
    lengths = shard_lengths(total, world)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank must be an int in [0, {world}), got {rank!r}")
    start = sum(lengths[:rank])
    return start, start + lengths[rank]


def _check_dim(x: torch.Tensor, seq_dim: int) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(seq_dim, bool) or not isinstance(seq_dim, int) or not -x.dim() <= seq_dim < x.dim():
        raise ValueError(f"seq_dim must be an int in [{-x.dim()}, {x.dim()}) for a {x.dim()}-D x, got {seq_dim!r}")
    return seq_dim % x.dim()


def shard_sequence(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None, seq_dim: int = 1) -> torch.Tensor:
    """This rank's contiguous chunk of `x` along `seq_dim` (a view, no communication).

    Args:
        x: the full sequence, identical on every rank, e.g. hidden states `(B, S, hidden)`
            (`seq_dim=1`) or q / k / v `(B, H, S, D)` (`seq_dim=2`).
    Returns:
        `x` narrowed to `shard_bounds(S, world, rank)` along `seq_dim`.
    """
    dim = _check_dim(x, seq_dim)
    info = require_group(group)
    start, end = shard_bounds(x.shape[dim], info.world, info.rank)
    return x.narrow(dim, start, end - start)


def gather_sequence(x: torch.Tensor, group: Optional[dist.ProcessGroup] = None, seq_dim: int = 1) -> torch.Tensor:
    """The whole sequence on every rank: the ranks' chunks concatenated along `seq_dim` in rank
    order (any lengths, e.g. `shard_sequence`'s).

    Collective: one all_gather of each rank's shape (a mismatch in any other dim or the dtype is a
    ValueError on every rank), then one all_gather of the chunks padded to the longest.
    Args:
        x: this rank's chunk, e.g. `(B, S_r, hidden)`.
    Returns:
        `(B, sum_r S_r, hidden)` (the same on every rank).
    """
    dim = _check_dim(x, seq_dim)
    info = require_group(group)
    rows = gather_ints([dim] + shape_descriptor(x), x.device, info)
    others = [[v for i, v in enumerate(row) if i != 3 + dim] for row in rows]  # drop the sequence size
    if any(row != others[0] for row in others):
        raise ValueError("x: " + describe_mismatch("shape / dtype / seq_dim outside the sequence dim", rows,
                                                    ["seq_dim", "ndim", "dtype"] + [f"size{i}" for i in range(8)]))
    lengths = [row[3 + dim] for row in rows]
    longest = max(lengths)
    if x.shape[dim] < longest:  # all_gather needs equal sizes: pad, then trim
        pad_shape = list(x.shape)
        pad_shape[dim] = longest - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    x = x.contiguous()
    chunks = [torch.empty_like(x) for _ in range(info.world)]
    dist.all_gather(chunks, x, group=info.group)
    return torch.cat([c.narrow(dim, 0, n) for c, n in zip(chunks, lengths)], dim=dim)
