"""The registry is the one list of stage kinds: a new stage kind added there
(and implemented in its own module) is planned, run, resumed and reported
with no other edit (tests/support/notes_stage.py is that module)."""

from __future__ import annotations

import json
from pathlib import Path

from notes_stage import notes_registered

from coool.recipe import load_recipe, phases
from coool.registry import STAGE_KINDS
from coool.run import Run, run_plain
from coool.settings import ROLES, RoleSettings, Settings


def settings_for(sim, results: Path) -> Settings:
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    return Settings(results_dir=results, **roles)


def test_a_registered_kind_is_planned_after_what_it_needs() -> None:
    before = [s.name for s in load_recipe("quick").stages()]
    with notes_registered():
        recipe = load_recipe("quick")
        names = [s.name for s in recipe.stages()]
        # The describer's phase holds it: it needs the detector's frame and shares the describer's server.
        plan = [(p.role, [s.name for s in p.stages]) for p in phases(recipe.stages())]
    assert names == [*before[:2], "notes", *before[2:]]
    assert ("describer", ["notes", "describe:v4"]) in plan
    assert "notes" not in STAGE_KINDS  # restored


async def test_a_registered_kind_runs_resumes_and_reports(sim, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with notes_registered() as notes:
        outcome = await run_plain(Run(settings_for(sim, results), load_recipe("quick")), synthetic_data.videos,
                                  synthetic_data.heatmaps)
        assert outcome["failures"] == 0
        report = next(r for r in outcome["stages"] if r["stage"] == "notes")
        assert report["done"] == 3 and report["failed"] == []
        saved = {v: json.loads((results / "notes" / f"{v}.json").read_text()) for v in (0, 1, 2)}
        detected = {v: json.loads((results / "detect" / f"{v}.json").read_text())["frame"] for v in (0, 1, 2)}
        assert {v: s["frame"] for v, s in saved.items()} == detected
        # The key recorded is the run's stage key (one key for the output and the cache).
        run = Run(settings_for(sim, results), load_recipe("quick"))
        stage = next(s for s in run.recipe.stages() if s.kind == notes.kind)
        assert all(saved[v]["key"] == run.stage_key(stage, v) for v in (0, 1, 2))

        # A rerun asks nothing; deleting one output reruns that video alone.
        (results / "notes" / "1.json").unlink()
        sim.reset()
        again = await run_plain(Run(settings_for(sim, results), load_recipe("quick")), synthetic_data.videos,
                                synthetic_data.heatmaps)
    assert again["failures"] == 0
    assert sim.stats()["received"] == 1
    assert json.loads((results / "notes" / "1.json").read_text()) == saved[1]
