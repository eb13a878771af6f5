"""A results folder moved elsewhere is still a cache: no cache key depends on where it lives.

The caption tables hold absolute image paths (the studio and the describe stage read
them); the detect key used to hash that file, so a moved folder re-asked the detector
for every video. ``coool run --no-prefect`` (captions, detect, one describe
configuration) into folder A; A is moved to B; the same command on B sends no
request and leaves every key as it was; with B's caption tables made again (now
naming B's frames), only the captioner is asked and every key is still A's. The model server is the SIMULATED one (a
test double, no model inside).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import COOOL, REPO, child_env, role_env

from coool.sim.testing import SimHandle, running_sim_server


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim_server(model=["sim-model"]) as handle:
        yield handle


def _run(sim: SimHandle, data: Path, results: Path) -> None:
    argv = [COOOL, "run", "--no-prefect", "--data", str(data), "--results", str(results), "--recipe", "quick"]
    done = subprocess.run(argv, env=child_env("http://127.0.0.1:9/api", role_env(sim.url)), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _keys(results: Path) -> dict[str, str]:
    """Every unit's recorded key, by its output file (relative to the results folder)."""
    keys = {}
    for path in sorted(results.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            keys[str(path.relative_to(results))] = record["key"]
    return keys


def test_a_moved_results_folder_is_reused_without_a_request(sim: SimHandle, clips4: Path, tmp_path: Path) -> None:
    first = tmp_path / "A" / "results"
    _run(sim, clips4, first)
    before = _keys(first)
    assert any(k.startswith("detect/") for k in before) and any(k.startswith("captions/") for k in before), before
    # The caption tables really do name the folder: the test would prove nothing otherwise.
    assert str(first) in (first / "captions" / "0.csv").read_text()
    submission = (first / "submission.csv").read_bytes()

    moved = tmp_path / "B" / "elsewhere" / "results"
    moved.parent.mkdir(parents=True)
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    sim.reset()
    _run(sim, clips4, moved)
    assert sim.stats()["received"] == 0, sim.stats()
    assert _keys(moved) == before
    assert (moved / "submission.csv").read_bytes() == submission

    # The caption tables made again where the folder now is (they name B's frames now):
    # the captions are asked again, the detector is not, and every key is A's.
    for table in (moved / "captions").glob("*"):
        table.unlink()
    sim.reset()
    _run(sim, clips4, moved)
    assert str(moved) in (moved / "captions" / "0.csv").read_text()
    tasks = sim.stats()["tasks"]
    assert tasks.get("frame_caption", 0) > 0 and set(tasks) == {"frame_caption"}, tasks
    assert _keys(moved) == before
    assert (moved / "submission.csv").read_bytes() == submission
