"""LLaVA-OneVision and LLaVA-NeXT-Video: layouts from the image / video token ids.

Videos: g = vision image_size // patch_size patches a side per frame, pooled to
  - LLaVA-OneVision: ceil(g / 2) a side (bilinear), F frames, then ONE `image_newline` token per video
    (the run of video tokens is F * ceil(g/2)^2 + 1 long; the newline is labelled text);
  - LLaVA-NeXT-Video: g // spatial_pool_stride a side, F frames, no newline.
  One video per run of video tokens. Plain 1-D positions, frame-major then row-major.
Images: anyres packing (a base tile, then unpadded tile rows each ending in a newline, rows of a
width set by the image size) is one IMAGE segment without a grid.
"""

from __future__ import annotations

import math

import torch

from ..layout import Modality, ModalityLayout, Segment, VisualGrid
from .segments import build_layout, runs


def _token_ids(inputs: dict, family: str) -> torch.Tensor:
    ids = inputs.get("input_ids")
    if ids is None:
        raise ValueError(f"input_ids: a {family} prefill from inputs_embeds has no token ids to locate its visual "
                         f"tokens; wrap the call in mminference.integration.explicit_layouts([...])")
    return ids.cpu()


def _patches_per_side(config) -> int:
    return int(config.vision_config.image_size) // int(config.vision_config.patch_size)


def _derive(config, inputs: dict, ranges, family: str, side: int, newline: bool) -> list[ModalityLayout]:
    ids = _token_ids(inputs, family)
    image_id, video_id = int(config.image_token_id), int(config.video_token_id)
    per_frame = side * side
    layouts = []
    for b, (start, end) in enumerate(ranges):
        kind = (ids[b, start:end] == image_id).to(torch.int64) + 2 * (ids[b, start:end] == video_id).to(torch.int64)
        segments = []
        for value, s, e in runs(kind):
            if value == 1:
                segments.append(Segment(Modality.IMAGE, s, e))
            elif value == 2:
                patches = e - s - int(newline)
                if patches <= 0 or patches % per_frame:
                    raise ValueError(f"input_ids: a run of {e - s} video tokens at {s} is not frames of {side} x "
                                     f"{side} = {per_frame} tokens{' plus one newline' if newline else ''} "
                                     f"({family})")
                segments.append(Segment(Modality.VIDEO, s, s + patches, VisualGrid(patches // per_frame, side, side)))
        layouts.append(build_layout(end - start, segments))
    return layouts


def derive_onevision(config, inputs: dict, ranges, options) -> list[ModalityLayout]:
    side = math.ceil(_patches_per_side(config) / 2)
    return _derive(config, inputs, ranges, "LLaVA-OneVision", side, newline=True)


def derive_next_video(config, inputs: dict, ranges, options) -> list[ModalityLayout]:
    side = _patches_per_side(config) // int(config.spatial_pool_stride)
    return _derive(config, inputs, ranges, "LLaVA-NeXT-Video", side, newline=False)
