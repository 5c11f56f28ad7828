"""Prompts for the tiny random Qwen2-VL / Qwen2.5-VL models of `integration.random_models` (vocab 256,
no processor): one token per character, video blocks laid out as the Qwen processors do.

    "user: " [vision_start, video_pad x (t * h * w / 4), vision_end] ... "\n" question "\nassistant: "

Characters: printable ASCII and newline are encoded as ids 3..98; any other character becomes "?".
Decoding maps every id from 3 up to the first special id to a character, cyclically (id 3 + k is
CHARS[k % 96]), so a random model's replies are text in which option letters can turn up (the answer
extraction is exercised) instead of mostly unmapped ids. Frames are resized to `frame_size` px square and patchified by
`video_prompts.qwen_video_patches`; an odd frame count repeats the last frame (temporal patch 2).
"""

from __future__ import annotations

import string
from typing import Sequence

import numpy as np
import torch

from ..integration.video_prompts import qwen_video_patches
from .encoders import item_videos
from .prompts import question_text
from .tasks import MCQItem, TextPart

CHARS = string.printable[:95] + "\n"  # digits, letters, punctuation, space, newline
FIRST_ID = 3
SUPPORTED = ("qwen2_vl", "qwen2_5_vl")


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> float32 `(T, size, size, 3)` in [0, 1] (bilinear)."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames]
    return torch.from_numpy(np.stack(out)).float() / 255.0


class TinyQwenEncoder:
    """Args: config of the tiny model (`random_models.qwen2_5_vl_config()` or `qwen2_vl_config()`);
    frame_size: px per side, a multiple of patch_size x spatial_merge_size."""

    def __init__(self, config, frame_size: int = 32):
        if config.model_type not in SUPPORTED:
            raise ValueError(f"config: TinyQwenEncoder supports {SUPPORTED}, got {config.model_type!r}")
        vision = config.vision_config
        self.patch, self.temporal, self.merge = vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size
        if frame_size % (self.patch * self.merge) or frame_size < self.patch * self.merge:
            raise ValueError(f"frame_size: {frame_size} px is not a positive multiple of patch x merge = "
                             f"{self.patch * self.merge}")
        self.config = config
        self.frame_size = frame_size
        self.to_id = {c: FIRST_ID + i for i, c in enumerate(CHARS)}
        limit = min(config.image_token_id, config.video_token_id, config.vision_start_token_id,
                    config.vision_end_token_id)
        if FIRST_ID + len(CHARS) > limit:
            raise ValueError(f"config: the character ids {FIRST_ID}..{FIRST_ID + len(CHARS) - 1} reach the special "
                             f"ids (from {limit})")
        self.to_char = {i: CHARS[(i - FIRST_ID) % len(CHARS)] for i in range(FIRST_ID, limit)}

    @property
    def tokens_per_frame(self) -> float:
        """Language-model tokens per video frame (a temporal patch of frames shares its tokens)."""
        side = self.frame_size // (self.patch * self.merge)
        return side * side / self.temporal

    def count_tokens(self, text: str) -> int:
        return len(text)

    def tokenize(self, text: str) -> list[int]:
        unknown = self.to_id["?"]
        return [self.to_id.get(c, unknown) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        """Characters of the ids below the special ids (cyclically, see the module docstring); the
        special ids (and pad / bos / eos) are skipped."""
        return "".join(self.to_char.get(int(i), "") for i in token_ids)

    def encode(self, item: MCQItem, num_frames: int) -> dict:
        cfg = self.config
        ids: list[int] = self.tokenize("user: ")
        types: list[int] = [0] * len(ids)
        pixels, grids, seconds = [], [], []
        videos = iter(item_videos(item, num_frames))
        for part in item.parts:
            if isinstance(part, TextPart):
                text = self.tokenize(part.text)
                ids += text
                types += [0] * len(text)
                continue
            video = next(videos)
            frames = resize_frames(video.frames, self.frame_size)
            if len(frames) % self.temporal:  # pad to whole temporal patches, as the Qwen processors do
                pad = self.temporal - len(frames) % self.temporal
                frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
            pixels.append(qwen_video_patches(frames, self.patch, self.temporal, self.merge))
            grid = (len(frames) // self.temporal, self.frame_size // self.patch, self.frame_size // self.patch)
            grids.append(grid)
            seconds.append(self.temporal / (video.fps or 1.0))
            count = grid[0] * grid[1] * grid[2] // self.merge ** 2
            ids += [cfg.vision_start_token_id] + [cfg.video_token_id] * count + [cfg.vision_end_token_id]
            types += [0] + [2] * count + [0]
        tail = self.tokenize("\n" + question_text(item) + "\nassistant: ")
        ids += tail
        types += [0] * len(tail)
        input_ids = torch.tensor([ids])
        inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      mm_token_type_ids=torch.tensor([types]), pixel_values_videos=torch.cat(pixels),
                      video_grid_thw=torch.tensor(grids))
        if cfg.model_type == "qwen2_5_vl":
            inputs["second_per_grid_ts"] = torch.tensor(seconds)
        return inputs
