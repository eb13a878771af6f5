"""Stage 1: dashcam videos and gaze heatmaps to the frames later stages read.

Frame numbers are 1-based everywhere: the first decoded frame is frame 1.

Heatmap length rule: video frame ``n`` is paired with heatmap frame
``min(n, heatmap_frames)``. A heatmap shorter than its video holds its last
frame; the extra frames of a longer heatmap are ignored. Whenever the lengths
differ the manifest records that the rule was applied.

Pairing is by frame number, not by time: a heatmap at another frame rate
or of another duration, or a video whose frame rate varies, drifts from
its video. Stage 1 then warns (``HeatmapRule.warnings``; failures.csv rows
of level "warning") when the two differ in rate or duration by more than
a tenth, or either one's frame intervals vary by more than a tenth.

Decoding follows ``coool.decode``: one forward pass, never a seek.
"""

from __future__ import annotations

import math
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ValidationError

from coool.decode import VideoError, VideoInfo, check_file, open_video, probe, read_frames
from coool.files import atomic_write_bytes, atomic_write_json, file_sha256
from coool.inputs import video_id_of
from coool.workspace import manifest_in

IMAGE_FORMATS: dict[str, tuple[str, list[int]]] = {
    # Low PNG compression: these files are read once by a model server, speed wins.
    # One fixed row filter (SUB) instead of libpng's per-row adaptive choice: 2-3x
    # faster to encode for ~10% more bytes, and PNG stays lossless (same pixels).
    "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
            + ([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])),
    "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
}
MANIFEST_VERSION = 1


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
    # Why pairing by frame number drifts here (rates, durations, variable rate); None: an
    # older manifest, checked again from its stored rates and frame counts.
    warnings: list[str] | None = None


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
    path = manifest_in(Path(out_dir))
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


# Rates, durations or frame intervals that differ by more than this fraction get a warning.
MISMATCH_TOLERANCE = 0.1


@dataclass
class Timing:
    """Frame timestamps seen while decoding: the shortest and longest interval between frames."""

    frames: int = 0
    last_ms: float = math.nan
    shortest_ms: float = math.inf
    longest_ms: float = 0.0

    def see(self, ms: float) -> None:
        if math.isfinite(ms) and math.isfinite(self.last_ms) and ms > self.last_ms:
            gap = ms - self.last_ms
            self.shortest_ms, self.longest_ms = min(self.shortest_ms, gap), max(self.longest_ms, gap)
        self.frames += 1
        self.last_ms = ms

    def varies(self) -> bool:
        return math.isfinite(self.shortest_ms) and self.longest_ms > self.shortest_ms * (1 + MISMATCH_TOLERANCE)


def _differ(value: float, reference: float) -> bool:
    return abs(value - reference) > MISMATCH_TOLERANCE * reference


def pairing_warnings(video: VideoInfo, heatmap: VideoInfo, video_timing: Timing | None = None,
                     heatmap_timing: Timing | None = None) -> list[str]:
    """Why pairing the heatmap with its video by frame number drifts (empty: it doesn't).

    Rate and duration (frames / rate) compare the heatmap with the video and
    warn beyond a tenth of the video's; a variable frame rate is read from
    the timestamps seen while decoding (``Timing``, when given).
    """
    found = []
    if video.fps > 0 and heatmap.fps > 0:
        if _differ(heatmap.fps, video.fps):
            found.append(f"frame rates differ (video {video.fps:.3g} fps, heatmap {heatmap.fps:.3g} fps)")
        v_s, h_s = video.frames / video.fps, heatmap.frames / heatmap.fps
        if _differ(h_s, v_s):
            found.append(f"durations differ (video {v_s:.2f} s, heatmap {h_s:.2f} s)")
    for what, timing in (("video", video_timing), ("heatmap", heatmap_timing)):
        if timing is not None and timing.varies():
            found.append(f"the {what}'s frame rate varies ({timing.shortest_ms:.1f} to {timing.longest_ms:.1f} ms "
                         "between frames)")
    if not found:
        return []
    rule = f"min(n, {heatmap.frames})" if heatmap.frames < video.frames else "n"
    return [f"{video.path.name} and heatmap {heatmap.path}: {'; '.join(found)}. Frames were paired by number "
            f"(video frame n with heatmap frame {rule}), not by time: the gaze may not match the scene"]


