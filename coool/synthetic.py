"""Tiny synthetic dashcam clips with a known answer, for tests and the demo.

Each clip is a cartoon of a dashcam view: sky, grass, a grey three-lane road
whose dashed markings move every frame, and up to two vehicles (one dark,
one blue) in the side lanes. When the clip has an event, a PURE RED disc
(the "barrier", BGR (0, 0, 255)) appears in the ego lane exactly at
``event_frame`` and grows every frame. Nothing else in the clip is red: the
simulated model server treats saturated red as the hazard, and
:func:`red_fraction` is the shared test for it.

The matching heatmap clip is black with a soft white gaze blob that wanders
and, from the event on, sits on the obstacle.

Every frame carries its 1-based frame number as a binary stamp in a strip at
the bottom-left (see :func:`read_stamp`), so tests can check which frame a
decoded or stacked image really is. Video files are MPEG-4 Part 2 ('mp4v'),
the codec of the challenge originals.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel

from coool import schema as cols
from coool.files import atomic_write_json, atomic_write_text

# Saturated red, robust to MPEG-4's colour smearing (chroma is subsampled).
RED_MIN_R, RED_MAX_G, RED_MAX_B = 150, 90, 90
RED = (0, 0, 255)

# Frame-number stamp: cells of width/40 pixels: a bright guard, 14 bits (MSB
# first), a dark guard. Sizes scale with the width, so a resized image still reads.
STAMP_CELLS_PER_WIDTH = 40
STAMP_BITS = 14
MAX_FRAMES = 2**STAMP_BITS - 1

SKY_TOP, SKY_BOTTOM = (235, 200, 150), (250, 230, 200)  # light blue, R well below G
GRASS = (70, 140, 70)
ROAD = (100, 100, 100)
HOOD = (75, 75, 75)  # above the simulation's "dark blob" level (max channel < 50)
LINE = (230, 230, 230)
VEHICLE_COLOURS = ((35, 35, 35), (200, 70, 25))  # dark, blue
VEHICLE_LANES = ((-1.0, 0.55), (1.0, 0.45))  # (lane offset, depth 0=horizon..1=hood)
STAMP_ON = {"video": 235, "heatmap": 150}  # heatmap stamp stays below the gaze-white level
STAMP_OFF = {"video": 115, "heatmap": 0}

EVENT_LABEL = "ego-car hits barrier"
EVENT_SEVERITY = "1. Ego-car collided but did not stop"


class ClipTruth(BaseModel):
    """What a synthetic clip shows: the answer a perfect pipeline would give."""

    video_id: int
    frames: int
    fps: float
    width: int
    height: int
    heatmap_frames: int
    heatmap_width: int
    heatmap_height: int
    event_frame: int | None
    vehicles: int
    # frame -> (x0, y0, x1, y1) of the red obstacle in video pixels (exclusive ends).
    obstacle_boxes: dict[int, tuple[int, int, int, int]] = {}
    caption: str
    reason: str

    def row(self) -> dict[str, object]:
        """The ground-truth submission row for this clip."""
        if self.event_frame is None:
            row = cols.fallback_row(self.video_id)
            row[cols.CAPTION], row[cols.REASON] = self.caption, self.reason
            return row
        return {
            cols.VIDEO: self.video_id,
            cols.START_FRAME: self.event_frame,
            cols.DETECTION: 1,
            cols.SEVERITY: EVENT_SEVERITY,
            cols.EGO: 1,
            cols.LABEL: EVENT_LABEL,
            cols.N_BICYCLISTS: 0,
            cols.N_ANIMALS: 0,
            cols.N_PEDESTRIANS: 0,
            cols.N_VEHICLES: self.vehicles,
            cols.CAPTION: self.caption,
            cols.REASON: self.reason,
        }


# --- shared measurements -----------------------------------------------------------


def red_mask(image_bgr: np.ndarray) -> np.ndarray:
    """True where a pixel is saturated red (R>150, G<90, B<90)."""
    b, g, r = (image_bgr[..., i].astype(np.int16) for i in range(3))
    return (r > RED_MIN_R) & (g < RED_MAX_G) & (b < RED_MAX_B)


def red_fraction(image_bgr: np.ndarray) -> float:
    """Fraction of the image's pixels that are saturated red: the hazard signal."""
    if image_bgr.size == 0:
        return 0.0
    return float(red_mask(image_bgr).mean())


def _stamp_cells(width: int, height: int) -> list[tuple[int, int, int, int]]:
    cell = width / STAMP_CELLS_PER_WIDTH
    y1 = height - cell / 4
    y0 = y1 - cell
    return [
        (round(i * cell), round(y0), round((i + 1) * cell), round(y1)) for i in range(STAMP_BITS + 2)
    ]


