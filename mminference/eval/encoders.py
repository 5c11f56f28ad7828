"""Turning an `MCQItem` into model inputs, per model family.

A prompt encoder has `encode(item, num_frames) -> dict` (batch-1 model inputs on the CPU: what
`model.generate(**inputs)` takes) and `decode(token_ids) -> str`. `ProcessorEncoder` drives a real
model's transformers processor: a chat message holding the item's video / text parts in order and then
the question (`prompts.question_text`), rendered by the processor's own chat template, so each family
gets its own special tokens and frame layout (Qwen2/2.5/3-VL vision_start + pads + vision_end with
timestamps from the frame metadata, LLaVA-OneVision / LLaVA-NeXT-Video video tokens, InternVL
"Frame{i}: <img>" blocks). `TinyQwenEncoder` (tiny_encoder.py) does the same for the tiny random
models, which have no processor.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..integration import families
from .prompts import question_text
from .tasks import MCQItem, TaskError, TextPart, VideoPart
from .video_io import DecodedVideo, read_video


class PromptEncoder(Protocol):
    def encode(self, item: MCQItem, num_frames: int) -> dict: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def count_tokens(self, text: str) -> int: ...


def measure_tokens_per_frame(encoder: PromptEncoder, height: int, width: int,
                             frames: tuple[int, int] = (4, 8)) -> float:
    """Prompt tokens one frame of height x width px adds, measured by encoding a grey video of
    frames[0] and of frames[1] frames (includes per-frame text such as Qwen3-VL timestamps)."""
    lengths = []
    for count in frames:
        video = VideoPart(frames=np.full((count, height, width, 3), 128, dtype=np.uint8))
        item = MCQItem("measure", "?", ("x", "y"), "A", (video,))
        lengths.append(int(encoder.encode(item, count)["input_ids"].shape[1]))
    return (lengths[1] - lengths[0]) / (frames[1] - frames[0])


def item_videos(item: MCQItem, num_frames: int) -> list[DecodedVideo]:
    """The item's videos in prompt order: files / folders sampled to `num_frames` frames, in-memory
    frames as given. Decoding errors name the item."""
    out = []
    for part in item.videos:
        if part.frames is not None:
            total = len(part.frames)
            out.append(DecodedVideo(part.frames, tuple(range(total)), total, part.fps, "memory"))
            continue
        try:
            out.append(read_video(part.path, num_frames))
        except ValueError as e:
            raise TaskError(f"item {item.item_id!r}: {e}") from e
    return out


def video_metadata(video: DecodedVideo) -> dict:
    """transformers' per-video metadata (`VideoMetadata` fields) for frames already sampled."""
    return dict(total_num_frames=video.total_frames, fps=video.fps or 1.0, frames_indices=list(video.indices),
                height=int(video.frames.shape[1]), width=int(video.frames.shape[2]))


class ProcessorEncoder:
    """Prompts for a real model through its transformers processor (`AutoProcessor.from_pretrained`).

    Args:
        processor: the model's processor (tokenizer, video processor and chat template).
        model_type: `model.config.model_type`; one of the families `mminference.patch` supports.
    """

    def __init__(self, processor, model_type: str):
        supported = [t for f in families.FAMILIES for t in f.model_types]
        if model_type not in supported:
            raise ValueError(f"model_type: {model_type!r} is not one of the supported families {supported}")
        if not hasattr(processor, "apply_chat_template"):
            raise TypeError(f"processor: expected a transformers processor, got {type(processor).__name__}")
        self.processor = processor
        self.model_type = model_type

    @staticmethod
    def messages(item: MCQItem) -> list[dict]:
        """One user turn: the context parts in order, then the question block."""
        content = [{"type": "video"} if isinstance(p, VideoPart) else {"type": "text", "text": p.text}
                   for p in item.parts if isinstance(p, (VideoPart, TextPart))]
        content.append({"type": "text", "text": question_text(item)})
        return [{"role": "user", "content": content}]

    def encode(self, item: MCQItem, num_frames: int) -> dict:
        videos = item_videos(item, num_frames)
        text = self.processor.apply_chat_template(self.messages(item), add_generation_prompt=True, tokenize=False)
        # Frames are already sampled: the processor must not sample again; the metadata carries the
        # original frame indices and fps (Qwen models turn them into temporal positions / timestamps).
        inputs = self.processor(text=[text], videos=[v.frames for v in videos],
                                video_metadata=[video_metadata(v) for v in videos], do_sample_frames=False,
                                return_tensors="pt")
        return dict(inputs)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.processor.batch_decode([list(token_ids)], skip_special_tokens=True)[0]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (no special tokens)."""
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
