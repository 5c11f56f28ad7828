"""Family-independent pieces of layout derivation: runs of equal token types, valid (unpadded) ranges,
grids fed to runs in order, and the one-stride-per-modality rule of `ModalityLayout`. All O(S)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..layout import Modality, ModalityLayout, Segment, VisualGrid


def runs(values: torch.Tensor) -> list[tuple[int, int, int]]:
    """`(value, start, end)` of the maximal runs of equal values of a 1-D integer tensor, in order."""
    values = values.reshape(-1).cpu()
    if values.numel() == 0:
        return []
    change = torch.nonzero(values[1:] != values[:-1]).reshape(-1) + 1
    starts = [0] + change.tolist()
    ends = change.tolist() + [values.numel()]
    vals = values[torch.tensor(starts)].tolist()
    return list(zip(vals, starts, ends))


def valid_range(mask_row: Optional[torch.Tensor], seq: int) -> Optional[tuple[int, int]]:
    """[start, end) of the ones of a `(S,)` 0/1 attention-mask row (None: the whole sequence); None
    when they are not one contiguous run (e.g. packed sequences) or there are none."""
    if mask_row is None:
        return 0, seq
    ones = [(s, e) for v, s, e in runs(mask_row.to(torch.int64) != 0) if v]
    if len(ones) != 1:
        return None
    return ones[0]


class GridFeed:
    """Hands out the frames of a modality's visual items in order, as runs of its tokens ask for them.

    `items[i] = (frames, rows, cols)` is the language-model grid of item i (after merging). A run of
    n tokens takes whole frames, first from the item in progress: a Qwen2-VL run is one whole item, a
    Qwen3-VL video run one frame (timestamps split a video). One segment per item part."""

    def __init__(self, modality: Modality, items: Sequence[tuple[int, int, int]], source: str):
        self.modality, self.items, self.source = modality, [tuple(int(x) for x in it) for it in items], source
        self.item, self.used = 0, 0

    def take(self, start: int, length: int) -> list[Segment]:
        segments, pos, left = [], start, length
        while left > 0:
            if self.item >= len(self.items):
                raise ValueError(f"{self.source}: the prompt has more {self.modality.name.lower()} tokens than "
                                 f"its {len(self.items)} grid rows describe")
            frames, rows, cols = self.items[self.item]
            per_frame = rows * cols
            take = min(frames - self.used, left // per_frame)
            if take == 0:
                raise ValueError(f"{self.source}: a run of {length} {self.modality.name.lower()} tokens at "
                                 f"{start} does not split into frames of {rows} x {cols} = {per_frame} tokens "
                                 f"(grid row {self.item}: {frames} x {rows} x {cols})")
            segments.append(Segment(self.modality, pos, pos + take * per_frame, VisualGrid(take, rows, cols)))
            pos, left = pos + take * per_frame, left - take * per_frame
            self.used += take
            if self.used == frames:
                self.item, self.used = self.item + 1, 0
        return segments

    def check_done(self) -> None:
        if self.item != len(self.items) or self.used:
            raise ValueError(f"{self.source}: {len(self.items)} grid rows describe more "
                             f"{self.modality.name.lower()} tokens than the prompt holds")


def build_layout(seq_len: int, segments: Sequence[Segment]) -> ModalityLayout:
    """A layout (gaps become text) where every modality has one grid stride: when a modality's
    gridded segments disagree on tokens per frame (e.g. two images of different sizes), its grids
    are dropped (Grid then searches strides without a frame hint)."""
    segments = list(segments)
    for m in (Modality.IMAGE, Modality.VIDEO):
        mine = [s for s in segments if s.modality == m]
        per_frame = {s.grid.tokens_per_frame if s.grid else None for s in mine}
        if len(per_frame) > 1:
            segments = [Segment(s.modality, s.start, s.end) if s.modality == m else s for s in segments]
    return ModalityLayout.from_spans(seq_len, segments)
