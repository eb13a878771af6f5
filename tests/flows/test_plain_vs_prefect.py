"""The same recipe run plain (``coool run --no-prefect``) and as the Prefect flow gives the same files.

Both runs go through ``coool.schedule.Scheduler``; only who runs a unit
differs (a direct call, a Prefect task). Synthetic clips, the SIMULATED model
server (a test double: no model inside), the session's Prefect test harness.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from roles import point_roles_at

from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.settings import load_settings
from coool.sim.testing import running_sim_server
from flows.pipeline import pipeline_flow

pytestmark = pytest.mark.slow

# Not outputs of the method: Prefect's own result store, and the flow's record of
# where the inputs were (run.json; the plain run is given folders, not a data root).
NOT_COMPARED = (".prefect", "run.json")


def unordered_samples(text: bytes) -> dict:
    """A detect output with its samples and votes as multisets: the detector's 12 requests are
    identical and sent at once, so which of them gets which answer is the server's arrival order."""
    data = json.loads(text)
    for name in ("samples", "votes"):
        data[name] = sorted(data[name], key=lambda item: json.dumps(item, sort_keys=True))
    return data


def output_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in NOT_COMPARED
    }


@pytest.mark.parametrize("recipe", ["quick", "second-place"])
def test_plain_and_prefect_runs_write_identical_files(prefect_api, synthetic_data, tmp_path: Path, recipe: str) -> None:
    monkey = pytest.MonkeyPatch()
    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkey.setenv(key, value)
        try:
            # Both runs write to the same folder (outputs name their frames' paths), one after the other.
            results = tmp_path / "results"
            plain = asyncio.run(run_plain(
                Run(load_settings(results_dir=results), load_recipe(recipe)), synthetic_data.videos,
                synthetic_data.heatmaps,
            ))
            results.rename(tmp_path / "plain")
            # The simulated server varies the answers to a repeated request (the detector's 12 single
            # samples): both runs must start from the same server state to get the same answers.
            sim.reset()
            flow = asyncio.run(pipeline_flow(data_root=str(synthetic_data.root), recipe=recipe, results_dir=str(results)))
            results.rename(tmp_path / "prefect")
        finally:
            monkey.undo()
    assert plain["failures"] == flow["failures"] == 0
    # The same stages, frames included, in the same order, with the same counts.
    assert [(r["stage"], r["done"], r["skipped"]) for r in plain["stages"]] == [
        (r["stage"], r["done"], r["skipped"]) for r in flow["stages"]
    ]
    assert plain["stages"][0]["stage"] == "frames"
    plain_files, flow_files = output_files(tmp_path / "plain"), output_files(tmp_path / "prefect")
    assert sorted(plain_files) == sorted(flow_files)
    assert "submission.csv" in plain_files and len(plain_files) > 20
    different = [name for name in plain_files if plain_files[name] != flow_files[name]]
    # Per-video detect outputs may list the same answers in another order; everything else is byte for byte.
    reordered = [n for n in different if n.startswith("detect/") and n.endswith(".json")]
    assert [n for n in different if n not in reordered] == []
    assert all(unordered_samples(plain_files[n]) == unordered_samples(flow_files[n]) for n in reordered)
