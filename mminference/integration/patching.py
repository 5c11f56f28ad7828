"""`patch(model, config, **options)` / `unpatch(model)`.

patch:
  1. checks the family (`families.FAMILIES`, by `config.model_type`);
  2. registers `mminference_<dense>` (`attention_fn.register`) and points the language model's config
     (`config.get_text_config()`) at it; the vision tower keeps its own implementation;
  3. wraps the instance's `forward` (functools.wraps keeps the signature `generate` inspects) so each
     call runs inside a `context.ForwardContext` holding its inputs; `generate` calls `forward`, so
     both are covered.
unpatch restores every saved `_attn_implementation` and the forward.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from typing import Union

import torch

from ..patterns import PATTERN_TYPES, HeadConfig
from . import attention_fn, context, families
from .options import PatchOptions
from .state import PatchState

ATTRIBUTE = "_mminference"
SUPPORTED_HEAD_DIMS = (64, 80, 96, 128)  # what the sparse kernels take (csrc/ext/tensor_checks.cpp)


def _resolve_config(config) -> HeadConfig:
    if config is None or (isinstance(config, str) and config == "auto"):
        return HeadConfig("auto")
    if isinstance(config, HeadConfig):
        return config
    if isinstance(config, PATTERN_TYPES):
        return HeadConfig(config)
    if isinstance(config, (str, os.PathLike)):
        from ..config import load_config  # looked up at call time

        loaded = load_config(config)
        if not isinstance(loaded, HeadConfig):
            raise TypeError(f"config: load_config({config!r}) returned {type(loaded).__name__}, not a HeadConfig")
        return loaded
    raise TypeError(f"config must be None, 'auto', a path to a JSON config, a HeadConfig or a pattern, "
                    f"got {type(config).__name__}")


def _check_layers(head_config: HeadConfig, text_config) -> None:
    layers = getattr(text_config, "num_hidden_layers", None)
    if isinstance(head_config.patterns, tuple) and layers is not None and len(head_config.patterns) != layers:
        raise ValueError(f"config: the HeadConfig has {len(head_config.patterns)} layers, the language model "
                         f"{layers}")


def _all_configs(model: torch.nn.Module) -> list:
    """Every config object of the model and its sub-models (each once)."""
    seen, out = set(), []

    def add(cfg):
        if cfg is not None and id(cfg) not in seen:
            seen.add(id(cfg))
            out.append(cfg)
            for key in getattr(cfg, "sub_configs", {}) or {}:
                add(getattr(cfg, key, None))

    for module in model.modules():
        add(getattr(module, "config", None) if hasattr(module, "config") else None)
    return [c for c in out if hasattr(c, "_attn_implementation_internal")]


def patch(model: torch.nn.Module, config: Union[None, str, os.PathLike, HeadConfig] = None, **options) -> PatchState:
    """Run the language model's long fresh prefills with modality-aware sparse attention.

    Args:
        model: a transformers VLM of a supported family (`families.supported_summary()`), e.g.
            `Qwen2_5_VLForConditionalGeneration`.
        config: None / "auto" (per-head online choice), a path to a JSON config
            (`mminference.config.load_config`), a `HeadConfig` or one pattern for every head.
        **options: `PatchOptions` fields (`min_prefill_tokens`, `block_q`, `block_k`, `last`,
            `track_density`, `video_frame_gap`, `unsupported`).
    Returns:
        The `PatchState` also stored as `model._mminference` (its `stats` count sparse / dense calls).
    Patching a patched model unpatches it first (after every argument check: a failing call leaves
    the earlier patch in place).
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers model (nn.Module with a config), got {type(model).__name__}")
    opts = PatchOptions.from_kwargs(options)
    head_config = _resolve_config(config)
    family = families.family_of(model.config)
    message = None
    if family is None:
        message = (f"model: {type(model).__name__} (model_type {getattr(model.config, 'model_type', None)!r}) is "
                   f"not supported; supported: {families.supported_summary()}")
    else:
        text = model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        if head_dim not in SUPPORTED_HEAD_DIMS:
            message = (f"model: head_dim {head_dim} of its language model is not supported by the sparse kernels "
                       f"{SUPPORTED_HEAD_DIMS}")
    if message is not None:
        if opts.unsupported == "raise":
            raise ValueError(message + "; pass unsupported='dense' to keep its dense attention")
        warnings.warn(message + "; keeping its dense attention", stacklevel=2)
        if getattr(model, ATTRIBUTE, None) is not None:
            unpatch(model)
        state = PatchState(None, head_config, opts)
        setattr(model, ATTRIBUTE, state)
        return state
    text_config = model.config.get_text_config()
    _check_layers(head_config, text_config)
    if getattr(model, ATTRIBUTE, None) is not None:
        unpatch(model)  # before reading the dense implementation it restores
    dense_name = text_config._attn_implementation or "eager"
    if dense_name.startswith(attention_fn.PREFIX):
        raise ValueError(f"model: its language model already uses {dense_name!r} (patched elsewhere)")
    state = PatchState(family, head_config, opts, text_config=text_config, dense_implementation=dense_name)
    state.saved_implementations = [(cfg, cfg._attn_implementation_internal) for cfg in _all_configs(model)]
    text_config._attn_implementation_internal = attention_fn.register(dense_name)
    _wrap_forward(model, state)
    setattr(model, ATTRIBUTE, state)
    return state


def _wrap_forward(model: torch.nn.Module, state: PatchState) -> None:
    state.saved_forward = model.__dict__.get("forward")
    state.saved_generate = model.__dict__.get("generate")
    original = model.forward
    signature = inspect.signature(original)
    var_kw = [n for n, p in signature.parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD]
    derive = functools.partial(families.plan_batch, state.family, model.config, state.options)

    @functools.wraps(original)
    def forward(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        inputs = context.with_generate_inputs({**(bound.pop(var_kw[0], {}) if var_kw else {}), **bound})
        with context.forward_context(context.ForwardContext(state, inputs, derive)):
            return original(*args, **kwargs)

    model.forward = forward
    original_generate = getattr(model, "generate", None)
    if original_generate is not None:
        @functools.wraps(original_generate)
        def generate(*args, **kwargs):
            with context.generate_inputs(kwargs):
                return original_generate(*args, **kwargs)

        model.generate = generate


def unpatch(model: torch.nn.Module) -> None:
    """Undo `patch`: the saved attention implementations and forward come back (ValueError when the
    model is not patched)."""
    state = getattr(model, ATTRIBUTE, None)
    if state is None:
        raise ValueError(f"model: {type(model).__name__} is not patched by mminference")
    for cfg, implementation in state.saved_implementations:
        cfg._attn_implementation_internal = implementation
    if state.family is not None:
        for name, saved in (("forward", state.saved_forward), ("generate", state.saved_generate)):
            if saved is None:
                model.__dict__.pop(name, None)
            else:
                setattr(model, name, saved)
    delattr(model, ATTRIBUTE)
