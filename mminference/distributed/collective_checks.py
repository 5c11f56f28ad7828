"""Shape agreement across ranks, checked with one small all_gather before any large collective.

A mismatched all_to_all / all_gather can hang or corrupt memory instead of failing; gathering a few
int64 descriptors first lets every rank see every rank's shapes and raise the SAME ValueError, so a
bad call fails on all ranks instead of hanging some of them.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import torch
import torch.distributed as dist

from .group import GroupInfo

MAX_DIMS = 8  # tensors of more dims are refused (sequence tensors here have 3 or 4)


def fingerprint(value: object) -> int:
    """A stable (process-independent, unlike `hash`) 32-bit checksum of `repr(value)`."""
    return zlib.crc32(repr(value).encode())


def shape_descriptor(x: torch.Tensor) -> list[int]:
    """`[ndim, dtype checksum, size_0, ..., size_{MAX_DIMS-1}]` (missing dims -1)."""
    if x.dim() > MAX_DIMS:
        raise ValueError(f"tensor: at most {MAX_DIMS} dims supported, got {x.dim()}")
    return [x.dim(), fingerprint(x.dtype)] + list(x.shape) + [-1] * (MAX_DIMS - x.dim())


def gather_ints(values: Sequence[int], device: torch.device, info: GroupInfo) -> list[list[int]]:
    """Every rank's `values` (same length on every rank), as `rows[rank]`: one all_gather of
    `(len(values),)` int64 on `device` (CUDA for NCCL, CPU for gloo)."""
    local = torch.tensor(list(values), dtype=torch.int64, device=device)
    rows = [torch.empty_like(local) for _ in range(info.world)]
    dist.all_gather(rows, local, group=info.group)
    return [r.tolist() for r in rows]


def describe_mismatch(name: str, rows: list[list[int]], labels: Sequence[str]) -> str:
    """'name: rank 0 has (a=.., b=..), rank 1 has (...)' for an error message."""
    per_rank = ", ".join(f"rank {r} has (" + ", ".join(f"{l}={v}" for l, v in zip(labels, row)) + ")"
                         for r, row in enumerate(rows))
    return f"{name} differs across ranks: {per_rank}"
