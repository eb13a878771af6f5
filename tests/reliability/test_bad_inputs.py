"""Bad input files, one test each (run_plain: the same library calls as the flows,
without Prefect), and two through the Prefect flow.

Every bad file gives a failure naming the file and the problem in failures.csv;
the other videos get exactly the rows of a clean run; the submission is
complete and valid (a failed video whose name is an id gets the fallback row).
Answers come from the SIMULATED model server (a test double, no model inside).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from reliability_support import (
    COOOL,
    REPO,
    assert_valid_submission,
    child_env,
    failures,
    role_env,
)

from coool import schema as cols
from coool.frames import load_manifest
from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.settings import load_settings
from coool.sim.testing import SimHandle, running_sim_server
from coool.synthetic import make_clip
from flows.pipeline import pipeline_flow

GOOD = [0, 1, 2, 3]  # the clips4 fixture's videos


@pytest.fixture(scope="module")
def sim() -> SimHandle:
    with running_sim_server(model=["sim-model"]) as handle:
        yield handle


def plain_run(sim: SimHandle, data: Path, results: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # The simulated server varies its answers to a repeated request (the detector's 12 identical
    # samples) with how often it has seen it: every run starts from the same server state.
    sim.reset()
    with monkeypatch.context() as m:
        for key, value in role_env(sim.url).items():
            m.setenv(key, value)
        pipeline = Run(load_settings(results_dir=results), load_recipe("quick"))
        return asyncio.run(run_plain(pipeline, data / "videos", data / "heatmaps"))


@pytest.fixture(scope="module")
def clean_rows(sim: SimHandle, clips4: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, str]]:
    """The rows of a run on the four good clips alone."""
    results = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as m:
        plain_run(sim, clips4, results, m)
    frame = pd.read_csv(results / "submission.csv", dtype=str, keep_default_na=False)
    return {int(r[cols.VIDEO]): r for r in frame.to_dict("records")}


def check(results: Path, clean_rows: dict[int, dict[str, str]], videos: list[int]) -> pd.DataFrame:
    """A complete, valid submission; the good videos' rows as in the clean run."""
    frame = assert_valid_submission(results / "submission.csv", videos)
    rows = {int(r[cols.VIDEO]): r for r in frame.to_dict("records")}
    for video in GOOD:
        assert rows[video] == clean_rows[video], f"video {video} was affected by another video's bad input"
    return frame


def fallback(frame: pd.DataFrame, video: int) -> None:
    row = frame[frame[cols.VIDEO] == str(video)].iloc[0].to_dict()
    expected = {k: str(v) for k, v in cols.fallback_row(video).items()}
    assert row == expected, f"video {video} should have the fallback row"


def the_failure(results: Path, stage: str, path: Path) -> dict[str, str]:
    listed = failures(results)
    hits = listed[(listed["stage"] == stage) & (listed["path"] == str(path))]
    assert len(hits) == 1, listed.to_dict("records")
    failure = hits.iloc[0].to_dict()
    assert path.name in failure["error"], failure  # the message names the file ...
    return failure


def test_corrupt_mp4(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    bad = data_copy / "videos" / "4.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    shutil.copy(data_copy / "heatmaps" / "0.mp4", data_copy / "heatmaps" / "4.mp4")
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [4])
    fallback(frame, 4)
    error = the_failure(tmp_path / "r", "frames", bad)["error"]
    assert "cannot be opened as a video" in error or "no decodable frames" in error  # ... and the problem


def test_zero_byte_file(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    bad = data_copy / "videos" / "4.mp4"
    bad.write_bytes(b"")
    shutil.copy(data_copy / "heatmaps" / "0.mp4", data_copy / "heatmaps" / "4.mp4")
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [4])
    fallback(frame, 4)
    assert "file is empty (0 bytes)" in the_failure(tmp_path / "r", "frames", bad)["error"]


def test_missing_heatmap(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    video = data_copy / "videos" / "4.mp4"
    shutil.copy(data_copy / "videos" / "0.mp4", video)
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [4])
    fallback(frame, 4)
    assert "no heatmap for video 4" in the_failure(tmp_path / "r", "inputs", video)["error"]


def test_heatmap_shorter_than_the_video_holds_its_last_frame(sim, data_copy: Path, clean_rows, tmp_path: Path,
                                                            monkeypatch) -> None:
    make_clip(data_copy / "videos" / "4.mp4", data_copy / "heatmaps" / "4.mp4", frames=60, width=160, height=90,
              event_frame=30, heatmap_frames=25, seed=5)
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [4])
    # It SUCCEEDS; since issue 15.10 with one warning (25 heatmap frames beside 60: durations differ).
    listed = failures(tmp_path / "r")
    assert list(listed["level"]) == ["warning"], listed.to_dict("records")
    assert "durations differ (video 2.00 s, heatmap 0.83 s)" in listed.iloc[0]["error"]
    manifest = load_manifest(tmp_path / "r" / "frames" / "4")
    assert manifest is not None and manifest.heatmap_rule.applied
    assert "heatmap is shorter (25 < 60 frames)" in manifest.heatmap_rule.detail
    # The hold-last-frame rule: frames past the heatmap's end are stacked with its frame 25.
    assert {f.frame: f.heatmap_frame for f in manifest.frames} == {n: min(n, 25) for n in range(1, 61, 10)}
    row = frame[frame[cols.VIDEO] == "4"].iloc[0]
    assert row[cols.DETECTION] != "-1"  # described for real: the clip has an event


