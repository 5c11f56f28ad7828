"""V-NIAH / MM-NIAH generators: exact sizes, the needle where the metadata says, the answer recoverable
from the prompt (by matching rendered options against the frames, or reading the needle sentence),
and the text share of MM-NIAH contexts."""

import re

import numpy as np
import pytest
import torch

from mminference.eval import TextPart, VideoPart, make_mmniah, make_vniah, render_word
from mminference.eval.niah import NEEDLE_SENTENCE, NUMBER_QUESTION, WORD_QUESTION, chunk_sizes
from mminference.synthetic import moving_shapes_video


def option_matching_frame(item, frame):
    """Letters of the options whose rendered needle equals `frame` exactly."""
    h, w = frame.shape[:2]
    return [letter for letter, word in zip(item.letters, item.options)
            if np.array_equal(render_word(word, h, w), frame)]


def all_frames(item):
    return np.concatenate([p.frames for p in item.parts if isinstance(p, VideoPart)])


def haystack(count, size, seed):
    video, _ = moving_shapes_video(count, size, size, seed=seed)
    return (video * 255).round().to(torch.uint8).numpy()


def test_render_word_is_centred_black_text_on_white():
    frame = render_word("ROCKET", 48, 64)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    dark = frame.min(-1) < 128
    assert 0.03 < dark.mean() < 0.5 and (frame[~dark] > 128).all()
    rows, cols = np.nonzero(dark)
    assert abs((rows.min() + rows.max()) / 2 - 23.5) <= 3 and abs((cols.min() + cols.max()) / 2 - 31.5) <= 3
    assert cols.max() - cols.min() > 0.6 * 64  # as large as fits
    assert not np.array_equal(frame, render_word("CASTLE", 48, 64))


def test_vniah_sizes_needle_position_and_answers():
    counts, depths, size, seed = [6, 11], [0.0, 0.3, 1.0], 32, 5
    items = make_vniah(counts, depths, height=size, width=size, seed=seed)
    assert len(items) == len(counts) * len(depths) == len({i.item_id for i in items})
    for item in items:
        n, depth = item.metadata["frames"], item.metadata["depth"]
        frames = all_frames(item)
        assert frames.shape == (n, size, size, 3) and frames.dtype == np.uint8
        assert len(item.parts) == 1 and item.question == WORD_QUESTION and len(item.options) == 4
        index = item.metadata["needle_frame"]
        assert index == int(round(depth * (n - 1)))
        # the answer is recoverable: exactly one option renders to the needle frame, and it is the answer
        assert option_matching_frame(item, frames[index]) == [item.answer]
        assert item.options["ABCD".index(item.answer)] == item.metadata["needle"]
        assert all(not option_matching_frame(item, f) for j, f in enumerate(frames) if j != index)
        # the needle is inserted: the other frames are the n - 1 haystack frames in order
        np.testing.assert_array_equal(np.delete(frames, index, 0), haystack(n - 1, size, seed + n))
    first = {i.metadata["frames"]: i.metadata["needle_frame"] for i in items if i.metadata["depth"] == 1.0}
    assert first == {6: 5, 11: 10}


@pytest.mark.parametrize("kind", ["text", "frame"])
def test_mmniah_needle_sizes_and_text_share(kind):
    n, segments, tpf = 24, 3, 32.0
    depths = [0.0, 0.4, 1.0]
    items = make_mmniah([n], depths, tokens_per_frame=tpf, needle_kinds=[kind], segments=segments,
                        count_tokens=len, height=32, width=32, seed=2)
    assert [i.metadata["depth"] for i in items] == depths
    positions = []
    for item in items:
        meta = item.metadata
        kinds = [type(p) for p in item.parts]
        assert kinds == [VideoPart, TextPart] * segments
        sizes = [len(p.frames) for p in item.parts if isinstance(p, VideoPart)]
        assert sum(sizes) == n and all(s % 2 == 0 and s > 0 for s in sizes)
        frames = all_frames(item)
        assert frames.shape == (n, 32, 32, 3)
        text = " ".join(p.text for p in item.parts if isinstance(p, TextPart))
        text_tokens = sum(len(p.text) for p in item.parts if isinstance(p, TextPart))
        share = text_tokens / (text_tokens + n * tpf)
        assert share == pytest.approx(meta["text_fraction"]) and abs(share - 0.25) < 0.05
        needles = re.findall(r"The secret number is (\d{4})\.", text)
        if kind == "text":
            assert item.question == NUMBER_QUESTION and meta["needle_frame"] is None
            assert len(needles) == 1 and needles[0] == meta["needle"]
            assert item.options["ABCD".index(item.answer)] == needles[0]  # recoverable from the prompt
            assert NEEDLE_SENTENCE.format(needles[0]) in item.parts[meta["needle_part"]].text
            sentences = [s for p in item.parts if isinstance(p, TextPart) for s in re.findall(r"[^.]+\.", p.text)]
            where = [j for j, s in enumerate(sentences) if "secret" in s]
            assert where == [int(round(meta["depth"] * (len(sentences) - 1)))]
        else:
            assert item.question == WORD_QUESTION and not needles
            index = meta["needle_frame"]
            assert index == int(round(meta["depth"] * (n - 1)))
            assert option_matching_frame(item, frames[index]) == [item.answer]
            part = item.parts[meta["needle_part"]]
            start = sum(len(p.frames) for p in item.parts[:meta["needle_part"]] if isinstance(p, VideoPart))
            assert start <= index < start + len(part.frames)
            np.testing.assert_array_equal(np.delete(frames, index, 0), haystack(n - 1, 32, 2 + n))
        positions.append(meta["position"])
    assert positions == sorted(positions) and 0.0 <= positions[0] and positions[-1] <= 1.0
    if kind == "frame":
        assert positions[0] == 0.0


def test_chunk_sizes_and_bad_arguments():
    assert chunk_sizes(20, 3, 2) == [8, 6, 6]
    assert chunk_sizes(12, 2, 3) == [6, 6]
    assert chunk_sizes(10, 3, 2) == [4, 4, 2]
    with pytest.raises(ValueError, match="frames: 10 cannot be cut into 6 chunks"):
        chunk_sizes(10, 6, 2)
    with pytest.raises(ValueError, match="frames: 9 cannot be cut into 2 chunks"):
        chunk_sizes(9, 2, 2)
    with pytest.raises(ValueError, match="depths must be numbers in"):
        make_vniah([8], [1.5])
    with pytest.raises(ValueError, match="frame_counts must be ints >= 2"):
        make_vniah([1], [0.5])
    with pytest.raises(ValueError, match="frame_counts must be ints >= 8"):
        make_mmniah([6], [0.5], tokens_per_frame=8)
    with pytest.raises(ValueError, match="text_fraction"):
        make_mmniah([8], [0.5], tokens_per_frame=8, text_fraction=1.0)
    with pytest.raises(ValueError, match="needle_kinds"):
        make_mmniah([8], [0.5], tokens_per_frame=8, needle_kinds=["audio"])
