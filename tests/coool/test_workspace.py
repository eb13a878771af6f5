"""The results folder's layout, run.json and the per-output cache check."""

from __future__ import annotations

import json
from pathlib import Path

from coool.workspace import Workspace, cached_output, caption_files, manifest_in, submission_in, video_frames_dir, video_json


def test_layout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ws = Workspace(Path("results"))
    root = tmp_path / "results"
    assert ws.root == root  # resolved: independent of a later chdir
    assert ws.frames_dir(3) == root / "frames" / "3"
    assert (ws.captions_dir, ws.captions_path(3)) == (root / "captions", root / "captions" / "3.csv")
    assert (ws.detect_path(3), ws.detections_csv) == (root / "detect" / "3.json", root / "detect.csv")
    assert ws.describe_path("v3-prompt2", 3) == root / "describe" / "v3-prompt2" / "3.json"
    assert ws.describe_submission("v4") == root / "describe" / "v4" / "submission.csv"
    assert ws.merge_csv("exp004+exp005") == root / "merges" / "exp004+exp005.csv"
    assert ws.count_pass_csv == root / "count-pass.csv"
    assert (ws.ensemble_path(3), ws.submission_csv) == (root / "ensemble" / "3.json", root / "submission.csv")
    assert (ws.failures_csv, ws.run_json, ws.prefect_dir) == (root / "failures.csv", root / "run.json", root / ".prefect")


def test_a_stage_folders_file_names(tmp_path: Path) -> None:
    # The names the stage commands use in a folder the user names, and the Workspace in a results folder.
    assert caption_files(tmp_path, 7) == (tmp_path / "7.csv", tmp_path / "7.raw.jsonl", tmp_path / "7.json")
    assert (video_json(tmp_path, 7), submission_in(tmp_path)) == (tmp_path / "7.json", tmp_path / "submission.csv")
    assert manifest_in(video_frames_dir(tmp_path, 7)) == tmp_path / "7" / "manifest.json"
    ws = Workspace(tmp_path, variants={"caption": "plus", "detect": "plus", "ensemble": "plus"})
    plus = tmp_path / "captions+plus"
    assert ws.captions_files(7) == caption_files(plus, 7)
    assert (ws.captions_path(7), ws.captions_raw_path(7)) == caption_files(plus, 7)[:2]
    assert ws.manifest_path(7) == tmp_path / "frames" / "7" / "manifest.json"
    assert ws.detect_path(7) == tmp_path / "detect+plus" / "7.json"
    assert ws.ensemble_submission == tmp_path / "ensemble+plus" / "submission.csv"


def test_record_run_merges_with_what_is_there(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.record_run({"recipe": "quick", "started": 1})
    ws.record_run({"started": 2, "videos": 3})
    assert json.loads(ws.run_json.read_text()) == {"recipe": "quick", "started": 2, "videos": 3}


def test_cached_output(tmp_path: Path) -> None:
    path = tmp_path / "3.json"
    assert cached_output(path, "k") is None
    path.write_text('{"key": "k", "frame": 41}', encoding="utf-8")
    assert cached_output(path, "k") == {"key": "k", "frame": 41}
    assert cached_output(path, "other") is None
    path.write_text('{"key": "k", "frame": 4', encoding="utf-8")  # a torn file: redo the work
    assert cached_output(path, "k") is None
    path.write_text('["k"]', encoding="utf-8")
    assert cached_output(path, "k") is None
    path.write_bytes(b"\xff\xfe")
    assert cached_output(path, "k") is None
