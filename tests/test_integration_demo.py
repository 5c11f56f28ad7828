"""The main job's pieces on the CPU: Qwen video patchification (vs a plain re-derivation),
content-following random attention, and the demo itself (small, through the CLI)."""

import pytest
import torch

pytest.importorskip("transformers")

from mminference import cli  # noqa: E402
from mminference.integration import random_models, video_prompts  # noqa: E402


def test_qwen_video_patches_match_a_plain_rederivation():
    frames, height, width, patch, tp, merge = 4, 16, 24, 4, 2, 2
    video = torch.rand(frames, height, width, 3)
    out = video_prompts.qwen_video_patches(video, patch, tp, merge)
    gt, gh, gw = frames // tp, height // patch, width // patch
    assert out.shape == (gt * gh * gw, 3 * tp * patch * patch)
    row = 0
    for t in range(gt):  # temporal patch, merge window (row-major), patch inside the window (row-major)
        for wy in range(gh // merge):
            for wx in range(gw // merge):
                for my in range(merge):
                    for mx in range(merge):
                        y, x = (wy * merge + my) * patch, (wx * merge + mx) * patch
                        expected = []
                        for c in range(3):
                            for f in range(tp):
                                for py in range(patch):
                                    for px in range(patch):
                                        expected.append((video[t * tp + f, y + py, x + px, c] - 0.5) / 0.5)
                        assert torch.equal(out[row], torch.stack(expected)), row
                        row += 1
    with pytest.raises(ValueError, match="merge windows"):
        video_prompts.qwen_video_patches(torch.rand(3, 16, 16, 3), patch, tp, merge)


def test_content_attention_sets_the_self_logit():
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration(random_models.qwen2_5_vl_config(hidden=512, heads=8, kv_heads=2))
    random_models.content_attention(model, self_logit=12.0, spread=0.3, seed=1)
    attn = model.model.language_model.layers[0].self_attn
    x = torch.randn(256, 512)  # RMS-normalised inputs: entries of unit variance
    with torch.no_grad():
        q = attn.q_proj(x).reshape(256, 8, 64)
        k = attn.k_proj(x).reshape(256, 2, 64).repeat_interleave(4, 1)
    self_logit = (q * k).sum(-1) / 64 ** 0.5  # (tokens, heads)
    other_logit = (q[1:] * k[:-1]).sum(-1) / 64 ** 0.5
    assert abs(float(self_logit.mean()) - 12.0) < 1.5
    assert abs(float(other_logit.mean())) < 1.0 < float(other_logit.std()) < 6.0
    assert float(attn.q_proj.bias.detach().abs().max()) == 0.0 == float(attn.k_proj.bias.detach().abs().max())
    vision = model.model.visual.blocks[0].attn  # the vision tower keeps its init
    assert not hasattr(vision, "k_proj")


def test_demo_cli_small(capsys):
    assert cli.main(["demo", "--frames", "16", "--frame-size", "96", "--new-tokens", "3",
                     "--min-prefill-tokens", "256"]) == 0
    out = capsys.readouterr().out
    # 16 frames of 96 px -> 8 temporal patches of 12 x 12 merged tokens, 64 + 2 + 64 text tokens
    seq = 8 * 12 * 12 + 64 + 2 + 64
    assert f"prompt: {seq} tokens" in out
    assert f"video [65, {65 + 8 * 144})" in out and "144 video tokens per frame" in out
    assert "4 sparse (prefill), 8 dense (decode)" in out


def test_demo_run_returns_its_figures():
    from mminference.demo import run

    result = run(frames=16, frame_size=96, new_tokens=2, min_prefill_tokens=256)
    assert result["seq_len"] == 8 * 144 + 130
    assert result["calls"] == dict(sparse=4, dense=4)
    assert len(result["layer_densities"]) == 4 and all(0 < d <= 1.0 + 1e-9 for d in result["layer_densities"])
    assert result["logits_relative_error"] >= 0 and 0 <= result["generated_agreement"] <= 1


def test_kernel_demo_stays_reachable(capsys):
    assert cli.main(["demo", "--kernels", "--frames", "4", "--tokens-per-frame", "64"]) == 0
    assert "grid (detected stride" in capsys.readouterr().out
