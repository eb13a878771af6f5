"""Figure 6, video readers: coool's OpenCV/ffmpeg path against moviepy 2.x.

The task both do in coool: select every 10th frame (frames 1, 11, 21, ...,
1-based, in decode order) of a video. Readers:

- coool:            ``coool.decode.probe`` (the verified frame count) then one
                    forward pass as stage 1 makes it (``grab()`` for skipped
                    frames, ``retrieve()`` for wanted ones), BGR
- moviepy_get_frame: ``VideoFileClip(path).get_frame((n - 1) / fps)`` for
                    n = 1, 11, ... up to moviepy's frame count, RGB
- moviepy_iter:     ``VideoFileClip(path).iter_frames()``, every 10th kept, RGB

Clips (made once with the bundled ffmpeg from a ``coool.synthetic`` clip and
cached, see ``coool.clip_variants``): MPEG-4 Part 2 Simple Profile at 30 fps
(1280x720, several lengths) and two variable-frame-rate clips of the same
codec (every 4th frame dropped with timestamps kept; two segments at 30 and
15 fps concatenated).

Correctness: each reader's selected frames against ffmpeg's decode of every
frame in order with no rate conversion (``-fps_mode passthrough``), pixel
by pixel in the reader's channel order, plus the frame number stamped in
each synthetic frame; and each reader's frame count against ffmpeg's.
Speed: wall and CPU (this process's threads plus the ffmpeg children it
waited for) per clip, readers in a rotating order within each repeat,
medians over repeats; ratios are moviepy / coool from the same run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import log, measure, median, ratio, summary
from bench.data import cache_root
from coool.files import json_sha256

EVERY = 10
FPS = 30
SIZE = (1280, 720)
SOURCE_SECONDS = 10  # one synthetic source clip; longer clips loop it
FULL_SECONDS = (10, 20, 40)
QUICK_SECONDS = (5, 10)
FULL_REPEATS, QUICK_REPEATS = 3, 2
CLIP_VERSION = 1  # bump when the clip recipe changes (the cache folder name includes it)
READERS = ("coool", "moviepy_get_frame", "moviepy_iter")
MOVIEPY_READERS = READERS[1:]


@dataclass(frozen=True)
class Clip:
    name: str
    kind: str  # "cfr" (MPEG-4 SP, constant rate) or "vfr"
    path: str
    seconds: float  # nominal length


def ensure_clips(quick: bool) -> list[Clip]:
    """The benchmark's clips, made on first use and cached under the bench cache."""
    from coool import clip_variants as cv
    from coool.synthetic import make_clip

    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    digest = json_sha256([CLIP_VERSION, SIZE, FPS, SOURCE_SECONDS, seconds])[:10]
    root = cache_root() / f"video-readers-{'quick' if quick else 'full'}-{digest}"
    source = root / "source.mp4"
    clips = [Clip(f"mpeg4-sp-{s}s", "cfr", str(root / f"mpeg4-sp-{s}s.mp4"), s) for s in seconds]
    clips += [
        Clip("vfr-dropped", "vfr", str(root / "vfr-dropped.mp4"), SOURCE_SECONDS),
        Clip("vfr-30-15fps", "vfr", str(root / "vfr-30-15fps.mp4"), SOURCE_SECONDS * 1.5),
    ]
    if all(Path(c.path).is_file() for c in clips):
        return clips
    log(f"video_readers: making {len(clips)} clips in {root} (once; cached for later runs)")
    if not source.is_file():
        make_clip(source, root / "source-heatmap.mp4", frames=SOURCE_SECONDS * FPS, fps=FPS,
                  width=SIZE[0], height=SIZE[1], event_frame=SOURCE_SECONDS * FPS // 2, seed=6)
    for c in clips:
        if Path(c.path).is_file():
            continue
        if c.kind == "cfr":
            cv.mpeg4_simple(source, c.path, frames=int(c.seconds * FPS), loop=True)
        elif c.name == "vfr-dropped":
            cv.vfr_dropped(source, c.path, drop_every=4)
        else:
            cv.vfr_concat(source, c.path, fps=FPS)
    return clips


# --- readers: each yields (1-based frame number, image) for every 10th frame ----------------


def coool_path() -> str:
    """How read_coool decodes: stage 1's way (one probe, one pass) when the module still has it."""
    import coool.decode as decoding

    return "probe + one pass" if hasattr(decoding, "_sequential") else "probe + read_frames (probes again)"


def read_coool(path: str) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    import coool.decode as decoding
    from coool.frames import caption_frame_numbers

    frames = decoding.probe(path).frames
    wanted = caption_frame_numbers(frames, EVERY)
    # Stage 1 probes once and then makes one pass; read_frames would probe a second
    # time (on a VFR clip that is a second counting decode), which coool never pays.
    one_pass = getattr(decoding, "_sequential", None)
    return frames, (one_pass(Path(path), wanted) if one_pass else decoding.read_frames(path, wanted))


def _clip(path: str) -> Any:
    from moviepy import VideoFileClip

    return VideoFileClip(path, audio=False)


def read_moviepy_get_frame(path: str) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    clip = _clip(path)
    frames = int(clip.reader.n_frames)

    def frames_of() -> Iterator[tuple[int, np.ndarray]]:
        try:
            for n in range(1, frames + 1, EVERY):
                yield n, clip.get_frame((n - 1) / clip.fps)
        finally:
            clip.close()

    return frames, frames_of()


def read_moviepy_iter(path: str) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    clip = _clip(path)
    frames = int(clip.reader.n_frames)

    def frames_of() -> Iterator[tuple[int, np.ndarray]]:
        try:
            for i, image in enumerate(clip.iter_frames()):
                if i % EVERY == 0:
                    yield i + 1, image
        finally:
            clip.close()

    return frames, frames_of()


READ: dict[str, Callable[[str], tuple[int, Iterator[tuple[int, np.ndarray]]]]] = {
    "coool": read_coool,
    "moviepy_get_frame": read_moviepy_get_frame,
    "moviepy_iter": read_moviepy_iter,
}
CHANNELS = {"coool": "bgr24", "moviepy_get_frame": "rgb24", "moviepy_iter": "rgb24"}


# --- correctness ---------------------------------------------------------------------------------


def check_reader(reader: str, clip: Clip, reference_count: int) -> dict[str, Any]:
    """One reader on one clip against ffmpeg's passthrough decode; a reader that fails is a finding."""
    try:
        return _compare(reader, clip, reference_count)
    except Exception as exc:  # noqa: BLE001  (any reader error is reported, not raised)
        selected = len(range(1, reference_count + 1, EVERY))
        return {"frames_reported": None, "frames_agree": False, "selected": selected, "exact": 0,
                "all_exact": False, "wrong": selected, "wrong_examples": [], "missing": [], "extra": [],
                "warnings": 0, "warning_example": "", "error": f"{type(exc).__name__}: {exc}"[:500]}


def _compare(reader: str, clip: Clip, reference_count: int) -> dict[str, Any]:
    """One reader on one clip against ffmpeg's passthrough decode, frame by frame (streamed)."""
    from coool.clip_variants import iter_reference_frames
    from coool.synthetic import read_stamp

    wanted = list(range(1, reference_count + 1, EVERY))
    exact, wrong, missing = 0, [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reported, frames = READ[reader](clip.path)
        got = iter(frames)
        pending = next(got, None)
        for n, ref in iter_reference_frames(clip.path, wanted, CHANNELS[reader]):
            while pending is not None and pending[0] < n:
                pending = next(got, None)
            if pending is None or pending[0] != n:
                missing.append(n)
                continue
            image = pending[1]
            if image.shape == ref.shape and np.array_equal(image, ref):
                exact += 1
            else:
                diff = int(np.abs(image.astype(np.int16) - ref).max()) if image.shape == ref.shape else -1
                wrong.append({"frame": n, "max_abs_diff": diff, "stamp": read_stamp(image), "reference_stamp": read_stamp(ref)})
        extra = []  # selected frames past the reference's last frame
        while pending is not None:
            if pending[0] > reference_count:
                extra.append(pending[0])
            pending = next(got, None)
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    return {
        "frames_reported": reported,
        "frames_agree": reported == reference_count,
        "selected": len(wanted),
        "exact": exact,
        "all_exact": exact == len(wanted) and not extra,
        "wrong": len(wrong),
        "wrong_examples": wrong[:5],
        "missing": missing[:10],
        "extra": extra[:10],
        "warnings": len(caught),
        "warning_example": str(caught[0].message)[:300] if caught else "",
    }


# --- speed -----------------------------------------------------------------------------------------


def _timed_read(reader: str, path: str) -> tuple[float, float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # moviepy's end-of-file warnings are counted by check_reader
        with measure() as m:
            _, frames = READ[reader](path)
            got = 0
            for _, image in frames:
                got += int(image[0, 0, 0] >= 0)  # touch each image, as a consumer would
    return m.wall_s, m.cpu_s, got


def run(ctx: Any) -> dict[str, Any]:
    import imageio_ffmpeg
    import moviepy

    from coool.clip_variants import decoded_frame_count

    quick = ctx.quick
    clips = ensure_clips(quick)
    repeats = QUICK_REPEATS if quick else FULL_REPEATS
    reference = {c.name: decoded_frame_count(c.path) for c in clips}

    correctness: dict[str, dict[str, Any]] = {}
    for c in clips:
        correctness[c.name] = {r: check_reader(r, c, reference[c.name]) for r in READERS}
        verdict = ", ".join(f"{r} {v['exact']}/{v['selected']} exact, count {v['frames_reported']}"
                            for r, v in correctness[c.name].items())
        log(f"video_readers: {c.name} ({reference[c.name]} frames): {verdict}")

    walls: dict[str, dict[str, list[float]]] = {c.name: {r: [] for r in READERS} for c in clips}
    cpus: dict[str, dict[str, list[float]]] = {c.name: {r: [] for r in READERS} for c in clips}
    for rep in range(repeats):
        t0 = time.perf_counter()
        for i, c in enumerate(clips):
            k = (rep + i) % len(READERS)
            for r in READERS[k:] + READERS[:k]:
                if "error" in correctness[c.name][r]:
                    continue  # it could not read this clip: no time to report
                wall, cpu, _ = _timed_read(r, c.path)
                walls[c.name][r].append(wall)
                cpus[c.name][r].append(cpu)
        log(f"video_readers: speed repeat {rep + 1}/{repeats} in {time.perf_counter() - t0:.1f}s")

    speed: dict[str, Any] = {}
    for c in clips:
        w = {r: median(walls[c.name][r]) for r in READERS}
        u = {r: median(cpus[c.name][r]) for r in READERS}
        speed[c.name] = {
            "frames": reference[c.name],
            "readers": {r: {"wall_s": summary(walls[c.name][r]), "cpu_s": summary(cpus[c.name][r]),
                            "video_frames_per_s": round(reference[c.name] / w[r], 1) if w[r] else None}
                        for r in READERS},
            "ratios_vs_coool": {r: {"wall": ratio(w[r], w["coool"]), "cpu": ratio(u[r], u["coool"])}
                                for r in MOVIEPY_READERS},
        }

    cfr = [c.name for c in clips if c.kind == "cfr"]
    vfr = [c.name for c in clips if c.kind == "vfr"]

    def exact_on(names: list[str], reader: str) -> bool:
        return all(correctness[n][reader]["all_exact"] and correctness[n][reader]["frames_agree"] for n in names)

    def ratio_range(reader: str, what: str) -> list[float]:
        values = [speed[c.name]["ratios_vs_coool"][reader][what] for c in clips if c.kind == "cfr"]
        return [min(values), max(values)]

    faster = {r: all(speed[n]["ratios_vs_coool"][r]["wall"] < 1 for n in cfr) for r in MOVIEPY_READERS}
    return {
        "figure": "video_readers",
        "coool_path": coool_path(),
        "every": EVERY,
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "repeats": repeats,
        "moviepy": moviepy.__version__,
        "ffmpeg_cli": imageio_ffmpeg.get_ffmpeg_version(),
        "clips": [{**asdict(c), "path": Path(c.path).name, "frames": reference[c.name]} for c in clips],
        "correctness": correctness,
        "speed": speed,
        "summary": {
            "cfr_clips": cfr,
            "vfr_clips": vfr,
            "exact_cfr": {r: exact_on(cfr, r) for r in READERS},
            "exact_vfr": {r: exact_on(vfr, r) for r in READERS},
            "cfr_wall_ratio_range": {r: ratio_range(r, "wall") for r in MOVIEPY_READERS},
            "cfr_cpu_ratio_range": {r: ratio_range(r, "cpu") for r in MOVIEPY_READERS},
            "moviepy_faster_on_every_cfr_clip": faster,
            # moviepy would replace coool's reader only where it is both exact and faster.
            "moviepy_wins_anywhere": any(
                faster[r] and exact_on(cfr, r) for r in MOVIEPY_READERS
            ) or any(exact_on(vfr, r) and all(speed[n]["ratios_vs_coool"][r]["wall"] < 1 for n in vfr)
                     for r in MOVIEPY_READERS),
        },
        "notes": (
            "Selecting every 10th frame (1, 11, 21, ... 1-based, decode order). Reference: the ffmpeg CLI decoding "
            "every frame with -fps_mode passthrough. coool = probe + one forward pass (OpenCV's FFmpeg backend); "
            "moviepy = VideoFileClip.get_frame((n-1)/fps) or iter_frames(). Ratios are moviepy / coool, medians "
            "of the repeats, one run. On VFR clips coool's probe counts the frames by decoding (the container's "
            "count is wrong), so coool decodes those clips twice."
        ),
    }
