"""Stage 1: probing, exact frame numbers, stacking, extraction, input folders."""

from __future__ import annotations

import pickle
import shutil
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

import coool.video as V
from coool.synthetic import make_clip, read_stamp, red_fraction
from coool.video import (
    FrameManifest,
    VideoError,
    caption_frame_numbers,
    count_frames,
    extract_all,
    extract_caption_frames,
    extract_raw_frames,
    probe,
    read_frames,
    scan_inputs,
    stack,
    transcode_h264,
)


def halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = image.shape[0] // 2
    return image[:half], image[half:]


def mtimes(folder) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def short_heatmap_clip(tmp_path):
    truth = make_clip(tmp_path / "5.mp4", tmp_path / "h5.mp4", frames=60, event_frame=33, heatmap_frames=25)
    return tmp_path / "5.mp4", tmp_path / "h5.mp4", truth


# --- probe ------------------------------------------------------------------------------


def test_probe_synthetic(synthetic_data) -> None:
    info = probe(synthetic_data.video(0))
    assert (info.frames, info.width, info.height, info.codec) == (120, 320, 180, "mpeg4")
    assert info.fps == pytest.approx(30.0)
    assert info.frames == count_frames(synthetic_data.video(0))
    assert not info.frames_counted


@pytest.mark.parametrize("wrong", [0, 1, 119, 121, 500])
def test_probe_corrects_a_wrong_container_count(synthetic_data, monkeypatch, wrong) -> None:
    monkeypatch.setattr(V, "_estimated_count", lambda cap: wrong)
    info = probe(synthetic_data.video(1))
    assert info.frames == 120
    assert info.frames_counted


def test_probe_other_containers(tmp_path, synthetic_data) -> None:
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    mkv = tmp_path / "3.mkv"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(synthetic_data.video(0)), "-c", "copy", str(mkv)], check=True)
    avi = tmp_path / "4.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 96))
    for n in range(1, 38):
        image = np.full((96, 160, 3), 90, np.uint8)
        image[:40, : n * 4] = 255
        writer.write(image)
    writer.release()
    assert probe(mkv).frames == 120 == count_frames(mkv)
    assert probe(avi).frames == 37 == count_frames(avi)
    assert probe(avi).codec == "mjpeg"


def test_probe_errors_name_the_file(tmp_path) -> None:
    empty = tmp_path / "0.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "1.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    cases = [(tmp_path / "missing.mp4", "not found"), (empty, "empty"), (garbage, "cannot be opened")]
    for path, words in cases:
        with pytest.raises(VideoError) as info:
            probe(path)
        assert info.value.path == path and words in info.value.problem
        assert str(info.value) == f"{path}: {info.value.problem}"


def test_truncated_file_whose_container_lies(tmp_path, synthetic_data) -> None:
    # A faststart MP4 cut in half still opens and its header still claims 120
    # frames; only the decodable ones may be counted.
    whole = transcode_h264(synthetic_data.video(0), tmp_path / "whole.mp4")
    cut = tmp_path / "9.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    cap = cv2.VideoCapture(str(cut))
    claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    cap.release()
    info = probe(cut)
    assert claimed == 120 and 0 < info.frames < 120
    assert info.frames_counted and info.frames == count_frames(cut)
    (n, last), = read_frames(cut, [info.frames])
    assert read_stamp(last) == n == info.frames


def test_video_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(VideoError("a/1.mp4", "file is empty (0 bytes)")))
    assert (str(err.path), err.problem, str(err)) == ("a/1.mp4", "file is empty (0 bytes)", "a/1.mp4: file is empty (0 bytes)")


# --- read_frames -----------------------------------------------------------------------


def test_read_frames_exact_one_based_numbers(synthetic_data) -> None:
    path = synthetic_data.video(2)
    cap = cv2.VideoCapture(str(path))
    sequential = []
    while (got := cap.read())[0]:
        sequential.append(got[1])
    cap.release()

    wanted = [120, 37, 1, 2, 37, 64]
    got = list(read_frames(path, wanted))
    assert [n for n, _ in got] == [1, 2, 37, 64, 120]
    for n, image in got:
        assert image.dtype == np.uint8 and image.shape == (180, 320, 3)
        assert read_stamp(image) == n
        assert np.array_equal(image, sequential[n - 1])


@pytest.mark.parametrize("bad", [[0], [121], [-3, 5]])
def test_read_frames_rejects_numbers_out_of_range_eagerly(synthetic_data, bad) -> None:
    with pytest.raises(VideoError, match="outside 1..120"):
        read_frames(synthetic_data.video(0), bad)  # no iteration needed


