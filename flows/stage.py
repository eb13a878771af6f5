"""Any stage of a recipe as a flow, by name: the flow of a stage kind that has no flow of its own."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_stage_flow


@flow(name="stage", flow_run_name="{stage}")
async def stage_flow(
    stage: str,
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """One task per video for the recipe's stage named ``stage`` (see ``coool.recipe.Recipe.stages``)."""
    return await run_stage_flow(
        stage, recipe=recipe, results_dir=results_dir, settings_file=settings_file, data_root=data_root, videos=videos
    )