def stamp_number(image: np.ndarray, number: int, on: int = 235, off: int = 115) -> None:
    """Draw ``number`` as the bottom-left binary stamp, in place."""
    bits = [1] + [(number >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)] + [0]
    for bit, (x0, y0, x1, y1) in zip(bits, _stamp_cells(image.shape[1], image.shape[0])):
        image[y0:y1, x0:x1] = on if bit else off


def read_stamp(image: np.ndarray) -> int:
    """The frame number stamped in an image (also after resizing), or -1 if none.

    Each cell is read at its centre half, and compared with the midpoint of
    the two guard cells, so compression blur and grey levels don't matter.
    """
    grey = image.mean(axis=2) if image.ndim == 3 else image.astype(float)
    values = []
    for x0, y0, x1, y1 in _stamp_cells(image.shape[1], image.shape[0]):
        dx, dy = max(1, (x1 - x0) // 4), max(1, (y1 - y0) // 4)
        values.append(float(grey[y0 + dy : y1 - dy, x0 + dx : x1 - dx].mean()))
    hi, lo = values[0], values[-1]
    if hi - lo < 40:
        return -1
    threshold = (hi + lo) / 2
    number = 0
    for v in values[1:-1]:
        number = number * 2 + (v > threshold)
    return number


# --- drawing -------------------------------------------------------------------------


class _Scene:
    """Geometry of the road picture: depth t (0 horizon .. 1 hood) and lane offset u."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.cell = width / STAMP_CELLS_PER_WIDTH
        self.horizon = round(0.42 * height)
        self.hood = height - math.ceil(self.cell * 1.5)  # the stamp lives in the hood strip
        self.lane_w = 0.43 * width  # one lane's width at the hood line
        # Dash segments of the two lane lines, precomputed: (distance z, ends, thickness).
        ts = np.linspace(0.04, 1.0, 48)
        self.segments = [
            (1.0 / ((t0 + t1) / 2), [(self._pt(u, t0), self._pt(u, t1)) for u in (-0.5, 0.5)],
             max(1, round(self.w / 160 * t1 * 2)))
            for t0, t1 in zip(ts[:-1], ts[1:])
        ]  # fmt: skip

    def x(self, u: float, t: float) -> float:
        return self.w / 2 + u * t * self.lane_w

    def y(self, t: float) -> float:
        return self.horizon + t * (self.hood - self.horizon)

    def background(self) -> np.ndarray:
        img = np.empty((self.h, self.w, 3), np.uint8)
        ramp = np.linspace(0, 1, self.horizon)[:, None]
        img[: self.horizon] = (np.array(SKY_TOP) * (1 - ramp) + np.array(SKY_BOTTOM) * ramp)[:, None, :]
        img[self.horizon :] = GRASS
        road = np.array(
            [[self.x(-1.5, 0), self.horizon], [self.x(1.5, 0), self.horizon],
             [self.x(1.5, 1), self.hood], [self.x(-1.5, 1), self.hood]],
            np.int32,
        )  # fmt: skip
        cv2.fillPoly(img, [road], ROAD)
        for u in (-1.5, 1.5):  # solid road edges
            cv2.line(img, self._pt(u, 0), self._pt(u, 1), LINE, max(1, round(self.w / 160)))
        img[self.hood :] = HOOD
        return img

    def _pt(self, u: float, t: float) -> tuple[int, int]:
        return round(self.x(u, t)), round(self.y(t))

    def draw_dashes(self, img: np.ndarray, n: int) -> None:
        # Dashes are periodic in distance z ~ 1/t; shifting z with n makes them move.
        for z, ends, thick in self.segments:
            if (z + 0.35 * n) % 4.0 < 2.0:
                for p0, p1 in ends:
                    cv2.line(img, p0, p1, LINE, thick)

    def vehicle_box(self, k: int, n: int, phase: float) -> tuple[int, int, int, int]:
        u, t0 = VEHICLE_LANES[k]
        t = t0 + 0.05 * math.sin(2 * math.pi * n / 90 + phase)
        cx, bottom = self.x(u, t), self.y(t)
        half = 0.4 * t * self.lane_w
        return round(cx - half), round(bottom - 1.5 * half), round(cx + half), round(bottom)

    def obstacle(self, n: int, event: int, last: int) -> tuple[int, int, int]:
        """(cx, cy, r) of the red disc at frame n >= event: ~1.2% of the image, growing to ~25%."""
        area = self.w * self.h
        r0 = math.sqrt(0.012 * area / math.pi)
        r1 = min(math.sqrt(0.25 * area / math.pi), (self.hood - 2) / 2 - 1)
        p = (min(n, last) - event) / max(1, last - event)
        r = r0 + (r1 - r0) * p
        cy = min(self.hood - 2 - r, self.horizon + 0.9 * r)
        return round(self.w / 2), round(cy), round(r)


def _gaze_frame(width: int, height: int, gx: float, gy: float) -> np.ndarray:
    """Black image with a soft white blob centred at (gx, gy) (fractions of the size)."""
    sigma = 0.07 * min(width, height)
    # A Gaussian is separable: an outer product of two 1-D profiles, cheap to build.
    col = np.exp(-((np.arange(height, dtype=np.float32) - gy * height) ** 2) / (2 * sigma**2))
    row = np.exp(-((np.arange(width, dtype=np.float32) - gx * width) ** 2) / (2 * sigma**2))
    blob = np.clip(300.0 * np.outer(col, row), 0, 255)
    return np.repeat(blob.astype(np.uint8)[:, :, None], 3, axis=2)


class _Writer:
    """cv2.VideoWriter to a temp file renamed into place on success (atomic)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The temp name keeps the real extension: OpenCV picks the container from it.
        self.tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write an mp4v video to {path}")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self, ok: bool) -> None:
        self.writer.release()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _even(value: int, what: str) -> int:
    if value < 16 or value % 2:
        raise ValueError(f"{what} must be an even number >= 16 (MPEG-4 needs even sizes), got {value}")
    return value


def _count_words(n: int) -> str:
    return {0: "no other cars", 1: "one car", 2: "two cars"}.get(n, f"{n} cars")


def make_clip(
    video_path: str | os.PathLike[str],
    heatmap_path: str | os.PathLike[str],
    *,
    frames: int = 120,
    fps: float = 30,
    width: int = 320,
    height: int = 180,
    event_frame: int | None = 60,
    seed: int = 0,
    heatmap_frames: int | None = None,
    heatmap_width: int | None = None,
    vehicles: int = 2,
    video_id: int | None = None,
) -> ClipTruth:
    """Write one synthetic dashcam clip and its gaze heatmap; return the truth.

    ``event_frame`` (1-based) is the first frame showing the red obstacle; None
    means no event. The heatmap has ``heatmap_frames`` frames (default: as
    many as the video) and ``heatmap_width`` (default: the video's) with the
    video's aspect ratio. ``video_id`` defaults to the video file's stem.
    """
    video_path, heatmap_path = Path(video_path), Path(heatmap_path)
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be in 1..{MAX_FRAMES}, got {frames}")
    if event_frame is not None and not 1 <= event_frame <= frames:
        raise ValueError(f"event_frame must be in 1..{frames} or None, got {event_frame}")
    if not 0 <= vehicles <= len(VEHICLE_LANES):
        raise ValueError(f"vehicles must be in 0..{len(VEHICLE_LANES)}, got {vehicles}")
    width, height = _even(width, "width"), _even(height, "height")
    h_frames = frames if heatmap_frames is None else heatmap_frames
    if not 1 <= h_frames <= MAX_FRAMES:
        raise ValueError(f"heatmap_frames must be in 1..{MAX_FRAMES}, got {h_frames}")
    h_width = _even(heatmap_width or width, "heatmap_width")
    h_height = _even(2 * round(height * h_width / width / 2), "heatmap height")
    if video_id is None:
        video_id = int(video_path.stem) if video_path.stem.isascii() and video_path.stem.isdigit() else -1

    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, size=5)
    scene = _Scene(width, height)
    base = scene.background()
    boxes: dict[int, tuple[int, int, int, int]] = {}
    centres: dict[int, tuple[float, float]] = {}  # obstacle centre as size fractions

    writer = _Writer(video_path, fps, (width, height))
    ok = False
    try:
        for n in range(1, frames + 1):
            img = base.copy()
            scene.draw_dashes(img, n)
            for k in range(vehicles):
                x0, y0, x1, y1 = scene.vehicle_box(k, n, phases[k])
                cv2.rectangle(img, (x0, y0), (x1, y1), VEHICLE_COLOURS[k], -1)
            if event_frame is not None and n >= event_frame:
                cx, cy, r = scene.obstacle(n, event_frame, frames)
                cv2.circle(img, (cx, cy), r, RED, -1)
                boxes[n] = (max(0, cx - r), max(0, cy - r), min(width, cx + r + 1), min(height, cy + r + 1))
                centres[n] = (cx / width, cy / height)
            stamp_number(img, n, STAMP_ON["video"], STAMP_OFF["video"])
            writer.write(img)
        ok = True
    finally:
        writer.close(ok)

    writer = _Writer(heatmap_path, fps, (h_width, h_height))
    ok = False
    try:
        for n in range(1, h_frames + 1):
            # The gaze follows the obstacle once it exists (held after the video ends).
            if event_frame is not None and n >= event_frame:
                gx, gy = centres[min(n, frames)]
            else:
                gx = 0.5 + 0.22 * math.sin(2 * math.pi * n / 47 + phases[2])
                gx += 0.08 * math.sin(n / 2.1 + phases[3])  # a faster jitter on top
                gy = 0.5 + 0.12 * math.sin(2 * math.pi * n / 61 + phases[4])
            img = _gaze_frame(h_width, h_height, gx, gy)
            stamp_number(img, n, STAMP_ON["heatmap"], STAMP_OFF["heatmap"])
            writer.write(img)
        ok = True
    finally:
        writer.close(ok)

    scene_text = (
        f"Ego-car drives in the middle lane of a straight road with {_count_words(vehicles)} in the side lanes."
    )
    if event_frame is None:
        reason = "unknown hazard: no incident is visible in the video."
    else:
        reason = "A red barrier appears in the ego-car lane ahead and the ego-car hits it without stopping."
    return ClipTruth(
        video_id=video_id,
        frames=frames,
        fps=float(fps),
        width=width,
        height=height,
        heatmap_frames=h_frames,
        heatmap_width=h_width,
        heatmap_height=h_height,
        event_frame=event_frame,
        vehicles=vehicles,
        obstacle_boxes=boxes,
        caption=scene_text,
        reason=reason,
    )


