"""Dense vs sparse on the same items: each item is encoded once, answered by the model as it is and
then patched (`mminference.patch`), and the two replies compared (`report.AgreementReport`)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..integration import patch, unpatch
from .encoders import PromptEncoder
from .report import AgreementReport, ComparisonRow, kl_divergence
from .runner import MAX_NEW_TOKENS, run_item
from .tasks import MCQItem, TaskError


def _describe(config, limit: int = 120) -> str:
    """The config for the report: a name / path, or the pattern's repr cut to `limit` characters."""
    if config is None or isinstance(config, str):
        return str(config or "auto")
    text = repr(getattr(config, "patterns", config))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def compare_dense_sparse(model: torch.nn.Module, encoder: PromptEncoder, items: Sequence[MCQItem], config="auto",
                         num_frames: int = 32, max_new_tokens: int = MAX_NEW_TOKENS, warmup: bool = True,
                         progress: Optional[Callable[[int, ComparisonRow], None]] = None,
                         **patch_options) -> AgreementReport:
    """Answers every item dense and sparse and reports accuracy both ways, agreement, answer-position
    KL, time to first token and density.

    Args:
        model: an unpatched transformers VLM of a supported family.
        encoder: its prompt encoder (`ProcessorEncoder` or `TinyQwenEncoder`).
        config: `mminference.patch`'s config (None/"auto", a JSON path, a HeadConfig or a pattern).
        num_frames: frames sampled from video files.
        warmup: first answer the first item once each way, untimed (kernel loading, allocator).
        **patch_options: `mminference.patch` options (e.g. `min_prefill_tokens`); `track_density`
            defaults to True (one host sync per layer in the sparse prefill).
    The model is left unpatched, also on errors. An item that fails raises naming it.
    """
    if getattr(model, "_mminference", None) is not None:
        raise ValueError("model: already patched; pass the unpatched model (compare patches it itself)")
    if not items:
        raise ValueError("items: empty")
    patch_options.setdefault("track_density", True)
    rows = []
    for i, item in enumerate(items):
        try:
            inputs = encoder.encode(item, num_frames)
            if warmup and i == 0:
                run_item(model, encoder, item, inputs, 1)
            dense, _, _ = run_item(model, encoder, item, inputs, max_new_tokens)
            patch(model, config, **patch_options)
            try:
                if warmup and i == 0:
                    run_item(model, encoder, item, inputs, 1)
                sparse, density, calls = run_item(model, encoder, item, inputs, max_new_tokens)
            finally:
                unpatch(model)
        except TaskError:
            raise
        except Exception as e:
            raise RuntimeError(f"item {item.item_id!r}: {type(e).__name__}: {e}") from e
        row = ComparisonRow(item.item_id, item.answer, dense.reply, sparse.reply,
                            kl_divergence(dense.answer_logits, sparse.answer_logits), dense.seq_len,
                            dict(item.metadata), density, calls)
        rows.append(row)
        if progress is not None:
            progress(i, row)
    return AgreementReport(tuple(rows), len(items), _describe(config))
