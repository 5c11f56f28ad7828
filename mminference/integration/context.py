"""Per-forward context: what the registered attention function needs to know about the call it is in.

transformers passes no model inputs to attention functions and `generate` rejects unknown kwargs, so
the patched model's `forward` stores its inputs in a `contextvars.ContextVar` for the duration of the
call (`forward_context`). Layouts are derived lazily, on the first attention call that runs the sparse
path, so decode steps never pay for them. `explicit_layouts` lets a caller bypass derivation (e.g. an
`inputs_embeds`-only call of a model whose layout lives in its token ids).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

from ..layout import ModalityLayout


@dataclasses.dataclass(frozen=True)
class ElementPlan:
    """One batch element of a prefill: its tokens are positions [start, end) of the padded sequence
    (left / right padding outside) and `layout` describes them (`layout.seq_len == end - start`)."""

    start: int
    end: int
    layout: ModalityLayout


class ForwardContext:
    """The inputs of one patched `forward` call and the patch state that made it.

    `plan()` returns one `ElementPlan` per batch element, computed once by `derive` (a callable
    taking the forward's named inputs) or taken from explicit layouts."""

    def __init__(self, state: Any, inputs: dict, derive: Callable[[dict], list[ElementPlan]]):
        self.state = state
        self.inputs = inputs
        self._derive = derive
        self._plan: Optional[list[ElementPlan]] = None

    def plan(self) -> list[ElementPlan]:
        if self._plan is None:
            self._plan = self._derive(self.inputs)
        return self._plan


_CURRENT: contextvars.ContextVar[Optional[ForwardContext]] = contextvars.ContextVar("mminference_forward",
                                                                                   default=None)
_EXPLICIT: contextvars.ContextVar[Optional[tuple[ModalityLayout, ...]]] = contextvars.ContextVar(
    "mminference_explicit_layouts", default=None)
_GENERATE: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("mminference_generate_inputs",
                                                                          default=None)

# Inputs a layout is derived from that `generate` may keep out of the prefill forward (transformers
# >= 5.2x runs the vision encoder itself and passes `mm_encoder_outputs` instead of the grids).
GENERATE_LAYOUT_INPUTS = ("image_grid_thw", "video_grid_thw")


@contextlib.contextmanager
def generate_inputs(kwargs: dict) -> Iterator[None]:
    """Remembers the layout inputs of a `generate` call (`GENERATE_LAYOUT_INPUTS`) for the forward
    calls it makes (`with_generate_inputs`)."""
    token = _GENERATE.set({k: kwargs[k] for k in GENERATE_LAYOUT_INPUTS if kwargs.get(k) is not None})
    try:
        yield
    finally:
        _GENERATE.reset(token)


def with_generate_inputs(inputs: dict) -> dict:
    """`inputs` completed with the enclosing `generate` call's layout inputs where it lacks them."""
    merged = dict(inputs)
    for key, value in (_GENERATE.get() or {}).items():
        if merged.get(key) is None:
            merged[key] = value
    return merged


def current() -> Optional[ForwardContext]:
    """The context of the patched forward call in progress (None outside one)."""
    return _CURRENT.get()


@contextlib.contextmanager
def forward_context(ctx: ForwardContext) -> Iterator[ForwardContext]:
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def explicit() -> Optional[tuple[ModalityLayout, ...]]:
    """Layouts set by `explicit_layouts` (None when not inside one)."""
    return _EXPLICIT.get()


@contextlib.contextmanager
def explicit_layouts(layouts: Sequence[ModalityLayout]) -> Iterator[None]:
    """Use these layouts (one per batch element, or one for the whole batch; unpadded sequences whose
    length is the prefill's) instead of deriving them from the model inputs, e.g.

        with mminference.integration.explicit_layouts([layout]):
            model(inputs_embeds=embeds, ...)
    """
    if isinstance(layouts, ModalityLayout):
        layouts = [layouts]
    layouts = tuple(layouts) if isinstance(layouts, (list, tuple)) else layouts
    if not isinstance(layouts, tuple) or not layouts or not all(isinstance(x, ModalityLayout) for x in layouts):
        raise TypeError(f"layouts must be a ModalityLayout or a non-empty list of them, got {layouts!r}")
    token = _EXPLICIT.set(layouts)
    try:
        yield
    finally:
        _EXPLICIT.reset(token)
