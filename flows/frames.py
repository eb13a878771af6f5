"""Stage 1 as a flow: stacked caption frames for every video (CPU only, no server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from coool.decode import VideoError
from coool.inputs import VideoPair
from coool.pipeline import Pipeline
from flows.common import build_pipeline


# Stage 1 checks the inputs' content hashes itself and skips finished
# videos, so Prefect's cache would add nothing but storage.
@task(cache_policy=NONE, retries=0)
async def frames_video(pipeline: Pipeline, pair: VideoPair) -> dict[str, Any]:
    manifest = await asyncio.to_thread(pipeline.frames, pair)
    return {"video": pair.video_id, "frames": manifest.video.frames, "stacked": len(manifest.frames)}


@flow(name="frames", flow_run_name="frames-{recipe}")
async def frames_flow(
    data_root: str,
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
) -> dict[str, Any]:
    """Scan ``<data_root>/videos`` and ``heatmaps``; write each video's stacked frames.

    Returns every video id the submission needs, the ids with frames, and
    the failures (bad inputs name their file).
    """
    logger = get_run_logger()
    pipeline = build_pipeline(recipe, results_dir, settings_file, data_root)
    root = Path(data_root)
    pairs, videos = pipeline.collect_inputs(root / "videos", root / "heatmaps")
    usable: list[int] = []
    limit = asyncio.Semaphore(4)  # CPU work: a few threads are plenty on small machines

    async def one(pair: VideoPair) -> None:
        async with limit:
            state = await frames_video.with_options(task_run_name=f"frames-video-{pair.video_id}")(
                pipeline, pair, return_state=True
            )
        if state.is_completed():
            usable.append(pair.video_id)
        else:
            exc = await state.aresult(raise_on_failure=False)
            reason = str(exc) if isinstance(exc, (VideoError, OSError)) else f"{type(exc).__name__}: {exc}"
            pipeline.fail(pair.video_id, "frames", reason, str(pair.video))
            logger.warning("frames: video %d failed: %s", pair.video_id, reason)

    await asyncio.gather(*(one(p) for p in pairs))
    logger.info("frames: %d of %d videos ready, %d problem(s)", len(usable), len(videos), len(pipeline.failures))
    return {"videos": videos, "usable": sorted(usable), "failures": [f.__dict__ for f in pipeline.failures]}
