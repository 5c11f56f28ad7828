"""Modality layout of a prompt: which positions are text, image or video, and the patch grid of each
visual segment. `ModalityLayout.modality_ids()` feeds `build_boundary_index`; `grid_strides()` gives
the per-modality frame period its grid lines are counted in (ranks among the modality's tokens, so
a video split by timestamp text keeps its stride).

    grid = VisualGrid(frames=4, rows=16, cols=16, separator_every=16, separators=1)  # 272 tokens/frame
    layout = ModalityLayout.from_spans(4096, [
        Segment(Modality.VIDEO, 100, 1188, grid),    # frames 0-3
        Segment(Modality.VIDEO, 1200, 2288, grid),   # frames 4-7, after a 12-token timestamp
    ])                                               # text fills [0, 100), [1188, 1200), [2288, 4096)
    ids = layout.modality_ids()                      # int32 (4096,)
    layout.tokens_per_frame(Modality.VIDEO)          # 272
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable, Optional, Sequence

import torch


class Modality(enum.IntEnum):
    """Modality ids (the values `build_boundary_index` receives)."""

    TEXT = 0
    IMAGE = 1
    VIDEO = 2


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class VisualGrid:
    """Patch grid of an image or video segment.

    Each frame holds `rows * cols` patch tokens; after every `separator_every` patch tokens come
    `separators` separator tokens (e.g. `separator_every=cols, separators=1`: a newline token after
    each patch row). Both 0: no separators. Separators belong to the frame, so
    `tokens_per_frame = rows * cols + separators * (rows * cols // separator_every)`.
    """

    frames: int
    rows: int
    cols: int
    separator_every: int = 0
    separators: int = 0

    def __post_init__(self):
        _check_int("frames", self.frames, 1)
        _check_int("rows", self.rows, 1)
        _check_int("cols", self.cols, 1)
        _check_int("separator_every", self.separator_every, 0)
        _check_int("separators", self.separators, 0)
        if (self.separator_every == 0) != (self.separators == 0):
            raise ValueError(
                f"separator_every and separators must both be 0 or both be >= 1, got "
                f"separator_every={self.separator_every}, separators={self.separators}")
        if self.separator_every and (self.rows * self.cols) % self.separator_every:
            raise ValueError(f"separator_every ({self.separator_every}) must divide rows * cols "
                             f"({self.rows} * {self.cols} = {self.rows * self.cols})")

    @property
    def tokens_per_frame(self) -> int:
        patches = self.rows * self.cols
        return patches + (self.separators * (patches // self.separator_every) if self.separator_every else 0)

    @property
    def num_tokens(self) -> int:
        return self.frames * self.tokens_per_frame


@dataclasses.dataclass(frozen=True)
class Segment:
    """Positions [start, end) of one modality; `grid` describes an image / video segment's patches
    (None: no grid, e.g. text or a visual segment of unknown geometry)."""

    modality: Modality
    start: int
    end: int
    grid: Optional[VisualGrid] = None

    def __post_init__(self):
        try:
            modality = Modality(self.modality)
        except ValueError:
            raise ValueError(f"modality must be one of {[int(m) for m in Modality]} "
                             f"({', '.join(m.name for m in Modality)}), got {self.modality!r}") from None
        object.__setattr__(self, "modality", modality)
        _check_int("start", self.start, 0)
        _check_int("end", self.end, 0)
        if self.end <= self.start:
            raise ValueError(f"end must be > start (segments are non-empty), got [start, end) = "
                             f"[{self.start}, {self.end})")
        if self.grid is not None:
            if not isinstance(self.grid, VisualGrid):
                raise ValueError(f"grid must be a VisualGrid or None, got {self.grid!r}")
            if modality == Modality.TEXT:
                raise ValueError("grid: a TEXT segment has no grid")
            if self.grid.num_tokens != self.end - self.start:
                raise ValueError(
                    f"grid: {self.grid.frames} frames x {self.grid.tokens_per_frame} tokens = "
                    f"{self.grid.num_tokens} tokens do not match the segment length "
                    f"{self.end - self.start} ([{self.start}, {self.end}))")

    def __len__(self) -> int:
        return self.end - self.start


@dataclasses.dataclass(frozen=True)
class ModalityLayout:
    """Segments tiling [0, seq_len) in order (use `from_spans` to fill gaps with text)."""

    seq_len: int
    segments: tuple[Segment, ...]

    def __post_init__(self):
        _check_int("seq_len", self.seq_len, 1)
        segments = tuple(self.segments)
        object.__setattr__(self, "segments", segments)
        if not segments:
            raise ValueError("segments must not be empty")
        pos = 0
        for i, seg in enumerate(segments):
            if not isinstance(seg, Segment):
                raise ValueError(f"segments[{i}] must be a Segment, got {seg!r}")
            if seg.start < pos:
                raise ValueError(f"segments[{i}] [{seg.start}, {seg.end}) overlaps the previous segment "
                                 f"(ending at {pos}) or is out of order")
            if seg.start > pos:
                raise ValueError(f"segments leave positions [{pos}, {seg.start}) uncovered; "
                                 f"ModalityLayout.from_spans fills gaps with text")
            if seg.end > self.seq_len:
                raise ValueError(f"segments[{i}] [{seg.start}, {seg.end}) is out of range "
                                 f"[0, seq_len = {self.seq_len})")
            pos = seg.end
        if pos != self.seq_len:
            raise ValueError(f"segments end at {pos}, before seq_len = {self.seq_len}; "
                             f"ModalityLayout.from_spans fills gaps with text")

    @staticmethod
    def from_spans(seq_len: int, visual_segments: Iterable[Segment]) -> "ModalityLayout":
        """A layout from (image / video / text) segments in any order; positions they leave
        uncovered become TEXT segments."""
        _check_int("seq_len", seq_len, 1)
        spans = list(visual_segments)
        for seg in spans:
            if not isinstance(seg, Segment):
                raise ValueError(f"visual_segments must hold Segment objects, got {seg!r}")
        spans.sort(key=lambda s: (s.start, s.end))
        segments: list[Segment] = []
        pos = 0
        for i, seg in enumerate(spans):
            if seg.end > seq_len:
                raise ValueError(f"visual_segments: [{seg.start}, {seg.end}) is out of range "
                                 f"[0, seq_len = {seq_len})")
            if seg.start < pos:
                raise ValueError(f"visual_segments: [{seg.start}, {seg.end}) overlaps "
                                 f"[{spans[i - 1].start}, {spans[i - 1].end})")
            if seg.start > pos:
                segments.append(Segment(Modality.TEXT, pos, seg.start))
            segments.append(seg)
            pos = seg.end
        if pos < seq_len:
            segments.append(Segment(Modality.TEXT, pos, seq_len))
        return ModalityLayout(seq_len, tuple(segments))

    def modality_ids(self) -> torch.Tensor:
        """int32 `(seq_len,)` modality id of every position."""
        ids = torch.empty(self.seq_len, dtype=torch.int32)
        for seg in self.segments:
            ids[seg.start:seg.end] = int(seg.modality)
        return ids

    def spans(self, modality: Modality) -> list[tuple[int, int]]:
        """[start, end) of every segment of `modality`, in order."""
        return [(s.start, s.end) for s in self.segments if s.modality == modality]

    def tokens_per_frame(self, modality: Modality) -> Optional[int]:
        """Tokens per frame of `modality`'s gridded segments (None when none has a grid). All of
        them must agree: the grid lines are counted over the modality's tokens across segments."""
        values = {s.grid.tokens_per_frame for s in self.segments if s.modality == modality and s.grid}
        if len(values) > 1:
            raise ValueError(f"modality: {Modality(modality).name} segments have different tokens per "
                             f"frame {sorted(values)}; one grid stride cannot describe them")
        if values and any(s.grid is None for s in self.segments if s.modality == modality):
            raise ValueError(f"modality: some {Modality(modality).name} segments have no grid")
        return values.pop() if values else None

    def grid_strides(self, num_modalities: int = len(Modality)) -> torch.Tensor:
        """int32 `(num_modalities,)`: tokens per frame of each gridded modality, 0 for the others
        (the frame period; a head's own stride / phase come from estimation)."""
        out = torch.zeros(num_modalities, dtype=torch.int32)
        for m in range(num_modalities):
            if m in Modality._value2member_map_:
                out[m] = self.tokens_per_frame(Modality(m)) or 0
        return out


def stack_modality_ids(layouts: Sequence[ModalityLayout]) -> torch.Tensor:
    """int32 `(B, S)` modality ids of a batch of layouts (all of one sequence length)."""
    layouts = list(layouts)
    if not layouts:
        raise ValueError("layouts must not be empty")
    seq = layouts[0].seq_len
    for i, layout in enumerate(layouts):
        if not isinstance(layout, ModalityLayout):
            raise ValueError(f"layouts[{i}] must be a ModalityLayout, got {layout!r}")
        if layout.seq_len != seq:
            raise ValueError(f"layouts[{i}].seq_len = {layout.seq_len} differs from layouts[0]'s {seq}")
    return torch.stack([layout.modality_ids() for layout in layouts])
