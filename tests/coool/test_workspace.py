"""The results folder's layout, run.json and the per-output cache check."""

from __future__ import annotations

import json
from pathlib import Path

from coool.workspace import Workspace, cached_output


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
    assert ws.count_pass_csv == root / "countpass.csv"
    assert (ws.ensemble_path(3), ws.submission_csv) == (root / "ensemble" / "3.json", root / "submission.csv")
    assert (ws.failures_csv, ws.run_json, ws.prefect_dir) == (root / "failures.csv", root / "run.json", root / ".prefect")


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
