"""Which process group a sequence-parallel call runs on.

Every helper of `mminference.distributed` takes `group=None` (the default group, as
`torch.distributed` does). A call is sequence-parallel only when torch.distributed is available and
initialised and the group has two or more ranks; otherwise the helpers say so (`parallel_group`
returns None) and the caller runs the single-process path.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class GroupInfo:
    """A process group with its size and this process's rank in it (`group` None: the default)."""

    group: Optional[dist.ProcessGroup]
    world: int
    rank: int


def parallel_group(group: Optional[dist.ProcessGroup] = None) -> Optional[GroupInfo]:
    """The group's size and rank, or None when no process group is initialised or it has one rank."""
    if not dist.is_available() or not dist.is_initialized():
        return None
    world = dist.get_world_size(group)
    if world < 2:
        return None
    return GroupInfo(group, world, dist.get_rank(group))


def require_group(group: Optional[dist.ProcessGroup] = None) -> GroupInfo:
    """Like `parallel_group`, but a world of one rank is allowed and no process group is a ValueError."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group: torch.distributed is not initialised (call torch.distributed.init_process_group "
                         "first, e.g. under torchrun)")
    return GroupInfo(group, dist.get_world_size(group), dist.get_rank(group))
