"""Models the search runs on: two built-in Qwen2.5-VL-architecture models with random weights, or
a local checkpoint. Every model's language model routes attention through the capture function
(`capture.CAPTURE_NAME`); its vision tower keeps SDPA.

    tiny-qwen2.5-vl        2 layers, hidden 256, 4 query / 2 KV heads, head dim 64 (CPU, CI)
    qwen2.5-vl-7b-random   Qwen2.5-VL-7B text shapes: 28 layers, hidden 3584, 28 query / 4 KV heads,
                           head dim 128, intermediate 18944, vocab 152064; a 1-block vision tower
                           (the synthetic calibration feeds visual embeddings directly)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import torch

from ..integration.random_models import qwen2_5_vl_7b_text
from .capture import CAPTURE_NAME, register

TINY = "tiny-qwen2.5-vl"
RANDOM_7B = "qwen2.5-vl-7b-random"
BUILTIN = (TINY, RANDOM_7B)


@dataclasses.dataclass
class LoadedModel:
    """A base VLM (no LM head) whose language model captures attention, and its shapes."""

    model: Any
    config: Any           # the full (composite) config
    num_layers: int
    num_heads: int
    kv_heads: int
    head_dim: int
    name: str
    default_tokens: int


def _qwen_config(text: dict, vision_out: int, special: tuple[int, int, int, int]):
    from transformers import Qwen2_5_VLConfig

    image, video, start, end = special
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=vision_out,
                  patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                  fullatt_block_indexes=[0], tokens_per_second=2, in_channels=3)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                            vision_start_token_id=start, vision_end_token_id=end)


def tiny_config():
    """The tiny CPU model: head dim 64 (a size the kernels support), mRoPE sections (8, 12, 12)."""
    text = dict(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=65536,
                rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[8, 12, 12]),
                bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-6)
    return _qwen_config(text, 256, (250, 251, 252, 253))


def random_7b_config():
    """Qwen2.5-VL-7B's language model shapes (random weights)."""
    return _qwen_config(qwen2_5_vl_7b_text(max_position_embeddings=128000), 3584, (151655, 151656, 151652, 151653))


def _attn_implementation() -> dict:
    register()
    return {"text_config": CAPTURE_NAME, "vision_config": "sdpa"}


def load_model(spec: str, device: str = "cpu", dtype: Optional[torch.dtype] = None, seed: int = 0) -> LoadedModel:
    """A built-in model (`BUILTIN`, random weights from `seed`) or a checkpoint directory (loaded
    with `transformers.AutoModel`), in eval mode on `device`."""
    from transformers import AutoModel, Qwen2_5_VLModel

    dtype = dtype or (torch.bfloat16 if str(device).startswith("cuda") else torch.float32)
    if spec in BUILTIN:
        config = tiny_config() if spec == TINY else random_7b_config()
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2_5_VLModel._from_config(config, attn_implementation=_attn_implementation(), dtype=dtype)
        default_tokens = 2048 if spec == TINY else 32768
    elif os.path.isdir(spec):
        model = AutoModel.from_pretrained(spec, attn_implementation=_attn_implementation(), dtype=dtype).to(device)
        config = model.config
        default_tokens = 8192
    else:
        raise ValueError(f"model: {spec!r} is neither a directory nor one of {list(BUILTIN)}")
    model.eval()
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return LoadedModel(model, config, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
                       head_dim, spec, default_tokens)
