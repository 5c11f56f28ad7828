"""Multi-GPU (or multi-process CPU) sequence-parallel sparse prefill on torch.distributed.

The sequence is split into contiguous shards (`sharding`); token-wise layers run on each rank's
shard; attention exchanges shards for heads (`all_to_all`, `heads`) and runs the single-process
sparse attention on each rank's heads (`attention`). See `sharding`'s docstring for how a model's
layers run sequence-sharded, and examples/torchrun_prefill.py for a torchrun launch.
`head_parallel_sparse_attention` is the variant for ranks that all hold the whole sequence; it is
what `mminference.patch(model, parallel="heads")` uses when a process group is initialised.
"""

from .attention import (head_parallel_sparse_attention, local_head_config, maybe_sequence_parallel,
                        sequence_parallel_sparse_attention)
from .group import GroupInfo, parallel_group
from .heads import HeadPartition
from .sharding import gather_sequence, shard_bounds, shard_lengths, shard_sequence

__all__ = [
    "GroupInfo",
    "HeadPartition",
    "gather_sequence",
    "head_parallel_sparse_attention",
    "local_head_config",
    "maybe_sequence_parallel",
    "parallel_group",
    "sequence_parallel_sparse_attention",
    "shard_bounds",
    "shard_lengths",
    "shard_sequence",
]
