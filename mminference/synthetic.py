"""Synthetic VLM-like attention inputs: text, then a video whose frames repeat patch content (the
source of grid attention in real models), then text. Deterministic for a seed.

`video_text_prompt_mrope` (default of benchmarks/recall.py) renders a video of moving shapes on a
static background and applies Qwen2-VL multimodal RoPE; `video_text_prompt` is the older, cruder
generator (shared patch embeddings + noise + high-norm register patches, no RoPE)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class SyntheticPrompt:
    """q `(1, Hq, S, D)`, k/v `(1, Hkv, S, D)` and where the video sits: tokens
    [video_start, video_start + frames * tokens_per_frame). `position_ids` `(3, S)`: the mRoPE
    positions already applied to q and k (`video_text_prompt_mrope`), None for `video_text_prompt`."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    video_start: int
    frames: int
    tokens_per_frame: int
    position_ids: torch.Tensor | None = None  # int64 (3, S) mRoPE (t, h, w) positions, if the generator uses them

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


# --------------------------------------------------------------------------------------------------
# Realistic generator: a rendered video of moving shapes + text, with Qwen2-VL-style mRoPE positions.
# --------------------------------------------------------------------------------------------------

#: Qwen2-VL / Qwen2.5-VL mRoPE sections (frequency pairs for temporal, height, width) at head_dim 128.
QWEN2VL_MROPE_SECTIONS = (16, 24, 24)
QWEN2VL_ROPE_THETA = 1.0e6


