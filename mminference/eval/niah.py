"""Needle-in-a-haystack tasks with real frames, as multiple-choice items.

V-NIAH: a haystack video (`synthetic.moving_shapes_video`: moving shapes on a static textured
background) with one needle frame inserted at each depth: a white frame with one word in black
capitals. The question asks for the word; the options are four needle words.

MM-NIAH: the haystack frames cut into `segments` video chunks with filler text after each (text is
about `text_fraction` of the context tokens); the needle is a sentence "The secret number is NNNN."
placed in the text, or a needle frame placed among the frames. Both ask a four-option question.

Depth d places the needle at fraction d of its own modality's haystack: frame index
round(d * (n - 1)) among all n frames, or sentence boundary round(d * sentences) among all filler
sentences in order (0: first, 1: last). Every item carries its ground truth in `metadata`: task,
frames, depth, needle (the word or number), needle_frame (index among all frames, None for a text
needle) and, for MM-NIAH, needle_kind, needle_part (index into `item.parts`), position (context
tokens before the needle over all context tokens) and text_fraction (text tokens over all context
tokens).
"""

from __future__ import annotations

import random
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..synthetic import moving_shapes_video
from .tasks import MCQItem, TextPart, VideoPart

NEEDLE_WORDS = ("APPLE", "RIVER", "TIGER", "CLOUD", "PIANO", "LEMON", "ROBOT", "CANDLE", "ROCKET", "GARDEN",
                "PLANET", "WINDOW", "BRIDGE", "CASTLE", "DRAGON", "FOREST")
WORD_QUESTION = ("One frame of the video shows a single word in black capital letters on a white background. "
                 "Which word is it?")
NUMBER_QUESTION = "The text mentions a secret number. What is the secret number?"
NEEDLE_SENTENCE = "The secret number is {}."
OPTIONS = 4

_ADJECTIVES = ("quiet", "green", "small", "old", "bright", "slow", "narrow", "warm", "empty", "distant")
_NOUNS = ("boat", "garden", "train", "market", "river", "house", "road", "field", "lamp", "bridge")
_VERBS = ("passes", "faces", "follows", "waits near", "leans on", "looks at", "crosses", "circles")


