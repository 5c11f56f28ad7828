"""Hand-built prompts for the tiny models of `mminference.integration.random_models` (token ids from
there). Each builder returns the model inputs and the expected layout spans, computed here from the
token construction (independently of the library's derivation): `expected` is a list of
`(modality, start, end, (frames, rows, cols) or None)` for every visual segment of batch element 0.
"""

from __future__ import annotations

import torch

from mminference.integration import random_models as tm

TEXT, IMAGE, VIDEO = 0, 1, 2


def _text(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 240, (n,), generator=g).tolist()


class Builder:
    """Appends text and visual blocks, recording where each visual block's tokens land."""

    def __init__(self, seed: int = 0):
        self.ids: list[int] = []
        self.types: list[int] = []
        self.expected: list[tuple] = []
        self.seed = seed

    def text(self, n: int) -> "Builder":
        self.ids += _text(n, self.seed + len(self.ids))
        self.types += [TEXT] * n
        return self

    def tokens(self, token: int, n: int, modality: int) -> int:
        start = len(self.ids)
        self.ids += [token] * n
        self.types += [modality] * n
        return start


# ---- Qwen2-VL / Qwen2.5-VL / Qwen3-VL: 4-px patches, temporal patch 2, merge 2 -------------------------------

def qwen_prompt(items: list[tuple], text_between: int = 7, seed: int = 0, per_frame_runs: bool = False) -> dict:
    """items: ("image", h, w) or ("video", t, h, w) in patches before merging (t = temporal patches).
    `per_frame_runs` (Qwen3-VL): a video is t runs of h*w/4 pads, each with its own timestamp text."""
    b = Builder(seed).text(text_between)
    images, videos, image_grid, video_grid = [], [], [], []
    for item in items:
        if item[0] == "image":
            _, h, w = item
            b.tokens(tm.VISION_START, 1, TEXT)
            start = b.tokens(tm.IMAGE, h * w // 4, IMAGE)
            b.tokens(tm.VISION_END, 1, TEXT)
            b.expected.append((IMAGE, start, start + h * w // 4, (1, h // 2, w // 2)))
            images.append(torch.randn(h * w, 3 * 2 * 16))
            image_grid.append([1, h, w])
        else:
            _, t, h, w = item
            per = h * w // 4
            if per_frame_runs:
                for f in range(t):
                    b.text(3)  # "<f.0 seconds>"
                    b.tokens(tm.VISION_START, 1, TEXT)
                    start = b.tokens(tm.VIDEO, per, VIDEO)
                    b.tokens(tm.VISION_END, 1, TEXT)
                    b.expected.append((VIDEO, start, start + per, (1, h // 2, w // 2)))
            else:
                b.tokens(tm.VISION_START, 1, TEXT)
                start = b.tokens(tm.VIDEO, t * per, VIDEO)
                b.tokens(tm.VISION_END, 1, TEXT)
                b.expected.append((VIDEO, start, start + t * per, (t, h // 2, w // 2)))
            videos.append(torch.randn(t * h * w, 3 * 2 * 16))
            video_grid.append([t, h, w])
        b.text(text_between)
    inputs = dict(input_ids=torch.tensor([b.ids]), mm_token_type_ids=torch.tensor([b.types]))
    if images:
        inputs.update(pixel_values=torch.cat(images), image_grid_thw=torch.tensor(image_grid))
    if videos:
        inputs.update(pixel_values_videos=torch.cat(videos), video_grid_thw=torch.tensor(video_grid))
    return dict(inputs=inputs, expected=b.expected, seq=len(b.ids))


# ---- LLaVA-OneVision / LLaVA-NeXT-Video: 32 px frames -> 16 tokens (4 x 4) -----------------------------------

def llava_prompt(items: list[tuple], newline: bool, text_between: int = 7, seed: int = 0) -> dict:
    """items: ("image",) one 32 x 32 anyres image (base 8 x 8 + 8 rows of 8 + newline = 136 tokens) or
    ("video", frames) (all videos of a prompt: the same frame count, as pixel_values_videos stacks them).
    OneVision (`newline`) ends each video with one newline token."""
    b = Builder(seed).text(text_between)
    pixel_images, pixel_videos = [], []
    for item in items:
        if item[0] == "image":
            start = b.tokens(tm.IMAGE, 64 + 8 * 9, IMAGE)
            b.expected.append((IMAGE, start, start + 136, None))
            pixel_images.append(torch.randn(2, 3, 32, 32))  # base tile + one 32 x 32 tile
        else:
            frames = item[1]
            start = b.tokens(tm.VIDEO, frames * 16 + int(newline), VIDEO)
            b.expected.append((VIDEO, start, start + frames * 16, (frames, 4, 4)))
            pixel_videos.append(torch.randn(frames, 3, 32, 32))
        b.text(text_between)
    inputs = dict(input_ids=torch.tensor([b.ids]))
    if pixel_images:
        inputs.update(pixel_values=torch.stack(pixel_images), image_sizes=torch.tensor([[32, 32]] * len(pixel_images)))
    if pixel_videos:
        inputs.update(pixel_values_videos=torch.stack(pixel_videos))
    return dict(inputs=inputs, expected=b.expected, seq=len(b.ids))


# ---- InternVL: 32 px tiles -> 16 tokens (4 x 4) ----------------------------------------------------------------

IMG_START, IMG_END = 247, 248


def internvl_prompt(items: list[tuple], text_between: int = 7, seed: int = 0) -> dict:
    """items: ("image", tiles) one `<img>` block of tiles x 16 tokens, or ("video", frames): frames
    written as the processor does, `Frame{i}: <img>` + 16 tokens + `</img>` joined by a newline."""
    b = Builder(seed).text(text_between)
    tiles = []
    for item in items:
        if item[0] == "image":
            n = item[1]
            b.tokens(IMG_START, 1, TEXT)
            start = b.tokens(tm.IMAGE, 16 * n, IMAGE)
            b.tokens(IMG_END, 1, TEXT)
            b.expected.append((IMAGE, start, start + 16 * n, (n, 4, 4)))
            tiles.append(torch.randn(n, 3, 32, 32))
        else:
            for f in range(item[1]):
                b.text(4 if f == 0 else 5)  # "Frame{f}: " (and the joining newline)
                b.tokens(IMG_START, 1, TEXT)
                start = b.tokens(tm.IMAGE, 16, VIDEO)
                b.tokens(IMG_END, 1, TEXT)
                b.expected.append((VIDEO, start, start + 16, (1, 4, 4)))
            tiles.append(torch.randn(item[1], 3, 32, 32))
        b.text(text_between)
    inputs = dict(input_ids=torch.tensor([b.ids]), pixel_values=torch.cat(tiles))
    return dict(inputs=inputs, expected=b.expected, seq=len(b.ids))


def prompt_for(model_type: str, items: list[tuple], **kw) -> dict:
    """A prompt of `items` for `model_type` (item kinds as the builders above)."""
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        return qwen_prompt(items, per_frame_runs=model_type == "qwen3_vl", **kw)
    if model_type in ("llava_onevision", "llava_next_video"):
        return llava_prompt(items, newline=model_type == "llava_onevision", **kw)
    return internvl_prompt(items, **kw)
