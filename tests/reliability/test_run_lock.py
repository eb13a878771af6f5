"""One run per results folder (issue #15.5): a second `coool run` on the same folder waits
for the first (then finds everything done: zero requests) or exits 2 with --no-wait; a
lock left by a SIGKILLed run does not block; a flow started as a deployment takes the
lock too. The model server is the SIMULATED one (a test double, no model inside).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from reliability_support import COOOL, REPO, assert_valid_submission, child_env, kill_group, role_env, start_run, wait_until

from coool.runlock import LOCK_NAME, ResultsInUse, RunLock, process_start_time, read_holder, results_lock
from coool.sim.testing import running_sim_server

SLOW_S = 1.0  # every request of the first run: it is still running when the second starts (~25 s)


def _tasks(sim) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in sim.stats()["tasks"].items() if v}


def _started_requests(sim, run: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Until the run has sent a request: it holds the lock by then."""
    wait_until(lambda: sim.stats()["tasks"].get("frame_caption", 0) >= 1, 120, "the first run's first request", alive=run)


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# -- the staleness rules, on a lock file written by hand -------------------------------------


def _write_lock(folder: Path, **record: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00",
            "process_start": process_start_time(os.getpid()), "command": "coool run"}
    path = folder / LOCK_NAME
    path.write_text(json.dumps({**base, **record}))
    return path


def test_a_lock_of_a_dead_pid_is_stale_and_taken(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path, pid=dead.pid)
    lock = RunLock(tmp_path)
    assert lock.try_acquire() is None
    assert read_holder(tmp_path / LOCK_NAME).pid == os.getpid()  # type: ignore[union-attr]
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_reused_pid_is_told_by_its_start_time(tmp_path: Path) -> None:
    # The recorded pid is alive but started at another time than recorded: another process now.
    holder = subprocess.Popen(["sleep", "30"])
    try:
        _write_lock(tmp_path, pid=holder.pid, process_start=process_start_time(holder.pid) - 3600)
        assert RunLock(tmp_path).try_acquire() is None
        _write_lock(tmp_path, pid=holder.pid, process_start=process_start_time(holder.pid))
        live = RunLock(tmp_path).try_acquire()
        assert live is not None and live.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_of_another_host_says_whose_it_is_and_how_to_remove_it(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, pid=4242, host="gpu-node-7")
    with pytest.raises(ResultsInUse) as raised:
        with results_lock(tmp_path, wait=False):
            pass
    message = str(raised.value)
    assert "is in use by pid 4242 on host gpu-node-7 since 2026-01-01T00:00:00+00:00" in message
    assert f"if that run is gone, remove {path}" in message
    assert path.exists()  # never removed: it can't be judged from here


def test_the_lock_is_reentrant_in_one_run_and_released_after(tmp_path: Path) -> None:
    with results_lock(tmp_path, wait=False):
        with results_lock(tmp_path, wait=False):  # a stage flow inside the run: no deadlock
            assert read_holder(tmp_path / LOCK_NAME).pid == os.getpid()  # type: ignore[union-attr]
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


# -- two real runs on one folder --------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_waits_then_finds_everything_done(
    prefect_api: str, clips4: Path, small_recipe: Path, tmp_path: Path
) -> None:
    """The first run with Prefect, the second without: one lock, whichever path."""
    results = tmp_path / "results"
    with running_sim_server(model=["sim-model"]) as sim:
        sim.set_latency(SLOW_S)
        env = child_env(prefect_api, role_env(sim.url, COOOL_VIDEO_CONCURRENCY="1"))
        first = start_run(clips4, results, small_recipe, env, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            _started_requests(sim, first)
            second = start_run(clips4, results, small_recipe, env, tmp_path / "second.log", "--no-prefect")
            wait_until(lambda: "waiting..." in _log(tmp_path / "second.log"), 60, "the second run's message",
                       alive=second)
            assert first.poll() is None  # told while the first still ran
            assert first.wait(timeout=300) == 0, _log(tmp_path / "first.log")[-3000:]
            after_first = _tasks(sim)
            assert second.wait(timeout=300) == 0, _log(tmp_path / "second.log")[-3000:]
        finally:
            for run in (first, second):
                if run is not None and run.poll() is None:
                    kill_group(run)
        assert _tasks(sim) == after_first  # the second run asked nothing: all of it was done
    message = _log(tmp_path / "second.log")
    assert f"results folder {results.resolve()} is in use by pid {first.pid} on host {socket.gethostname()} since" in message
    assert "waiting... (--no-wait to exit)" in message
    assert_valid_submission(results / "submission.csv", [int(p.stem) for p in (clips4 / "videos").glob("*.mp4")])
    assert not (results / LOCK_NAME).exists()


@pytest.mark.slow
def test_no_wait_exits_2_and_a_sigkilled_runs_lock_does_not_block(
    prefect_api: str, clips4: Path, small_recipe: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    with running_sim_server(model=["sim-model"]) as sim:
        sim.set_latency(SLOW_S)
        env = child_env(prefect_api, role_env(sim.url, COOOL_VIDEO_CONCURRENCY="1"))
        first = start_run(clips4, results, small_recipe, env, tmp_path / "first.log", "--no-prefect")
        try:
            _started_requests(sim, first)
            # With Prefect and --no-wait: out at once, before any flow run or request.
            started = time.monotonic()
            refused = subprocess.run(
                [COOOL, "run", "--data", str(clips4), "--results", str(results), "--recipe", str(small_recipe), "--no-wait"],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
            )
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in refused.stderr
            assert "Traceback" not in refused.stderr
            assert time.monotonic() - started < 60
            assert first.poll() is None
        finally:
            kill_group(first)  # SIGKILL: no cleanup, the lock file stays
    assert read_holder(results / LOCK_NAME).pid == first.pid  # type: ignore[union-attr]
    with running_sim_server(model=["sim-model"]) as sim:
        env = child_env(prefect_api, role_env(sim.url))
        rerun = subprocess.run(
            [COOOL, "run", "--data", str(clips4), "--results", str(results), "--recipe", str(small_recipe), "--no-wait"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=400,
        )
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "in use" not in rerun.stderr
    assert not (results / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_deployment_flow_run_waits_for_the_folder(
    prefect_api: str, clips4: Path, small_recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline_flow`` called as a deployment would (no `coool run` around it) takes the lock:
    while another live process holds the folder it does no work; once that one is gone it runs."""
    from flows.pipeline import pipeline_flow

    results = tmp_path / "results"
    holder = subprocess.Popen(["sleep", "60"])
    _write_lock(results, pid=holder.pid, process_start=process_start_time(holder.pid))
    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in role_env(sim.url).items():
            monkeypatch.setenv(key, value)

        async def go() -> dict[str, object]:
            flow = asyncio.create_task(pipeline_flow(
                data_root=str(clips4), recipe=str(small_recipe), results_dir=str(results)))
            await asyncio.sleep(3.0)
            # Held by the other process: nothing done yet.
            assert not (results / "frames").exists() and not flow.done()
            assert sim.stats()["tasks"].get("frame_caption", 0) == 0
            holder.kill()
            holder.wait()
            return await flow

        try:
            outcome = asyncio.run(go())
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
    assert outcome["videos"] == 4
    assert (results / "submission.csv").exists() and not (results / LOCK_NAME).exists()


def test_a_results_path_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(ValueError, match=r"results folder .*results: cannot write its run lock"):
        with results_lock(tmp_path / "results", wait=False):
            pass
