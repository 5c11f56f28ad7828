"""Calibration inputs of the search for Qwen2-VL / Qwen2.5-VL-architecture models.

`synthetic_video_input`: text, `<|vision_start|>`, a video of `frames` x (rows x cols) LM tokens,
`<|vision_end|>`, text (the layout of a real Qwen2.5-VL video prompt, `mm_token_type_ids` and
`video_grid_thw` included, so mRoPE positions are the real ones). The vision tower is skipped: the
video tokens' embeddings come from `synthetic.moving_shapes_video` frames (a static background with
moving shapes), each LM token a fixed random projection of its patch's pixels plus a per-position
embedding shared by all frames, scaled to the text embeddings' RMS, so the same patch looks alike
across frames (the content source of grid attention).

`load_calibration_file`: a `torch.save`d dict (or list of dicts) of the model's forward inputs
(`input_ids`, `mm_token_type_ids`, `video_grid_thw` / `image_grid_thw`, `pixel_values_videos` /
`pixel_values`, optional `inputs_embeds`), batch 1, unpadded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from ..integration.layouts_qwen import layouts_from_types
from ..layout import Modality, ModalityLayout, Segment, VisualGrid
from ..synthetic import moving_shapes_video


@dataclasses.dataclass
class CalibrationInput:
    """Forward kwargs of the base model and the prompt's layout."""

    kwargs: dict[str, Any]
    layout: ModalityLayout
    name: str


def layout_from_qwen_inputs(mm_token_type_ids: torch.Tensor, video_grid_thw: Optional[torch.Tensor],
                            image_grid_thw: Optional[torch.Tensor], merge: int) -> ModalityLayout:
    """The layout of one unpadded Qwen-VL-family prompt, derived as the transformers integration
    derives it (`integration.layouts_qwen`): runs of image (1) / video (2) tokens take the next
    `*_grid_thw` rows (t, h, w) as grids (t, h / merge, w / merge), whole frames at a time."""
    types = mm_token_type_ids.reshape(1, -1)
    return layouts_from_types(types, image_grid_thw, video_grid_thw, merge, [(0, types.shape[1])])[0]


def _video_embeddings(frames: int, rows: int, cols: int, hidden: int, seed: int, pixels: int = 8) -> torch.Tensor:
    """float32 `(frames * rows * cols, hidden)` content-derived token embeddings (module docstring)."""
    video, _ = moving_shapes_video(frames, rows * pixels, cols * pixels, seed=seed)
    patches = (video.reshape(frames, rows, pixels, cols, pixels, 3).permute(0, 1, 3, 2, 4, 5)
               .reshape(frames * rows * cols, pixels * pixels * 3) - 0.5)
    gen = torch.Generator().manual_seed(seed + 1)
    proj = torch.randn(pixels * pixels * 3, hidden, generator=gen) / (pixels * pixels * 3) ** 0.5
    tokens = patches @ proj
    tokens = (tokens - tokens.mean(0)) / tokens.std().clamp_min(1e-6)
    position = torch.randn(rows * cols, hidden, generator=gen)
    return tokens + 0.5 * position.repeat(frames, 1)


def synthetic_video_input(model: Any, config: Any, tokens: int, seed: int = 0, rows: Optional[int] = None,
                          text_before: int = 64) -> CalibrationInput:
    """A `tokens`-long synthetic video prompt for a Qwen2-VL-family base model (module docstring).
    rows: LM grid side (default 16 from 8192 tokens up, else 8); frames fill the rest but 64+
    tokens of text after the video."""
    if tokens < 256:
        raise ValueError(f"tokens must be >= 256, got {tokens}")
    rows = rows or (16 if tokens >= 8192 else 8)
    tpf = rows * rows
    frames = (tokens - text_before - 2 - 64) // tpf
    if frames < 2:
        raise ValueError(f"tokens: {tokens} leaves fewer than 2 frames of {tpf} tokens")
    text_cfg = config.get_text_config()
    merge = config.vision_config.spatial_merge_size
    vocab = text_cfg.vocab_size
    specials = {config.image_token_id, config.video_token_id, config.vision_start_token_id,
                config.vision_end_token_id}
    gen = torch.Generator().manual_seed(seed)
    text_ids = torch.randint(3, min(vocab, 150000), (tokens,), generator=gen)
    text_ids = torch.where(torch.isin(text_ids, torch.tensor(sorted(specials))), 3, text_ids)
    video_tokens = frames * tpf
    start = text_before + 1  # after <|vision_start|>
    ids = text_ids.clone()
    ids[text_before] = config.vision_start_token_id
    ids[start:start + video_tokens] = config.video_token_id
    ids[start + video_tokens] = config.vision_end_token_id
    types = torch.zeros(tokens, dtype=torch.int32)
    types[start:start + video_tokens] = 2
    grid_thw = torch.tensor([[frames, rows * merge, rows * merge]], dtype=torch.long)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    embed = model.get_input_embeddings()
    with torch.no_grad():
        embeds = embed(ids[None].to(device)).float()
        rms = embeds.pow(2).mean().sqrt()
        visual = _video_embeddings(frames, rows, rows, embeds.shape[-1], seed).to(device)
        embeds[0, start:start + video_tokens] = visual * (rms / visual.pow(2).mean().sqrt())
    kwargs = dict(input_ids=ids[None].to(device), inputs_embeds=embeds.to(dtype),
                  mm_token_type_ids=types[None].to(device), video_grid_thw=grid_thw.to(device))
    layout = ModalityLayout.from_spans(tokens, [Segment(Modality.VIDEO, start, start + video_tokens,
                                                        VisualGrid(frames, rows, rows))])
    return CalibrationInput(kwargs, layout, f"synthetic(seed={seed}, frames={frames}, grid={rows}x{rows})")


def load_calibration_file(path: str, config: Any, device: str) -> list[CalibrationInput]:
    """Inputs saved with `torch.save` (module docstring)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    items = data if isinstance(data, (list, tuple)) else [data]
    merge = config.vision_config.spatial_merge_size
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "input_ids" not in item or "mm_token_type_ids" not in item:
            raise ValueError(f"calib: entry {i} of {path} must be a dict with input_ids and mm_token_type_ids")
        if item["input_ids"].dim() != 2 or item["input_ids"].shape[0] != 1:
            raise ValueError(f"calib: entry {i}: input_ids must be (1, S) (batch 1, unpadded)")
        layout = layout_from_qwen_inputs(item["mm_token_type_ids"][0], item.get("video_grid_thw"),
                                         item.get("image_grid_thw"), merge)
        kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in item.items()
                  if k != "attention_mask"}
        out.append(CalibrationInput(kwargs, layout, f"{path}[{i}]"))
    return out
