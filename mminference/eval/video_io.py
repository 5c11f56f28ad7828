"""Reading video frames for evaluation: a video file through the first installed decoder (decord,
PyAV, OpenCV; Pillow for GIF / animated PNG / WebP), or a folder of frame images. Frames are sampled
uniformly (first and last frame included, as lmms-eval's Video-MME task does).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable, Optional

import numpy as np

PIL_VIDEO_SUFFIXES = (".gif", ".png", ".apng", ".webp", ".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoDecodeError(ValueError):
    """A video that cannot be read (missing decoder, unreadable or empty file)."""


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedVideo:
    """`frames` uint8 `(n, H, W, 3)` taken at `indices` of the `total_frames` frames; `fps` of the
    source (None when unknown); `backend` that decoded it."""

    frames: np.ndarray
    indices: tuple[int, ...]
    total_frames: int
    fps: Optional[float]
    backend: str


def sample_indices(total: int, count: int) -> list[int]:
    """`min(count, total)` frame indices spread evenly over [0, total - 1], first and last included."""
    if total < 1 or count < 1:
        raise ValueError(f"total and count must be >= 1, got {total} and {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def _decord(path: str, count: int) -> DecodedVideo:
    decord = importlib.import_module("decord")
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    total = len(reader)
    idx = sample_indices(total, count)
    frames = reader.get_batch(idx).asnumpy()
    return DecodedVideo(frames, tuple(idx), total, float(reader.get_avg_fps()), "decord")


def _pyav(path: str, count: int) -> DecodedVideo:
    av = importlib.import_module("av")
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        total = stream.frames  # 0 when the container does not say: decode to count
        if not total:
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        wanted = sample_indices(total, count) if total else []
        keep, frames = set(wanted), []
        for i, frame in enumerate(container.decode(stream)):
            if i in keep:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= wanted[-1]:
                break
    if len(frames) != len(wanted):
        raise VideoDecodeError(f"video {path!r}: PyAV decoded {len(frames)} of the {len(wanted)} sampled frames")
    return DecodedVideo(np.stack(frames), tuple(wanted), total, fps, "av")


def _opencv(path: str, count: int) -> DecodedVideo:
    cv2 = importlib.import_module("cv2")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise VideoDecodeError(f"video {path!r}: OpenCV cannot open it")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
        frames = []
        idx = sample_indices(total, count) if total > 0 else []
        for i in idx:
            capture.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = capture.read()
            if not ok:
                raise VideoDecodeError(f"video {path!r}: OpenCV cannot read frame {i} of {total}")
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise VideoDecodeError(f"video {path!r}: OpenCV found no frames")
    return DecodedVideo(np.stack(frames), tuple(idx), total, fps, "cv2")


def _pillow_animation(path: str, count: int) -> DecodedVideo:
    from PIL import Image

    with Image.open(path) as image:
        total = getattr(image, "n_frames", 1)
        duration = image.info.get("duration")  # ms per frame
        idx = sample_indices(total, count)
        frames = []
        for i in idx:
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
    fps = 1000.0 / duration if duration else None
    return DecodedVideo(np.stack(frames), tuple(idx), total, fps, "pillow")


def _image_folder(path: str, count: int) -> DecodedVideo:
    from PIL import Image

    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise VideoDecodeError(f"video {path!r}: the folder holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
    idx = sample_indices(len(names), count)
    frames = []
    for i in idx:
        with Image.open(os.path.join(path, names[i])) as image:
            frames.append(np.asarray(image.convert("RGB")))
    if len({f.shape for f in frames}) != 1:
        raise VideoDecodeError(f"video {path!r}: frame images differ in size")
    return DecodedVideo(np.stack(frames), tuple(idx), len(names), None, "images")


FILE_BACKENDS: tuple[tuple[str, Callable[[str, int], DecodedVideo]], ...] = (
    ("decord", _decord), ("av", _pyav), ("cv2", _opencv))


def installed_decoders() -> list[str]:
    """Names of the installed video-file decoders, in the order they are tried."""
    out = []
    for name, _ in FILE_BACKENDS:
        try:
            importlib.import_module(name)
            out.append(name)
        except ImportError:
            pass
    return out


def read_video(path: str, num_frames: int) -> DecodedVideo:
    """`num_frames` frames sampled evenly from a video file or a folder of frame images.

    Backends: a folder -> Pillow per image; .gif / animated .png / .webp / .tiff -> Pillow; other files
    -> the first installed of decord, PyAV, OpenCV (VideoDecodeError naming them when none is)."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not os.path.exists(path):
        raise VideoDecodeError(f"video {path!r} does not exist")
    try:
        if os.path.isdir(path):
            decoded = _image_folder(path, num_frames)
        elif path.lower().endswith(PIL_VIDEO_SUFFIXES):
            decoded = _pillow_animation(path, num_frames)
        else:
            decoders = installed_decoders()
            if not decoders:
                raise VideoDecodeError(
                    f"video {path!r}: no video decoder is installed; install one of decord, av (PyAV) or "
                    f"opencv-python (Pillow reads only {', '.join(PIL_VIDEO_SUFFIXES)} and folders of frame "
                    f"images)")
            decoded = dict(FILE_BACKENDS)[decoders[0]](path, num_frames)
    except VideoDecodeError:
        raise
    except Exception as e:  # a decoder's own error type: keep its message, name the file
        raise VideoDecodeError(f"video {path!r} cannot be decoded: {type(e).__name__}: {e}") from e
    if decoded.frames.ndim != 4 or decoded.frames.shape[-1] != 3 or not len(decoded.frames):
        raise VideoDecodeError(f"video {path!r}: decoded frames have shape {decoded.frames.shape}")
    return decoded
