"""Images for the simulated model server: decode the URLs a request carries, then
measure the few things the simulation's scripted answers follow (no model inside).

The measurements are deliberately crude colour rules that match the synthetic
scenes used by tests and the demo: a saturated red obstacle, dark or saturated
blue blobs as vehicles, and a bright white gaze mark in the heatmap half.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

# The red test is shared with the synthetic clips: one definition of "hazard" (R>150, G<90, B<90).
from coool.synthetic import red_fraction as red_fraction  # re-exported for tests
from coool.synthetic import red_mask

# Bright white gaze marks in the heatmap half.
GAZE_MIN = 200
# A blob smaller than this fraction of the image is noise, larger is road or sky.
BLOB_MIN_FRACTION, BLOB_MAX_FRACTION = 0.001, 0.2


class MediaError(ValueError):
    """An image URL the server refuses (answered with HTTP 400, as vLLM does)."""


def decode_image_url(url: str, allowed_local_media_path: Path | None) -> np.ndarray:
    """BGR pixels of a base64 data URL or a ``file://`` URL under the allowed path."""
    if url.startswith("data:"):
        return _decode_bytes(_data_url_bytes(url), "data URL")
    if url.startswith("file:"):
        path = _allowed_file(url, allowed_local_media_path)
        return _decode_bytes(path.read_bytes(), str(path))
    # A real server would fetch http(s) URLs; a test double must not touch the network.
    raise MediaError(f"unsupported image URL scheme in {url[:40]!r}: the simulation accepts data: and file: URLs")


def _data_url_bytes(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise MediaError("a data URL must look like data:image/png;base64,<payload>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"bad base64 in data URL: {exc}") from exc


def _allowed_file(url: str, allowed: Path | None) -> Path:
    # Mirrors vLLM's --allowed-local-media-path: no root configured means no local files.
    if allowed is None:
        raise MediaError("file:// image URLs are refused: the server has no allowed local media path")
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MediaError(f"file URL with a remote host {parsed.netloc!r} is refused")
    path = Path(unquote(parsed.path)).resolve()
    root = Path(allowed).resolve()
    if not path.is_relative_to(root):
        raise MediaError(f"the file path {path} must be a subpath of --allowed-local-media-path {root}")
    if not path.is_file():
        raise MediaError(f"no such image file: {path}")
    return path


def _decode_bytes(data: bytes, where: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"cannot decode the image in {where}")
    return image


def count_vehicle_blobs(image_bgr: np.ndarray) -> int:
    """Dark or saturated-blue blobs of a plausible size: the synthetic scenes' vehicles."""
    b, g, r = (image_bgr[..., i].astype(np.int16) for i in range(3))
    dark = np.maximum(np.maximum(b, g), r) < 50
    blue = (b > 150) & (g < 90) & (r < 90)
    mask = (dark | blue).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    total = image_bgr.shape[0] * image_bgr.shape[1]
    areas = stats[1:n, cv2.CC_STAT_AREA] / total
    return int(np.count_nonzero((areas >= BLOB_MIN_FRACTION) & (areas <= BLOB_MAX_FRACTION)))


def _columns(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(centre, left, right) of the masked pixels as fractions of the width, or None."""
    if not mask.any():
        return None
    width = mask.shape[1]
    xs = np.nonzero(mask)[1]
    return float(xs.mean() / width), float(xs.min() / width), float((xs.max() + 1) / width)


def side_of(x: float) -> str:
    """Where a column sits in the picture, in thirds."""
    if x < 1 / 3:
        return "left"
    if x > 2 / 3:
        return "right"
    return "centre"


@dataclass(frozen=True)
class FrameFacts:
    """What the simulation sees in one dashcam frame."""

    red_fraction: float
    red_span: tuple[float, float, float] | None  # centre, left, right as width fractions
    vehicles: int


@dataclass(frozen=True)
class StackedFacts:
    """What it sees in a heatmap-above-frame image."""

    scene: FrameFacts
    gaze_x: float | None  # column of the white gaze mark, as a width fraction
    gaze_on_obstacle: bool


def analyse_frame(image_bgr: np.ndarray) -> FrameFacts:
    mask = red_mask(image_bgr)
    return FrameFacts(
        red_fraction=float(mask.mean()) if mask.size else 0.0,
        red_span=_columns(mask),
        vehicles=count_vehicle_blobs(image_bgr),
    )


def gaze_column(heatmap_bgr: np.ndarray) -> float | None:
    """Column of the largest bright white blob, or None when nothing is marked."""
    mask = (heatmap_bgr.min(axis=2) > GAZE_MIN).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:n, cv2.CC_STAT_AREA]))
    return float(centroids[largest][0] / heatmap_bgr.shape[1])


def analyse_stacked(image_bgr: np.ndarray) -> StackedFacts:
    """Top half is the gaze heatmap, bottom half the dashcam frame (stage 1's stacking)."""
    half = image_bgr.shape[0] // 2
    heatmap, frame = image_bgr[:half], image_bgr[half:]
    scene = analyse_frame(frame)
    gaze = gaze_column(heatmap) if half else None
    on_obstacle = False
    if gaze is not None and scene.red_span is not None:
        _, left, right = scene.red_span
        on_obstacle = left - 0.05 <= gaze <= right + 0.05  # a little slack: heatmaps are blurry
    return StackedFacts(scene=scene, gaze_x=gaze, gaze_on_obstacle=on_obstacle)
