"""Synthetic VLM-like attention inputs: text, then a video whose frames repeat patch content (the
source of grid attention in real models), then text. Deterministic for a seed."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class SyntheticPrompt:
    """q `(1, Hq, S, D)`, k/v `(1, Hkv, S, D)` and where the video sits: tokens
    [video_start, video_start + frames * tokens_per_frame)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    video_start: int
    frames: int
    tokens_per_frame: int

    @property
    def video_span(self) -> tuple[int, int]:
        return self.video_start, self.video_start + self.frames * self.tokens_per_frame


def hub_patch(tokens_per_frame: int, seed: int) -> int:
    """The patch position of the synthetic register tokens (the grid's phase)."""
    return (seed * 7919 + tokens_per_frame // 3) % tokens_per_frame


def video_text_prompt(text_before: int = 256, frames: int = 16, tokens_per_frame: int = 256,
                      text_after: int = 128, q_heads: int = 4, kv_heads: int = 2, head_dim: int = 64,
                      sharpness: float = 2.5, seed: int = 0, dtype: torch.dtype = torch.float32) -> SyntheticPrompt:
    """Token features x: each patch position has a fixed embedding shared by all frames plus
    per-frame noise; text tokens are random. q = x Wq, k = x Wk with Wq close to Wk, so a video
    query scores high against the same patch in every frame (vertical grid lines) and the sink."""
    gen = torch.Generator().manual_seed(seed)
    width = head_dim
    patch = torch.randn(tokens_per_frame, width, generator=gen)
    video = patch.repeat(frames, 1) + 0.35 * torch.randn(frames * tokens_per_frame, width, generator=gen)
    text = torch.randn(text_before + text_after, width, generator=gen)
    x = torch.cat([text[:text_before], video, text[text_before:]])
    x[0] = x[0] * 4.0  # an attention sink, as the first token of real prompts
    # High-norm "register" patches: the same patch position in every frame draws attention from
    # all queries (vertical grid lines at stride tokens_per_frame), as ViT artifact tokens do.
    hub_direction = torch.randn(width, generator=gen)
    hubs = torch.arange(frames) * tokens_per_frame + text_before + hub_patch(tokens_per_frame, seed)
    x[hubs] = x[hubs] + 2.5 * hub_direction
    x = x + 0.6 * hub_direction  # every query leans towards the hub direction
    w_k = torch.randn(kv_heads, width, head_dim, generator=gen) / width**0.5
    groups = q_heads // kv_heads
    w_q = w_k.repeat_interleave(groups, 0) + 0.3 * torch.randn(q_heads, width, head_dim, generator=gen) / width**0.5
    w_v = torch.randn(kv_heads, width, head_dim, generator=gen) / width**0.5
    scale = sharpness * head_dim**0.25
    q = torch.einsum("sw,hwd->hsd", x, w_q)[None] * scale
    k = torch.einsum("sw,hwd->hsd", x, w_k)[None] * scale
    v = torch.einsum("sw,hwd->hsd", x, w_v)[None]
    return SyntheticPrompt(q.to(dtype), k.to(dtype), v.to(dtype), text_before, frames, tokens_per_frame)
