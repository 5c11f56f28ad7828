"""Task items and files (`mminference.eval.tasks`) and video reading (`mminference.eval.video_io`):
option formats, clear errors naming the item, frames read back exactly, uniform frame sampling."""

import json
import os

import numpy as np
import pytest

from mminference.eval import (MCQItem, TaskError, TextPart, VideoDecodeError, VideoPart, load_tasks, read_video,
                              sample_indices)
from mminference.eval.encoders import item_videos
from mminference.eval.video_io import installed_decoders


def few_colour_frames(count, size=16, seed=0):
    """uint8 (count, size, size, 3) frames of 4 x 4 px blocks in 6 colours (a GIF stores them exactly)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    blocks = rng.integers(0, 6, (count, size // 4, size // 4))
    return palette[blocks].repeat(4, 1).repeat(4, 2)


def write_gif(path, frames, ms=200):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0)


def write_png_folder(path, frames):
    from PIL import Image

    os.makedirs(path)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(path, f"{i:04d}.png"))


def record(**changes):
    base = {"id": "q1", "video": "v.gif", "question": "What moves?", "options": ["A. a", "B. b", "C. c", "D. d"],
            "answer": "B", "duration": "short", "domain": "Sports", "task_type": "Counting"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def task_dir(tmp_path):
    write_gif(tmp_path / "v.gif", few_colour_frames(5))
    return tmp_path


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


def test_sample_indices_spread_evenly_with_both_ends():
    assert sample_indices(10, 4) == [0, 3, 6, 9]
    assert sample_indices(9, 5) == [0, 2, 4, 6, 8]
    assert sample_indices(3, 8) == [0, 1, 2]  # never more frames than there are
    assert sample_indices(7, 1) == [0]
    with pytest.raises(ValueError, match="count"):
        sample_indices(5, 0)


def test_gif_and_frame_folder_read_back_exactly(tmp_path):
    frames = few_colour_frames(9)
    write_gif(tmp_path / "clip.gif", frames, ms=250)
    write_png_folder(tmp_path / "clip", frames)
    gif = read_video(str(tmp_path / "clip.gif"), 4)
    folder = read_video(str(tmp_path / "clip"), 4)
    for decoded in (gif, folder):
        assert decoded.indices == (0, 3, 5, 8) and decoded.total_frames == 9  # round(i * 8 / 3)
        np.testing.assert_array_equal(decoded.frames, frames[[0, 3, 5, 8]])
    assert gif.fps == pytest.approx(4.0) and gif.backend == "pillow" and folder.backend == "images"


def test_unreadable_and_undecodable_videos_raise_clear_errors(tmp_path):
    bad = tmp_path / "broken.gif"
    bad.write_bytes(b"not a gif at all")
    with pytest.raises(VideoDecodeError, match="broken.gif.*cannot be decoded"):
        read_video(str(bad), 4)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        read_video(str(tmp_path / "missing.gif"), 4)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(VideoDecodeError, match="no frame images"):
        read_video(str(tmp_path / "empty"), 4)
    with pytest.raises(ValueError, match="num_frames"):
        read_video(str(bad), 0)


@pytest.mark.skipif(bool(installed_decoders()), reason="a video decoder is installed")
def test_mp4_without_a_decoder_names_the_libraries(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    with pytest.raises(VideoDecodeError, match="no video decoder is installed.*decord.*av.*opencv"):
        read_video(str(clip), 8)


def test_task_file_loads_every_item_with_its_metadata(task_dir):
    write_png_folder(task_dir / "frames", few_colour_frames(6, seed=1))
    path = write_jsonl(task_dir / "tasks.jsonl", [
        record(),
        record(id=None, question_id="q2", video="frames", options=["red", "green", "blue"], answer="C"),
        record(id="q3", video=None, context=[{"video": "v.gif"}, {"text": "Later:"}, {"video": "frames"}],
               options={"A": "x", "B": "y"}, answer="A", duration=None),
    ])
    items = load_tasks(path)
    assert [i.item_id for i in items] == ["q1", "q2", "q3"]
    assert items[0].options == ("a", "b", "c", "d") and items[0].answer == "B" and items[0].letters == "ABCD"
    assert items[0].metadata == {"duration": "short", "domain": "Sports", "task_type": "Counting"}
    assert items[0].videos[0].path == str(task_dir / "v.gif")
    assert items[1].options == ("red", "green", "blue") and items[1].letters == "ABC"
    assert [type(p) for p in items[2].parts] == [VideoPart, TextPart, VideoPart]
    assert items[2].parts[1].text == "Later:" and "duration" not in items[2].metadata
    videos = item_videos(items[2], 3)
    np.testing.assert_array_equal(videos[1].frames, few_colour_frames(6, seed=1)[[0, 2, 5]])  # round(i * 5 / 2)
    # a JSON list works the same
    listed = task_dir / "tasks.json"
    listed.write_text(json.dumps([record(id="z")]))
    assert [i.item_id for i in load_tasks(str(listed))] == ["z"]


@pytest.mark.parametrize("changes, message", [
    (dict(answer=None), r"record 1 \(id 'bad'\): missing field 'answer'"),
    (dict(question=None), r"record 1 \(id 'bad'\): missing field 'question'"),
    (dict(options=None), r"record 1 \(id 'bad'\): missing field 'options'"),
    (dict(id=None), r"record 1: missing field 'id'"),
    (dict(options=["A. a", "C. b", "B. c", "D. d"]), r"id 'bad'.*option letters \['A', 'C', 'B', 'D'\]"),
    (dict(options=["A. a", "b", "C. c", "D. d"]), r"id 'bad'.*option letters \['A', None, 'C', 'D'\]"),
    (dict(options={"A": "a", "C": "b"}), r"id 'bad'.*option letters \['A', 'C'\]"),
    (dict(answer="E"), r"id 'bad'.*answer 'E' is not one of the option letters ABCD"),
    (dict(answer="b"), r"id 'bad'.*answer 'b'"),
    (dict(video="nowhere.mp4"), r"id 'bad'.*nowhere.mp4' does not exist"),
    (dict(video=None), r"id 'bad'.*exactly one of 'video' and 'context'"),
    (dict(question="  "), r"id 'bad'.*question must be a non-empty string"),
    (dict(options=["A. only"]), r"id 'bad'.*options must be 2 to 26"),
    (dict(context=[{"audio": "x"}]), r"id 'bad'.*exactly one of 'video' and 'context'"),
    (dict(video=None, context=[{"text": "hi"}, {"audio": "x"}]), r"id 'bad'.*context\[1\]"),
])
def test_bad_records_name_the_item(task_dir, changes, message):
    path = write_jsonl(task_dir / "tasks.jsonl", [record(), record(**{"id": "bad", **changes})])
    with pytest.raises(TaskError, match=message):
        load_tasks(path)


def test_bad_files(task_dir):
    with pytest.raises(TaskError, match=r"record 1: duplicate id 'q1' \(also record 0\)"):
        load_tasks(write_jsonl(task_dir / "dup.jsonl", [record(), record()]))
    (task_dir / "broken.jsonl").write_text('{"id": "x",\n')
    with pytest.raises(TaskError, match="not JSON"):
        load_tasks(str(task_dir / "broken.jsonl"))
    (task_dir / "empty.jsonl").write_text("\n")
    with pytest.raises(TaskError, match="no items"):
        load_tasks(str(task_dir / "empty.jsonl"))
    with pytest.raises(TaskError, match="is not a file"):
        load_tasks(str(task_dir / "missing.jsonl"))


def test_undecodable_video_is_reported_with_its_item(task_dir):
    (task_dir / "corrupt.gif").write_bytes(b"GIF89a but truncated")
    items = load_tasks(write_jsonl(task_dir / "t.jsonl", [record(id="clip-7", video="corrupt.gif")]))
    with pytest.raises(TaskError, match=r"item 'clip-7': video .*corrupt.gif' cannot be decoded"):
        item_videos(items[0], 8)


def test_items_in_memory_validate_their_fields():
    frames = few_colour_frames(2)
    with pytest.raises(TaskError, match="item 'x': answer 'E'"):
        MCQItem("x", "q?", ("a", "b", "c", "d"), "E", (VideoPart(frames=frames),))
    with pytest.raises(TaskError, match="item 'x': the context has no video"):
        MCQItem("x", "q?", ("a", "b"), "A", (TextPart("hi"),))
    with pytest.raises(TaskError, match="VideoPart.frames: expected uint8"):
        VideoPart(frames=frames.astype(np.float32))
    with pytest.raises(TaskError, match="exactly one of path and frames"):
        VideoPart()
