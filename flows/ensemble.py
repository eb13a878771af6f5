"""Stage 5 as a flow: one caption, reason and frame from several submissions (role: ensembler)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_stage_flow


@flow(name="ensemble", flow_run_name="ensemble-{recipe}")
async def ensemble_flow(
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """One task per video (``ensemble-video-17``)."""
    return await run_stage_flow(
        "ensemble", recipe=recipe, results_dir=results_dir, settings_file=settings_file, data_root=data_root, videos=videos
    )
