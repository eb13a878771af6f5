"""Stage 1 frames: stacking, extraction, the manifest, raw frames, image writing."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

import coool.frames as frames_module
from coool.decode import VideoError
from coool.frames import (
    FrameManifest,
    caption_frame_numbers,
    extract_caption_frames,
    extract_raw_frames,
    stack,
)
from coool.synthetic import make_clip, read_stamp, red_fraction


def halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = image.shape[0] // 2
    return image[:half], image[half:]


def mtimes(folder) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def short_heatmap_clip(tmp_path):
    truth = make_clip(tmp_path / "5.mp4", tmp_path / "h5.mp4", frames=60, event_frame=33, heatmap_frames=25)
    return tmp_path / "5.mp4", tmp_path / "h5.mp4", truth



# --- stack / frame numbers --------------------------------------------------------------


def test_stack_puts_heatmap_on_top() -> None:
    heat = np.full((180, 320, 3), 255, np.uint8)
    frame = np.zeros((180, 320, 3), np.uint8)
    out = stack(heat, frame)
    assert out.shape == (360, 320, 3)
    assert (out[:180] == 255).all() and (out[180:] == 0).all()


def test_stack_scales_the_wider_image_down() -> None:
    heat = np.zeros((360, 640), np.uint8)  # grey, twice as wide
    heat[:, :320] = 200
    frame = np.full((180, 320, 3), 50, np.uint8)
    out = stack(heat, frame)
    assert out.shape == (360, 320, 3)
    assert (out[:180, :150] == 200).all() and (out[:180, 170:] == 0).all()
    wide_frame = np.full((200, 800, 3), 7, np.uint8)
    out = stack(np.full((90, 160, 3), 1, np.uint8), wide_frame)
    assert out.shape == (90 + 40, 160, 3)
    assert (out[90:] == 7).all()


def test_caption_frame_numbers() -> None:
    assert caption_frame_numbers(120) == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111]
    assert caption_frame_numbers(21, 10) == [1, 11, 21]
    assert caption_frame_numbers(1) == [1]
    assert caption_frame_numbers(0) == []
    assert caption_frame_numbers(7, 3) == [1, 4, 7]
    with pytest.raises(ValueError):
        caption_frame_numbers(10, 0)


# --- extract_caption_frames ---------------------------------------------------------------


def test_extract_caption_frames(tmp_path, synthetic_data) -> None:
    truth = synthetic_data.truths[1]
    out = tmp_path / "1"
    m = extract_caption_frames(synthetic_data.video(1), synthetic_data.heatmap(1), out)
    assert [f.frame for f in m.frames] == caption_frame_numbers(120)
    assert [f.heatmap_frame for f in m.frames] == caption_frame_numbers(120)
    assert m.video_id == 1 and m.every == 10 and not m.heatmap_rule.applied
    assert (m.stacked_width, m.stacked_height) == (320, 360)
    assert FrameManifest.model_validate_json((out / "manifest.json").read_text()) == m
    assert m.video_sha256 != m.heatmap_sha256
    for n, path in m.paths(out).items():
        assert path == out / "stacked" / f"{n:06d}.png"
        image = cv2.imread(str(path))
        heat, frame = halves(image)
        assert read_stamp(heat) == n and read_stamp(frame) == n
        # Heatmap is on top: it is mostly black; the dashcam half has sky and road.
        assert heat.mean() < 60 < frame.mean()
        if n < truth.event_frame:
            assert red_fraction(frame) < 1e-4
        else:
            assert red_fraction(frame) > 0.01
    assert sorted(p.name for p in (out / "stacked").iterdir()) == [f"{n:06d}.png" for n in caption_frame_numbers(120)]


def test_shorter_heatmap_holds_its_last_frame(tmp_path, short_heatmap_clip) -> None:
    video, heatmap, _ = short_heatmap_clip
    m = extract_caption_frames(video, heatmap, tmp_path / "out", every=7)
    assert m.heatmap_rule.applied and m.heatmap_rule.heatmap_frames == 25
    assert "shorter" in m.heatmap_rule.detail
    for f in m.frames:
        heat, frame = halves(cv2.imread(str(tmp_path / "out" / f.path)))
        assert f.heatmap_frame == min(f.frame, 25)
        assert read_stamp(heat) == min(f.frame, 25) and read_stamp(frame) == f.frame


def test_longer_heatmap_extra_frames_ignored(tmp_path) -> None:
    make_clip(tmp_path / "v.mp4", tmp_path / "h.mp4", frames=30, event_frame=12, heatmap_frames=80)
    m = extract_caption_frames(tmp_path / "v.mp4", tmp_path / "h.mp4", tmp_path / "out", every=4)
    assert m.heatmap_rule.applied and "longer" in m.heatmap_rule.detail
    assert [f.frame for f in m.frames] == [1, 5, 9, 13, 17, 21, 25, 29]
    for f in m.frames:
        heat, _ = halves(cv2.imread(str(tmp_path / "out" / f.path)))
        assert read_stamp(heat) == f.frame == f.heatmap_frame


def test_wider_heatmap_scaled_to_video_width(tmp_path) -> None:
    make_clip(tmp_path / "v.mp4", tmp_path / "h.mp4", frames=25, event_frame=5, heatmap_width=640)
    m = extract_caption_frames(tmp_path / "v.mp4", tmp_path / "h.mp4", tmp_path / "out", image_format="jpeg")
    assert m.heatmap.width == 640 and m.image_format == "jpg"
    assert (m.stacked_width, m.stacked_height) == (320, 360)
    for f in m.frames:
        assert f.path.endswith(".jpg")
        heat, frame = halves(cv2.imread(str(tmp_path / "out" / f.path)))
        assert read_stamp(heat) == f.frame == read_stamp(frame)


def test_extraction_is_idempotent(tmp_path, synthetic_data, monkeypatch) -> None:
    out = tmp_path / "0"
    first = extract_caption_frames(synthetic_data.video(0), synthetic_data.heatmap(0), out)
    before = mtimes(out)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the manifest matched")

    with monkeypatch.context() as mp:
        mp.setattr(frames_module, "_stacked_pass", no_decoding)
        mp.setattr(frames_module, "probe", no_decoding)
        again = extract_caption_frames(synthetic_data.video(0), synthetic_data.heatmap(0), out)
    assert again == first and mtimes(out) == before

    # A different `every` redoes the work and drops the stale images.
    m5 = extract_caption_frames(synthetic_data.video(0), synthetic_data.heatmap(0), out, every=50)
    assert [f.frame for f in m5.frames] == [1, 51, 101]
    assert sorted(p.name for p in (out / "stacked").iterdir()) == ["000001.png", "000051.png", "000101.png"]

    # A missing image redoes the work too.
    (out / "stacked" / "000051.png").unlink()
    extract_caption_frames(synthetic_data.video(0), synthetic_data.heatmap(0), out, every=50)
    assert (out / "stacked" / "000051.png").is_file()


def test_changed_input_is_re_extracted(tmp_path, synthetic_data) -> None:
    video = tmp_path / "v.mp4"
    out = tmp_path / "out"
    # Pick a caption frame that shows the obstacle in clip 0 but not yet in clip 2.
    n = next(f for f in caption_frame_numbers(120) if synthetic_data.truths[0].event_frame <= f)
    assert n < synthetic_data.truths[2].event_frame
    image = out / "stacked" / f"{n:06d}.png"

    shutil.copy(synthetic_data.video(0), video)
    m0 = extract_caption_frames(video, synthetic_data.heatmap(0), out)
    assert red_fraction(halves(cv2.imread(str(image)))[1]) > 0.01
    shutil.copy(synthetic_data.video(2), video)  # same path, other content
    m2 = extract_caption_frames(video, synthetic_data.heatmap(0), out)
    assert m2.video_sha256 != m0.video_sha256
    assert red_fraction(halves(cv2.imread(str(image)))[1]) < 1e-4


def test_extract_raw_frames_writes_only_missing(tmp_path, synthetic_data) -> None:
    video = synthetic_data.video(2)
    paths = extract_raw_frames(video, [17, 5], tmp_path)
    assert list(paths) == [5, 17]
    assert all(p == tmp_path / "raw" / f"{n:06d}.png" for n, p in paths.items())
    before = mtimes(tmp_path)
    paths = extract_raw_frames(video, [5, 17, 30], tmp_path)
    after = mtimes(tmp_path)
    assert {k: after[k] for k in before} == before
    assert len(after) == 3
    for n, p in paths.items():
        image = cv2.imread(str(p))
        assert image.shape == (180, 320, 3) and read_stamp(image) == n
    with pytest.raises(VideoError):
        extract_raw_frames(video, [121], tmp_path)


def _images(count: int, fail_at: int | None = None, closed: list[bool] | None = None):
    try:
        for i in range(count):
            if i == fail_at:
                raise VideoError("clip.mp4", f"frame {i} could not be decoded")
            image = np.full((8, 12, 3), i * 20, np.uint8)
            image[0, i] = (0, 0, 255)  # every image differs
            yield i, image
    finally:
        if closed is not None:
            closed.append(True)


def test_write_images_writes_every_image_losslessly(tmp_path) -> None:
    items = list(_images(7))
    frames_module.write_images(((tmp_path / f"{i}.png", image) for i, image in items), "png")
    for i, image in items:
        assert np.array_equal(cv2.imread(str(tmp_path / f"{i}.png")), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.png" for i in range(7))  # no temp files


def test_write_images_stops_at_a_decoding_error(tmp_path) -> None:
    closed: list[bool] = []
    with pytest.raises(VideoError, match="frame 4"):
        frames_module.write_images(((tmp_path / f"{i}.png", image) for i, image in _images(9, fail_at=4, closed=closed)), "png")
    assert {p.name for p in tmp_path.iterdir()} <= {f"{i}.png" for i in range(4)}
    assert closed == [True]


def test_write_images_raises_an_encoding_error_and_releases_the_decoder(tmp_path) -> None:
    closed: list[bool] = []

    def with_a_bad_image():
        try:
            for i, image in _images(9):
                yield tmp_path / f"{i}.png", (np.zeros((0, 0, 3), np.uint8) if i == 2 else image)
        finally:
            closed.append(True)

    with pytest.raises(cv2.error):
        frames_module.write_images(with_a_bad_image(), "png")
    assert closed == [True]  # closed by write_images, not left to the garbage collector
    assert not (tmp_path / "2.png").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
