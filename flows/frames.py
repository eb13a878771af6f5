"""Stage 1 as a flow: stacked caption frames for every video (CPU only, no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.common import ACTIVE_RUN, FlowRun, holding_results


@flow(name="frames", flow_run_name="frames-{recipe}")
async def frames_flow(
    data_root: str,
    recipe: str = "second-place",
    results_dir: str | None = None,
    settings_file: str | None = None,
) -> dict[str, Any]:
    """Scan ``<data_root>/videos`` and ``heatmaps``; write each video's stacked frames
    (one task per video, ``settings.frames_concurrency`` at a time).

    Returns every video id the submission needs, the ids with frames, the
    failures (bad inputs name their file) and the stage report.
    """
    inside = ACTIVE_RUN.get() is not None
    run = await FlowRun.start(recipe, results_dir, settings_file, data_root)
    pipeline = run.pipeline
    async with holding_results(pipeline.ws.root):
        if inside:  # the pipeline flow scanned the inputs already
            pairs, videos = run.pairs, sorted({p.video_id for p in run.pairs})
        else:
            root = Path(data_root)
            pairs, videos = pipeline.collect_inputs(root / "videos", root / "heatmaps")
        report = await run.scheduler().frames(pairs)
    failed = {f.video for f in report.failed}
    usable = sorted(p.video_id for p in pairs if p.video_id not in failed)
    get_run_logger().info("frames: %d of %d videos ready, %d problem(s)", len(usable), len(videos), len(report.failed))
    return {
        "videos": videos, "usable": usable, "failures": [f.__dict__ for f in pipeline.failures], "report": report.as_dict()
    }
