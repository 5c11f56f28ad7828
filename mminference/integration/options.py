"""Options of `mminference.patch(model, config, **options)`, validated on construction."""

from __future__ import annotations

import dataclasses


def _int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PatchOptions:
    """min_prefill_tokens: a fresh prefill (query length == key length) of at least this many tokens
        per batch element runs sparse; shorter ones, decode and chunked prefill run the model's own
        dense attention.
    block_q, block_k: kernel tile sizes of the sparse indexes; last: estimating queries per head.
    track_density: record each sparse call's (layer, density) in `PatchState.stats` (reads the index
        on the host: one device sync per layer).
    video_frame_gap: InternVL only: one-tile image blocks at most this many text tokens apart are frames
        of one video (0: never).
    unsupported: "raise" (ValueError listing the supported families) or "dense" (leave the model as
        it is, with a warning).
    parallel: "none", or "heads": when a torch.distributed process group of 2 or more ranks is
        initialised and every rank runs the model on the same inputs, each sparse prefill layer
        splits its heads over the ranks and all-gathers the outputs
        (`mminference.distributed.head_parallel_sparse_attention`); without a group it runs alone.
    """

    min_prefill_tokens: int = 8192
    block_q: int = 128
    block_k: int = 64
    last: int = 64
    track_density: bool = False
    video_frame_gap: int = 16
    unsupported: str = "raise"
    parallel: str = "none"

    def __post_init__(self):
        _int("min_prefill_tokens", self.min_prefill_tokens, 1)
        _int("block_q", self.block_q, 1)
        _int("block_k", self.block_k, 1)
        _int("last", self.last, 1)
        _int("video_frame_gap", self.video_frame_gap, 0)
        if not isinstance(self.track_density, bool):
            raise ValueError(f"track_density must be a bool, got {self.track_density!r}")
        if self.unsupported not in ("raise", "dense"):
            raise ValueError(f"unsupported must be 'raise' or 'dense', got {self.unsupported!r}")
        if self.parallel not in ("none", "heads"):
            raise ValueError(f"parallel must be 'none' or 'heads', got {self.parallel!r}")

    @staticmethod
    def from_kwargs(options: dict) -> "PatchOptions":
        names = {f.name for f in dataclasses.fields(PatchOptions)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"patch() got unknown options {unknown}; valid options: {sorted(names)}")
        return PatchOptions(**options)
