"""Randomly initialised VLMs built offline from configs (no download): tiny ones of every supported
family for tests and the CPU demo, and the Qwen2.5-VL-7B shape for GPU demos and benchmarks.

Token ids of the tiny models (vocab 256): text tokens are 3..239; the special ids below.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..synthetic import mrope_sections

PAD, BOS, EOS = 0, 1, 2
IMAGE, VIDEO, VISION_START, VISION_END = 250, 251, 252, 253
VOCAB = 256


def _text(hidden: int = 256, layers: int = 2, heads: int = 4, kv_heads: int = 2, **extra) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, bos_token_id=BOS, eos_token_id=EOS,
                pad_token_id=PAD, max_position_embeddings=1 << 20, **extra)


def qwen2_5_vl_config(layers: int = 2, hidden: int = 256, heads: int = 4, kv_heads: int = 2,
                      intermediate: Optional[int] = None):
    """Qwen2.5-VL config: 4-px patches, temporal patch 2, merge 2 (a video of T frames of H x W px
    gives T/2 x H/8 x W/8 language-model tokens)."""
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden // heads
    sections = list(mrope_sections(head_dim))  # (t, h, w) frequency pairs, 16:24:24 as the 7B model
    text = _text(hidden, layers, heads, kv_heads,
                 rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=sections))
    if intermediate is not None:
        text["intermediate_size"] = intermediate
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=4,
                  temporal_patch_size=2, spatial_merge_size=2, window_size=16, fullatt_block_indexes=[1],
                  tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
                            vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)


def qwen2_5_vl_7b_text(max_position_embeddings: int = 1 << 20) -> dict:
    """Text config of Qwen2.5-VL-7B-Instruct: 28 layers, hidden 3584, 28 query / 4 kv heads of 128,
    intermediate 18944, vocab 152064, mRoPE sections (16, 24, 24), theta 1e6."""
    return dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=max_position_embeddings,
                rms_norm_eps=1e-6, rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24]),
                bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)


def qwen2_5_vl_7b_config():
    """The shapes of Qwen2.5-VL-7B-Instruct (`qwen2_5_vl_7b_text`) and its vision tower (32 blocks
    of 1280, 14-px patches, windows of 112 px, merge 2)."""
    from transformers import Qwen2_5_VLConfig

    text = qwen2_5_vl_7b_text()
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                            vision_start_token_id=151652, vision_end_token_id=151653)


def _vision_qwen(hidden: int) -> dict:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden, patch_size=4,
                temporal_patch_size=2, spatial_merge_size=2)


def qwen2_vl_config(hidden: int = 256):
    """Qwen2-VL: vision `embed_dim` / `mlp_ratio`, its `hidden_size` is the merger output."""
    from transformers import Qwen2VLConfig

    sections = list(mrope_sections(hidden // 4))
    text = _text(hidden, rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=sections))
    vision = dict(depth=2, embed_dim=32, hidden_size=hidden, mlp_ratio=2, num_heads=2, patch_size=4,
                  temporal_patch_size=2, spatial_merge_size=2)
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
                         vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)


def qwen3_vl_config(hidden: int = 256):
    """Qwen3-VL: interleaved mRoPE, deepstack, learned position embeddings (a square count)."""
    from transformers import Qwen3VLConfig

    head_dim = hidden // 4
    sections = list(mrope_sections(head_dim))
    text = _text(hidden, head_dim=head_dim, rope_parameters=dict(rope_type="default", rope_theta=1e6,
                                                                 mrope_section=sections, mrope_interleaved=True))
    vision = dict(_vision_qwen(hidden), num_position_embeddings=64, deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE, video_token_id=VIDEO,
                         vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)


def llava_onevision_config(hidden: int = 256):
    """LLaVA-OneVision: SigLIP 32 px / 4 px patches = 8 x 8, pooled to 4 x 4 = 16 tokens a frame."""
    from transformers import LlavaOnevisionConfig

    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=4)
    return LlavaOnevisionConfig(text_config=dict(_text(hidden), model_type="qwen2"), vision_config=vision,
                                image_token_index=IMAGE, video_token_index=VIDEO, vision_feature_layer=-1,
                                image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]])


def llava_next_video_config(hidden: int = 256):
    """LLaVA-NeXT-Video: CLIP 32 px / 4 px patches = 8 x 8 (CLS dropped), average-pooled by 2 to
    4 x 4 = 16 tokens a frame."""
    from transformers import LlavaNextVideoConfig

    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=4, projection_dim=32)
    return LlavaNextVideoConfig(text_config=dict(_text(hidden), model_type="llama"), vision_config=vision,
                                image_token_index=IMAGE, video_token_index=VIDEO, vision_feature_layer=-1,
                                image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
                                image_seq_length=64)


def internvl_config(hidden: int = 256):
    """InternVL: 32 px tiles / 4 px patches = 8 x 8, pixel shuffle 0.5 -> 4 x 4 = 16 tokens a tile."""
    from transformers import InternVLConfig

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=4)
    return InternVLConfig(text_config=dict(_text(hidden), model_type="qwen2"), vision_config=vision,
                          image_token_id=IMAGE, image_seq_length=16, downsample_ratio=0.5, vision_feature_layer=-1)


CONFIGS = {
    "qwen2_vl": qwen2_vl_config,
    "qwen2_5_vl": qwen2_5_vl_config,
    "qwen3_vl": qwen3_vl_config,
    "llava_onevision": llava_onevision_config,
    "llava_next_video": llava_next_video_config,
    "internvl": internvl_config,
}


def build(model_type: str, seed: int = 0, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A tiny randomly initialised `...ForConditionalGeneration` of `model_type` (eval mode, float32)."""
    from transformers import AutoModelForImageTextToText

    if model_type not in CONFIGS:
        raise ValueError(f"model_type must be one of {sorted(CONFIGS)}, got {model_type!r}")
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(CONFIGS[model_type](), attn_implementation=attn_implementation)
    return model.eval()


@torch.no_grad()
def content_attention(model: torch.nn.Module, self_logit: float = 12.0, spread: float = 0.3, seed: int = 0) -> None:
    """Re-draw the language model's query / key projections so its attention follows content, as a
    trained model's does, instead of the near-uniform attention of independent random projections.

    Per kv head a random key projection W_k `(D, hidden)`; each query head of its group gets
    W_q = W_k + `spread` x noise, so q . k grows with the similarity of the two tokens' hidden states
    (a token scores highest on itself and on tokens like it, e.g. the same patch in other frames).
    Entries have std sqrt(self_logit / (sqrt(D) * hidden)): for RMS-normalised inputs a token's scaled
    logit against itself is about `self_logit`. q / k biases are zeroed. Deterministic for `seed`."""
    text = model.config.get_text_config()
    hidden, heads, kv_heads = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    std = (self_logit / (head_dim ** 0.5 * hidden)) ** 0.5
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if not (hasattr(module, "q_proj") and hasattr(module, "k_proj") and getattr(module, "is_causal", False)):
            continue  # the vision tower's attention is not causal
        w_k = torch.randn(kv_heads, head_dim, hidden, generator=gen) * std
        w_q = w_k.repeat_interleave(heads // kv_heads, 0) + spread * std * torch.randn(heads, head_dim, hidden,
                                                                                           generator=gen)
        for proj, weight in ((module.k_proj, w_k), (module.q_proj, w_q)):
            proj.weight.copy_(weight.reshape(-1, hidden))
            if proj.bias is not None:
                proj.bias.zero_()
