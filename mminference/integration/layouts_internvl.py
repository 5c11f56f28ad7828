"""InternVL: layouts from the `<IMG_CONTEXT>` token id (`config.image_token_id`).

Every image tile is `image_seq_length` (256) context tokens, a square grid after pixel shuffle
(16 x 16); an image is `<img>` + tiles x 256 context tokens + `</img>`. Videos have no token id of
their own: the processor writes each frame as its own one-tile image block (`Frame{i}: <img>...</img>`,
blocks joined by newlines). So a chain of two or more one-tile blocks whose text gaps are at most
`video_frame_gap` tokens is taken as a video (one VIDEO segment per frame, grid 1 x 16 x 16); other
blocks are images with one frame per tile.
"""

from __future__ import annotations

import math

from ..layout import Modality, ModalityLayout, Segment, VisualGrid
from .segments import build_layout, runs


def derive(config, inputs: dict, ranges, options) -> list[ModalityLayout]:
    ids = inputs.get("input_ids")
    if ids is None:
        raise ValueError("input_ids: an InternVL prefill from inputs_embeds has no token ids to locate its visual "
                         "tokens; wrap the call in mminference.integration.explicit_layouts([...])")
    ids = ids.cpu()
    per_tile = int(config.image_seq_length)
    side = math.isqrt(per_tile)
    if side * side != per_tile:
        raise ValueError(f"image_seq_length: {per_tile} tokens per tile is not a square grid")
    gap = options.video_frame_gap
    layouts = []
    for b, (start, end) in enumerate(ranges):
        blocks = [(s, e) for v, s, e in runs(ids[b, start:end] == int(config.image_token_id)) if v]
        for s, e in blocks:
            if (e - s) % per_tile:
                raise ValueError(f"input_ids: a run of {e - s} image tokens at {s} is not whole tiles of "
                                 f"{per_tile} tokens (InternVL)")
        single = [e - s == per_tile for s, e in blocks]
        # linked[i]: blocks i and i + 1 are one-tile blocks at most `gap` tokens apart (frames of a video)
        linked = [single[i] and single[i + 1] and blocks[i + 1][0] - blocks[i][1] <= gap
                  for i in range(len(blocks) - 1)]
        segments = []
        for i, (s, e) in enumerate(blocks):
            is_frame = (i > 0 and linked[i - 1]) or (i < len(linked) and linked[i])
            modality = Modality.VIDEO if is_frame else Modality.IMAGE
            segments.append(Segment(modality, s, e, VisualGrid((e - s) // per_tile, side, side)))
        layouts.append(build_layout(end - start, segments))
    return layouts
