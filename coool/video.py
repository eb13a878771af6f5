"""Stage 1: dashcam videos and gaze heatmaps to the frames later stages read.

Frame numbers are 1-based everywhere: the first decoded frame is frame 1.

Heatmap length rule: video frame ``n`` is paired with heatmap frame
``min(n, heatmap_frames)``. A heatmap shorter than its video holds its last
frame; the extra frames of a longer heatmap are ignored. Whenever the lengths
differ the manifest records that the rule was applied.

Decoding is always one forward pass (``grab()`` for frames nobody needs,
``retrieve()`` only for the wanted ones): seeking in MPEG-4 Part 2, the
challenge's codec, is not frame-accurate, so frame ``n`` is whatever the
decoder produces ``n``-th, never what a seek claims to land on.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from pydantic import BaseModel, ValidationError

from coool.files import atomic_write_bytes, atomic_write_json, file_sha256

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv")
IMAGE_FORMATS: dict[str, tuple[str, list[int]]] = {
    # Low PNG compression: these files are read once by a model server, speed wins.
    # One fixed row filter (SUB) instead of libpng's per-row adaptive choice: 2-3x
    # faster to encode for ~10% more bytes, and PNG stays lossless (same pixels).
    "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
            + ([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])),
    "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
}
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

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


def _open(path: Path) -> cv2.VideoCapture:
    # Force the FFmpeg backend: other backends treat names with '%' as image sequences.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(path, "cannot be opened as a video (corrupt or unsupported file)")
    return cap


def _check_file(path: Path) -> None:
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
    cap = _open(path)
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
    cap = _open(path)
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
    _check_file(path)
    cap = _open(path)
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
    cap = _open(path)
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


# --- stacking ----------------------------------------------------------------


def _as_bgr(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"{what} must be a grey, BGR or BGRA image, got shape {image.shape}")


def _fit_width(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(1, int(round(h * width / w)))
    # INTER_AREA: the right filter for shrinking (averages, no aliasing).
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def stack(heatmap: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The heatmap ABOVE the video frame in one BGR image of one width.

    When widths differ the wider image is scaled down to the smaller width,
    keeping its aspect ratio (never upscaled: no invented detail).
    """
    heatmap = _as_bgr(heatmap, "heatmap")
    frame = _as_bgr(frame, "frame")
    width = min(heatmap.shape[1], frame.shape[1])
    return np.vstack([_fit_width(heatmap, width), _fit_width(frame, width)])


def heatmap_frame_for(n: int, heatmap_frames: int) -> int:
    """The heatmap length rule: video frame n uses heatmap frame min(n, heatmap_frames)."""
    return min(n, heatmap_frames)


