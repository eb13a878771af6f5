"""Synthetic clips: the red obstacle, the gaze, the stamps and the truth files."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from coool import schema as cols
from coool.synthetic import (
    ClipTruth,
    default_events,
    load_truth,
    make_clip,
    make_dataset,
    read_stamp,
    red_fraction,
    stamp_number,
    synth_command,
)


def decode_all(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def test_red_fraction_counts_saturated_red_only() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[:5, :2] = (0, 0, 255)  # 10 red pixels
    image[5:, :] = (0, 100, 255)  # orange: G too high
    image[:, 9] = (255, 255, 255)  # white
    assert red_fraction(image) == pytest.approx(0.10)
    assert red_fraction(np.zeros((0, 0, 3), np.uint8)) == 0.0


def test_red_appears_exactly_at_event_and_grows(synthetic_data) -> None:
    for truth in synthetic_data.truths:
        frames = decode_all(synthetic_data.video(truth.video_id))
        assert len(frames) == truth.frames
        fractions = [red_fraction(f) for f in frames]
        e = truth.event_frame
        assert e is not None
        assert max(fractions[: e - 1]) < 1e-4, "red before the event"
        assert fractions[e - 1] >= 0.01, "obstacle not unmistakable at its first frame"
        assert fractions[-1] >= 0.2
        after = fractions[e - 1 :]
        assert all(b >= a - 0.002 for a, b in zip(after, after[1:])), "obstacle must not shrink"


def test_obstacle_boxes_cover_the_red_region(synthetic_data) -> None:
    truth = synthetic_data.truths[0]
    frames = decode_all(synthetic_data.video(truth.video_id))
    assert sorted(truth.obstacle_boxes) == list(range(truth.event_frame, truth.frames + 1))
    for n in (truth.event_frame, truth.frames):
        x0, y0, x1, y1 = truth.obstacle_boxes[n]
        image = frames[n - 1]
        b, g, r = (image[..., i].astype(int) for i in range(3))
        mask = (r > 150) & (g < 90) & (b < 90)
        inside = mask[y0:y1, x0:x1].sum()
        assert inside >= 0.95 * mask.sum()
        assert inside >= 0.6 * (x1 - x0) * (y1 - y0)  # a disc fills ~78% of its box


def test_gaze_follows_obstacle_after_event(synthetic_data) -> None:
    truth = synthetic_data.truths[1]
    heat = decode_all(synthetic_data.heatmap(truth.video_id))
    assert len(heat) == truth.frames
    for n in range(truth.event_frame, truth.frames + 1, 7):
        grey = heat[n - 1].mean(axis=2)
        grey[-(truth.height // 10) :] = 0  # ignore the stamp strip
        y, x = np.unravel_index(np.argmax(grey), grey.shape)
        x0, y0, x1, y1 = truth.obstacle_boxes[n]
        assert x0 <= x < x1 and y0 <= y < y1, f"gaze at ({x},{y}) not on obstacle at frame {n}"


def test_stamps_survive_compression_and_resizing(synthetic_data) -> None:
    truth = synthetic_data.truths[2]
    for path in (synthetic_data.video(truth.video_id), synthetic_data.heatmap(truth.video_id)):
        frames = decode_all(path)
        assert [read_stamp(f) for f in frames] == list(range(1, truth.frames + 1))
        half = cv2.resize(frames[76], (160, 90), interpolation=cv2.INTER_AREA)
        assert read_stamp(half) == 77


def test_stamp_round_trip_and_absent() -> None:
    image = np.full((90, 200, 3), 100, np.uint8)
    for n in (0, 1, 1000, 2**14 - 1):
        stamp_number(image, n)
        assert read_stamp(image) == n
    assert read_stamp(np.full((90, 200, 3), 100, np.uint8)) == -1


def test_no_event_clip_has_no_red(tmp_path) -> None:
    truth = make_clip(tmp_path / "v.mp4", tmp_path / "h.mp4", frames=40, event_frame=None, seed=3)
    assert truth.event_frame is None and truth.obstacle_boxes == {}
    assert max(red_fraction(f) for f in decode_all(tmp_path / "v.mp4")) < 1e-4
    row = truth.row()
    assert (row[cols.DETECTION], row[cols.SEVERITY], row[cols.EGO], row[cols.LABEL]) == (-1, cols.NO_CRASH, 0, "unknown")
    assert [row[c] for c in cols.COUNT_COLUMNS] == [0, 0, 0, 0]


def test_heatmap_length_and_width_options(tmp_path) -> None:
    truth = make_clip(
        tmp_path / "v.mp4", tmp_path / "h.mp4", frames=30, event_frame=10, heatmap_frames=45, heatmap_width=640
    )
    heat = decode_all(tmp_path / "h.mp4")
    assert len(heat) == 45 == truth.heatmap_frames
    assert heat[0].shape == (360, 640, 3) == (truth.heatmap_height, truth.heatmap_width, 3)
    assert read_stamp(heat[44]) == 45


@pytest.mark.parametrize(
    "kwargs",
    [{"event_frame": 0}, {"event_frame": 31}, {"width": 321}, {"frames": 0}, {"vehicles": 3}],
)
def test_make_clip_rejects_bad_arguments(tmp_path, kwargs) -> None:
    args = {"frames": 30, **kwargs}
    with pytest.raises(ValueError):
        make_clip(tmp_path / "v.mp4", tmp_path / "h.mp4", **args)
    assert not (tmp_path / "v.mp4").exists()


def test_dataset_files_and_truth(synthetic_data) -> None:
    root, truths = synthetic_data.root, synthetic_data.truths
    assert [t.video_id for t in truths] == [0, 1, 2]
    for t in truths:
        assert synthetic_data.video(t.video_id).stat().st_size > 0
        assert synthetic_data.heatmap(t.video_id).stat().st_size > 0
    assert load_truth(root) == truths
    assert json.loads((root / "truth.json").read_text())[0]["video_id"] == 0

    with open(root / "truth.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == cols.COLUMNS
    assert len(rows) == 4
    for t, row in zip(truths, rows[1:]):
        record = dict(zip(cols.COLUMNS, row))
        assert int(record[cols.VIDEO]) == t.video_id
        assert int(record[cols.START_FRAME]) == t.event_frame
        assert int(record[cols.DETECTION]) == 1 and int(record[cols.EGO]) == 1
        assert record[cols.LABEL] == "ego-car hits barrier" and record[cols.LABEL] in cols.LABELS
        assert record[cols.SEVERITY] == "1. Ego-car collided but did not stop" and record[cols.SEVERITY] in cols.SEVERITIES
        assert int(record[cols.N_VEHICLES]) == t.vehicles >= 1
        assert record[cols.CAPTION].endswith(".") and record[cols.REASON].endswith(".")
    # Text fields are quoted, numbers are not.
    assert '"ego-car hits barrier"' in (root / "truth.csv").read_text()
    assert "\n0," in (root / "truth.csv").read_text()


def test_default_events_spread_and_off_grid() -> None:
    for seed in range(5):
        events = default_events(3, 120, seed)
        assert len(set(events)) == 3 and events == sorted(events)
        assert all(2 <= e <= 120 and e % 10 not in (0, 1) for e in events)
        assert default_events(3, 120, seed) == events  # deterministic
    assert default_events(4, 120, 0) != default_events(4, 120, 1)


def test_dataset_events_and_no_event_rows(tmp_path) -> None:
    truths = make_dataset(tmp_path, 2, frames=30, events=[None, 17], seed=5)
    assert [t.event_frame for t in truths] == [None, 17]
    with open(tmp_path / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0][cols.START_FRAME] == "1" and rows[0][cols.DETECTION] == "-1" and rows[0][cols.N_VEHICLES] == "0"
    assert rows[1][cols.START_FRAME] == "17" and rows[1][cols.DETECTION] == "1"
    with pytest.raises(ValueError, match="one event frame"):
        make_dataset(tmp_path / "x", 2, frames=30, events=[5])


def test_synth_command(tmp_path, capsys) -> None:
    assert synth_command(tmp_path / "d", 2, 20, 1) == 0
    assert sorted(p.name for p in (tmp_path / "d" / "videos").iterdir()) == ["0.mp4", "1.mp4"]
    assert "simulated" in capsys.readouterr().out
    assert synth_command(tmp_path / "e", 0, 20, 1) == 2


def test_clip_truth_json_round_trip(synthetic_data) -> None:
    t = synthetic_data.truths[0]
    again = ClipTruth.model_validate_json(t.model_dump_json())
    assert again == t and isinstance(next(iter(again.obstacle_boxes)), int)
