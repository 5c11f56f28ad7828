"""Capturing each layer's q / k / v from a transformers model during a calibration forward.

`CAPTURE_NAME` ("mminference_capture") is registered with `transformers.AttentionInterface` (and
`AttentionMaskInterface`, with SDPA's mask): it hands every fresh causal prefill call's tensors to
the callback installed by `capturing(...)` and then computes the layer's attention with SDPA, so the
forward goes on unchanged. Only the current layer's tensors exist at any time; the callback scores
the layer at once (see `runner.py`). Select it for the language model only:
`attn_implementation={"text_config": CAPTURE_NAME, "vision_config": "sdpa"}`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, Optional

import torch

CAPTURE_NAME = "mminference_capture"

# callback(layer_idx, query (B, Hq, S, D), key (B, Hkv, S, D), value, scaling)
Callback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, Optional[float]], None]

_CALLBACK: contextvars.ContextVar[Optional[Callback]] = contextvars.ContextVar("mminference_capture", default=None)


class StopForward(Exception):
    """Raised by a callback to end the forward after the last layer it needs."""


def _has_padding(mask: Optional[torch.Tensor]) -> bool:
    """A 4-D bool / additive mask `(B, 1, S, S)` hides some key from a last query row (a causal
    mask hides none from it: its upper triangle alone is no padding)."""
    if mask is None:
        return False
    last = mask[..., -1, :]
    allowed = last if last.dtype == torch.bool else last > torch.finfo(last.dtype).min / 2
    return not bool(allowed.all())


def capture_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      **kwargs):
    """The registered attention function: callback on fresh prefills, then SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    callback = _CALLBACK.get()
    seq_q, seq_k = query.shape[2], key.shape[2]
    if callback is not None and seq_q == seq_k > 1:
        if _has_padding(attention_mask):
            # The search's statistics assume one unpadded causal prompt.
            raise ValueError("calibration inputs must be unpadded batch-1 prompts (got a padding mask)")
        callback(int(getattr(module, "layer_idx", -1)), query, key, value, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def register() -> str:
    """Registers the capture function (idempotent); returns its name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CAPTURE_NAME, capture_attention)
    AttentionMaskInterface.register(CAPTURE_NAME, sdpa_mask)
    return CAPTURE_NAME


@contextlib.contextmanager
def capturing(callback: Callback) -> Iterator[None]:
    """Routes captured layers to `callback` inside the block."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)
