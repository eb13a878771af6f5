"""Stage 2 as a flow: caption every k-th stacked frame (role: captioner)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_stage_flow


@flow(name="caption", flow_run_name="caption-{recipe}")
async def caption_flow(
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """One task per video (``caption-video-17``); ``videos`` defaults to every video with frames."""
    return await run_stage_flow(
        "caption", recipe=recipe, results_dir=results_dir, settings_file=settings_file, data_root=data_root, videos=videos
    )
