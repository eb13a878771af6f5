"""The whole recipe as one Prefect flow: frames, then each role's phase, then the submission.

Servers: the first phase's model servers start while stage 1 decodes
videos; each phase's servers stop before the next phase's start (the
models don't fit on the GPUs together). With ``concurrent=True`` every
role's server is up at once and each video runs its own chain of stages
with no barrier between stages.

Resume: a stage whose every (stage, video) result is cached gets no flow run
(its report counts them as cached), and a phase with nothing left to run
starts no server (the first phase's servers included: they are not
overlapped with stage 1 when it is all cached), so rerunning a finished
pipeline costs seconds and loads no model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run as current_flow_run

from coool.inputs import VideoPair
from coool.preflight import RunStopped
from coool.schedule import StageReport
from coool.servers import ServerManager
from coool.stage import Stage
from coool.summary import role_models, run_summary_markdown, total_tokens
from flows.caption import caption_flow
from flows.common import ACTIVE_RUN, FlowRun, cached_stage, holding_results, publish_submission, stage_tags
from flows.describe import count_pass_flow, describe_flow
from flows.detect import detect_flow
from flows.ensemble import ensemble_flow
from flows.frames import frames_flow
from flows.stage import stage_flow

# The stage kinds with a flow of their own (a deployment each); any other kind runs as ``stage_flow``.
STAGE_FLOWS: dict[str, Any] = {
    "caption": lambda stage, **kw: caption_flow(**kw),
    "detect": lambda stage, **kw: detect_flow(**kw),
    "describe": lambda stage, **kw: describe_flow(config=stage.config, **kw),
    "count-pass": lambda stage, **kw: count_pass_flow(**kw),
    "ensemble": lambda stage, **kw: ensemble_flow(**kw),
}


def _stage_subflow(params: dict[str, Any]) -> Any:
    async def run(stage: Stage, videos: list[int]) -> StageReport:
        start = STAGE_FLOWS.get(stage.kind) or (lambda stage, **kw: stage_flow(stage=stage.name, **kw))
        with tags(*stage_tags(stage)):  # on the stage's flow run (its task runs are untagged: see stage_task)
            return StageReport.from_dict(await start(stage, videos=videos, **params))

    return run


@flow(name="coool-pipeline", flow_run_name="pipeline-{recipe}")
async def pipeline_flow(
    data_root: str,
    recipe: str = "second-place",
    results_dir: str | None = None,
    concurrent: bool = False,
    settings_file: str | None = None,
) -> dict[str, Any]:
    """From ``<data_root>/videos`` + ``heatmaps`` to ``<results>/submission.csv``.

    Rerun with the same parameters to resume: finished (stage, video) work
    is not redone.
    """
    run = await FlowRun.start(recipe, results_dir, settings_file, data_root)
    # One run per results folder: a deployment run takes the lock here (`coool run` holds it already).
    async with holding_results(run.pipeline.ws.root):
        return await _pipeline(run, data_root, recipe, concurrent, settings_file)


async def _pipeline(run: FlowRun, data_root: str, recipe: str, concurrent: bool, settings_file: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.perf_counter()
    pipeline = run.pipeline
    params = {"recipe": recipe, "results_dir": str(pipeline.ws.root), "settings_file": settings_file, "data_root": data_root}
    root = Path(data_root)
    # The recipe as given (a name or a path), and which Prefect run made these results
    # (what `coool run` marks Cancelled after Ctrl-C).
    pipeline.record_start(root / "videos", root / "heatmaps", data_root=str(root.resolve()), recipe=recipe,
                          prefect_flow_run_id=current_flow_run.id)
    if removed := pipeline.clean_temp_files():
        logger.info("removed %d temp file(s) left by a killed run", len(removed))
    plan = pipeline.plan(concurrent=concurrent)
    logger.info("plan: frames -> %s", " -> ".join(f"{p.role or 'all'}[{', '.join(s.name for s in p.stages)}]" for p in plan))
    run.pairs, videos = pipeline.collect_inputs(root / "videos", root / "heatmaps")

    async def frames(pairs: list[VideoPair]) -> StageReport:
        return StageReport.from_dict((await frames_flow(**params))["report"])

    async def cached(stage: Stage, videos: list[int]) -> bool:
        # A stage whose every result is cached gets no flow run and starts no server.
        if await cached_stage(pipeline, stage, videos, run.storage):
            logger.info("%s: all %d videos cached, nothing to run", stage.name, len(videos))
            return True
        return False

    token = ACTIVE_RUN.set(run)
    try:
        reports = await run.scheduler(ServerManager(pipeline.settings)).run(
            pipeline, run.pairs, videos, concurrent=concurrent, run_frames=frames, run_stage=_stage_subflow(params), cached=cached
        )
    except RunStopped:
        pipeline.stopped()  # failures.csv, and no submission
        raise
    finally:
        ACTIVE_RUN.reset(token)
    written = pipeline.finish(videos)
    seconds = time.perf_counter() - started
    stage_reports = [r.as_dict() for r in reports]
    await publish_submission(written["final"], f"{recipe}: final submission ({len(videos)} videos)")
    await acreate_markdown_artifact(
        run_summary_markdown(pipeline, videos, stage_reports, seconds), key="run-summary", description="run summary"
    )
    logger.info("submission: %s (%d videos, %d failure(s))", written["final"], len(videos), len(pipeline.failures))
    return {
        "videos": len(videos),
        "failures": len(pipeline.failures),
        "warnings": len(pipeline.warnings),
        "seconds": round(seconds, 3),
        "written": {k: str(v) for k, v in written.items()},
        "stages": stage_reports,
        "roles": role_models(pipeline),
        "tokens": total_tokens(stage_reports).as_dict(),
    }
