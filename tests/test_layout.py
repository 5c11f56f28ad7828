"""ModalityLayout, Segment, VisualGrid: validation (ValueError naming the field) and modality ids."""

from __future__ import annotations

import re

import pytest
import torch

from mminference.layout import Modality, ModalityLayout, Segment, VisualGrid, stack_modality_ids


def names(exc_info, *candidates):
    msg = str(exc_info.value)
    assert any(re.search(rf"\b{re.escape(c)}\b", msg) for c in candidates), msg


def test_visual_grid_tokens():
    assert VisualGrid(frames=3, rows=4, cols=5).tokens_per_frame == 20
    assert VisualGrid(frames=3, rows=4, cols=5).num_tokens == 60
    # a newline after each patch row
    g = VisualGrid(frames=2, rows=4, cols=5, separator_every=5, separators=1)
    assert g.tokens_per_frame == 24 and g.num_tokens == 48
    # two delimiter tokens per frame
    assert VisualGrid(1, 2, 2, separator_every=4, separators=2).tokens_per_frame == 6


@pytest.mark.parametrize("kwargs, field", [
    (dict(frames=0, rows=1, cols=1), "frames"),
    (dict(frames=1, rows=0, cols=1), "rows"),
    (dict(frames=1, rows=1, cols=-1), "cols"),
    (dict(frames=1.5, rows=1, cols=1), "frames"),
    (dict(frames=1, rows=2, cols=2, separator_every=-1, separators=0), "separator_every"),
    (dict(frames=1, rows=2, cols=2, separator_every=2, separators=0), "separators"),
    (dict(frames=1, rows=2, cols=2, separator_every=0, separators=1), "separator_every"),
    (dict(frames=1, rows=2, cols=3, separator_every=4, separators=1), "separator_every"),
], ids=str)
def test_visual_grid_errors(kwargs, field):
    with pytest.raises(ValueError) as e:
        VisualGrid(**kwargs)
    names(e, field)


@pytest.mark.parametrize("args, field", [
    ((7, 0, 4), "modality"),
    ((Modality.TEXT, -1, 4), "start"),
    ((Modality.TEXT, 4, 4), "end"),
    ((Modality.TEXT, 5, 4), "end"),
    ((Modality.TEXT, 0, 4, VisualGrid(1, 2, 2)), "grid"),
    ((Modality.VIDEO, 0, 9, VisualGrid(2, 2, 2)), "grid"),
    ((Modality.VIDEO, 0, 8, (2, 2, 2)), "grid"),
], ids=str)
def test_segment_errors(args, field):
    with pytest.raises(ValueError) as e:
        Segment(*args)
    names(e, field)


def test_segment_accepts_plain_ints():
    seg = Segment(2, 10, 18, VisualGrid(2, 2, 2))
    assert seg.modality is Modality.VIDEO and len(seg) == 8


def test_from_spans_fills_text_and_ids():
    video = VisualGrid(frames=2, rows=2, cols=3)
    layout = ModalityLayout.from_spans(30, [
        Segment(Modality.VIDEO, 20, 26, VisualGrid(1, 2, 3)),  # given out of order
        Segment(Modality.IMAGE, 2, 6),
        Segment(Modality.VIDEO, 8, 20, video),                  # adjacent to the next video span
    ])
    assert [(int(s.modality), s.start, s.end) for s in layout.segments] == [
        (0, 0, 2), (1, 2, 6), (0, 6, 8), (2, 8, 20), (2, 20, 26), (0, 26, 30)]
    ids = layout.modality_ids()
    assert ids.dtype == torch.int32 and tuple(ids.shape) == (30,)
    assert ids.tolist() == [0] * 2 + [1] * 4 + [0] * 2 + [2] * 18 + [0] * 4
    assert layout.tokens_per_frame(Modality.VIDEO) == 6
    assert layout.tokens_per_frame(Modality.TEXT) is None
    assert layout.spans(Modality.VIDEO) == [(8, 20), (20, 26)]
    with pytest.raises(ValueError) as e:  # one video segment has a grid, the other none
        ModalityLayout.from_spans(30, [Segment(Modality.VIDEO, 0, 6, VisualGrid(1, 2, 3)),
                                       Segment(Modality.VIDEO, 10, 14)]).tokens_per_frame(Modality.VIDEO)
    names(e, "modality")
    assert layout.grid_strides().tolist() == [0, 0, 6]


def test_from_spans_whole_sequence_and_text_only():
    only_text = ModalityLayout.from_spans(5, [])
    assert only_text.modality_ids().tolist() == [0] * 5
    whole = ModalityLayout.from_spans(4, [Segment(Modality.IMAGE, 0, 4, VisualGrid(1, 2, 2))])
    assert len(whole.segments) == 1 and whole.modality_ids().tolist() == [1] * 4


def test_tokens_per_frame_must_agree():
    layout = ModalityLayout.from_spans(40, [
        Segment(Modality.VIDEO, 0, 8, VisualGrid(2, 2, 2)),
        Segment(Modality.VIDEO, 10, 19, VisualGrid(1, 3, 3)),
    ])
    with pytest.raises(ValueError) as e:
        layout.tokens_per_frame(Modality.VIDEO)
    names(e, "modality")


@pytest.mark.parametrize("spans, field", [
    ([Segment(Modality.VIDEO, 2, 10), Segment(Modality.IMAGE, 8, 12)], "visual_segments"),
    ([Segment(Modality.VIDEO, 2, 31)], "visual_segments"),
    ([(2, 4)], "visual_segments"),
], ids=str)
def test_from_spans_errors(spans, field):
    with pytest.raises(ValueError) as e:
        ModalityLayout.from_spans(30, spans)
    names(e, field)
    with pytest.raises(ValueError) as e:
        ModalityLayout.from_spans(0, [])
    names(e, "seq_len")


@pytest.mark.parametrize("segments, field", [
    ((), "segments"),
    ((Segment(Modality.TEXT, 0, 4), Segment(Modality.TEXT, 3, 10)), "segments"),   # overlap
    ((Segment(Modality.TEXT, 0, 4), Segment(Modality.TEXT, 5, 10)), "segments"),   # gap
    ((Segment(Modality.TEXT, 0, 4),), "segments"),                                 # short
    ((Segment(Modality.TEXT, 0, 4), Segment(Modality.TEXT, 4, 11)), "segments"),   # out of range
    (((0, 0, 10),), "segments"),
], ids=str)
def test_layout_errors(segments, field):
    with pytest.raises(ValueError) as e:
        ModalityLayout(10, segments)
    names(e, field)


def test_stack_modality_ids():
    a = ModalityLayout.from_spans(6, [Segment(Modality.VIDEO, 1, 3)])
    b = ModalityLayout.from_spans(6, [Segment(Modality.IMAGE, 4, 6)])
    ids = stack_modality_ids([a, b])
    assert ids.dtype == torch.int32
    assert ids.tolist() == [[0, 2, 2, 0, 0, 0], [0, 0, 0, 0, 1, 1]]
    with pytest.raises(ValueError) as e:
        stack_modality_ids([a, ModalityLayout.from_spans(7, [])])
    names(e, "layouts")
    with pytest.raises(ValueError) as e:
        stack_modality_ids([])
    names(e, "layouts")
