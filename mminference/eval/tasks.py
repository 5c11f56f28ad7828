"""Multiple-choice video QA items (Video-MME style) and task files.

An item is a prompt context (video and text parts, in prompt order), a question, its options and the
letter of the right one, plus free metadata (Video-MME: duration, domain, task_type; NIAH: depth,
frames, needle position).

Task file: a JSON list of records or JSON Lines (one record a line). A record:

    {"id": "001-1",                               # or "question_id"
     "video": "videos/001.mp4",                   # a video file or a folder of frame images,
                                                  #   relative to the task file (or video_root)
     "question": "What is the man holding?",
     "options": ["A. A cup", "B. A pen", "C. A phone", "D. A book"],   # or without "A. " prefixes,
                                                  #   or {"A": "A cup", "B": ...}
     "answer": "C",
     "duration": "short", "domain": "Knowledge", "task_type": "Object Recognition"}  # any other keys:
                                                                                       # metadata
Instead of "video", "context": [{"video": PATH}, {"text": "..."}, ...] gives interleaved parts.
Every problem raises `TaskError` naming the file, the record number and its id.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import string
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

LETTERS = string.ascii_uppercase
_PREFIX = re.compile(r"^\s*\(?([A-Z])[.):]\s*")  # "A. text", "A) text", "(A) text", "A: text"
_KNOWN = ("id", "question_id", "video", "video_path", "context", "question", "options", "answer")


class TaskError(ValueError):
    """A task item that cannot be used; the message names the item."""


@dataclasses.dataclass(frozen=True, eq=False)
class VideoPart:
    """A video in the prompt: `path` (a video file or a folder of frame images, sampled to the run's
    frame count) or `frames`, uint8 `(T, H, W, 3)`, used as given. `fps`: frames per second of
    `frames` (models that time-stamp frames use it)."""

    path: Optional[str] = None
    frames: Optional[np.ndarray] = None
    fps: float = 1.0

    def __post_init__(self):
        if (self.path is None) == (self.frames is None):
            raise TaskError("VideoPart: give exactly one of path and frames")
        if self.frames is not None:
            f = self.frames
            if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or not len(f):
                raise TaskError(f"VideoPart.frames: expected uint8 (T, H, W, 3) with T >= 1, got "
                                f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
        if not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise TaskError(f"VideoPart.fps must be > 0, got {self.fps!r}")


@dataclasses.dataclass(frozen=True)
class TextPart:
    """Text in the prompt context (before the question)."""

    text: str


Part = Union[VideoPart, TextPart]


@dataclasses.dataclass(frozen=True, eq=False)
class MCQItem:
    """One multiple-choice question. `options` are the option texts without letter prefixes (option i
    has letter LETTERS[i]); `answer` is a letter; `parts` the context in prompt order."""

    item_id: str
    question: str
    options: tuple[str, ...]
    answer: str
    parts: tuple[Part, ...]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = f"item {self.item_id!r}"
        if not isinstance(self.item_id, str) or not self.item_id:
            raise TaskError(f"item_id must be a non-empty string, got {self.item_id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise TaskError(f"{where}: question must be a non-empty string")
        if not 2 <= len(self.options) <= len(LETTERS) or not all(isinstance(o, str) and o.strip()
                                                                 for o in self.options):
            raise TaskError(f"{where}: options must be 2 to 26 non-empty strings, got {list(self.options)!r}")
        if self.answer not in self.letters:
            raise TaskError(f"{where}: answer {self.answer!r} is not one of the option letters {self.letters}")
        if not self.parts or not all(isinstance(p, (VideoPart, TextPart)) for p in self.parts):
            raise TaskError(f"{where}: parts must be a non-empty sequence of VideoPart / TextPart")
        if not any(isinstance(p, VideoPart) for p in self.parts):
            raise TaskError(f"{where}: the context has no video")

    @property
    def letters(self) -> str:
        return LETTERS[:len(self.options)]

    @property
    def videos(self) -> list[VideoPart]:
        return [p for p in self.parts if isinstance(p, VideoPart)]


def parse_options(options: Any, where: str) -> tuple[str, ...]:
    """Option texts from a list (all "A. ..."-prefixed in order, or none prefixed) or a letter dict."""
    if isinstance(options, Mapping):
        keys = list(options)
        if keys != list(LETTERS[:len(keys)]):
            raise TaskError(f"{where}: option letters {keys} must be A, B, C, ... in order")
        options = [options[k] for k in keys]
    elif not isinstance(options, Sequence) or isinstance(options, str):
        raise TaskError(f"{where}: options must be a list or a letter -> text object, got {type(options).__name__}")
    if not 2 <= len(options) <= len(LETTERS) or not all(isinstance(o, str) for o in options):
        raise TaskError(f"{where}: options must be 2 to 26 strings, got {list(options)!r}")
    prefixes = [_PREFIX.match(o) for o in options]
    if any(prefixes):
        got = [m.group(1) if m else None for m in prefixes]
        if got != list(LETTERS[:len(options)]):
            raise TaskError(f"{where}: option letters {got} must be {list(LETTERS[:len(options)])} "
                            f"(prefix every option with its letter, in order, or none)")
        options = [o[m.end():] for o, m in zip(options, prefixes)]
    return tuple(o.strip() for o in options)


def _video_path(value: Any, base: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise TaskError(f"{where}: video must be a path string, got {value!r}")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.exists(path):
        raise TaskError(f"{where}: video {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise TaskError(f"{where}: video {path!r} is not readable")
    return path


def item_from_record(record: Any, base: str, where: str) -> MCQItem:
    """One `MCQItem` from a task-file record (see the module docstring); `where` prefixes errors."""
    if not isinstance(record, Mapping):
        raise TaskError(f"{where}: expected an object, got {type(record).__name__}")
    item_id = record.get("id", record.get("question_id"))
    if item_id is None:
        raise TaskError(f"{where}: missing field 'id' (or 'question_id')")
    where = f"{where} (id {str(item_id)!r})"
    for field in ("question", "options", "answer"):
        if field not in record:
            raise TaskError(f"{where}: missing field {field!r}")
    video = record.get("video", record.get("video_path"))
    if (video is None) == ("context" not in record):
        raise TaskError(f"{where}: give exactly one of 'video' and 'context'")
    if video is not None:
        parts: list[Part] = [VideoPart(path=_video_path(video, base, where))]
    else:
        context = record["context"]
        if not isinstance(context, list) or not context:
            raise TaskError(f"{where}: context must be a non-empty list of {{'video': PATH}} / {{'text': STR}}")
        parts = []
        for j, entry in enumerate(context):
            if isinstance(entry, Mapping) and set(entry) == {"video"}:
                parts.append(VideoPart(path=_video_path(entry["video"], base, f"{where} context[{j}]")))
            elif isinstance(entry, Mapping) and set(entry) == {"text"} and isinstance(entry["text"], str):
                parts.append(TextPart(entry["text"]))
            else:
                raise TaskError(f"{where}: context[{j}] must be {{'video': PATH}} or {{'text': STR}}, got {entry!r}")
    answer = record["answer"]
    options = parse_options(record["options"], where)
    if not isinstance(answer, str) or answer.strip() not in LETTERS[:len(options)]:
        raise TaskError(f"{where}: answer {answer!r} is not one of the option letters "
                        f"{LETTERS[:len(options)]}")
    metadata = {k: v for k, v in record.items() if k not in _KNOWN}
    try:
        return MCQItem(str(item_id), record["question"] if isinstance(record["question"], str) else "",
                       options, answer.strip(), tuple(parts), metadata)
    except TaskError as e:
        raise TaskError(f"{where}: {e}") from None


def load_tasks(path: str, video_root: Optional[str] = None) -> list[MCQItem]:
    """Every item of a task file (JSON list or JSON Lines), in file order. Video paths are relative to
    `video_root` (default: the file's folder) and must exist. Duplicate ids are an error."""
    if not os.path.isfile(path):
        raise TaskError(f"tasks: {path!r} is not a file")
    base = video_root if video_root is not None else os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    records: list[tuple[int, Any]] = []
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = list(enumerate(json.loads(text)))
        else:
            for n, line in enumerate(text.splitlines()):
                if line.strip():
                    records.append((n, json.loads(line)))
    except json.JSONDecodeError as e:
        raise TaskError(f"tasks {path!r}: not JSON / JSON Lines ({e})") from None
    items, seen = [], {}
    for n, record in records:
        where = f"tasks {os.path.basename(path)!r} record {n}"
        item = item_from_record(record, base, where)
        if item.item_id in seen:
            raise TaskError(f"{where}: duplicate id {item.item_id!r} (also record {seen[item.item_id]})")
        seen[item.item_id] = n
        items.append(item)
    if not items:
        raise TaskError(f"tasks {path!r}: no items")
    return items