def caption_frame_numbers(frames: int, every: int = 10) -> list[int]:
    """Frames 1, 1+every, 1+2*every, ... up to ``frames`` (stage 2's sampled frames)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return list(range(1, frames + 1, every))


# --- manifests -----------------------------------------------------------------


class StackedFrame(BaseModel):
    frame: int  # 1-based video frame number
    heatmap_frame: int  # the heatmap frame stacked above it (length rule)
    path: str  # relative to the manifest's folder, so results can move


class HeatmapRule(BaseModel):
    video_frames: int
    heatmap_frames: int
    applied: bool  # True when the lengths differ
    detail: str


class FrameManifest(BaseModel):
    """What stage 1 wrote for one video: ``<out_dir>/manifest.json``."""

    version: int = MANIFEST_VERSION
    video_id: int | None
    video: VideoInfo
    heatmap: VideoInfo
    video_sha256: str
    heatmap_sha256: str
    every: int
    image_format: str
    stacked_width: int
    stacked_height: int
    heatmap_rule: HeatmapRule
    frames: list[StackedFrame]
    problems: list[str] = []  # non-fatal notes (e.g. a container frame count that was wrong)

    def paths(self, out_dir: str | os.PathLike[str]) -> dict[int, Path]:
        """Frame number -> path of its stacked image under out_dir."""
        return {f.frame: Path(out_dir) / f.path for f in self.frames}


def video_id_of(path: str | os.PathLike[str]) -> int | None:
    """The video id of ``<id>.mp4``: ASCII digits only (not "²" or other scripts' digits),
    at most 18 of them (an id must fit the submission's 64-bit integer column)."""
    stem = Path(path).stem
    return int(stem) if re.fullmatch(r"[0-9]{1,18}", stem) else None


_video_id = video_id_of


def _format(image_format: str) -> str:
    fmt = image_format.lower().lstrip(".")
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    return fmt


def _encode(image: np.ndarray, fmt: str) -> bytes:
    ext, params = IMAGE_FORMATS[fmt]
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {fmt} image of shape {image.shape}")
    return buf.tobytes()


# Encoded images waiting for the writer thread: enough to keep it busy, few enough to bound memory.
_WRITE_AHEAD = 2


def write_images(images: Iterable[tuple[Path, np.ndarray]], fmt: str, ahead: int = _WRITE_AHEAD) -> None:
    """Encode and write each (path, image) atomically, in a thread beside the caller's decoding.

    OpenCV releases the GIL while it encodes, so the next frames decode while
    this one compresses; at most ``ahead`` images wait (bounded memory). The
    first error (an image it can't encode, a full disk) is raised here. An
    image is written, and its array free for reuse, once ``ahead`` later
    ones were handed over.
    """
    def write(path: Path, image: np.ndarray) -> Path:
        return atomic_write_bytes(path, _encode(image, fmt))

    pending: deque[Future[Path]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coool-encode") as encoder:
        try:
            for path, image in images:
                pending.append(encoder.submit(write, path, image))
                while len(pending) > ahead:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:  # one side failed: write nothing more
                future.cancel()
            if (close := getattr(images, "close", None)) is not None:
                close()  # a generator releases its decoders now, not at garbage collection


def load_manifest(out_dir: str | os.PathLike[str]) -> FrameManifest | None:
    """The manifest in out_dir, or None if absent or unreadable (then redo the work)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        return FrameManifest.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def _reusable(
    out_dir: Path, video_sha: str, heatmap_sha: str, every: int, fmt: str
) -> FrameManifest | None:
    done = load_manifest(out_dir)
    if done is None or done.version != MANIFEST_VERSION:
        return None
    same = (done.video_sha256, done.heatmap_sha256, done.every, done.image_format) == (
        video_sha,
        heatmap_sha,
        every,
        fmt,
    )
    if same and all(p.is_file() for p in done.paths(out_dir).values()):
        return done
    return None


def _rule(video: VideoInfo, heatmap: VideoInfo) -> HeatmapRule:
    v, h = video.frames, heatmap.frames
    if h < v:
        detail = f"heatmap is shorter ({h} < {v} frames): video frames {h + 1}..{v} use heatmap frame {h}"
    elif h > v:
        detail = f"heatmap is longer ({h} > {v} frames): heatmap frames {v + 1}..{h} are ignored"
    else:
        detail = "same length: video frame n uses heatmap frame n"
    return HeatmapRule(video_frames=v, heatmap_frames=h, applied=h != v, detail=detail)


def extract_caption_frames(
    video: str | os.PathLike[str],
    heatmap: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    every: int = 10,
    image_format: str = "png",
) -> FrameManifest:
    """Write the stacked (heatmap above video) image of frames 1, 1+every, ... and a manifest.

    Files: ``out_dir/stacked/<frame:06d>.<ext>`` and ``out_dir/manifest.json``
    (written last: it marks the video done). Idempotent: when the manifest
    matches the inputs' hashes, ``every`` and the format and all its images
    exist, it is returned without decoding anything. Heatmap frames follow
    the length rule (module docstring).
    """
    # Absolute paths in the manifest: it must not depend on the caller's cwd.
    video, heatmap, out_dir = Path(video).absolute(), Path(heatmap).absolute(), Path(out_dir)
    fmt = _format(image_format)
    if every < 1:  # fail before any decoding
        raise ValueError(f"every must be >= 1, got {every}")
    _check_file(video)
    _check_file(heatmap)
    # Hashing is far cheaper than decoding: check for finished work first.
    v_sha, h_sha = file_sha256(video), file_sha256(heatmap)
    if (done := _reusable(out_dir, v_sha, h_sha, every, fmt)) is not None:
        return done
    v_info, h_info = probe(video), probe(heatmap)

    wanted = caption_frame_numbers(v_info.frames, every)
    ext = IMAGE_FORMATS[fmt][0]
    entries: list[StackedFrame] = []
    size = (0, 0)

    def images() -> Iterator[tuple[Path, np.ndarray]]:
        nonlocal size
        for n, h_n, image in _stacked_pass(v_info, h_info, wanted):
            rel = f"stacked/{n:06d}{ext}"
            entries.append(StackedFrame(frame=n, heatmap_frame=h_n, path=rel))
            size = (image.shape[1], image.shape[0])
            yield out_dir / rel, image

    write_images(images(), fmt)
    _remove_stale(out_dir / "stacked", {Path(e.path).name for e in entries})

    problems = [
        f"{info.path.name}: container frame count was wrong; counted {info.frames} frames by decoding"
        for info in (v_info, h_info)
        if info.frames_counted
    ]
    manifest = FrameManifest(
        video_id=_video_id(video),
        video=v_info,
        heatmap=h_info,
        video_sha256=v_sha,
        heatmap_sha256=h_sha,
        every=every,
        image_format=fmt,
        stacked_width=size[0],
        stacked_height=size[1],
        heatmap_rule=_rule(v_info, h_info),
        frames=entries,
        problems=problems,
    )
    atomic_write_json(out_dir / MANIFEST_NAME, manifest.model_dump(mode="json"))
    return manifest


# Images write_images may still hold (waiting or being encoded) plus the one being
# filled, and one spare: _stacked_pass reuses that many stacked images.
_STACK_BUFFERS = _WRITE_AHEAD + 2


def _stacked_pass(
    video: VideoInfo, heatmap: VideoInfo, wanted: list[int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """One lockstep forward pass over both files: (frame, heatmap frame, stacked image).

    When both are the same width (the usual case) frames are decoded straight
    into the halves of a few reused stacked images (no per-frame allocation
    or copy); a yielded image stays intact while the next
    ``_STACK_BUFFERS - 1`` are made, which is what ``write_images`` needs.
    """
    if not wanted:
        return
    v_cap, h_cap = _open(video.path), _open(heatmap.path)
    same_width = video.width == heatmap.width
    ring = (
        [np.empty((heatmap.height + video.height, video.width, 3), np.uint8) for _ in range(_STACK_BUFFERS)]
        if same_width else []
    )
    try:
        wanted_set, last = set(wanted), wanted[-1]
        h_pos = 0  # heatmap frames grabbed so far
        h_image: np.ndarray | None = None
        h_image_pos = 0  # which heatmap frame h_image holds
        made = 0
        for n in range(1, last + 1):
            if not v_cap.grab():
                raise VideoError(video.path, f"decoding stopped after frame {n - 1} of {video.frames}")
            h_n = heatmap_frame_for(n, heatmap.frames)
            while h_pos < h_n:  # at most one step: the rule never moves backwards
                if not h_cap.grab():
                    raise VideoError(heatmap.path, f"decoding stopped after frame {h_pos} of {heatmap.frames}")
                h_pos += 1
            if n not in wanted_set:
                continue
            out = ring[made % len(ring)] if ring else None
            made += 1
            top = out[: heatmap.height] if out is not None else None
            bottom = out[heatmap.height :] if out is not None else None
            ok, v_image = v_cap.retrieve(bottom)
            if not ok or v_image is None:
                raise VideoError(video.path, f"frame {n} could not be decoded")
            if h_image_pos != h_n:  # a held last frame is decoded once and reused
                ok, h_image = h_cap.retrieve(top)
                if not ok or h_image is None:
                    raise VideoError(heatmap.path, f"frame {h_n} could not be decoded")
                h_image_pos = h_n
                top_filled = h_image is top
            else:
                # h_image is the top of an earlier buffer (or a fresh array); refilling
                # that same buffer later copies it onto itself, which is harmless.
                top_filled = top is not None and h_image is not None and h_image.shape == top.shape
                if top_filled:
                    top[...] = h_image  # type: ignore[index]
            assert h_image is not None
            if out is not None and top_filled and v_image is bottom:
                yield n, h_n, out
            else:  # decoded sizes other than probed, or widths differ: the general path
                yield n, h_n, stack(h_image, v_image)
    finally:
        v_cap.release()
        h_cap.release()


_FRAME_FILE = re.compile(r"[0-9]{6}\.(png|jpg)")


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Drop frame images of an earlier run with other settings (our names only)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if _FRAME_FILE.fullmatch(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)


def extract_raw_frames(
    video: str | os.PathLike[str], numbers: Iterable[int], out_dir: str | os.PathLike[str]
) -> dict[int, Path]:
    """Write ``out_dir/raw/<frame:06d>.png`` for wanted frames not already there.

    Returns frame -> path for every wanted frame; decodes only if one is missing.
    """
    video, out_dir = Path(video), Path(out_dir)
    paths = {int(n): out_dir / "raw" / f"{int(n):06d}.png" for n in numbers}
    missing = [n for n, p in paths.items() if not p.is_file()]
    write_images(((paths[n], image) for n, image in read_frames(video, missing)), "png")
    return dict(sorted(paths.items()))


# Window frames with the heatmap on top, for describe configurations with ``frames: stacked``.
# Not ``stacked/``: extract_caption_frames prunes that folder to the caption frames.
STACKED_WINDOW_DIR = "stacked-window"


def extract_stacked_frames(
    video: str | os.PathLike[str],
    heatmap: str | os.PathLike[str],
    numbers: Iterable[int],
    out_dir: str | os.PathLike[str],
) -> dict[int, Path]:
    """Write ``out_dir/stacked-window/<frame:06d>.png`` (heatmap above video frame n, the heatmap
    frame chosen by the length rule, as for captioning) for wanted frames not already there.

    Returns frame -> path for every wanted frame; decodes only if one is missing.
    """
    video, heatmap, out_dir = Path(video), Path(heatmap), Path(out_dir)
    paths = {int(n): out_dir / STACKED_WINDOW_DIR / f"{int(n):06d}.png" for n in numbers}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        heatmap_frames = probe(heatmap).frames
        top_of = {n: heatmap_frame_for(n, heatmap_frames) for n in missing}
        tops = dict(read_frames(heatmap, set(top_of.values())))  # a window's worth of frames at most
        write_images(((paths[n], stack(tops[top_of[n]], image)) for n, image in read_frames(video, missing)), "png")
    return dict(sorted(paths.items()))


# --- input folders -------------------------------------------------------------


@dataclass
class VideoPair:
    video_id: int
    video: Path
    heatmap: Path | None


@dataclass
class InputProblem:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _video_files(folder: Path) -> list[Path]:
    # Hidden files (.DS_Store, editor temp files) and non-video files are not inputs.
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
    )


def _by_id(files: list[Path]) -> tuple[dict[int, list[Path]], list[Path]]:
    """Group files by integer id; also return the files whose stem is not an id."""
    groups: dict[int, list[Path]] = {}
    not_ids: list[Path] = []
    for p in files:
        vid = _video_id(p)
        if vid is None:
            not_ids.append(p)
        else:
            groups.setdefault(vid, []).append(p)
    return groups, not_ids


def _find_heatmap(video: Path, candidates: list[Path]) -> tuple[Path | None, str]:
    same_name = [p for p in candidates if p.name == video.name]
    if same_name:
        return same_name[0], ""
    if len(candidates) == 1:
        return candidates[0], ""
    if not candidates:
        return None, ""
    names = ", ".join(p.name for p in candidates)
    return None, f"several heatmaps match video id {_video_id(video)} ({names}); none used"


def scan_inputs(
    videos_dir: str | os.PathLike[str], heatmaps_dir: str | os.PathLike[str]
) -> tuple[list[VideoPair], list[InputProblem]]:
    """Pair ``videos/<id>.<ext>`` with ``heatmaps/<id>.<ext>``, sorted by id.

    Problems (each naming its file): a stem that is not a non-negative
    integer (skipped), duplicate ids like 7.mp4 and 007.mp4 (both skipped),
    a missing heatmap (the pair is kept with heatmap None). A missing or
    empty videos folder raises ValueError: there is nothing to do at all.
    """
    videos_dir, heatmaps_dir = Path(videos_dir), Path(heatmaps_dir)
    if not videos_dir.is_dir():
        raise ValueError(f"videos folder {videos_dir} does not exist or is not a folder")
    files = _video_files(videos_dir)
    if not files:
        exts = ", ".join(f"*{e}" for e in VIDEO_EXTENSIONS)
        raise ValueError(f"videos folder {videos_dir} holds no video files ({exts})")

    problems: list[InputProblem] = []
    groups, not_ids = _by_id(files)
    for p in not_ids:
        why = "file name is not a video id (expected <non-negative integer>.mp4); skipped"
        problems.append(InputProblem(p, why))
    heat_groups: dict[int, list[Path]] = {}
    if heatmaps_dir.is_dir():
        heat_groups, _ = _by_id(_video_files(heatmaps_dir))

    pairs: list[VideoPair] = []
    for vid in sorted(groups):
        same = groups[vid]
        if len(same) > 1:
            for p in same:
                others = ", ".join(o.name for o in same if o != p)
                problems.append(InputProblem(p, f"duplicate video id {vid} (also {others}); neither is used"))
            continue
        video = same[0]
        heatmap, why = _find_heatmap(video, heat_groups.get(vid, []))
        if heatmap is None:
            if not why:
                where = heatmaps_dir if heatmaps_dir.is_dir() else f"{heatmaps_dir} (folder does not exist)"
                why = f"no heatmap for video {vid}: expected {video.name} in {where}"
            problems.append(InputProblem(video, why))
        pairs.append(VideoPair(vid, video, heatmap))
    problems.sort(key=lambda p: str(p.path))
    return pairs, problems


def extract_all(
    videos_dir: str | os.PathLike[str],
    heatmaps_dir: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    every: int = 10,
) -> tuple[dict[int, FrameManifest], list[InputProblem]]:
    """Stage 1 for a whole folder: ``out_root/<id>/`` per video.

    A video that cannot be used (corrupt, empty, no or undecodable heatmap)
    becomes an InputProblem naming the bad file; the others are processed.
    """
    pairs, problems = scan_inputs(videos_dir, heatmaps_dir)
    manifests: dict[int, FrameManifest] = {}
    for pair in pairs:
        if pair.heatmap is None:
            continue  # already reported by scan_inputs
        try:
            manifests[pair.video_id] = extract_caption_frames(
                pair.video, pair.heatmap, Path(out_root) / str(pair.video_id), every
            )
        except VideoError as exc:
            problems.append(InputProblem(exc.path, exc.problem))
    return manifests, problems


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
    _check_file(src)
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


# --- CLI body --------------------------------------------------------------------


def frames_command(
    videos_dir: str | os.PathLike[str],
    heatmaps_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    every: int = 10,
) -> int:
    """``coool frames``: run stage 1, print a summary; exit 0 ok, 1 some problems, 2 nothing done."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        manifests, problems = extract_all(videos_dir, heatmaps_dir, out_dir, every)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    table = Table(title=f"stage 1: frames -> {out_dir}")
    for col in ("video", "frames", "heatmap frames", "stacked images", "heatmap rule"):
        table.add_column(col)
    for vid, m in manifests.items():
        rule = m.heatmap_rule.detail if m.heatmap_rule.applied else "-"
        table.add_row(str(vid), str(m.video.frames), str(m.heatmap.frames), str(len(m.frames)), rule)
    console.print(table)
    for p in problems:
        console.print(f"[yellow]problem:[/yellow] {p.path}: {p.problem}", soft_wrap=True)
    console.print(f"{len(manifests)} videos done, {len(problems)} problems")
    if not manifests:
        return 2
    return 1 if problems else 0
