"""What stops a run, and how: a user's mistake before anything starts, a results
folder that takes no file, a disk that fills up, a stage whose every request is refused.

Before: ``coool run --data /nonexistent`` printed 62 lines (a temporary Prefect
server, telemetry, a /health wait, two tracebacks); an unwritable results folder
gave OSError tracebacks; "No space left on device" during describe became
per-video fallback rows and a valid-looking ``submission.csv`` of "No Crash"
rows (written before ``failures.csv``); 400 on every request ended with exit 0
and a submission of fallbacks. Now each is one line naming the file or folder
and the problem, and no final submission that the work did not produce.

Small file systems are real ones: tmpfs mounted by the test (needs root; the
tests skip with the reason otherwise). The model server is the SIMULATED one
(``coool.sim``, a test double with no model inside).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from reliability_support import COOOL, REPO, child_env, role_env

from coool.sim.testing import SimHandle, running_sim_server
from coool.submission import read_submission, validate

NO_PREFECT_API = "http://127.0.0.1:9/api"  # nothing listens: a run that talks to Prefect would fail or hang


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim_server(model=["sim-model"]) as handle:
        yield handle


def _coool(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COOOL, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _one_line(done: subprocess.CompletedProcess[str], code: int = 2, prefix: str = "error: ") -> str:
    """The command failed with ``code`` and said so in exactly one line, no traceback, nothing else."""
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == code, out[-3000:]
    assert "Traceback" not in out and "telemetry" not in out, out[-3000:]
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), out[-3000:]
    return lines[0]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs mounted under the test's folder (unmounted after)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command: the small file system tests need it (and root)")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def _fill(mount: Path, leave_pages: int = 0) -> Path:
    """Fill the file system to the last byte, then free ``leave_pages`` pages (4 KiB each: room
    for the start-up write check, not for a stage's outputs); the ballast file is returned."""
    ballast = mount / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    if leave_pages:
        os.truncate(ballast, ballast.stat().st_size - leave_pages * 4096)
    return ballast


def _free(mount: Path, pages: int) -> None:
    ballast = mount / "ballast"
    os.truncate(ballast, max(0, ballast.stat().st_size - pages * 4096))


# -- 1. user errors: one line, exit 2, before Prefect or any server ---------------------


def _bad_data(tmp: Path, clips4: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (the run's arguments, a piece of the expected line)."""
    data_file = tmp / "data.txt"
    data_file.write_text("not a folder")
    no_heatmaps = tmp / "no-heatmaps"
    shutil.copytree(clips4 / "videos", no_heatmaps / "videos")
    empty_heatmaps = tmp / "empty-heatmaps"
    shutil.copytree(clips4 / "videos", empty_heatmaps / "videos")
    (empty_heatmaps / "heatmaps").mkdir()
    empty_videos = tmp / "empty-videos"
    (empty_videos / "videos").mkdir(parents=True)
    shutil.copytree(clips4 / "heatmaps", empty_videos / "heatmaps")
    bad_settings = tmp / "settings.yaml"
    bad_settings.write_text("video_concurrency: zero\n")
    results = str(tmp / "results")
    return {
        "nonexistent": (["--data", "/nonexistent", "--results", results], "/nonexistent: does not exist"),
        "data is a file": (["--data", str(data_file), "--results", results], "is a file, not a folder"),
        "no heatmaps folder": (["--data", str(no_heatmaps), "--results", results], "heatmaps: does not exist"),
        "empty heatmaps": (["--data", str(empty_heatmaps), "--results", results], "holds no video files"),
        "empty videos": (["--data", str(empty_videos), "--results", results], "holds no video files"),
        "unknown recipe": (["--data", str(clips4), "--results", results, "--recipe", "nope"], "nope: no such recipe"),
        "bad settings": (["--settings", str(bad_settings), "--data", str(clips4), "--results", results],
                         "video_concurrency"),
    }


@pytest.mark.parametrize("prefect", [True, False], ids=["prefect", "no-prefect"])
def test_user_errors_are_one_line_before_anything_starts(clips4: Path, tmp_path: Path, prefect: bool) -> None:
    # No model server and no Prefect server listen anywhere: a run that got as far as either would not be one line.
    env = child_env(NO_PREFECT_API, role_env("http://127.0.0.1:9/v1"))
    env.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)  # coool turns telemetry off itself
    for name, (args, expected) in _bad_data(tmp_path, clips4).items():
        front = [a for a in args[:2] if args[0] == "--settings"]
        rest = args[2:] if front else args
        argv = [*front, "run", *rest, *([] if prefect else ["--no-prefect"])]
        line = _one_line(_coool(argv, env, timeout=120))
        assert expected in line, (name, line)
        assert not (tmp_path / "results" / "submission.csv").exists(), name


@pytest.mark.parametrize(
    "argv",
    [
        ["frames", "/nonexistent/videos", "/nonexistent/heatmaps", "{tmp}/frames"],
        ["caption", "/nonexistent", "{tmp}/captions"],
        ["detect", "/nonexistent", "{tmp}/detect.csv"],
        ["describe", "--config", "v4", "--frames", "/nonexistent", "-o", "{tmp}/s.csv"],
    ],
    ids=lambda a: a[0],
)
def test_stage_commands_give_one_line_for_a_missing_input(argv: list[str], tmp_path: Path) -> None:
    env = child_env(NO_PREFECT_API, role_env("http://127.0.0.1:9/v1"))
    line = _one_line(_coool([a.format(tmp=tmp_path) for a in argv], env, timeout=120), prefix="")
    assert "/nonexistent" in line


def test_stage_commands_check_their_output_folder_first(clips4: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "out.txt"
    a_file.write_text("a file")
    env = child_env(NO_PREFECT_API, role_env("http://127.0.0.1:9/v1"))
    done = _coool(["frames", str(clips4 / "videos"), str(clips4 / "heatmaps"), str(a_file / "frames")], env, timeout=120)
    line = _one_line(done)
    assert f"output folder {a_file / 'frames'}" in line and "is a file, not a folder" in line, line


def test_the_run_says_which_folder_is_used_for_what(sim: SimHandle, clips4: Path, tmp_path: Path) -> None:
    sim.reset()
    results = tmp_path / "results"
    done = _coool(["run", "--no-prefect", "--data", str(clips4), "--results", str(results), "--recipe", "quick"],
                  child_env(NO_PREFECT_API, role_env(sim.url)))
    assert done.returncode == 0, done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    for part in (f"videos: {clips4 / 'videos'}", f"heatmaps: {clips4 / 'heatmaps'}", f"results: {results}",
                 "recipe: quick", "settings: "):
        assert part in first, first


# -- 2. a results folder that takes no file: one line, exit 2, before any work -------------


@pytest.mark.parametrize("prefect", [True, False], ids=["prefect", "no-prefect"])
def test_an_unwritable_results_folder_is_one_line_before_any_work(
    sim: SimHandle, clips4: Path, tmp_path: Path, small_fs: Path, prefect: bool
) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("a file")
    (small_fs / "results").mkdir()
    _remount(small_fs, "ro")
    env = child_env(NO_PREFECT_API, role_env(sim.url))  # checked before Prefect starts: it is never asked
    cases = {
        a_file: "is a file, not a folder",
        a_file / "sub": "is a file, not a folder",
        small_fs / "results": "not writable (Read-only file system)",
        small_fs / "new": "not writable (Read-only file system)",
    }
    sim.reset()
    for results, problem in cases.items():
        argv = ["run", "--data", str(clips4), "--results", str(results), "--recipe", "quick"]
        line = _one_line(_coool(argv + ([] if prefect else ["--no-prefect"]), env, timeout=120))
        assert f"results folder {results}" in line and problem in line, line
    assert sim.stats()["received"] == 0  # no work began


# -- 3. a full disk stops the run; no submission the work did not produce ----------------


def _run_into(results: Path, data: Path, sim: SimHandle, prefect_api: str | None) -> subprocess.CompletedProcess[str]:
    argv = ["run", "--data", str(data), "--results", str(results), "--recipe", "quick"]
    env = child_env(prefect_api or NO_PREFECT_API, role_env(sim.url))
    return _coool(argv + ([] if prefect_api else ["--no-prefect"]), env)


@pytest.mark.slow
@pytest.mark.parametrize("prefect", [True, False], ids=["prefect", "no-prefect"])
def test_a_full_disk_during_describe_stops_the_run_and_the_rerun_after_gives_the_right_result(
    request: pytest.FixtureRequest, sim: SimHandle, clips4: Path, tmp_path: Path, small_fs: Path, prefect: bool
) -> None:
    prefect_api = request.getfixturevalue("prefect_api") if prefect else None
    sim.reset()
    # What the work gives with room to spare: the reference.
    baseline = tmp_path / "baseline"
    done = _run_into(baseline, clips4, sim, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = (baseline / "submission.csv").read_bytes()

    # The same run on the small file system; then describe's outputs and the submissions
    # go, and the disk is filled: the rerun finds captions and detect done, and describe
    # cannot write.
    results = small_fs / "results"
    done = _run_into(results, clips4, sim, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(results / "describe")
    for csv in [results / "submission.csv", *results.glob("submissions/*.csv")]:
        csv.unlink()
    ballast = _fill(small_fs, leave_pages=2)
    done = _run_into(results, clips4, sim, prefect_api)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, out[-3000:]
    last = out.splitlines()[-1]
    assert last.startswith("error: results folder") and "No space left on device" in last, out[-3000:]
    if not prefect:  # (Prefect's own log of the failed flow run carries a traceback, for its UI)
        assert "Traceback" not in out, out[-3000:]
    assert not (results / "submission.csv").exists(), "a submission of fallbacks was written"

    # Space freed: the same command finishes with the submission of the undisturbed run.
    ballast.unlink()
    done = _run_into(results, clips4, sim, prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (results / "submission.csv").read_bytes() == expected
    assert not [p for p in validate(read_submission(results / "submission.csv")) if p.level == "error"]


def test_a_previous_good_submission_is_not_replaced_when_the_disk_is_full(
    sim: SimHandle, clips4: Path, small_fs: Path
) -> None:
    sim.reset()
    results = small_fs / "results"
    done = _run_into(results, clips4, sim, None)
    assert done.returncode == 0, done.stderr[-3000:]
    good = (results / "submission.csv").read_bytes()
    shutil.rmtree(results / "describe")
    _fill(small_fs)  # not a byte left: the start-up check says so
    line = _one_line(_run_into(results, clips4, sim, None))
    assert f"results folder {results}: not writable (No space left on device)" in line, line
    _free(small_fs, 2)  # room for the check, not for describe's outputs
    done = _run_into(results, clips4, sim, None)
    assert done.returncode == 1 and "No space left on device" in done.stderr, done.stderr[-3000:]
    assert (results / "submission.csv").read_bytes() == good


def test_failures_csv_is_written_before_the_submissions(sim: SimHandle, clips4: Path, tmp_path: Path) -> None:
    sim.reset()
    results = tmp_path / "results"
    done = _run_into(results, clips4, sim, None)
    assert done.returncode == 0, done.stderr[-3000:]
    failures, final = results / "failures.csv", results / "submission.csv"
    # The recipe's own submissions (the v4 configuration's CSV), wherever the layout puts them.
    recipe_csvs = [p for p in results.rglob("*.csv") if "captions" not in p.parts
                   and p.name not in ("failures.csv", "submission.csv", "detections.csv")]
    assert recipe_csvs
    assert failures.stat().st_mtime_ns <= final.stat().st_mtime_ns
    assert final.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in recipe_csvs)


# -- 4. every request of a stage refused the same way: stop and say so ----------------------


@pytest.mark.parametrize("prefect", [True, False], ids=["prefect", "no-prefect"])
def test_every_request_refused_stops_the_run_naming_role_url_and_error(
    request: pytest.FixtureRequest, sim: SimHandle, clips4: Path, tmp_path: Path, prefect: bool
) -> None:
    prefect_api = request.getfixturevalue("prefect_api") if prefect else None
    sim.reset()
    sim.set_faults(fail_next=100000, status=400)
    try:
        results = tmp_path / "results"
        done = _run_into(results, clips4, sim, prefect_api)
    finally:
        sim.set_faults(fail_next=0, status=500)
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, out[-3000:]
    last = out.splitlines()[-1]
    assert last.startswith("error: caption (role captioner): every request was refused: HTTP 400 from "), last
    assert sim.url in last and "of 4 video(s)" in last, last
    assert not (results / "submission.csv").exists()
    assert "HTTP 400" in (results / "failures.csv").read_text()


def test_a_few_refused_videos_among_working_ones_stay_per_video_failures(
    sim: SimHandle, clips4: Path, tmp_path: Path
) -> None:
    sim.reset()
    # One video at a time: the first video's 6 caption requests (60 frames, every 10th) are refused,
    # the other three videos' are answered.
    sim.set_faults(fail_next=6, status=400)
    results = tmp_path / "results"
    argv = ["run", "--no-prefect", "--data", str(clips4), "--results", str(results), "--recipe", "quick"]
    done = _coool(argv, child_env(NO_PREFECT_API, role_env(sim.url, COOOL_VIDEO_CONCURRENCY="1")))
    assert done.returncode == 0, done.stderr[-3000:]
    failures = pd.read_csv(results / "failures.csv")
    assert list(failures["stage"]) == ["caption"] and "HTTP 400" in failures["error"][0], failures
    rows = read_submission(results / "submission.csv")
    assert len(rows) == 4 and not [p for p in validate(rows) if p.level == "error"]