def test_read_frames_empty_request(synthetic_data) -> None:
    assert list(read_frames(synthetic_data.video(0), [])) == []


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
        mp.setattr(V, "_stacked_pass", no_decoding)
        mp.setattr(V, "probe", no_decoding)
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
    V.write_images(((tmp_path / f"{i}.png", image) for i, image in items), "png")
    for i, image in items:
        assert np.array_equal(cv2.imread(str(tmp_path / f"{i}.png")), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.png" for i in range(7))  # no temp files


def test_write_images_stops_at_a_decoding_error(tmp_path) -> None:
    closed: list[bool] = []
    with pytest.raises(VideoError, match="frame 4"):
        V.write_images(((tmp_path / f"{i}.png", image) for i, image in _images(9, fail_at=4, closed=closed)), "png")
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
        V.write_images(with_a_bad_image(), "png")
    assert closed == [True]  # closed by write_images, not left to the garbage collector
    assert not (tmp_path / "2.png").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


# --- folders ---------------------------------------------------------------------------------


@pytest.fixture
def messy_inputs(tmp_path, synthetic_data):
    """Good videos 0, 1 and 8 (.MOV) beside every kind of bad input."""
    videos, heatmaps = tmp_path / "videos", tmp_path / "heatmaps"
    videos.mkdir()
    heatmaps.mkdir()
    good = {0: "0.mp4", 1: "1.mp4", 8: "8.MOV"}
    for vid, name in good.items():
        shutil.copy(synthetic_data.video(vid % 3), videos / name)
        shutil.copy(synthetic_data.heatmap(vid % 3), heatmaps / f"{vid}.mp4")
    (videos / "2.mp4").write_bytes(b"\x00\x01not a video at all" * 500)  # corrupt
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "2.mp4")
    (videos / "3.mp4").write_bytes(b"")  # zero bytes
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "3.mp4")
    shutil.copy(synthetic_data.video(0), videos / "4.mp4")  # no heatmap
    shutil.copy(synthetic_data.video(0), videos / "5.mp4")
    (heatmaps / "5.mp4").write_bytes(b"garbage" * 100)  # undecodable heatmap
    shutil.copy(synthetic_data.video(0), videos / "clip.mp4")  # not an id
    shutil.copy(synthetic_data.video(0), videos / "7.mp4")  # duplicate ids
    shutil.copy(synthetic_data.video(0), videos / "007.MP4")
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "7.mp4")
    (videos / "notes.txt").write_text("ignored")
    (videos / ".DS_Store").write_bytes(b"x")
    return videos, heatmaps


def test_scan_inputs(messy_inputs) -> None:
    videos, heatmaps = messy_inputs
    pairs, problems = scan_inputs(videos, heatmaps)
    assert [p.video_id for p in pairs] == [0, 1, 2, 3, 4, 5, 8]
    assert pairs[-1].video.name == "8.MOV" and pairs[-1].heatmap == heatmaps / "8.mp4"
    assert next(p for p in pairs if p.video_id == 4).heatmap is None
    by_name = {p.path.name: p.problem for p in problems}
    assert set(by_name) == {"4.mp4", "clip.mp4", "7.mp4", "007.MP4"}
    assert "no heatmap" in by_name["4.mp4"]
    assert "not a video id" in by_name["clip.mp4"]
    assert "duplicate video id 7" in by_name["7.mp4"] and "007.MP4" in by_name["7.mp4"]


def test_scan_inputs_missing_heatmap_folder(tmp_path, synthetic_data) -> None:
    pairs, problems = scan_inputs(synthetic_data.videos, tmp_path / "nope")
    assert [p.heatmap for p in pairs] == [None, None, None]
    assert len(problems) == 3 and all("does not exist" in p.problem for p in problems)


def test_empty_or_missing_videos_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        scan_inputs(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no video files"):
        scan_inputs(tmp_path / "empty", tmp_path)


def test_extract_all_reports_bad_files_and_does_the_rest(tmp_path, messy_inputs) -> None:
    videos, heatmaps = messy_inputs
    manifests, problems = extract_all(videos, heatmaps, tmp_path / "frames", every=30)
    assert sorted(manifests) == [0, 1, 8]
    for vid, m in manifests.items():
        assert (tmp_path / "frames" / str(vid) / "manifest.json").is_file()
        assert [f.frame for f in m.frames] == [1, 31, 61, 91]
    named = {p.path: p.problem for p in problems}
    assert "cannot be opened" in named[videos / "2.mp4"]
    assert "empty" in named[videos / "3.mp4"]
    assert "no heatmap" in named[videos / "4.mp4"]
    assert "cannot be opened" in named[heatmaps / "5.mp4"]  # the heatmap is named, not the video
    assert {videos / "clip.mp4", videos / "7.mp4", videos / "007.MP4"} <= set(named)
    assert len(problems) == 7
    assert not (tmp_path / "frames" / "2").exists()


def frames_command(videos, heatmaps, out, every: int = 10) -> int:
    """``coool frames`` (the command's body moved to the CLI, #13), its output printed for capsys."""
    from typer.testing import CliRunner

    from coool.cli import app

    result = CliRunner().invoke(app, ["frames", str(videos), str(heatmaps), str(out), "--every", str(every)])
    print(result.stdout)
    return result.exit_code


def test_frames_command_exit_codes(tmp_path, synthetic_data, messy_inputs, capsys) -> None:
    assert frames_command(synthetic_data.videos, synthetic_data.heatmaps, tmp_path / "a", 40) == 0
    videos, heatmaps = messy_inputs
    assert frames_command(videos, heatmaps, tmp_path / "b", 40) == 1
    out = capsys.readouterr().out
    assert "clip.mp4" in out and "3 videos done" in out
    assert frames_command(tmp_path / "nothing", heatmaps, tmp_path / "c") == 2
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "1.mp4").write_bytes(b"")
    assert frames_command(only_bad, heatmaps, tmp_path / "d") == 2


# --- H.264 --------------------------------------------------------------------------------------


def test_transcode_h264(tmp_path, synthetic_data) -> None:
    dst = tmp_path / "studio" / "0.mp4"
    assert transcode_h264(synthetic_data.video(0), dst) == dst
    info = probe(dst)
    assert info.codec == "h264"
    assert (info.frames, info.width, info.height) == (120, 320, 180)
    assert [read_stamp(img) for _, img in read_frames(dst, [1, 60, 120])] == [1, 60, 120]
    assert sorted(p.name for p in dst.parent.iterdir()) == ["0.mp4"]  # no temp left behind
    with pytest.raises(VideoError):
        transcode_h264(tmp_path / "missing.mp4", tmp_path / "x.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope" * 100)
    with pytest.raises(VideoError, match="ffmpeg"):
        transcode_h264(bad, tmp_path / "out" / "bad.mp4")
    assert list((tmp_path / "out").iterdir()) == []
