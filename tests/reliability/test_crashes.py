"""SIGKILL the pipeline (``coool run``, the Prefect flow, in a child process) during
captions, during describe and during ensemble; rerun it.

For each kill point:

- right after the kill, every JSON / JSONL / CSV in the results folder parses
  (writes are temp file + rename: no partial file);
- the rerun ends with byte-for-byte the submissions of an uninterrupted run
  (the simulated server is deterministic);
- the rerun asks the server for exactly what the uninterrupted run asked minus
  what was finished at the kill, per task title: finished work is not redone;
- temp files a kill leaves (``.<name>.<pid>-<random>.tmp``) are removed by the
  rerun (it sweeps those whose writer pid is dead), so none is left.

The three scenarios run at once (each its own results folder and simulated
server) to keep the wall time down; the baseline is an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    child_env,
    failures,
    finished_units,
    kill_group,
    role_env,
    start_run,
    temp_files,
    total,
    unit_requests,
    unreadable_files,
    wait_until,
)

from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.settings import load_settings
from coool.sim.testing import SimHandle, running_sim_server

pytestmark = pytest.mark.slow

VIDEOS = 4
SLOW_S = 0.5  # the target stage's simulated latency during the killed run: a wide kill window


@dataclass(frozen=True)
class KillPoint:
    name: str
    stage_prefix: str  # the (stage, video) units of the target stage start with this
    latency: dict[str, float]  # per task title, during the killed run
    title: str  # the task title whose completed count triggers the kill
    at: int  # ... when it reaches this
    units: int  # how many units the stage has in all

    # Why "at" guarantees a finished and an unfinished unit: one video at a time per
    # stage (COOOL_VIDEO_CONCURRENCY=1), so when the k-th video's requests are
    # answered the (k-1)-th video's output was written; "at" stays far below all.


KILL_POINTS = (
    # 6 caption requests per video: at 12 the second video is answered, the first written.
    KillPoint("captions", "caption", {"frame_caption": SLOW_S}, "frame_caption", 12, VIDEOS),
    # Two describe configurations at once, 3 passes each per video: at 4 reconciles one
    # configuration has answered a second video.
    KillPoint("describe", "describe:", {t: SLOW_S for t in ("describe_counts", "describe_texts", "describe_reconcile")},
              "describe_reconcile", 4, 2 * VIDEOS),
    KillPoint("ensemble", "ensemble", {"ensemble": SLOW_S}, "ensemble", 2, VIDEOS),
)


@dataclass
class Scenario:
    point: KillPoint
    results: Path
    killed_pid: int = 0
    after_kill_unreadable: list[str] = field(default_factory=list)
    after_kill_temp: list[Path] = field(default_factory=list)
    finished: set[tuple[str, int]] = field(default_factory=set)
    rerun_code: int | None = None
    rerun_tasks: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def _plant_leftovers(results: Path, pid: int) -> list[Path]:
    """Temp files as a kill between create and rename leaves them (writer: the dead run)."""
    planted = []
    for folder in (results / "captions", results / ".prefect", results):
        if folder.is_dir():
            path = folder / f".planted.json.{pid}-deadbeef.tmp"
            path.write_text('{"half": ', encoding="utf-8")
            planted.append(path)
    return planted


def _scenario(point: KillPoint, sim: SimHandle, data: Path, recipe: Path, root: Path, prefect_api: str) -> Scenario:
    results = root / f"results-{point.name}"
    scenario = Scenario(point, results)
    env = child_env(prefect_api, role_env(sim.url, COOOL_VIDEO_CONCURRENCY="1"))
    try:
        sim.reset()
        sim.set_latency(0.0, tasks=point.latency)
        run = start_run(data, results, recipe, env, root / f"{point.name}-killed.log")
        try:
            wait_until(lambda: sim.stats()["tasks"].get(point.title, 0) >= point.at, 300,
                       f"{point.at} answered {point.title} requests", alive=run, poll_s=0.02)
        finally:
            kill_group(run)
        scenario.killed_pid = run.pid
        scenario.after_kill_unreadable = unreadable_files(results)
        scenario.after_kill_temp = temp_files(results)
        scenario.finished = finished_units(results)
        _plant_leftovers(results, run.pid)
        # The rerun: no latency, counted from zero once the dead run's last requests are
        # answered (the server finishes what was in flight; nobody reads it).
        sim.set_latency(0.0, tasks={title: None for title in point.latency})
        wait_until(lambda: not sim.stats()["active"], 30, "the killed run's requests to drain")
        sim.reset()
        rerun = start_run(data, results, recipe, env, root / f"{point.name}-rerun.log")
        scenario.rerun_code = rerun.wait(timeout=400)
        scenario.rerun_tasks = {k: v for k, v in sim.stats()["tasks"].items() if v}
    except Exception:
        scenario.error = traceback.format_exc()
    return scenario


@pytest.fixture(scope="module")
def crashes(prefect_api: str, clips4: Path, small_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("crashes")
    data = root / "data"
    shutil.copytree(clips4, data)
    # The uninterrupted run (no Prefect: the same library calls; the flows must match it).
    baseline = root / "baseline"
    with running_sim_server(model=["sim-model"]) as sim:
        with pytest.MonkeyPatch.context() as m:
            for key, value in role_env(sim.url).items():
                m.setenv(key, value)
            pipeline = Run(load_settings(results_dir=baseline), load_recipe(small_recipe))
            asyncio.run(run_plain(pipeline, data / "videos", data / "heatmaps"))
        baseline_tasks = {k: v for k, v in sim.stats()["tasks"].items() if v}
    with running_sim_server(model=["sim-model"]) as a, running_sim_server(model=["sim-model"]) as b, \
            running_sim_server(model=["sim-model"]) as c:
        with concurrent.futures.ThreadPoolExecutor(len(KILL_POINTS)) as pool:
            futures = [pool.submit(_scenario, point, sim, data, small_recipe, root, prefect_api)
                       for point, sim in zip(KILL_POINTS, (a, b, c))]
            scenarios = {f.result().point.name: f.result() for f in futures}
    return {"root": root, "baseline": baseline, "baseline_tasks": baseline_tasks, "scenarios": scenarios}


def test_the_baseline_counts_add_up(crashes: dict[str, Any]) -> None:
    """What the outputs record per (stage, video) sums to what the server answered: the
    per-unit counts the kill tests subtract are right."""
    per_unit = unit_requests(crashes["baseline"])
    assert len(per_unit) == VIDEOS * 5  # caption, detect, two describe configurations, ensemble
    assert dict(total(per_unit.values())) == crashes["baseline_tasks"]


@pytest.mark.parametrize("name", [p.name for p in KILL_POINTS])
def test_sigkill_then_rerun(crashes: dict[str, Any], name: str) -> None:
    s: Scenario = crashes["scenarios"][name]
    assert s.error is None, s.error
    log = (crashes["root"] / f"{name}-rerun.log").read_text(errors="replace")
    # Killed inside the target stage: some of its work finished, some not.
    done = [u for u in s.finished if u[0].startswith(s.point.stage_prefix)]
    assert 1 <= len(done) < s.point.units, f"killed {name} with {len(done)} of {s.point.units} units done"
    # No partial or corrupt file, right after the kill.
    assert s.after_kill_unreadable == []
    # The rerun finished, with the uninterrupted run's submissions, byte for byte.
    assert s.rerun_code == 0, log[-3000:]
    for path in sorted(crashes["baseline"].rglob("*.csv")):
        rel = path.relative_to(crashes["baseline"])
        if rel.parts[0] in ("captions",) or rel.name in ("failures.csv",):
            continue
        assert (s.results / rel).read_bytes() == path.read_bytes(), f"{rel} differs from the uninterrupted run"
    assert failures(s.results).empty
    # Finished work was not redone: the rerun asked exactly the rest, per task title.
    per_unit = unit_requests(crashes["baseline"])
    expected = Counter(crashes["baseline_tasks"])
    expected.subtract(total(per_unit[u] for u in s.finished))
    assert s.rerun_tasks == {k: v for k, v in expected.items() if v}
    # Nothing half-written or left over after the rerun: the dead run's temp files were swept.
    assert unreadable_files(s.results) == []
    assert temp_files(s.results) == []
