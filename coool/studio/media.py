"""Browser-playable copies of the videos, their frame counts, and thumbnails, all cached on disk."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

from coool.decode import VideoError, check_file, probe, read_frames
from coool.files import atomic_write_bytes

THUMB_WIDTH = 192
STRIP_THUMBS = 8

Transcoder = Callable[[Path, Path], Path]


@dataclass(frozen=True)
class VideoMeta:
    frames: int
    fps: float


# --- H.264 for browsers ------------------------------------------------------------


@lru_cache(maxsize=1)
def _h264_encoder() -> tuple[str, tuple[str, ...]]:
    """The best H.264 encoder this ffmpeg build has, with its quality options."""
    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-encoders"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    names = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1}
    if "libx264" in names:
        return "libx264", ("-preset", "veryfast", "-crf", "23")
    if "libopenh264" in names:
        return "libopenh264", ("-b:v", "2M")
    raise RuntimeError("the bundled ffmpeg has no H.264 encoder (libx264 or libopenh264)")


def transcode_h264(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Re-encode a video to H.264 MP4 (yuv420p, +faststart, no audio) browsers can play.

    Written to a temp file beside ``dst`` and renamed, so ``dst`` is never partial.
    """
    src, dst = Path(src), Path(dst)
    check_file(src)
    encoder, options = _h264_encoder()
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Named like coool.files temp files (writer pid inside) so a later run can sweep a killed one's.
    tmp = dst.parent / f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(src),
        "-map", "0:v:0", "-an",
        # yuv420p needs even sizes; odd ones are cropped by one pixel.
        "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2",
        "-c:v", encoder, *options,
        "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        "-f", "mp4", str(tmp),
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:]) or f"exit code {result.returncode}"
            raise VideoError(src, f"ffmpeg could not transcode to H.264: {tail}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def strip_frames(frames: int, k: int = STRIP_THUMBS) -> list[int]:
    """k evenly spaced 1-based frame numbers from first to last."""
    if frames <= k:
        return list(range(1, frames + 1))
    return sorted({1 + round(i * (frames - 1) / (k - 1)) for i in range(k)})


def _fresh(cached: Path, source: Path) -> bool:
    try:
        return cached.stat().st_mtime_ns >= source.stat().st_mtime_ns and cached.stat().st_size > 0
    except OSError:
        return False


class Media:
    def __init__(self, h264_dir: Path, thumbs_dir: Path, transcode: Transcoder = transcode_h264) -> None:
        self.h264_dir = h264_dir
        self.thumbs_dir = thumbs_dir
        self._transcode = transcode
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._meta: dict[Path, tuple[int, VideoMeta | None]] = {}
        # One background worker: warming the next A/B video must not starve page requests.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-transcode")

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def h264(self, video: int, source: Path) -> Path:
        """The H.264 copy of a video, transcoded once (again only if the original changes)."""
        target = self.h264_dir / f"{video}.mp4"
        with self._lock(f"h264:{video}"):  # concurrent range requests must not transcode twice
            if not _fresh(target, source):
                self._transcode(source, target)
        return target

    def prefetch(self, video: int, source: Path) -> None:
        """Transcode in the background so the next page plays at once."""
        if not _fresh(self.h264_dir / f"{video}.mp4", source):
            self._pool.submit(self._quiet_h264, video, source)

    def _quiet_h264(self, video: int, source: Path) -> None:
        try:
            self.h264(video, source)
        except (VideoError, OSError, RuntimeError):
            pass  # the page's own request will report it

    def meta(self, source: Path) -> VideoMeta | None:
        """Frame count and rate of the original (None if it can't be read)."""
        try:
            stamp = source.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._meta.get(source)
        if cached is None or cached[0] != stamp:
            try:
                info = probe(source)
                cached = (stamp, VideoMeta(info.frames, info.fps or 30.0))
            except VideoError:
                cached = (stamp, None)
            self._meta[source] = cached
        return cached[1]

    def thumbnail(self, video: int, source: Path, frame: int) -> Path:
        """A small JPEG of one frame (ValueError for a frame outside the video).

        A miss renders the whole strip too, in the same forward decoding pass:
        the page asks for all of them at once.
        """
        folder = self.thumbs_dir / str(video)
        with self._lock(f"thumb:{video}"):
            if not _fresh(folder / f"{frame}.jpg", source):
                meta = self.meta(source)
                if meta is None or not 1 <= frame <= meta.frames:
                    raise ValueError(f"frame {frame} is not in video {video}")
                wanted = {frame} | {f for f in strip_frames(meta.frames) if not _fresh(folder / f"{f}.jpg", source)}
                for number, image in read_frames(source, wanted):
                    atomic_write_bytes(folder / f"{number}.jpg", _jpeg(image, source, number))
        return folder / f"{frame}.jpg"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _jpeg(image: np.ndarray, source: Path, frame: int) -> bytes:
    h, w = image.shape[:2]
    small = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise VideoError(source, f"cannot encode frame {frame} as JPEG")
    return data.tobytes()
