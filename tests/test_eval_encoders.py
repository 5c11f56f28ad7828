"""Prompt encoders: the chat message and processor call a real model's processor gets (recorded by a
stand-in processor), the tiny model's token layout and where the needle's pixels land."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from mminference.eval import (MCQItem, ProcessorEncoder, TextPart, TinyQwenEncoder, VideoPart,  # noqa: E402
                              make_mmniah, make_vniah, measure_tokens_per_frame, question_text)
from mminference.integration import random_models  # noqa: E402


class RecordingProcessor:
    """Records what ProcessorEncoder passes; tokenises by characters so lengths can be checked."""

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        self.calls.append(("template", messages, add_generation_prompt, tokenize))
        return "<chat>" + "|".join(c.get("text", "<video>") for c in messages[0]["content"]) + "</chat>"

    def __call__(self, **kwargs):
        self.calls.append(("call", kwargs))
        text = kwargs["text"][0]
        frames = sum(len(v) for v in kwargs["videos"])
        return {"input_ids": torch.zeros((1, len(text) + 10 * frames), dtype=torch.long)}


def test_processor_encoder_builds_one_chat_turn_with_the_parts_in_order(tmp_path):
    from PIL import Image

    item = make_mmniah([8], [0.5], tokens_per_frame=10, needle_kinds=["text"], segments=2, height=16, width=16)[0]
    processor = RecordingProcessor()
    encoder = ProcessorEncoder(processor, "qwen2_5_vl")
    inputs = encoder.encode(item, num_frames=99)
    (_, messages, generation_prompt, tokenize), (_, call) = processor.calls
    content = messages[0]["content"]
    assert messages[0]["role"] == "user" and generation_prompt and tokenize is False
    assert [c["type"] for c in content] == ["video", "text", "video", "text", "text"]
    assert content[1]["text"] == item.parts[1].text and content[-1]["text"] == question_text(item)
    assert call["do_sample_frames"] is False and call["return_tensors"] == "pt"
    assert call["text"] == [processor.apply_chat_template(messages, True, False)]
    for video, part, meta in zip(call["videos"], item.videos, call["video_metadata"]):
        assert video is part.frames  # in-memory frames: as given, never re-sampled
        assert meta["frames_indices"] == list(range(len(part.frames))) and meta["fps"] == 1.0
    assert inputs["input_ids"].shape[0] == 1
    # a frame folder is sampled here, and the metadata keeps the original indices
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), 20 * i, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    processor.calls.clear()
    encoder.encode(MCQItem("f", "Q?", ("a", "b"), "B", (VideoPart(path=str(folder)),)), num_frames=4)
    call = processor.calls[1][1]
    assert call["video_metadata"][0]["frames_indices"] == [0, 3, 6, 9]
    assert [int(f[0, 0, 0]) for f in call["videos"][0]] == [0, 60, 120, 180]
    # measure_tokens_per_frame reads the difference of two encodings (10 a frame here)
    assert measure_tokens_per_frame(encoder, 8, 8) == 10.0


def test_processor_encoder_rejects_unsupported_models():
    with pytest.raises(ValueError, match="model_type: 'llama' is not one of the supported families"):
        ProcessorEncoder(RecordingProcessor(), "llama")
    with pytest.raises(TypeError, match="processor: expected a transformers processor"):
        ProcessorEncoder(object(), "qwen2_5_vl")


def test_tiny_encoder_layout_and_needle_pixels():
    config = random_models.qwen2_5_vl_config()
    encoder = TinyQwenEncoder(config, frame_size=32)
    item = make_vniah([7], [0.75], height=32, width=32, seed=4)[0]  # needle at frame round(0.75 * 6) = 4
    inputs = encoder.encode(item, num_frames=7)
    ids = inputs["input_ids"][0]
    # 7 frames -> padded to 8 -> 4 temporal patches of (32/8)^2 = 16 tokens
    assert int((ids == config.video_token_id).sum()) == 4 * 16 == 8 * encoder.tokens_per_frame
    assert inputs["video_grid_thw"].tolist() == [[4, 8, 8]]
    assert inputs["second_per_grid_ts"].tolist() == [2.0]  # temporal patch 2 at 1 fps
    pixels = inputs["pixel_values_videos"].reshape(4, 64, 3, 2, 4, 4)  # (t, patches, C, frame in patch, py, px)
    # the needle frame is white with black letters: its pixels sit at t = 2, frame 0 of the patch
    bright = (pixels > 0.9).float().mean(dim=(1, 2, 4, 5))  # (t, frame in patch): share of near-white values
    assert bright[2, 0] > 0.8 and bright.flatten().topk(2).values[1] < 0.5
    assert encoder.decode(encoder.tokenize("Ab 9?\n")) == "Ab 9?\n"
    assert encoder.tokenize("é") == encoder.tokenize("?")
    with pytest.raises(ValueError, match="frame_size: 36 px"):
        TinyQwenEncoder(config, frame_size=36)
    with pytest.raises(ValueError, match="TinyQwenEncoder supports"):
        TinyQwenEncoder(random_models.llava_onevision_config())


def test_tiny_encoder_interleaves_text_between_videos():
    config = random_models.qwen2_5_vl_config()
    encoder = TinyQwenEncoder(config, frame_size=16)
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    item = MCQItem("i", "Q?", ("a", "b"), "A", (VideoPart(frames=frames), TextPart("mid"), VideoPart(frames=frames)))
    ids = encoder.encode(item, 2)["input_ids"][0].tolist()
    s, v, e = config.vision_start_token_id, config.video_token_id, config.vision_end_token_id
    block = [s] + [v] * 4 + [e]  # one temporal patch of (16/8)^2 tokens
    assert ids[:6] == encoder.tokenize("user: ") and ids[6:12] == block
    assert ids[12:15] == encoder.tokenize("mid") and ids[15:21] == block
