"""Decoding videos: probe a file, count its frames, read selected frames.

Frame numbers are 1-based everywhere: the first decoded frame is frame 1.

Decoding is always one forward pass (``grab()`` for frames nobody needs,
``retrieve()`` only for the wanted ones): seeking in MPEG-4 Part 2, the
challenge's codec, is not frame-accurate, so frame ``n`` is whatever the
decoder produces ``n``-th, never what a seek claims to land on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# OpenCV reports a FourCC; people (and ffprobe) speak codec names.
_CODEC_NAMES: dict[str, str] = {
    **dict.fromkeys(("fmp4", "mp4v", "xvid", "divx", "dx50"), "mpeg4"),
    **dict.fromkeys(("avc1", "avc3", "h264", "x264"), "h264"),
    **dict.fromkeys(("hev1", "hvc1", "hevc", "h265"), "hevc"),
    "mjpg": "mjpeg",
    "vp80": "vp8",
    "vp90": "vp9",
    "av01": "av1",
}


class VideoError(Exception):
    """A video or heatmap file that cannot be used, and why."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Keep both fields across pickling (task results may cross processes).
        return (type(self), (self.path, self.problem))


@dataclass
class VideoInfo:
    path: Path
    frames: int  # decodable frames, verified (see probe)
    fps: float
    width: int
    height: int
    codec: str  # ffmpeg-style name: mpeg4, h264, ...
    fourcc: str = ""
    frames_counted: bool = False  # True when the container's count was wrong and we decoded all


# --- probing -----------------------------------------------------------------


def open_video(path: Path) -> cv2.VideoCapture:
    """An opened OpenCV capture of path (VideoError if it can't be opened); the caller releases it."""
    # Force the FFmpeg backend: other backends treat names with '%' as image sequences.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(path, "cannot be opened as a video (corrupt or unsupported file)")
    return cap


def check_file(path: Path) -> None:
    """Raise VideoError unless path is a non-empty regular file."""
    if not path.exists():
        raise VideoError(path, "file not found")
    if not path.is_file():
        raise VideoError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty (0 bytes)")


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = code.to_bytes(4, "little").decode("latin-1") if code > 0 else ""
    return text.strip("\0 ")


def _estimated_count(cap: cv2.VideoCapture) -> int:
    """The container's frame count (may be an estimate from duration x fps)."""
    value = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(value) if np.isfinite(value) and value > 0 else 0


def _tail_confirms(path: Path, n: int) -> bool:
    """True if frame n decodes, it is reported as frame n, and nothing follows.

    A cheap check of the container's count. An inexact seek cannot fake it:
    landing early leaves a frame after the read, landing elsewhere gives a
    position other than n; either way we fall back to counting.
    """
    if n <= 0:
        return False
    cap = open_video(path)
    try:
        if not cap.set(cv2.CAP_PROP_POS_FRAMES, n - 1):
            return False
        if not cap.grab():
            return False
        if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) != n:
            return False
        return not cap.grab()
    finally:
        cap.release()


def count_frames(path: str | os.PathLike[str]) -> int:
    """Count frames by decoding the whole stream: slow but exact."""
    path = Path(path)
    cap = open_video(path)
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, rate, codec and a trustworthy frame count of a video.

    The frame count is the container's count when the tail confirms it (the
    last frame decodes and nothing follows); otherwise every frame is decoded
    and counted. The first frame must decode too, so a file that opens but
    holds no picture is rejected here and not deep inside a later stage.
    """
    path = Path(path)
    check_file(path)
    cap = open_video(path)
    try:
        ok, first = cap.read()
        if not ok or first is None:
            raise VideoError(path, "no decodable frames (0 frames)")
        height, width = first.shape[:2]
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        fourcc = _fourcc(cap)
        estimate = _estimated_count(cap)
    finally:
        cap.release()
    counted = not _tail_confirms(path, estimate)
    frames = count_frames(path) if counted else estimate
    if frames <= 0:
        raise VideoError(path, "no decodable frames (0 frames)")
    return VideoInfo(
        path=path,
        frames=frames,
        fps=fps if np.isfinite(fps) and fps > 0 else 0.0,
        width=int(width),
        height=int(height),
        codec=_CODEC_NAMES.get(fourcc.lower(), fourcc.lower() or "unknown"),
        fourcc=fourcc,
        frames_counted=counted,
    )


# --- decoding ----------------------------------------------------------------


def _wanted(path: Path, numbers: Iterable[int], frames: int) -> list[int]:
    wanted = sorted({int(n) for n in numbers})
    bad = [n for n in wanted if not 1 <= n <= frames]
    if bad:
        raise VideoError(path, f"frame numbers {bad[:5]} outside 1..{frames}")
    return wanted


def read_frames(path: str | os.PathLike[str], numbers: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame number, BGR uint8 image) for each wanted 1-based number, ascending.

    Duplicates are yielded once. Numbers are checked eagerly (VideoError for
    any outside 1..frames) before the first frame is decoded; decoding itself
    is one forward pass that stops after the last wanted frame.
    """
    path = Path(path)
    info = probe(path)
    wanted = _wanted(path, numbers, info.frames)
    return _sequential(path, wanted)


def _sequential(path: Path, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    if not wanted:
        return
    cap = open_video(path)
    try:
        targets = iter(wanted)
        target = next(targets)
        n = 0
        while True:
            if not cap.grab():
                raise VideoError(path, f"decoding stopped after frame {n}, before frame {target}")
            n += 1
            if n != target:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                raise VideoError(path, f"frame {n} could not be decoded")
            yield n, image
            target = next(targets, None)
            if target is None:
                return
    finally:
        cap.release()

