"""A heatmap that disagrees with its video (issue #15 item 10), through ``run_plain``.

Stage 1 pairs frames by number. A heatmap at another frame rate or of
another duration, or a video with a variable frame rate, drifts: the run
finishes (the video keeps its row) and failures.csv gets a row of level
"warning" naming the pairing rule; the frames stage summary lists it too. A
heatmap named like one but not a regular file (a directory, a broken
symbolic link, a fifo) is named as what it is, not reported missing.

The mismatched clips are made with the bundled ffmpeg from the synthetic
clips (coool.clip_variants). Answers come from the SIMULATED model server
(a test double, no model inside).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from reliability_support import assert_valid_submission, failures, role_env

from coool import clip_variants
from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.schedule import StageReport
from coool.settings import load_settings
from coool.sim.testing import SimHandle, running_sim_server
from flows.common import stage_summary_markdown

GOOD = [0, 1, 2, 3]  # the clips4 fixture's videos (60 frames at 30 fps, heatmaps alike)
HALF_RATE, VFR_VIDEO, LONGER, DIRECTORY, BROKEN_LINK, FIFO = 4, 5, 6, 7, 8, 9


@pytest.fixture(scope="module")
def mismatched(clips4: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One run over the four good clips and six bad pairs; (results folder, run_plain's outcome)."""
    data = tmp_path_factory.mktemp("mismatch") / "data"
    shutil.copytree(clips4, data)
    videos, heatmaps = data / "videos", data / "heatmaps"
    for vid in (HALF_RATE, VFR_VIDEO, LONGER, DIRECTORY, BROKEN_LINK, FIFO):
        shutil.copy(videos / "0.mp4", videos / f"{vid}.mp4")
    # 15 fps heatmap beside a 30 fps video, the same 2 s.
    clip_variants.resampled(heatmaps / "0.mp4", heatmaps / f"{HALF_RATE}.mp4", 15)
    # A video with every 4th frame gone and the others' timestamps kept; its heatmap is fine.
    clip_variants.vfr_dropped(videos / "0.mp4", videos / f"{VFR_VIDEO}.mp4")
    shutil.copy(heatmaps / "0.mp4", heatmaps / f"{VFR_VIDEO}.mp4")
    # A heatmap at the video's rate but half as long again (90 frames beside 60).
    clip_variants.mpeg4_simple(heatmaps / "0.mp4", heatmaps / f"{LONGER}.mp4", frames=90, loop=True)
    (heatmaps / f"{DIRECTORY}.mp4").mkdir()
    (heatmaps / f"{BROKEN_LINK}.mp4").symlink_to(heatmaps / "gone.mp4")
    os.mkfifo(heatmaps / f"{FIFO}.mp4")

    results = data.parent / "results"
    with running_sim_server(model=["sim-model"]) as sim, pytest.MonkeyPatch.context() as m:
        outcome = _plain_run(sim, data, results, m)
    return results, outcome


def _plain_run(sim: SimHandle, data: Path, results: Path, m: pytest.MonkeyPatch) -> dict[str, Any]:
    for key, value in role_env(sim.url).items():
        m.setenv(key, value)
    pipeline = Run(load_settings(results_dir=results), load_recipe("quick"))
    return asyncio.run(run_plain(pipeline, data / "videos", data / "heatmaps"))


def _rows(results: Path, level: str, video: int) -> list[dict[str, str]]:
    listed = failures(results)
    return listed[(listed["level"] == level) & (listed["video"] == str(video))].to_dict("records")


def _warning(results: Path, video: int) -> str:
    rows = _rows(results, "warning", video)
    assert len(rows) == 1, failures(results).to_dict("records")
    assert rows[0]["stage"] == "frames"
    assert not _rows(results, "error", video), "a warned video is not a failure"
    text = rows[0]["error"]
    # Says which pairing rule was used.
    assert "paired by number" in text and "not by time" in text, text
    return text


def test_a_15_fps_heatmap_beside_a_30_fps_video_is_a_warning(mismatched) -> None:
    results, _ = mismatched
    text = _warning(results, HALF_RATE)
    assert "frame rates differ (video 30 fps, heatmap 15 fps)" in text
    assert "durations differ" not in text  # both 2 s
    assert "heatmap frame min(n, 30)" in text  # 30 heatmap frames for 60 video frames


def test_a_variable_frame_rate_video_is_a_warning(mismatched) -> None:
    results, _ = mismatched
    text = _warning(results, VFR_VIDEO)
    assert "the video's frame rate varies" in text
    assert "heatmap's frame rate varies" not in text


def test_a_longer_heatmap_is_a_warning(mismatched) -> None:
    results, _ = mismatched
    text = _warning(results, LONGER)
    assert "durations differ (video 2.00 s, heatmap 3.00 s)" in text
    assert "frame rates differ" not in text


def test_matching_pairs_get_no_warning(mismatched) -> None:
    results, _ = mismatched
    listed = failures(results)
    warned = set(listed[listed["level"] == "warning"]["video"].astype(int))
    assert warned == {HALF_RATE, VFR_VIDEO, LONGER}
    # The file keeps its columns, in their order; the level comes last.
    assert list(listed.columns) == ["video", "stage", "error", "path", "level"]


def test_warnings_reach_the_stage_summary_and_the_submission_is_complete(mismatched) -> None:
    results, outcome = mismatched
    frames = StageReport.from_dict(outcome["stages"][0])
    assert frames.stage == "frames"
    assert sorted(frames.warnings) == [HALF_RATE, VFR_VIDEO, LONGER]
    summary = stage_summary_markdown(frames, len(GOOD) + 3)
    assert "## Warnings" in summary and "frame rates differ (video 30 fps, heatmap 15 fps)" in summary
    assert outcome["warnings"] == 3
    assert outcome["failures"] == 3  # the three heatmaps that are not files; warnings are not failures
    assert_valid_submission(results / "submission.csv", GOOD + [4, 5, 6, 7, 8, 9])


@pytest.mark.parametrize(
    ("video", "what"),
    [(DIRECTORY, "is a directory"), (BROKEN_LINK, "is a broken symbolic link (to "), (FIFO, "is a named pipe (fifo)")],
)
def test_a_heatmap_that_is_not_a_regular_file_is_named_as_what_it_is(mismatched, video: int, what: str) -> None:
    results, _ = mismatched
    rows = _rows(results, "error", video)
    assert len(rows) == 1, failures(results).to_dict("records")
    assert rows[0]["stage"] == "inputs"
    assert what in rows[0]["error"] and f"{video}.mp4" in rows[0]["error"], rows[0]
    assert "no heatmap" not in rows[0]["error"]

