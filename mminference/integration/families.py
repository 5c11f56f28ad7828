"""Supported model families (by `config.model_type`) and the per-forward plan: each batch element's
valid range (from the 2-D `attention_mask`) and its `ModalityLayout`."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from ..layout import ModalityLayout
from . import context, layouts_internvl, layouts_llava, layouts_qwen
from .context import ElementPlan
from .segments import valid_range


@dataclasses.dataclass(frozen=True)
class Family:
    """`derive(config, inputs, ranges, options) -> [ModalityLayout per batch element]`."""

    name: str
    model_types: tuple[str, ...]
    derive: Callable


FAMILIES: tuple[Family, ...] = (
    Family("Qwen2-VL", ("qwen2_vl",), layouts_qwen.derive),
    Family("Qwen2.5-VL", ("qwen2_5_vl",), layouts_qwen.derive),
    Family("Qwen3-VL", ("qwen3_vl",), layouts_qwen.derive),
    Family("LLaVA-OneVision", ("llava_onevision",), layouts_llava.derive_onevision),
    Family("LLaVA-NeXT-Video", ("llava_next_video",), layouts_llava.derive_next_video),
    Family("InternVL", ("internvl",), layouts_internvl.derive),
)


def supported_summary() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)


def family_of(config) -> Optional[Family]:
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def _sequence_shape(inputs: dict) -> tuple[int, int]:
    for name in ("input_ids", "inputs_embeds"):
        t = inputs.get(name)
        if t is not None:
            return int(t.shape[0]), int(t.shape[1])
    raise ValueError("input_ids / inputs_embeds: the forward call has neither")


def plan_batch(family: Family, config, options, inputs: dict) -> list[ElementPlan]:
    """One `ElementPlan` per batch element. Explicit layouts (`context.explicit_layouts`) win over
    derivation; elements whose mask is not one contiguous run of ones raise ValueError."""
    batch, seq = _sequence_shape(inputs)
    mask = inputs.get("attention_mask")
    if mask is not None and (not torch.is_tensor(mask) or mask.dim() != 2):
        raise ValueError(f"attention_mask: expected a (batch, sequence) 0/1 tensor for a patched prefill, got "
                         f"{getattr(mask, 'shape', mask)!r}")
    mask = None if mask is None else mask.cpu()
    ranges = []
    for b in range(batch):
        r = valid_range(None if mask is None else mask[b, -seq:], seq)
        if r is None:
            raise ValueError(f"attention_mask: batch element {b} is not one contiguous run of tokens "
                             f"(left / right padding only)")
        ranges.append(r)
    layouts = context.explicit()
    if layouts is None:
        layouts = family.derive(config, inputs, ranges, options)
    elif len(layouts) == 1:
        layouts = layouts * batch
    if len(layouts) != batch:
        raise ValueError(f"layouts: got {len(layouts)} for a batch of {batch}")
    plans = []
    for b, ((start, end), layout) in enumerate(zip(ranges, layouts)):
        if not isinstance(layout, ModalityLayout) or layout.seq_len != end - start:
            raise ValueError(f"layouts: batch element {b} has {end - start} tokens, its layout "
                             f"{getattr(layout, 'seq_len', layout)!r}")
        plans.append(ElementPlan(start, end, layout))
    return plans
