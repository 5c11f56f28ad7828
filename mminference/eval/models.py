"""Models to evaluate: a real local checkpoint with its processor, or the tiny random Qwen2.5-VL
model with its character-level encoder (CPU pipeline checks; its answers are noise)."""

from __future__ import annotations

from typing import Optional

import torch

from ..integration import random_models
from .encoders import ProcessorEncoder
from .tiny_encoder import TinyQwenEncoder


def load_model(path: str, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
               attn_implementation: str = "sdpa") -> tuple[torch.nn.Module, ProcessorEncoder]:
    """A local transformers VLM (`AutoModelForImageTextToText`) and a `ProcessorEncoder` for it.

    device: default CUDA when available, else CPU; dtype: default bfloat16 on CUDA, float32 on CPU."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, ProcessorEncoder(processor, model.config.model_type)


def tiny_model(seed: int = 0, frame_size: int = 32, self_logit: float = 8.0) -> tuple[torch.nn.Module,
                                                                                       TinyQwenEncoder]:
    """The tiny random Qwen2.5-VL (`random_models.build`, float32, CPU) with attention that follows
    content (`random_models.content_attention`, `self_logit`; 0 keeps the random init) and its
    `TinyQwenEncoder` at `frame_size` px. At the default self_logit 8 a token still attends to others
    (at 20, as the demo uses, the last token sees almost only itself and sparse patterns barely move
    the answer logits)."""
    model = random_models.build("qwen2_5_vl", seed=seed)
    if self_logit:
        random_models.content_attention(model, self_logit=self_logit, seed=seed)
    return model, TinyQwenEncoder(model.config, frame_size=frame_size)
