"""Ctrl-C during a run (issue #15.6): SIGINT mid-stage, with and without Prefect.

The run (a child `coool run`) starts its model servers with the process
backend: the SIMULATED server (a test double, no model inside) launched as
`vllm serve` would be, its access log in ``<results>/servers/<role>.log``.
After SIGINT: one line "interrupted: N of M units done; rerun the same
command to resume", exit 130, no warning, traceback or "Crash detected", the
server process gone, the lock released; the rerun asks only for what was not
finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from reliability_support import assert_valid_submission, child_env, finished_units, kill_group, start_run, wait_until

from coool.runlock import LOCK_NAME
from coool.sim.testing import SIM_SERVER_COMMAND, free_port
from flows.interrupted import INTERRUPTED

pytestmark = pytest.mark.slow

VIDEOS = 4
CAPTION_REQUEST = '"POST /v1/chat/completions'


def _settings(folder: Path, port: int) -> Path:
    """Every role on one process-backend simulated server (started per phase, stopped after it)."""
    role = {
        "urls": [f"http://127.0.0.1:{port}/v1"], "model": "sim-model", "backoff_s": 0.05,
        "server": {"backend": "process", "health_timeout_s": 60,
                   "command": [*SIM_SERVER_COMMAND, "--port", str(port), "--latency", "0.4"]},
    }
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump({
        **{r: role for r in ("captioner", "detector", "describer", "ensembler")},
        "video_concurrency": 1, "task_retry_delay_s": 0,
    }))
    return path


def _server_of(run: psutil.Process) -> psutil.Process | None:
    for child in run.children(recursive=True):
        try:
            if "sim-server" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


async def _states_under(flow_run_id: str) -> dict[str, Any]:
    """(state type, message) of the pipeline's flow run, of its stage flow runs, of their task runs."""
    async with get_client() as client:
        top = await client.read_flow_run(UUID(flow_run_id))
        flows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[top.id]))
        )
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[top.id, *(f.id for f in flows)])))

    def state(run: Any) -> tuple[str, str]:
        return run.state.type.value, run.state.message or ""

    return {"pipeline": state(top), "flows": [state(f) for f in flows], "tasks": [state(t) for t in tasks]}


def _caption_requests(results: Path) -> int:
    log = results / "servers" / "captioner.log"
    return log.read_text(errors="replace").count(CAPTION_REQUEST) if log.exists() else 0


@pytest.mark.parametrize(
    ("mode", "signum"),
    [("no-prefect", signal.SIGINT), ("prefect", signal.SIGINT), ("prefect", signal.SIGTERM)],
    ids=["no-prefect", "prefect", "prefect-sigterm"],
)
def test_ctrl_c_mid_stage_stops_cleanly_and_the_rerun_resumes(
    mode: str, signum: int, prefect_api: str, clips4: Path, small_recipe: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    settings = _settings(tmp_path, free_port())
    extra = ["--no-prefect"] if mode == "no-prefect" else []
    env = child_env(prefect_api, {})
    env["COOOL_SETTINGS_FILE"] = str(settings)
    log = tmp_path / "interrupted.log"
    run = start_run(clips4, results, small_recipe, env, log, *extra)
    try:
        # Mid-captions: one video's captions written, not all four.
        wait_until(lambda: len(list((results / "captions").glob("*.json"))) >= 1, 300,
                   "a first video's captions", alive=run, poll_s=0.05)
        server = _server_of(psutil.Process(run.pid))
        assert server is not None, "the process-backend server is a child of the run"
        os.kill(run.pid, signum)  # Ctrl-C, or SIGTERM (a scheduler or `kill` stopping the run)
        code = run.wait(timeout=120)
    finally:
        if run.poll() is None:
            kill_group(run)
    output = log.read_text(errors="replace")
    finished = finished_units(results)
    captioned = sum(1 for stage, _ in finished if stage == "caption")
    assert 1 <= captioned < VIDEOS, output[-3000:]
    assert code == 130, output[-3000:]
    units = VIDEOS * 6  # stage 1 and five stages (caption, detect, two describes, ensemble) per video
    done = VIDEOS + len(finished)  # every video's frames were made before captions began
    assert f"interrupted: {done} of {units} units done; rerun the same command to resume" in output
    for noise in ("never awaited", "Traceback", "Crash detected", "RuntimeWarning", "| ERROR"):
        assert noise not in output, output[-3000:]
    # The server coool started is stopped (not left serving a model on the GPUs).
    wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 30, "the server to stop")
    assert not (results / LOCK_NAME).exists()
    if mode == "prefect":
        # The Prefect UI shows the run as stopped by the user, not as a crash: Cancelled, with why.
        states = asyncio.run(_states_under(json.loads((results / "run.json").read_text())["prefect_flow_run_id"]))
        assert states["pipeline"] == ("CANCELLED", INTERRUPTED), states
        assert "CRASHED" not in {t for t, _ in states["flows"] + states["tasks"]}, states
        assert ("CANCELLED", INTERRUPTED) in states["flows"] and ("CANCELLED", INTERRUPTED) in states["tasks"], states

    # The rerun: only what was not finished (caption requests counted in the server's log).
    before = _caption_requests(results)
    per_video = {v: len((results / "captions" / f"{v}.raw.jsonl").read_text().splitlines())
                 for stage, v in finished if stage == "caption"}
    kept = {v: (results / "captions" / f"{v}.json").read_bytes() for v in per_video}
    rerun = start_run(clips4, results, small_recipe, env, tmp_path / "rerun.log", *extra)
    assert rerun.wait(timeout=400) == 0, (tmp_path / "rerun.log").read_text(errors="replace")[-3000:]
    frames_per_video = next(iter(per_video.values()))
    assert _caption_requests(results) - before == (VIDEOS - len(per_video)) * frames_per_video
    assert {v: (results / "captions" / f"{v}.json").read_bytes() for v in per_video} == kept
    assert_valid_submission(results / "submission.csv", [int(p.stem) for p in (clips4 / "videos").glob("*.mp4")])