def test_one_frame_video(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    make_clip(data_copy / "videos" / "4.mp4", data_copy / "heatmaps" / "4.mp4", frames=1, width=160, height=90,
              event_frame=None, seed=6)
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [4])
    # A one-frame video is a video: it is captioned and described, every window is frame 1.
    assert failures(tmp_path / "r").empty
    assert frame[frame[cols.VIDEO] == "4"].iloc[0][cols.START_FRAME] == "1"


def test_file_name_that_is_not_a_video_id(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    odd = data_copy / "videos" / "clip-7.mp4"
    shutil.copy(data_copy / "videos" / "0.mp4", odd)
    shutil.copy(data_copy / "heatmaps" / "0.mp4", data_copy / "heatmaps" / "clip-7.mp4")
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    check(tmp_path / "r", clean_rows, GOOD)  # no row: there is no id to give it
    failure = the_failure(tmp_path / "r", "inputs", odd)
    assert failure["video"] == "" and "file name is not a video id" in failure["error"]


def test_duplicate_ids_get_the_fallback_row(sim, data_copy: Path, clean_rows, tmp_path: Path, monkeypatch) -> None:
    first, second = data_copy / "videos" / "7.mp4", data_copy / "videos" / "007.mp4"
    shutil.copy(data_copy / "videos" / "0.mp4", first)
    shutil.copy(data_copy / "videos" / "1.mp4", second)
    shutil.copy(data_copy / "heatmaps" / "0.mp4", data_copy / "heatmaps" / "7.mp4")
    plain_run(sim, data_copy, tmp_path / "r", monkeypatch)
    frame = check(tmp_path / "r", clean_rows, GOOD + [7])
    fallback(frame, 7)
    for path, other in ((first, second), (second, first)):
        failure = the_failure(tmp_path / "r", "inputs", path)
        assert failure["video"] == "7" and f"duplicate video id 7 (also {other.name})" in failure["error"]


@pytest.mark.slow
def test_a_very_large_resolution_works_with_bounded_memory(sim, data_copy: Path, clean_rows, tmp_path: Path) -> None:
    """A 3840x2160 clip (and heatmap) beside the small ones, through ``coool run --no-prefect``
    in a child process whose memory is sampled: frames are decoded one at a time."""
    make_clip(data_copy / "videos" / "4.mp4", data_copy / "heatmaps" / "4.mp4", frames=6, width=3840, height=2160,
              event_frame=3, seed=7)
    results = tmp_path / "r"
    argv = [COOOL, "run", "--no-prefect", "--data", str(data_copy), "--results", str(results), "--recipe", "quick"]
    sim.reset()  # as plain_run: the same server state as the clean run
    child = subprocess.Popen(argv, env=child_env("http://127.0.0.1:9/api", role_env(sim.url)), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    watched = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.01)
    output = child.stdout.read().decode(errors="replace") if child.stdout else ""
    assert child.returncode == 0, output[-2000:]
    check(results, clean_rows, GOOD + [4])
    assert failures(results).empty
    manifest = load_manifest(results / "frames" / "4")
    assert manifest is not None and (manifest.stacked_width, manifest.stacked_height) == (3840, 4320)
    # One decoded 4K frame is 25 MB, a stacked one 50 MB: the whole pipeline process stays
    # under 1 GB (it measured ~0.4 GB), whatever the clip's length.
    assert peak < 1_000_000_000, f"peak RSS {peak / 1e6:.0f} MB"


def test_an_empty_videos_folder_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    (data / "heatmaps").mkdir()
    results = tmp_path / "results"
    argv = [COOOL, "run", "--no-prefect", "--data", str(data), "--results", str(results), "--recipe", "quick"]
    done = subprocess.run(argv, env=child_env("http://127.0.0.1:9/api", {}), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    assert f"error: videos folder {data / 'videos'} holds no video files" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (results / "submission.csv").exists()


# -- through the Prefect flow ---------------------------------------------------------------------


@pytest.mark.slow
def test_bad_inputs_through_the_flow(prefect_api: str, sim, data_copy: Path, clean_rows, tmp_path: Path,
                                     monkeypatch) -> None:
    """Several bad files at once, through pipeline_flow: the same failures and rows."""
    videos, heatmaps = data_copy / "videos", data_copy / "heatmaps"
    (videos / "4.mp4").write_bytes(b"")  # zero bytes
    shutil.copy(heatmaps / "0.mp4", heatmaps / "4.mp4")
    (videos / "5.mp4").write_bytes(b"not a video at all" * 100)  # corrupt
    shutil.copy(heatmaps / "0.mp4", heatmaps / "5.mp4")
    shutil.copy(videos / "0.mp4", videos / "6.mp4")  # no heatmap
    shutil.copy(videos / "0.mp4", videos / "notes.mp4")  # not an id
    for key, value in role_env(sim.url).items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "r"
    sim.reset()  # as plain_run: the same server state as the clean run
    outcome = asyncio.run(pipeline_flow(data_root=str(data_copy), recipe="quick", results_dir=str(results)))
    frame = check(results, clean_rows, GOOD + [4, 5, 6])
    for video in (4, 5, 6):
        fallback(frame, video)
    assert "file is empty" in the_failure(results, "frames", videos / "4.mp4")["error"]
    assert the_failure(results, "frames", videos / "5.mp4")
    assert "no heatmap for video 6" in the_failure(results, "inputs", videos / "6.mp4")["error"]
    assert the_failure(results, "inputs", videos / "notes.mp4")["video"] == ""
    assert outcome["failures"] == len(failures(results))


def test_an_empty_videos_folder_through_the_flow(prefect_api: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no video files"):
        asyncio.run(pipeline_flow(data_root=str(data), recipe="quick", results_dir=str(tmp_path / "r")))
    assert not (tmp_path / "r" / "submission.csv").exists()
