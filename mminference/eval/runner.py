"""Running items through a model: greedy generation (lmms-eval: `max_new_tokens` 16), the answer
letter, the time to the first token and the logits at the answer position; on a patched model also
the sparse prefill's density."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import torch

from .encoders import PromptEncoder
from .prompts import extract_answer
from .report import ItemResult, Reply
from .tasks import MCQItem, TaskError

MAX_NEW_TOKENS = 16


class _FirstTokenClock:
    """A `generate` streamer that only records when tokens arrive: `put` runs once with the prompt
    (before the vision encoder and prefill) and once per generated token (after its `.cpu()` copy,
    so a CUDA device has finished)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def first_token_seconds(self) -> float:
        if len(self.times) < 2:
            raise RuntimeError("generate produced no token")
        return self.times[1] - self.times[0]


@dataclasses.dataclass(frozen=True)
class Generation:
    """`tokens`: the generated ids; `answer_logits` float32 `(vocab,)`: the raw logits of the first
    generated token (the answer position); `seq_len`: prompt tokens."""

    reply: Reply
    tokens: tuple[int, ...]
    answer_logits: torch.Tensor
    seq_len: int


def to_model(inputs: dict, model: torch.nn.Module) -> dict:
    """Inputs on the model's device; floating tensors of 2+ dims (pixels) in the model's dtype (1-D ones,
    e.g. Qwen2.5-VL's `second_per_grid_ts`, stay as they are)."""
    param = next(model.parameters())
    out = {}
    for name, value in inputs.items():
        if torch.is_tensor(value):
            value = value.to(param.device, param.dtype if value.is_floating_point() and value.dim() > 1 else None)
        out[name] = value
    return out


@torch.no_grad()
def generate_reply(model: torch.nn.Module, encoder: PromptEncoder, inputs: dict, letters: str = "ABCD",
                   max_new_tokens: int = MAX_NEW_TOKENS) -> Generation:
    """Greedy reply to batch-1 `inputs` (from `encoder.encode`), its extracted letter and timings."""
    inputs = to_model(inputs, model)
    clock = _FirstTokenClock()
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=clock,
                         return_dict_in_generate=True, output_logits=True)
    prompt_len = int(inputs["input_ids"].shape[1])
    tokens = tuple(int(t) for t in out.sequences[0, prompt_len:].tolist())
    text = encoder.decode(tokens)
    reply = Reply(text, extract_answer(text, letters), clock.first_token_seconds())
    return Generation(reply, tokens, out.logits[0][0].float().cpu(), prompt_len)


def _patch_state(model):
    return getattr(model, "_mminference", None)


def run_item(model: torch.nn.Module, encoder: PromptEncoder, item: MCQItem, inputs: dict,
             max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[Generation, Optional[float], int]:
    """One generation; with a patched model also the mean density of its sparse prefill (None when it
    ran dense or density is not tracked) and the number of sparse attention calls."""
    state = _patch_state(model)
    if state is not None:
        state.stats.reset()
    generation = generate_reply(model, encoder, inputs, item.letters, max_new_tokens)
    if state is None:
        return generation, None, 0
    return generation, state.stats.mean_density(), state.stats.sparse


def evaluate(model: torch.nn.Module, encoder: PromptEncoder, items: Sequence[MCQItem], num_frames: int = 32,
             max_new_tokens: int = MAX_NEW_TOKENS,
             progress: Optional[Callable[[int, ItemResult], None]] = None) -> list[ItemResult]:
    """Every item through `model` as it is (dense, or patched by `mminference.patch`), in order.

    Args:
        num_frames: frames sampled from each video file (in-memory frames are used as given).
        progress: called with (index, result) after each item.
    Returns one `ItemResult` per item; any failing item raises naming it (nothing is skipped)."""
    results = []
    for i, item in enumerate(items):
        try:
            inputs = encoder.encode(item, num_frames)
            generation, density, _ = run_item(model, encoder, item, inputs, max_new_tokens)
        except TaskError:
            raise
        except Exception as e:
            raise RuntimeError(f"item {item.item_id!r}: {type(e).__name__}: {e}") from e
        result = ItemResult(item.item_id, item.answer, generation.reply, generation.seq_len, dict(item.metadata),
                            density)
        results.append(result)
        if progress is not None:
            progress(i, result)
    return results
