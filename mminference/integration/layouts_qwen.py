"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: layouts from `mm_token_type_ids` (or the image / video token
ids) and `image_grid_thw` / `video_grid_thw`.

Visual tokens are frame-major, row-major pads with no separators. A grid row (t, h, w) is the patch
grid before merging; the language model sees t frames of (h / m) x (w / m) tokens, m =
`vision_config.spatial_merge_size`. Qwen2-VL / Qwen2.5-VL put a whole item in one run of pads;
Qwen3-VL splits a video into one run per frame (timestamp text between them). Rows are consumed in
order across the batch, as the models themselves do.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..layout import Modality, ModalityLayout
from .segments import GridFeed, build_layout, runs


def _merged_rows(grid_thw: Optional[torch.Tensor], merge: int, name: str) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    if not torch.is_tensor(grid_thw) or grid_thw.dim() != 2 or grid_thw.shape[1] != 3:
        raise ValueError(f"{name} must be a (num_items, 3) tensor of (t, h, w), got {grid_thw!r}")
    rows = []
    for t, h, w in grid_thw.tolist():
        if h % merge or w % merge:
            raise ValueError(f"{name}: grid ({t}, {h}, {w}) is not divisible by spatial_merge_size {merge}")
        rows.append((t, h // merge, w // merge))
    return rows


def token_types(config, inputs: dict) -> torch.Tensor:
    """`(B, S)` modality of every token: `mm_token_type_ids` when given, else from the token ids."""
    types = inputs.get("mm_token_type_ids")
    if types is not None:
        return types
    ids = inputs.get("input_ids")
    if ids is None:
        raise ValueError("mm_token_type_ids: a Qwen-VL prefill from inputs_embeds needs mm_token_type_ids "
                         "(0 text, 1 image, 2 video) to locate its visual tokens")
    return (ids == config.image_token_id).to(torch.int64) + 2 * (ids == config.video_token_id).to(torch.int64)


def derive(config, inputs: dict, ranges: list[tuple[int, int]], options) -> list[ModalityLayout]:
    """One layout per batch element over its valid positions `ranges[b]`."""
    return layouts_from_types(token_types(config, inputs), inputs.get("image_grid_thw"),
                              inputs.get("video_grid_thw"), int(config.vision_config.spatial_merge_size), ranges)


def layouts_from_types(types: torch.Tensor, image_grid_thw: Optional[torch.Tensor],
                       video_grid_thw: Optional[torch.Tensor], merge: int,
                       ranges: list[tuple[int, int]]) -> list[ModalityLayout]:
    """One layout per batch element of `types` `(B, S)` (0 text, 1 image, 2 video) over positions
    `ranges[b]`; the grid rows `(num_items, 3)` are consumed in order across the batch and must all
    be used."""
    types = types.cpu()
    feeds = {
        1: GridFeed(Modality.IMAGE, _merged_rows(image_grid_thw, merge, "image_grid_thw"), "image_grid_thw"),
        2: GridFeed(Modality.VIDEO, _merged_rows(video_grid_thw, merge, "video_grid_thw"), "video_grid_thw"),
    }
    layouts = []
    for b, (start, end) in enumerate(ranges):
        segments = []
        for value, s, e in runs(types[b, start:end]):
            if value == 0:
                continue
            if value not in feeds:
                raise ValueError(f"mm_token_type_ids: unknown token type {value} (0 text, 1 image, 2 video)")
            segments += feeds[value].take(s, e - s)
        layouts.append(build_layout(end - start, segments))
    for feed in feeds.values():
        feed.check_done()
    return layouts
