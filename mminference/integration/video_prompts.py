"""Qwen2.5-VL video prompts for demos and benchmarks: text, `<|vision_start|>`, video pads,
`<|vision_end|>`, text; with pixels for the vision tower (`pixel_prompt`) or with visual embeddings
written straight into `inputs_embeds` (`embedded_prompt`, for long contexts without the tower).

Both return model inputs that `generate` and `forward` take, including `mm_token_type_ids` and
`video_grid_thw` (mRoPE positions and the mminference layout both come from them).
"""

from __future__ import annotations

import dataclasses

import torch

from ..synthetic import moving_shapes_video


@dataclasses.dataclass(frozen=True)
class VideoPrompt:
    """`inputs` for the model; the video occupies tokens [video_start, video_start + frames * rows * cols)
    (frames = temporal patches, rows x cols merged tokens a frame)."""

    inputs: dict
    video_start: int
    frames: int
    rows: int
    cols: int

    @property
    def seq_len(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    @property
    def video_tokens(self) -> int:
        return self.frames * self.rows * self.cols

    @torch.no_grad()
    def forward_inputs(self, model) -> dict:
        """Inputs for one direct `model(...)` prefill of an `inputs_embeds` prompt: the embeddings, the
        mRoPE `position_ids` (3, 1, S) the model would compute from the token ids, and the
        `mm_token_type_ids` / `video_grid_thw` the layout is derived from (no `input_ids`: the model
        takes one of the two)."""
        inputs = dict(self.inputs)
        ids = inputs.pop("input_ids")
        position_ids, _ = model.model.get_rope_index(ids, inputs["mm_token_type_ids"],
                                                     video_grid_thw=inputs["video_grid_thw"])
        return dict(inputs, position_ids=position_ids)


def _token_ids(config, text_before: int, video_tokens: int, text_after: int, seed: int) -> torch.Tensor:
    """int64 `(1, S)`: random text ids (below every special id), the video block, random text ids."""
    gen = torch.Generator().manual_seed(seed)
    special = min(config.image_token_id, config.video_token_id, config.vision_start_token_id,
                  config.vision_end_token_id)
    text = torch.randint(3, min(special, 32000), (text_before + text_after,), generator=gen)
    video = torch.full((video_tokens,), config.video_token_id)
    return torch.cat([text[:text_before], torch.tensor([config.vision_start_token_id]), video,
                      torch.tensor([config.vision_end_token_id]), text[text_before:]])[None]


def qwen_video_patches(video: torch.Tensor, patch: int, temporal_patch: int, merge: int) -> torch.Tensor:
    """Frames `(T, H, W, 3)` in [0, 1] -> `pixel_values_videos` `(T/tp * H/p * W/p, 3 * tp * p * p)` in
    the order the Qwen2-VL processors emit: temporal patch, then merge windows row-major, then the
    m x m patches of a window, each patch flattened as (channel, time, row, col)."""
    frames, height, width, _ = video.shape
    gt, gh, gw = frames // temporal_patch, height // patch, width // patch
    if gt * temporal_patch != frames or gh * patch != height or gw * patch != width or gh % merge or gw % merge:
        raise ValueError(f"video: {frames} frames of {height} x {width} px do not tile into {temporal_patch} x "
                         f"{patch} x {patch} patches in {merge} x {merge} merge windows")
    x = (video.permute(0, 3, 1, 2) - 0.5) / 0.5  # (T, 3, H, W), roughly the processor's normalisation
    x = x.reshape(gt, temporal_patch, 3, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, tp, p, p)
    return x.reshape(gt * gh * gw, 3 * temporal_patch * patch * patch).contiguous()


def pixel_prompt(config, frames: int, height: int, width: int, text_before: int = 64, text_after: int = 64,
                 seed: int = 0) -> VideoPrompt:
    """A rendered `moving_shapes_video` of `frames` frames of height x width px, run through the vision tower."""
    vision = config.vision_config
    patch, tp, merge = vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size
    video, _ = moving_shapes_video(frames, height, width, seed=seed)
    pixels = qwen_video_patches(video, patch, tp, merge)
    gt, gh, gw = frames // tp, height // patch, width // patch
    rows, cols = gh // merge, gw // merge
    ids = _token_ids(config, text_before, gt * rows * cols, text_after, seed)
    inputs = dict(input_ids=ids, mm_token_type_ids=(ids == config.video_token_id).to(torch.int64) * 2,
                  pixel_values_videos=pixels, video_grid_thw=torch.tensor([[gt, gh, gw]]))
    return VideoPrompt(inputs, text_before + 1, gt, rows, cols)


@torch.no_grad()
def embedded_prompt(model, tokens: int, rows: int = 16, cols: int = 16, text_before: int = 128,
                    text_after: int = 128, seed: int = 0, noise: float = 0.5) -> VideoPrompt:
    """About `tokens` tokens (whole frames of rows x cols) without the vision tower: `inputs_embeds` holds
    the text embeddings and, at the video pads, per-patch-position embeddings shared by all frames plus
    per-frame noise (a static scene: the same patch looks alike in every frame, the source of grid
    attention), scaled to the text embeddings' RMS. `input_ids` stays in the inputs so `generate`
    computes the mRoPE positions from it."""
    config = model.config
    merge = config.vision_config.spatial_merge_size
    frames = max(1, (tokens - text_before - text_after - 2) // (rows * cols))
    ids = _token_ids(config, text_before, frames * rows * cols, text_after, seed)
    embedding = model.get_input_embeddings()
    device, dtype = embedding.weight.device, embedding.weight.dtype
    ids = ids.to(device)
    embeds = embedding(ids)  # (1, S, hidden)
    gen = torch.Generator(device=device).manual_seed(seed)
    hidden = embeds.shape[-1]
    scale = embeds[0, :text_before].float().pow(2).mean().sqrt()
    per_patch = torch.randn(rows * cols, hidden, generator=gen, device=device, dtype=torch.float32)
    start = text_before + 1
    for f in range(frames):  # frame by frame: no (frames * rows * cols, hidden) float32 temporary
        frame = per_patch + noise * torch.randn(rows * cols, hidden, generator=gen, device=device)
        embeds[0, start + f * rows * cols: start + (f + 1) * rows * cols] = (frame * scale).to(dtype)
    inputs = dict(input_ids=ids, inputs_embeds=embeds,
                  mm_token_type_ids=(ids == config.video_token_id).to(torch.int64) * 2,
                  video_grid_thw=torch.tensor([[frames, rows * merge, cols * merge]], device=device))
    return VideoPrompt(inputs, start, frames, rows, cols)


@torch.no_grad()
def encode_video(model, prompt: VideoPrompt) -> VideoPrompt:
    """`prompt` (from `pixel_prompt`) with its video run through the vision tower once and written into
    `inputs_embeds` (pixels dropped), so prefills time the language model alone."""
    device = model.get_input_embeddings().weight.device
    inputs = {k: v.to(device) for k, v in prompt.inputs.items()}
    pixels = inputs.pop("pixel_values_videos")
    features = torch.cat(model.get_video_features(pixels, inputs["video_grid_thw"]).pooler_output)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    embeds[inputs["input_ids"] == model.config.video_token_id] = features.to(embeds.dtype)
    return dataclasses.replace(prompt, inputs=dict(inputs, inputs_embeds=embeds))