def _rule(video: VideoInfo, heatmap: VideoInfo, warnings: list[str] | None = None) -> HeatmapRule:
    v, h = video.frames, heatmap.frames
    if h < v:
        detail = f"heatmap is shorter ({h} < {v} frames): video frames {h + 1}..{v} use heatmap frame {h}"
    elif h > v:
        detail = f"heatmap is longer ({h} > {v} frames): heatmap frames {v + 1}..{h} are ignored"
    else:
        detail = "same length: video frame n uses heatmap frame n"
    return HeatmapRule(video_frames=v, heatmap_frames=h, applied=h != v, detail=detail, warnings=warnings)


def manifest_warnings(manifest: FrameManifest) -> list[str]:
    """The manifest's pairing warnings (an older manifest's from its stored rates and lengths)."""
    if manifest.heatmap_rule.warnings is not None:
        return manifest.heatmap_rule.warnings
    return pairing_warnings(manifest.video, manifest.heatmap)


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
    check_file(video)
    check_file(heatmap)
    # Hashing is far cheaper than decoding: check for finished work first.
    v_sha, h_sha = file_sha256(video), file_sha256(heatmap)
    if (done := _reusable(out_dir, v_sha, h_sha, every, fmt)) is not None:
        return done
    v_info, h_info = probe(video), probe(heatmap)

    wanted = caption_frame_numbers(v_info.frames, every)
    ext = IMAGE_FORMATS[fmt][0]
    entries: list[StackedFrame] = []
    size = (0, 0)
    v_timing, h_timing = Timing(), Timing()

    def images() -> Iterator[tuple[Path, np.ndarray]]:
        nonlocal size
        for n, h_n, image in _stacked_pass(v_info, h_info, wanted, v_timing, h_timing):
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
        video_id=video_id_of(video),
        video=v_info,
        heatmap=h_info,
        video_sha256=v_sha,
        heatmap_sha256=h_sha,
        every=every,
        image_format=fmt,
        stacked_width=size[0],
        stacked_height=size[1],
        heatmap_rule=_rule(v_info, h_info, pairing_warnings(v_info, h_info, v_timing, h_timing)),
        frames=entries,
        problems=problems,
    )
    atomic_write_json(manifest_in(out_dir), manifest.model_dump(mode="json"))
    return manifest


# Images write_images may still hold (waiting or being encoded) plus the one being
# filled, and one spare: _stacked_pass reuses that many stacked images.
_STACK_BUFFERS = _WRITE_AHEAD + 2


def _stacked_pass(
    video: VideoInfo, heatmap: VideoInfo, wanted: list[int], v_timing: Timing | None = None,
    h_timing: Timing | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """One lockstep forward pass over both files: (frame, heatmap frame, stacked image).

    ``v_timing``/``h_timing`` see each grabbed frame's timestamp (free: no decoding).

    When both are the same width (the usual case) frames are decoded straight
    into the halves of a few reused stacked images (no per-frame allocation
    or copy); a yielded image stays intact while the next
    ``_STACK_BUFFERS - 1`` are made, which is what ``write_images`` needs.
    """
    if not wanted:
        return
    v_cap, h_cap = open_video(video.path), open_video(heatmap.path)
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
            if v_timing is not None:
                v_timing.see(v_cap.get(cv2.CAP_PROP_POS_MSEC))
            h_n = heatmap_frame_for(n, heatmap.frames)
            while h_pos < h_n:  # at most one step: the rule never moves backwards
                if not h_cap.grab():
                    raise VideoError(heatmap.path, f"decoding stopped after frame {h_pos} of {heatmap.frames}")
                h_pos += 1
                if h_timing is not None:
                    h_timing.see(h_cap.get(cv2.CAP_PROP_POS_MSEC))
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
