"""Stage 4 as flows: one describe configuration, and the count sanity pass."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import run_stage_flow


@flow(name="describe", flow_run_name="describe-{config}")
async def describe_flow(
    config: str = "v4",
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """One task per video (``describe-v4-video-17``) for a configuration of the recipe."""
    return await run_stage_flow(
        f"describe:{config}", recipe=recipe, results_dir=results_dir, settings_file=settings_file,
        data_root=data_root, videos=videos,
    )


@flow(name="count-pass", flow_run_name="count-pass-{recipe}")
async def count_pass_flow(
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
    data_root: str | None = None,
    videos: list[int] | None = None,
) -> dict[str, Any]:
    """Re-describe the videos whose counts exceed the threshold (others are skipped)."""
    return await run_stage_flow(
        "count-pass", recipe=recipe, results_dir=results_dir, settings_file=settings_file, data_root=data_root, videos=videos
    )
