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

import asyncio
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import acreate_markdown_artifact

from coool.detect import write_detections
from coool.pipeline import Failure, Pipeline, blocked_by
from coool.recipe import Stage, waves
from coool.servers import ServerManager
from flows.caption import caption_flow
from flows.common import (
    build_pipeline,
    cached_phase,
    cached_report,
    cached_stage,
    error_text,
    publish_submission,
    result_storage,
    stage_tags,
    stage_task,
)
from flows.describe import count_pass_flow, describe_flow
from flows.detect import detect_flow
from flows.ensemble import ensemble_flow
from flows.frames import frames_flow


async def _value(value: dict[str, Any]) -> dict[str, Any]:
    return value


async def _stage_subflow(stage: Stage, videos: list[int], params: dict[str, Any]) -> dict[str, Any]:
    with tags(*stage_tags(stage)):  # on the stage's flow run (its task runs are untagged: see stage_task)
        return await _run_stage_flow(stage, videos, params)


async def _run_stage_flow(stage: Stage, videos: list[int], params: dict[str, Any]) -> dict[str, Any]:
    if stage.kind == "caption":
        return await caption_flow(videos=videos, **params)
    if stage.kind == "detect":
        return await detect_flow(videos=videos, **params)
    if stage.kind == "describe":
        return await describe_flow(config=stage.config, videos=videos, **params)
    if stage.kind == "countpass":
        return await count_pass_flow(videos=videos, **params)
    return await ensemble_flow(videos=videos, **params)


async def _chains(pipeline: Pipeline, stages: list[Stage], videos: list[int], failed: dict[int, set[str]]) -> None:
    """Concurrent mode: each video runs its stages in order, no stage barrier."""
    logger = get_run_logger()
    storage = await result_storage(pipeline.settings, pipeline)
    limit = asyncio.Semaphore(pipeline.settings.video_concurrency)

    async def chain(video: int) -> None:
        async with limit:
            for stage in stages:
                if blocked_by(stage, failed.setdefault(video, set())):
                    failed[video].add(stage.name)
                    continue
                state = await stage_task(pipeline, stage, video, storage)(pipeline, stage, video, return_state=True)
                if not state.is_completed():
                    error = await error_text(state)
                    failed[video].add(stage.name)
                    pipeline.fail(video, stage.name, error)
                    logger.warning("%s: video %d failed: %s", stage.name, video, error)

    await asyncio.gather(*(chain(v) for v in videos))


def _summary_markdown(pipeline: Pipeline, videos: list[int], reports: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        f"# coool run: recipe `{pipeline.recipe.name}`",
        "",
        f"{len(videos)} videos, {len(pipeline.failures)} failure(s), {seconds:.1f} s. "
        f"Submission: `{pipeline.ws.submission_csv}`",
        "",
        "| stage | done | from cache | skipped | failed | requests | retried | re-asked videos | fell-back videos | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        requests = r.get("requests", {})
        lines.append(
            f"| {r['stage']} | {r['done']} | {r['cached']} | {r['skipped']} | {len(r['failed'])} | "
            f"{requests.get('requests', '')} | {requests.get('retries', '')} | {len(r.get('reasked', {}))} | "
            f"{len(r.get('fallbacks', {}))} | {r['seconds']} |"
        )
    if pipeline.failures:
        lines += ["", "## Failures (fallback rows)", "", "| video | stage | error |", "|---|---|---|"]
        lines += [f"| {f.video} | {f.stage} | {f.error.replace('|', '/')[:300]} |" for f in pipeline.failures]
    return "\n".join(lines)


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
    logger = get_run_logger()
    started = time.perf_counter()
    pipeline = build_pipeline(recipe, results_dir, settings_file, data_root)
    params = {"recipe": recipe, "results_dir": str(pipeline.ws.root), "settings_file": settings_file, "data_root": data_root}
    pipeline.ws.record_run(
        {"data_root": str(Path(data_root).resolve()), "videos_dir": str(Path(data_root, "videos").resolve()),
         "heatmaps_dir": str(Path(data_root, "heatmaps").resolve()), "recipe": recipe}
    )
    if removed := pipeline.clean_temp_files():
        logger.info("removed %d temp file(s) left by a killed run", len(removed))
    plan = pipeline.plan(concurrent=concurrent)
    logger.info("plan: %s", " -> ".join(f"{p.role or 'all'}[{', '.join(s.name for s in p.stages)}]" for p in plan))
    manager = ServerManager(pipeline.settings)
    storage = await result_storage(pipeline.settings, pipeline)
    # GPU servers take minutes to load weights: overlap that with stage 1, unless
    # a finished run already cached the whole first phase (a rerun loads no model).
    first_cached = await cached_phase(pipeline, plan[0].stages, storage)
    if first_cached:
        logger.info("first phase cached by an earlier run: its servers start only if a stage needs them")
    first_up = asyncio.create_task(manager.ensure_all([] if first_cached else plan[0].roles))
    reports: list[dict[str, Any]] = []
    try:
        frames = await frames_flow(data_root=data_root, recipe=recipe, results_dir=params["results_dir"], settings_file=settings_file)
        videos, usable = frames["videos"], frames["usable"]
        pipeline.failures.extend(Failure(**f) for f in frames["failures"])
        failed: dict[int, set[str]] = {v: {"frames"} for v in videos if v not in usable}
        await first_up
        for i, phase in enumerate(plan):
            if concurrent:
                await manager.ensure_all(phase.roles)
                async with pipeline.open_clients(phase.roles):
                    await _chains(pipeline, phase.stages, usable, failed)
            else:
                for wave in waves(phase.stages):
                    runs = []
                    for stage in wave:
                        ready = [v for v in usable if not blocked_by(stage, failed.get(v, set()))]
                        for v in set(usable) - set(ready):
                            failed.setdefault(v, set()).add(stage.name)
                        # A stage whose every result is cached needs no flow run and no server
                        # (checked now: the earlier waves and phases that feed it are finished).
                        if await cached_stage(pipeline, stage, ready, storage):
                            logger.info("%s: all %d videos cached, nothing to run", stage.name, len(ready))
                            runs.append(_value(cached_report(stage, ready)))
                            continue
                        await manager.ensure_all(phase.roles)
                        runs.append(_stage_subflow(stage, ready, params))
                    for report in await asyncio.gather(*runs):
                        reports.append(report)
                        for f in report["failed"]:
                            pipeline.failures.append(Failure(**f))
                            failed.setdefault(int(f["video"]), set()).add(report["stage"])
            await manager.end_phase(plan, i)
    finally:
        if not first_up.done():
            first_up.cancel()
        await manager.stop_all()
    detections = {v: f for v in videos if (f := pipeline.detected_frame(v)) is not None}
    if detections:
        write_detections(detections, pipeline.ws.detections_csv)
    written = pipeline.assemble(videos)
    seconds = time.perf_counter() - started
    await publish_submission(written["final"], f"{recipe}: final submission ({len(videos)} videos)")
    await acreate_markdown_artifact(_summary_markdown(pipeline, videos, reports, seconds), key="run-summary", description="run summary")
    logger.info("submission: %s (%d videos, %d failure(s))", written["final"], len(videos), len(pipeline.failures))
    return {
        "videos": len(videos),
        "failures": len(pipeline.failures),
        "seconds": round(seconds, 3),
        "written": {k: str(v) for k, v in written.items()},
        "stages": reports,
    }
