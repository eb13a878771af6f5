"""Two recipes into one results folder as Prefect flows (issue #14): the second shares the
first's unswitched stages, neither overwrites the other, and switching back asks nothing.
Real (test-harness) Prefect server; the SIMULATED model server (a test double, no model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from roles import point_roles_at

from coool.improvements import catalogue
from coool.recipe import load_recipe
from coool.sim.testing import running_sim_server
from flows.pipeline import pipeline_flow

pytestmark = pytest.mark.slow

# Switches only describe declares: a recipe with these shares the captions and detections.
DESCRIBE_ONLY = sorted({i.name for i in catalogue() if i.stage == "describe"}
                       - {i.name for i in catalogue() if i.stage != "describe"})


def test_two_recipes_side_by_side_through_the_flows(prefect_api, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    partial = tmp_path / "quick-describe-plus.yaml"
    partial.write_text("name: quick-describe-plus\ndescribe: [v4]\nfinal: v4\n"
                       f"improvements: [{', '.join(DESCRIBE_ONLY)}]\n", encoding="utf-8")
    variant = load_recipe(str(partial)).output_variants()["describe:v4"]
    monkey = pytest.MonkeyPatch()
    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkey.setenv(key, value)

        def run(recipe: str) -> dict[str, int]:
            sim.reset()
            asyncio.run(pipeline_flow(data_root=str(synthetic_data.root), recipe=recipe, results_dir=str(results)))
            stats = sim.stats()
            return {**stats["tasks"], "received": stats["received"]}

        try:
            first = run("quick")
            faithful_v4 = (results / "describe" / "v4" / "0.json").read_bytes()
            second = run(str(partial))
            again = {name: run(name)["received"] for name in ("quick", str(partial))}
        finally:
            monkey.undo()
    assert first["frame_caption"] > 0 and first["incident_frame"] > 0
    assert second.get("frame_caption", 0) == 0 and second.get("incident_frame", 0) == 0 and second["received"] > 0
    assert (results / "describe" / "v4" / "0.json").read_bytes() == faithful_v4
    assert (results / "describe" / f"v4+{variant}" / "0.json").exists()
    assert sorted(p.name for p in (results / "submissions").iterdir()) == ["quick-describe-plus.csv", "quick.csv"]
    assert again == {"quick": 0, str(partial): 0}
