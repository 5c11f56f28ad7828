"""The realistic synthetic generator: mRoPE positions and rotation, rendered motion, grid attention."""

import math

import pytest
import torch

from mminference.synthetic import (apply_mrope, mrope_position_ids, mrope_sections, moving_shapes_video,
                                   video_text_prompt, video_text_prompt_mrope)


def test_position_ids_small_layout():
    # 3 text, 2 frames of 2x3 patches, 2 text. Video starts at P = 3; text resumes at 3 + max(2, 2, 3) = 6.
    expected = torch.tensor([
        # text      frame 0 (r, c) row-major           frame 1                            text
        [0, 1, 2,   3, 3, 3, 3, 3, 3,                  4, 4, 4, 4, 4, 4,                  6, 7],
        [0, 1, 2,   3, 3, 3, 4, 4, 4,                  3, 3, 3, 4, 4, 4,                  6, 7],
        [0, 1, 2,   3, 4, 5, 3, 4, 5,                  3, 4, 5, 3, 4, 5,                  6, 7],
    ])
    got = mrope_position_ids(3, 2, 2, 3, 2)
    assert got.dtype == torch.int64 and torch.equal(got, expected)


def test_sections():
    assert mrope_sections(128) == (16, 24, 24)
    assert mrope_sections(64) == (8, 12, 12)
    assert sum(mrope_sections(96)) == 48


def rope_1d(x, pos, theta):
    """Independent 1-D RoPE: complex rotation of (x_i, x_{i+D/2}) by pos * theta^(-2i/D)."""
    d = x.shape[-1]
    half = d // 2
    freqs = torch.tensor([theta ** (-2.0 * i / d) for i in range(half)], dtype=torch.float64)
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.polar(torch.ones(len(pos), half, dtype=torch.float64), pos.double()[:, None] * freqs)
    return torch.cat([z.real, z.imag], -1)


@pytest.mark.parametrize("head_dim", [128, 64])
def test_apply_mrope_norm_and_text_equals_1d_rope(head_dim):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 37, head_dim, dtype=torch.float64, generator=g)
    pos = mrope_position_ids(5, 2, 3, 4, 8)
    out = apply_mrope(x, pos, theta=1e6)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    text = torch.arange(10) * 3 + 1
    xt = x[:, :10]
    same = apply_mrope(xt, text.expand(3, -1), theta=1e6)
    torch.testing.assert_close(same, rope_1d(xt, text, 1e6))
    torch.testing.assert_close(apply_mrope(xt, text, theta=1e6), same)


def test_apply_mrope_sections_pick_axes():
    # Only the h position differs from 0: pairs outside the h section must be untouched.
    x = torch.randn(1, 4, 128, dtype=torch.float64)
    pos = torch.zeros(3, 4, dtype=torch.int64)
    pos[1] = torch.tensor([1, 2, 3, 4])
    out = apply_mrope(x, pos)
    pair_changed = ((out - x).abs() > 1e-12).reshape(1, 4, 2, 64).any(-2).any(0).any(0)
    assert not pair_changed[:16].any() and pair_changed[16:40].all() and not pair_changed[40:].any()


def test_frames_move_only_where_shapes_are():
    video, masks = moving_shapes_video(6, 56, 70, seed=3)
    assert video.shape == (6, 56, 70, 3) and masks.shape == (6, 56, 70)
    assert video.min() >= 0 and video.max() <= 1
    for t in range(5):
        changed = (video[t] != video[t + 1]).any(-1)
        assert changed.any(), "consecutive frames are identical"
        assert not (changed & ~(masks[t] | masks[t + 1])).any(), "background changed"
        assert not torch.equal(masks[t], masks[t + 1])
    # The generator is deterministic for a seed.
    again, _ = moving_shapes_video(6, 56, 70, seed=3)
    assert torch.equal(video, again)


def test_prompt_shapes_and_determinism():
    p = video_text_prompt_mrope(text_before=16, frames=3, rows=4, cols=5, text_after=8, q_heads=4, kv_heads=2,
                                head_dim=64, seed=2)
    s = 16 + 3 * 20 + 8
    assert p.q.shape == (1, 4, s, 64) and p.k.shape == (1, 2, s, 64) and p.v.shape == (1, 2, s, 64)
    assert (p.video_start, p.frames, p.tokens_per_frame, p.video_span) == (16, 3, 20, (16, 76))
    assert torch.equal(p.position_ids, mrope_position_ids(16, 3, 4, 5, 8))
    again = video_text_prompt_mrope(text_before=16, frames=3, rows=4, cols=5, text_after=8, q_heads=4,
                                    kv_heads=2, head_dim=64, seed=2)
    assert torch.equal(p.q, again.q) and torch.equal(p.k, again.k) and torch.equal(p.v, again.v)
    other = video_text_prompt_mrope(text_before=16, frames=3, rows=4, cols=5, text_after=8, q_heads=4,
                                    kv_heads=2, head_dim=64, seed=3)
    assert not torch.equal(p.q, other.q)
    bf = video_text_prompt_mrope(text_before=16, frames=3, rows=4, cols=5, text_after=8, head_dim=64, seed=2,
                                 dtype=torch.bfloat16)
    assert bf.q.dtype == torch.bfloat16
    assert video_text_prompt(text_before=8, frames=2, tokens_per_frame=16, text_after=8).position_ids is None


def test_grid_visible_in_video_attention():
    rows = cols = 6
    frames, before, after = 6, 32, 16
    p = video_text_prompt_mrope(text_before=before, frames=frames, rows=rows, cols=cols, text_after=after,
                                q_heads=4, kv_heads=2, head_dim=64, seed=0)
    q, k = p.q[0].double(), p.k[0].double()
    seq, tpf = q.shape[1], rows * cols
    start, end = p.video_span
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    queries = torch.arange(start + 2 * tpf, end)  # video queries with >= 2 earlier frames
    keys = torch.arange(seq)
    video_key = (keys >= start) & (keys < end)
    earlier = video_key[None] & (keys[None] < queries[:, None] - (queries[:, None] - start) % tpf)
    same_patch = earlier & ((keys[None] - queries[:, None]) % tpf == 0)
    for h in range(q.shape[0]):
        s = (q[h] @ k[h // 2].T) / math.sqrt(q.shape[-1])
        probs = torch.softmax(s.masked_fill(~causal, -math.inf), -1)[queries]
        per_key_grid = (probs * same_patch).sum() / same_patch.sum()
        per_key_other = (probs * (earlier & ~same_patch)).sum() / (earlier & ~same_patch).sum()
        assert per_key_grid > 3 * per_key_other, (h, float(per_key_grid), float(per_key_other))