# --- data sets -----------------------------------------------------------------------


def default_events(n: int, frames: int, seed: int = 0) -> list[int]:
    """Event frames spread over the clips' middle, jittered by seed.

    Never 1 or 0 modulo 10 (when frames >= 3): the event must not coincide
    with a captioned frame (1, 11, 21, ...), so the detected frame is a real
    estimate and not a grid point.
    """
    rng = np.random.default_rng(seed)
    if frames < 3:
        return [frames] * n
    lo, hi = max(2, 0.25 * frames), max(2, 0.8 * frames)
    centres = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    events = []
    for c in centres:
        e = int(min(frames, max(2, round(c + rng.integers(-3, 4)))))
        if e % 10 in (0, 1):
            e += 2 - e % 10
        if e > frames:
            e -= 3
        events.append(max(2, e))
    return events


def truth_csv(truths: list[ClipTruth]) -> str:
    """A submission-like CSV of the truths (header from coool.schema, texts quoted)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(cols.COLUMNS), quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writeheader()
    for t in sorted(truths, key=lambda t: t.video_id):
        writer.writerow(t.row())
    return buf.getvalue()


def make_dataset(
    root: str | os.PathLike[str],
    n: int = 3,
    *,
    frames: int = 120,
    fps: float = 30,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
    events: list[int | None] | None = None,
) -> list[ClipTruth]:
    """Write ``root/videos/<id>.mp4``, ``root/heatmaps/<id>.mp4``, ``root/truth.json``, ``root/truth.csv``.

    Ids are 0..n-1, as in the challenge. ``events`` gives each clip's event
    frame (None: no event); by default every clip has one (see default_events).
    """
    root = Path(root)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if events is None:
        events = list(default_events(n, frames, seed))
    if len(events) != n:
        raise ValueError(f"events must list one event frame (or None) per clip: {n} expected, got {len(events)}")
    rng = np.random.default_rng([seed, n])
    truths = []
    for i, event in enumerate(events):
        truths.append(
            make_clip(
                root / "videos" / f"{i}.mp4",
                root / "heatmaps" / f"{i}.mp4",
                frames=frames,
                fps=fps,
                width=width,
                height=height,
                event_frame=event,
                seed=seed * 7919 + i,
                vehicles=int(rng.integers(1, len(VEHICLE_LANES) + 1)),
                video_id=i,
            )
        )
    atomic_write_json(root / "truth.json", [t.model_dump(mode="json") for t in truths])
    atomic_write_text(root / "truth.csv", truth_csv(truths))
    return truths


def load_truth(root: str | os.PathLike[str]) -> list[ClipTruth]:
    """The truths make_dataset wrote under root."""
    data = json.loads((Path(root) / "truth.json").read_text(encoding="utf-8"))
    return [ClipTruth.model_validate(d) for d in data]


def synth_command(root: str | os.PathLike[str], n: int = 3, frames: int = 120, seed: int = 0) -> int:
    """``coool synth``: write a synthetic data set and print what is in it; exit 0, or 2 on bad arguments."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        truths = make_dataset(root, n, frames=frames, seed=seed)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    table = Table(title=f"synthetic data set in {root} (simulated clips, not real dashcam video)")
    for col in ("video", "frames", "event frame", "vehicles"):
        table.add_column(col)
    for t in truths:
        table.add_row(str(t.video_id), str(t.frames), str(t.event_frame or "-"), str(t.vehicles))
    console.print(table)
    root = Path(root)
    console.print(f"videos: {root / 'videos'}  heatmaps: {root / 'heatmaps'}  truth: {root / 'truth.csv'}")
    return 0
