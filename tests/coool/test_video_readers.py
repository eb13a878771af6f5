"""coool's video reader is frame-exact on MPEG-4 Part 2 and variable-frame-rate clips.

The truth is the ffmpeg CLI decoding every frame in order with no rate
conversion (``coool.clip_variants.reference_frames``); frame n is the n-th
decoded picture. Clips are synthetic clips re-encoded with the bundled ffmpeg
(what bench/video_readers.py measures, at test size).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from coool import clip_variants as cv
from coool.decode import probe, read_frames
from coool.frames import caption_frame_numbers, extract_caption_frames
from coool.synthetic import make_clip, read_stamp

FRAMES = 150
FPS = 30


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("readers")
    make_clip(root / "source.mp4", root / "source-heatmap.mp4", frames=FRAMES, fps=FPS, event_frame=70, seed=3)
    return {
        "mpeg4-sp": cv.mpeg4_simple(root / "source.mp4", root / "mpeg4-sp.mp4"),
        "mpeg4-sp-looped": cv.mpeg4_simple(root / "source.mp4", root / "mpeg4-sp-looped.mp4", frames=2 * FRAMES + 7,
                                           loop=True),
        "vfr-dropped": cv.vfr_dropped(root / "source.mp4", root / "vfr-dropped.mp4", drop_every=4),
        "vfr-30-15fps": cv.vfr_concat(root / "source.mp4", root / "vfr-30-15fps.mp4", fps=FPS),
    }


def frame_times_ms(path: Path) -> list[float]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    times = []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC))
    cap.release()
    return times


def test_the_clips_are_what_they_claim(clips: dict[str, Path]) -> None:
    # Without this the frame-exactness tests below could pass on clips that stress nothing.
    for name, path in clips.items():
        assert probe(path).codec == "mpeg4", name
    for name in ("mpeg4-sp", "mpeg4-sp-looped"):
        steps = np.diff(frame_times_ms(clips[name]))
        assert np.allclose(steps, 1000 / FPS, atol=1), name
    assert cv.decoded_frame_count(clips["mpeg4-sp-looped"]) == 2 * FRAMES + 7
    for name in ("vfr-dropped", "vfr-30-15fps"):
        steps = np.diff(frame_times_ms(clips[name]))
        assert steps.max() > 1.5 * steps.min(), f"{name} is not variable-frame-rate: steps {set(steps.round())}"
    # Dropping every 4th frame leaves 3 in 4, so decoded frame n is not source frame n.
    assert cv.decoded_frame_count(clips["vfr-dropped"]) == FRAMES - FRAMES // 4
    assert cv.decoded_frame_count(clips["vfr-30-15fps"]) == FRAMES


@pytest.mark.parametrize("name", ["mpeg4-sp", "mpeg4-sp-looped", "vfr-dropped", "vfr-30-15fps"])
def test_read_frames_is_frame_exact(clips: dict[str, Path], name: str) -> None:
    path = clips[name]
    info = probe(path)
    count = cv.decoded_frame_count(path)
    _, reference = cv.reference_frames(path, caption_frame_numbers(count))
    assert info.frames == count, f"{name}: probe says {info.frames} frames, ffmpeg decodes {count}"
    wanted = caption_frame_numbers(info.frames)
    got = dict(read_frames(path, wanted))
    assert list(got) == wanted == list(reference)
    for n in wanted:
        assert read_stamp(got[n]) == read_stamp(reference[n]), f"{name}: frame {n} is another picture"
        assert np.array_equal(got[n], reference[n]), f"{name}: frame {n} differs from ffmpeg's decode"


def test_read_frames_takes_decode_order_not_source_numbers(clips: dict[str, Path]) -> None:
    # Frame 11 of the clip with every 4th frame dropped is source frame 14: the 11th picture decoded.
    got = dict(read_frames(clips["vfr-dropped"], [1, 11, 21]))
    assert [read_stamp(got[n]) for n in (1, 11, 21)] == [1, 14, 27]


@pytest.mark.parametrize("name", ["mpeg4-sp", "vfr-dropped", "vfr-30-15fps"])
def test_stage1_stacks_the_exact_frames(clips: dict[str, Path], name: str, tmp_path: Path) -> None:
    # Stage 1 decodes into reused buffers, not through read_frames: check its images too.
    path = clips[name]
    manifest = extract_caption_frames(path, path, tmp_path / "out", every=10, image_format="png")
    _, reference = cv.reference_frames(path, [f.frame for f in manifest.frames])
    assert [f.frame for f in manifest.frames] == list(reference)
    for f in manifest.frames:
        image = cv2.imread(str(tmp_path / "out" / f.path), cv2.IMREAD_COLOR)
        half = image.shape[0] // 2
        assert np.array_equal(image[half:], reference[f.frame]), f"{name}: stacked frame {f.frame}"
        assert np.array_equal(image[:half], reference[f.frame]), f"{name}: stacked heatmap frame {f.frame}"


def test_reference_frames_beyond_the_end_are_absent(clips: dict[str, Path]) -> None:
    count, frames = cv.reference_frames(clips["vfr-dropped"], [1, 113, 114, 500])
    assert count == 113
    assert list(frames) == [1, 113]
    assert read_stamp(frames[113]) == FRAMES  # the last source frame was kept (0-based 149 is 1 mod 4)


def test_moviepy_picks_vfr_frames_by_time(clips: dict[str, Path]) -> None:
    """Why coool does not read with moviepy (bench figure video_readers): on a VFR clip
    ``get_frame((n - 1) / fps)`` is not decoded frame n. If this starts failing, moviepy
    became frame-exact: rerun ``python -m bench --only video_readers`` and revisit docs/BENCH.md."""
    moviepy = pytest.importorskip("moviepy", reason="moviepy (a dev dependency, used by bench/) is not installed")
    path = clips["vfr-dropped"]
    _, reference = cv.reference_frames(path, [11, 21, 31], pix_fmt="rgb24")
    clip = moviepy.VideoFileClip(str(path), audio=False)
    try:
        got = {n: clip.get_frame((n - 1) / clip.fps) for n in reference}
    finally:
        clip.close()
    assert any(not np.array_equal(got[n], reference[n]) for n in reference)


def test_reference_frames_agree_however_they_are_selected(clips: dict[str, Path]) -> None:
    # Evenly spaced, a few, and many irregular numbers take three different ffmpeg paths.
    path = clips["vfr-30-15fps"]
    _, every = cv.reference_frames(path, range(1, FRAMES + 1))
    irregular = sorted({1 + (k * k) % FRAMES for k in range(40)})
    assert len(irregular) > 20
    for numbers in ([5], [3, 4, 50, 149], irregular, list(range(2, FRAMES + 1, 7))):
        _, some = cv.reference_frames(path, numbers)
        assert list(some) == numbers
        assert all(np.array_equal(some[n], every[n]) for n in numbers)