def mrope_sections(head_dim: int) -> tuple[int, int, int]:
    """Frequency-pair sections (t, h, w) for `head_dim`: Qwen2-VL's (16, 24, 24) of 64 pairs scaled
    proportionally to head_dim // 2 pairs (t rounded, h rounded, w takes the rest), e.g. (8, 12, 12)
    at head_dim 64. Exactly (16, 24, 24) at 128."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    pairs = head_dim // 2
    t = round(pairs * QWEN2VL_MROPE_SECTIONS[0] / 64)
    h = round(pairs * QWEN2VL_MROPE_SECTIONS[1] / 64)
    return t, h, pairs - t - h


def mrope_position_ids(text_before: int, frames: int, rows: int, cols: int, text_after: int) -> torch.Tensor:
    """int64 `(3, S)` positions (temporal, row, column), S = text_before + frames*rows*cols + text_after.

    Text token p: (p, p, p). Video token (frame t, row r, column c), row-major within a frame, frames
    in order: (P + t, P + r, P + c) with P = text_before. Text after the video resumes at
    P + max(frames, rows, cols) and counts up by one per token on all three axes (Qwen2-VL rule)."""
    pre = torch.arange(text_before, dtype=torch.int64).expand(3, -1)
    t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    video = torch.stack([t.reshape(-1), r.reshape(-1), c.reshape(-1)]).to(torch.int64) + text_before
    resume = text_before + max(frames, rows, cols) if frames * rows * cols else text_before
    post = (resume + torch.arange(text_after, dtype=torch.int64)).expand(3, -1)
    return torch.cat([pre, video, post], dim=1).contiguous()


def apply_mrope(x: torch.Tensor, position_ids: torch.Tensor, sections: tuple[int, ...] | None = None,
                theta: float = QWEN2VL_ROPE_THETA) -> torch.Tensor:
    """Multimodal rotate-half RoPE. x `(..., S, D)`; position_ids `(3, S)` (t, h, w) or `(S,)` (1-D
    RoPE, all axes equal); sections: frequency pairs per axis, summing to D // 2 (default
    `mrope_sections(D)`). Pair i (inv_freq[i] = theta^(-2i/D)) rotates (x[..., i], x[..., i + D/2])
    by position[axis(i)] * inv_freq[i], where axis(i) is t for the first sections[0] pairs, then h,
    then w. Returns a tensor shaped and typed like x (rotation done in at least float32)."""
    dim = x.shape[-1]
    sections = tuple(sections) if sections is not None else mrope_sections(dim)
    if sum(sections) != dim // 2 or dim % 2:
        raise ValueError(f"sections {sections} must sum to head_dim // 2 = {dim // 2}")
    pos = position_ids if position_ids.dim() == 2 else position_ids[None].expand(len(sections), -1)
    if pos.shape[0] != len(sections) or pos.shape[1] != x.shape[-2]:
        raise ValueError(f"position_ids {tuple(position_ids.shape)} do not match x {tuple(x.shape)}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
    axis = torch.repeat_interleave(torch.arange(len(sections)), torch.tensor(sections))  # (D/2,)
    angles = pos.to(torch.float64)[axis].T * inv_freq  # (S, D/2): pair i uses axis(i)'s position
    work = torch.promote_types(x.dtype, torch.float32)
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(work)
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(work)
    xw = x.to(work)
    rotated = torch.cat([-xw[..., dim // 2:], xw[..., : dim // 2]], -1)
    return (xw * cos + rotated * sin).to(x.dtype)


def moving_shapes_video(frames: int, height: int, width: int, seed: int = 0,
                        shapes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Render RGB frames `(T, H, W, 3)` float32 in [0, 1] and shape masks `(T, H, W)` bool.

    A static textured background (smooth colour gradients, stripes and fixed pixel noise) with 2-3
    (or `shapes`) squares/discs of random colour moving 2-6 px per frame and bouncing off the
    borders. Pixels outside every shape's mask are identical in all frames."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    background = torch.zeros(height, width, 3)
    for _ in range(4):  # smooth waves of random direction, frequency and colour
        fy, fx = (rnd(2) - 0.5) * 0.12
        phase = rnd(1) * 6.283
        background += 0.18 * torch.sin(fy * yy + fx * xx + phase)[..., None] * rnd(3)
    background += 0.08 * torch.sign(torch.sin(xx * 0.9 + yy * 0.3))[..., None]  # fine stripes
    blobs = torch.randn(3, (height + 6) // 7, (width + 6) // 7, generator=gen)  # 7-px colour blotches
    background += 0.25 * blobs.repeat_interleave(7, 1).repeat_interleave(7, 2)[:, :height, :width].permute(1, 2, 0)
    background += 0.06 * torch.randn(height, width, 3, generator=gen)  # static fine texture
    background = (background - background.min()) / (background.max() - background.min()) * 0.8 + 0.1
    count = shapes if shapes is not None else 2 + int(rnd(1) < 0.5)
    video = background.expand(frames, -1, -1, -1).clone()
    masks = torch.zeros(frames, height, width, dtype=torch.bool)
    for _ in range(count):
        disc = bool(rnd(1) < 0.5)
        size = float(0.08 + 0.1 * rnd(1)) * min(height, width)  # radius / half side, px
        colour = rnd(3)
        colour[int(rnd(1) * 3)] = 1.0  # saturated
        pos = torch.stack([size + rnd(1)[0] * (height - 2 * size), size + rnd(1)[0] * (width - 2 * size)])
        speed = 2.0 + 4.0 * rnd(1)[0]
        angle = rnd(1)[0] * 6.283
        vel = speed * torch.stack([torch.sin(angle), torch.cos(angle)])
        for t in range(frames):
            if disc:
                inside = (yy - pos[0]) ** 2 + (xx - pos[1]) ** 2 <= size ** 2
            else:
                inside = ((yy - pos[0]).abs() <= size) & ((xx - pos[1]).abs() <= size)
            video[t][inside] = colour
            masks[t] |= inside
            pos = pos + vel
            for a, limit in ((0, height), (1, width)):  # bounce
                if pos[a] < size or pos[a] > limit - size:
                    vel[a] = -vel[a]
                    pos[a] = pos[a].clamp(size, limit - size)
    return video, masks


def video_text_prompt_mrope(text_before: int = 256, frames: int = 14, rows: int = 16, cols: int = 16,
                            text_after: int = 256, q_heads: int = 4, kv_heads: int = 2, head_dim: int = 128,
                            seed: int = 0, dtype: torch.dtype = torch.float32, patch: int = 14) -> SyntheticPrompt:
    """Text, a rendered video (`moving_shapes_video`, rows x cols patches of `patch` px) and text,
    with Qwen2-VL mRoPE (`mrope_position_ids`, `apply_mrope`, theta 1e6, sections
    `mrope_sections(head_dim)`).

    Token features x (width = head_dim): a video token is a fixed random linear projection of its
    patch's pixels (standardised) plus a small per-position embedding shared by all frames, so a
    background patch looks the same in every frame and the grid comes from content; text tokens are
    random; token 0 is an attention sink (a bias direction every token leans towards slightly).
    Per KV head q = x Wq, k = x Wk with Wq close to Wk, each query head with its own sharpness; RoPE
    goes on q and k after projection, v = x Wv has none. Returns q `(1, Hq, S, D)`, k/v
    `(1, Hkv, S, D)`, `tokens_per_frame = rows * cols` and `position_ids` `(3, S)`."""
    if q_heads % kv_heads:
        raise ValueError("q_heads must be a multiple of kv_heads")
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    width = head_dim
    tpf = rows * cols
    pixels, _ = moving_shapes_video(frames, rows * patch, cols * patch, seed=seed)
    patches = (pixels.reshape(frames, rows, patch, cols, patch, 3).permute(0, 1, 3, 2, 4, 5)
               .reshape(frames * tpf, patch * patch * 3) - 0.5)
    proj = randn(patch * patch * 3, width) / (patch * patch * 3) ** 0.5
    video = patches @ proj
    video = (video - video.mean(0)) / video.std()  # standardised patch embeddings
    video = video + 0.5 * randn(tpf, width).repeat(frames, 1)  # per-position embedding
    text = randn(text_before + text_after, width)
    x = torch.cat([text[:text_before], video, text[text_before:]])
    sink = randn(width)
    sink = sink / sink.norm() * width ** 0.5
    x = x + 0.4 * sink
    x[0] = 3.0 * sink
    w_k = randn(kv_heads, width, head_dim) / width ** 0.5
    groups = q_heads // kv_heads
    w_q = w_k.repeat_interleave(groups, 0) + 0.35 * randn(q_heads, width, head_dim) / width ** 0.5
    w_v = randn(kv_heads, width, head_dim) / width ** 0.5
    sharpness = torch.linspace(0.6, 1.6, q_heads)[:, None, None]  # some heads sharper than others
    pos = mrope_position_ids(text_before, frames, rows, cols, text_after)
    q = apply_mrope(torch.einsum("sw,hwd->hsd", x, w_q) * sharpness, pos)[None]
    k = apply_mrope(torch.einsum("sw,hwd->hsd", x, w_k), pos)[None]
    v = torch.einsum("sw,hwd->hsd", x, w_v)[None]
    return SyntheticPrompt(q.to(dtype), k.to(dtype), v.to(dtype), text_before, frames, tpf, position_ids=pos)