def render_word(word: str, height: int, width: int) -> np.ndarray:
    """A needle frame: uint8 `(height, width, 3)`, white, `word` in black, as large as fits, centred."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    size = max(4, height // 2)
    while True:  # largest font size whose text box fits in 90% of the frame
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
        if (right - left <= 0.9 * width and bottom - top <= 0.9 * height) or size <= 4:
            break
        size -= 1
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), word, fill="black", font=font)
    return np.asarray(image).copy()


def haystack_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 `(count, height, width, 3)` frames of `moving_shapes_video`."""
    video, _ = moving_shapes_video(count, height, width, seed=seed)
    return (video * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _check_grid(frame_counts: Sequence[int], depths: Sequence[float], minimum: int) -> None:
    if not frame_counts or any(isinstance(n, bool) or not isinstance(n, int) or n < minimum for n in frame_counts):
        raise ValueError(f"frame_counts must be ints >= {minimum}, got {list(frame_counts)!r}")
    if not depths or any(not isinstance(d, (int, float)) or not 0.0 <= d <= 1.0 for d in depths):
        raise ValueError(f"depths must be numbers in [0, 1], got {list(depths)!r}")


def _choices(answer: str, pool: Sequence[str], rng: random.Random) -> tuple[tuple[str, ...], str]:
    """Four options: the answer and three others from `pool`, shuffled; and the answer's letter."""
    others = rng.sample([p for p in pool if p != answer], OPTIONS - 1)
    options = others + [answer]
    rng.shuffle(options)
    return tuple(options), "ABCD"[options.index(answer)]


def needle_frame_index(depth: float, frames: int) -> int:
    """Index of the needle frame among `frames` frames at `depth`."""
    return int(round(depth * (frames - 1)))


def make_vniah(frame_counts: Sequence[int], depths: Sequence[float], height: int = 64, width: int = 64,
               seed: int = 0, fps: float = 1.0) -> list[MCQItem]:
    """One item per (frame count, depth): `n` frames = `n - 1` haystack frames (the same haystack for
    every depth of a length) with the needle frame inserted at `needle_frame_index(depth, n)`."""
    _check_grid(frame_counts, depths, 2)
    items = []
    for n in frame_counts:
        hay = haystack_frames(n - 1, height, width, seed=seed + n)
        for d_index, depth in enumerate(depths):
            rng = random.Random(f"vniah-{seed}-{n}-{d_index}")
            word = rng.choice(NEEDLE_WORDS)
            options, letter = _choices(word, NEEDLE_WORDS, rng)
            index = needle_frame_index(depth, n)
            frames = np.concatenate([hay[:index], render_word(word, height, width)[None], hay[index:]])
            items.append(MCQItem(f"vniah-f{n}-d{depth:.3f}", WORD_QUESTION, options, letter,
                                 (VideoPart(frames=frames, fps=fps),),
                                 dict(task="v-niah", frames=n, depth=float(depth), needle=word, needle_frame=index)))
    return items


def filler_sentence(rng: random.Random) -> str:
    """A plain filler sentence (lower-case words, no digits, never "secret")."""
    a, b = rng.sample(_NOUNS, 2)
    return f"The {rng.choice(_ADJECTIVES)} {a} {rng.choice(_VERBS)} the {rng.choice(_ADJECTIVES)} {b}."


def approximate_tokens(text: str) -> int:
    """About four characters a token (English BPE); pass a tokenizer's count for exact budgets."""
    return max(1, round(len(text) / 4))


def chunk_sizes(frames: int, segments: int, multiple: int) -> list[int]:
    """`segments` chunk sizes, each a positive multiple of `multiple`, summing to `frames`, as equal as
    possible (earlier chunks get the extra units)."""
    if frames % multiple or frames < segments * multiple:
        raise ValueError(f"frames: {frames} cannot be cut into {segments} chunks of whole multiples of {multiple}")
    units, extra = divmod(frames // multiple, segments)
    return [(units + (i < extra)) * multiple for i in range(segments)]


def _filler(target_tokens: float, rng: random.Random, count_tokens: Callable[[str], int]) -> list[str]:
    """Sentences whose joined text is as close to `target_tokens` as whole sentences allow (>= 1)."""
    sentences, total = [], 0
    while True:
        sentence = filler_sentence(rng)
        cost = count_tokens(" " + sentence)
        if sentences and abs(total + cost - target_tokens) >= abs(total - target_tokens):
            return sentences
        sentences.append(sentence)
        total += cost


def make_mmniah(frame_counts: Sequence[int], depths: Sequence[float], tokens_per_frame: float,
                needle_kinds: Sequence[str] = ("text", "frame"), segments: int = 4, text_fraction: float = 0.25,
                count_tokens: Optional[Callable[[str], int]] = None, height: int = 64, width: int = 64,
                frame_multiple: int = 2, seed: int = 0, fps: float = 1.0) -> list[MCQItem]:
    """One item per (frame count, depth, needle kind).

    Args:
        tokens_per_frame: language-model tokens one frame costs for the target model (e.g. 8 for the
            tiny Qwen models at 32 px; Qwen2.5-VL at 448 px: 128).
        needle_kinds: "text" (a sentence in the text) and / or "frame" (a needle frame).
        segments: video chunks, each followed by a text segment.
        text_fraction: text tokens / (text + video tokens) of the context, about.
        count_tokens: tokens of a text for the target tokenizer (default `approximate_tokens`).
        frame_multiple: every chunk holds a multiple of this many frames (Qwen: temporal patch 2).
    Each item has exactly n frames (a frame needle replaces nothing: n - 1 haystack frames + needle).
    """
    _check_grid(frame_counts, depths, segments * frame_multiple)
    if not 0.0 < text_fraction < 1.0:
        raise ValueError(f"text_fraction must be in (0, 1), got {text_fraction!r}")
    if not tokens_per_frame > 0:
        raise ValueError(f"tokens_per_frame must be > 0, got {tokens_per_frame!r}")
    if not needle_kinds or any(k not in ("text", "frame") for k in needle_kinds):
        raise ValueError(f"needle_kinds must be 'text' and / or 'frame', got {list(needle_kinds)!r}")
    count = count_tokens or approximate_tokens
    items = []
    for n in frame_counts:
        sizes = chunk_sizes(n, segments, frame_multiple)
        text_target = n * tokens_per_frame * text_fraction / (1.0 - text_fraction) / segments
        for d_index, depth in enumerate(depths):
            for kind in needle_kinds:
                rng = random.Random(f"mmniah-{seed}-{n}-{d_index}-{kind}")
                texts = [_filler(text_target, rng, count) for _ in range(segments)]
                items.append(_mm_item(n, depth, kind, sizes, texts, tokens_per_frame, count, rng, height, width,
                                      seed, fps))
    return items


def _mm_item(n, depth, kind, sizes, texts, tokens_per_frame, count, rng, height, width, seed, fps) -> MCQItem:
    """Assembles one MM-NIAH item: chunk i of sizes[i] frames, then texts[i] (sentences joined by spaces)."""
    hay = haystack_frames(n - 1 if kind == "frame" else n, height, width, seed=seed + n)
    texts = [list(t) for t in texts]
    if kind == "frame":
        needle_frame = needle_frame_index(depth, n)
        chunk = int(np.searchsorted(np.cumsum(sizes), needle_frame, side="right"))
        word = rng.choice(NEEDLE_WORDS)
        options, letter = _choices(word, NEEDLE_WORDS, rng)
        frames = np.concatenate([hay[:needle_frame], render_word(word, height, width)[None], hay[needle_frame:]])
        needle, question, needle_part = word, WORD_QUESTION, 2 * chunk
        before_tokens = (sum(s * tokens_per_frame for s in sizes[:chunk])
                         + sum(count(" ".join(t)) for t in texts[:chunk])
                         + (needle_frame - sum(sizes[:chunk])) * tokens_per_frame)
    else:
        slot = int(round(depth * sum(len(t) for t in texts)))  # among all sentence boundaries, in order
        segment = 0
        while slot > len(texts[segment]):
            slot -= len(texts[segment])
            segment += 1
        number = rng.randrange(1000, 10000)
        distractors: set[int] = set()
        while len(distractors) < OPTIONS - 1:
            distractors.add(rng.randrange(1000, 10000))
            distractors.discard(number)
        options, letter = _choices(str(number), [str(number)] + [str(x) for x in sorted(distractors)], rng)
        texts[segment].insert(slot, NEEDLE_SENTENCE.format(number))
        frames, needle_frame, needle, question = hay, None, str(number), NUMBER_QUESTION
        needle_part = 2 * segment + 1
        before_tokens = (sum(s * tokens_per_frame for s in sizes[:segment + 1])
                         + sum(count(" ".join(t)) for t in texts[:segment])
                         + (count(" ".join(texts[segment][:slot]) + " ") if slot else 0))
    parts, start = [], 0
    for size, sentences in zip(sizes, texts):
        parts.append(VideoPart(frames=frames[start:start + size], fps=fps))
        parts.append(TextPart(" ".join(sentences)))
        start += size
    text_tokens = sum(count(p.text) for p in parts if isinstance(p, TextPart))
    metadata = dict(task="mm-niah", frames=n, depth=float(depth), needle_kind=kind, needle=needle,
                    needle_frame=needle_frame, needle_part=needle_part,
                    position=before_tokens / (text_tokens + n * tokens_per_frame),
                    text_fraction=text_tokens / (text_tokens + n * tokens_per_frame))
    return MCQItem(f"mmniah-{kind}-f{n}-d{depth:.3f}", question, options, letter, tuple(parts), metadata)
