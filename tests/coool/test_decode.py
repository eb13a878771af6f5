"""Decoding: probing, frame counts, exact 1-based frame numbers."""

from __future__ import annotations

import pickle
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

import coool.decode as decoding
from coool.decode import VideoError, count_frames, probe, read_frames
from coool.studio.media import transcode_h264
from coool.synthetic import read_stamp

# --- probe ------------------------------------------------------------------------------


def test_probe_synthetic(synthetic_data) -> None:
    info = probe(synthetic_data.video(0))
    assert (info.frames, info.width, info.height, info.codec) == (120, 320, 180, "mpeg4")
    assert info.fps == pytest.approx(30.0)
    assert info.frames == count_frames(synthetic_data.video(0))
    assert not info.frames_counted


@pytest.mark.parametrize("wrong", [0, 1, 119, 121, 500])
def test_probe_corrects_a_wrong_container_count(synthetic_data, monkeypatch, wrong) -> None:
    monkeypatch.setattr(decoding, "_estimated_count", lambda cap: wrong)
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
