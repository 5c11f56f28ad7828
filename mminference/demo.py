"""The main job (`python -m mminference demo`): a randomly initialised Qwen2.5-VL-architecture model
generates from a synthetic video prompt twice, with its own dense attention and patched with
`mminference.patch`; prints prefill time, the sparse prefill's density and how far the outputs agree.

  tiny (default, CPU, < 1 min): a small model; a rendered video goes through the vision tower once;
  7b (GPU): Qwen2.5-VL-7B shapes in bf16, `--tokens` of video + text written into `inputs_embeds`
      (no vision tower).
Either way the language model gets `inputs_embeds` plus the token ids, `mm_token_type_ids` and
`video_grid_thw`, from which the mRoPE positions and the mminference layout are derived. The random
query / key projections are redrawn so attention follows content (`random_models.content_attention`):
independent random projections give near-uniform attention, unlike any trained model.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from . import integration
from .integration import random_models, video_prompts
from .layout import Modality
from .patterns import AShape, Auto, Grid, HeadConfig, VerticalSlash

# Budgets scaled to a few thousand tokens (the library defaults target 100K+ tokens).
TINY_CONFIG = HeadConfig(Auto(ashape=AShape(64, 512), vertical_slash=VerticalSlash(256, 512, 30, 64),
                              grid=Grid(local=256)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _prefill_seconds(model, inputs: dict) -> tuple[float, torch.Tensor]:
    """One prefill (`use_cache=True`, `logits_to_keep=1`): wall seconds and the last logits `(vocab,)`."""
    device = next(model.parameters()).device
    _sync(device)
    start = time.perf_counter()
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    _sync(device)
    seconds = time.perf_counter() - start
    logits = out.logits[0, -1].float()
    del out
    return seconds, logits


@torch.no_grad()
def _generate(model, inputs: dict, new_tokens: int) -> torch.Tensor:
    out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return out[0, -new_tokens:].cpu()


def _build(model_size: str, seed: int, device: Optional[str]):
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise SystemExit("the demo needs transformers >= 5 (pip install 'transformers>=5'); "
                         "`python -m mminference demo --kernels` runs without it") from None
    if model_size == "tiny":
        from transformers import Qwen2_5_VLForConditionalGeneration

        torch.manual_seed(seed)
        config = random_models.qwen2_5_vl_config(layers=4, hidden=256, heads=4, kv_heads=2, intermediate=512)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa")
        device = torch.device(device or "cpu")  # the CUDA kernel takes bf16 / fp16, the CPU path also fp32
        return model.to(device, torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
    if model_size == "7b":
        from transformers import Qwen2_5_VLForConditionalGeneration

        device = device or "cuda"
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            raise ValueError("model_size: the 7b model needs a CUDA device (use --model-size tiny on a CPU)")
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(
                random_models.qwen2_5_vl_7b_config(), attn_implementation="sdpa", dtype=torch.bfloat16)
        return model.eval()
    raise ValueError(f"model_size must be 'tiny' or '7b', got {model_size!r}")


def run(model_size: str = "tiny", tokens: Optional[int] = None, frames: int = 32, frame_size: int = 128,
        new_tokens: int = 8, config=None, min_prefill_tokens: Optional[int] = None, seed: int = 0,
        device: Optional[str] = None, self_logit: float = 20.0) -> dict:
    """Runs the demo and returns its figures (also printed).

    Args:
        model_size: "tiny" (CPU) or "7b" (CUDA, bf16).
        tokens: prompt length of an `inputs_embeds` prompt (no vision tower); default: tiny renders
            `frames` frames of `frame_size` px through the vision tower, 7b uses 32768 tokens.
        config: head config for `mminference.patch` (None: `TINY_CONFIG` for tiny, "auto" for 7b).
        min_prefill_tokens: sparse from this prefill length on (default 1024 tiny, 8192 7b).
        self_logit: `content_attention`'s logit of a token against itself (0: keep the random init).
    """
    model = _build(model_size, seed, device)
    dev = next(model.parameters()).device
    if self_logit:
        random_models.content_attention(model, self_logit=self_logit, seed=seed)
    if tokens is None and model_size == "7b":
        tokens = 32768
    if tokens is None:
        prompt = video_prompts.pixel_prompt(model.config, frames, frame_size, frame_size, seed=seed)
        prompt = video_prompts.encode_video(model, prompt)
        source = f"{frames} rendered frames of {frame_size} x {frame_size} px, through the vision tower once"
    else:
        prompt = video_prompts.embedded_prompt(model, tokens, seed=seed)
        source = "visual embeddings written into inputs_embeds, no vision tower"
    inputs = {k: v.to(dev) for k, v in prompt.inputs.items()}
    forward_inputs = {k: v.to(dev) for k, v in prompt.forward_inputs(model).items()}
    text = model.config.get_text_config()
    print(f"model: Qwen2.5-VL architecture ({model_size}, random weights, seed {seed}): {text.num_hidden_layers} "
          f"layers, {text.num_attention_heads} query / {text.num_key_value_heads} kv heads of "
          f"{text.hidden_size // text.num_attention_heads}, {next(model.parameters()).dtype}, {dev}")
    print(f"prompt: {prompt.seq_len} tokens = video of {prompt.frames} x {prompt.rows} x {prompt.cols} tokens at "
          f"{prompt.video_start} ({source}) + text")

    dense_tokens = _generate(model, inputs, new_tokens)  # also the warm-up
    dense_seconds, dense_logits = _prefill_seconds(model, forward_inputs)

    head_config = config if config is not None else (TINY_CONFIG if model_size == "tiny" else "auto")
    threshold = min_prefill_tokens or (1024 if model_size == "tiny" else 8192)
    state = integration.patch(model, head_config, min_prefill_tokens=threshold, track_density=True)
    sparse_tokens = _generate(model, inputs, new_tokens)
    stats = dict(sparse=state.stats.sparse, dense=state.stats.dense)
    densities = [d for _, d in state.stats.densities]
    state = integration.patch(model, head_config, min_prefill_tokens=threshold)  # timing without density syncs
    sparse_seconds, sparse_logits = _prefill_seconds(model, forward_inputs)
    integration.unpatch(model)

    layout = integration.plan_batch(state.family, model.config, state.options,
                                    {k: v.cpu() for k, v in inputs.items() if k != "inputs_embeds"})[0].layout
    error = float((sparse_logits - dense_logits).norm() / dense_logits.norm())
    agree = float((sparse_tokens == dense_tokens).float().mean())
    result = dict(seq_len=prompt.seq_len, dense_prefill_s=dense_seconds, sparse_prefill_s=sparse_seconds,
                  density=sum(densities) / len(densities) if densities else None, layer_densities=densities,
                  logits_relative_error=error, top1_agrees=bool(dense_logits.argmax() == sparse_logits.argmax()),
                  generated_agreement=agree, calls=stats)
    spans = ", ".join(f"{s.modality.name.lower()} [{s.start}, {s.end})" for s in layout.segments)
    print(f"layout (derived from the inputs): {spans}; "
          f"{layout.tokens_per_frame(Modality.VIDEO)} video tokens per frame")
    note = ("" if dev.type == "cuda" else
            " (CPU: the sparse kernel's CPU path is a reference implementation; speed is a GPU matter)")
    print(f"language-model prefill (one forward, logits_to_keep=1): dense {dense_seconds * 1e3:.1f} ms, patched "
          f"{sparse_seconds * 1e3:.1f} ms, {dense_seconds / sparse_seconds:.2f}x{note}")
    if densities:
        print(f"sparse prefill density (kernel work vs full causal): mean {result['density']:.3f}, per layer "
              f"{' '.join(f'{d:.2f}' for d in densities)}")
    print(f"attention calls while generating {new_tokens} tokens: {stats['sparse']} sparse (prefill), "
          f"{stats['dense']} dense (decode)")
    top1 = "same" if result["top1_agrees"] else "differs"
    print(f"agreement: last-token logits relative error {error:.3e}, top-1 {top1}, "
          f"{agree * 100:.0f}% of {new_tokens} greedy tokens equal")
    print(f"  dense : {dense_tokens.tolist()}\n  sparse: {sparse_tokens.tolist()}")
    return result
