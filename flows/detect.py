"""Stage 3 as a flow: the frame where each incident begins (role: detector)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_stage_flow


@flow(name="detect", flow_run_name="detect-{recipe}")
async def detect_flow(
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """One task per video (``detect-video-17``), 12 voted samples each."""
    return await run_stage_flow(
        "detect", recipe=recipe, results_dir=results_dir, settings_file=settings_file, data_root=data_root, videos=videos
    )
