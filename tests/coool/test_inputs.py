"""Input folders: pairing videos with heatmaps, naming every bad file."""

from __future__ import annotations

import pytest

from coool.inputs import scan_inputs


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
