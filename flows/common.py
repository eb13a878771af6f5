"""What every flow shares: the (stage, video) task, result storage, progress and summaries.

Flows only wire: the schedule is ``coool.schedule.Scheduler`` and the work is
each stage kind's ``run``; this module gives a unit a Prefect task (with the
stage's cache key, retries, a name per video), a stage a progress artifact
and a summary. The ``Run`` is made once, at the flow the user (or
a deployment) started, from plain string parameters; flows started inside it
find it in ``ACTIVE_RUN`` instead of rebuilding it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.context import TagsContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from coool.files import atomic_write_bytes, text_sha256
from coool.inputs import VideoPair
from coool.preflight import ENVIRONMENT_ERRNOS
from coool.recipe import load_recipe
from coool.run import Run
from coool.runlock import aresults_lock
from coool.schedule import Scheduler, StageReport
from coool.settings import Settings, load_settings
from coool.stage import Stage, StageError
from coool.summary import tokens_text, unit_end_text, unit_start_text, units_markdown


class AtomicLocalFileSystem(LocalFileSystem):
    """Prefect's local result storage, but every write is temp file + rename:
    a kill mid-write never leaves a corrupt cached result behind."""

    _block_type_slug = "coool-atomic-local-file-system"

    def write_path(self, path: str, content: bytes) -> str:  # type: ignore[override]
        resolved = self._resolve_path(path)
        atomic_write_bytes(resolved, content)
        return str(resolved)

    async def awrite_path(self, path: str, content: bytes) -> str:  # type: ignore[override]
        return await asyncio.to_thread(self.write_path, path, content)


async def result_storage(settings: Settings, pipeline: Run) -> WritableFileSystem:
    """Where cached task results live: a named block, else ``<results>/.prefect``.

    Prefect wants result storage saved server-side; the local one is saved
    as a block named after the results folder (once per run: see FlowRun).
    """
    if settings.result_storage_block:
        return await WritableFileSystem.aload(settings.result_storage_block)  # type: ignore[return-value]
    base = str(pipeline.ws.prefect_dir)
    storage = AtomicLocalFileSystem(basepath=base)
    # Runs starting at the same moment on a fresh Prefect server all register the block
    # type; the losers get ObjectAlreadyExists, and saving again finds it registered.
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(ObjectAlreadyExists), stop=stop_after_attempt(5),
        wait=wait_random(0.05, 0.5), reraise=True,
    ):
        with attempt:
            await storage.save(f"coool-results-{text_sha256(base)[:12]}", overwrite=True)
    return storage


def build_run(recipe: str, results_dir: str | None, settings_file: str | None = None, data_root: str | None = None) -> Run:
    """The Run from flow parameters (all plain strings, so deployments can pass them)."""
    overrides: dict[str, Any] = {}
    if results_dir:
        overrides["results_dir"] = Path(results_dir)
    settings = load_settings(settings_file, **overrides)
    if data_root and settings.data_root is None:
        settings.data_root = Path(data_root).resolve()
    return Run(settings, load_recipe(recipe))


@dataclass
class FlowRun:
    """One run's in-process objects, shared by the flow that made them and the flows it starts."""

    pipeline: Run
    storage: WritableFileSystem
    pairs: list[VideoPair] = field(default_factory=list)  # stage 1's inputs, set before the frames flow runs

    @classmethod
    async def start(cls, recipe: str, results_dir: str | None, settings_file: str | None, data_root: str | None) -> FlowRun:
        if (active := ACTIVE_RUN.get()) is not None:
            return active
        pipeline = build_run(recipe, results_dir, settings_file, data_root)
        return cls(pipeline, await result_storage(pipeline.settings, pipeline))

    def scheduler(self, servers: Any = None) -> Scheduler:
        """The run's scheduler: every unit a Prefect task run, every stage a progress artifact."""
        p = self.pipeline
        return Scheduler(
            p.settings, self.unit, self.frames_unit, failures=p.failures, clients=p.clients, servers=servers,
            progress=artifact_progress,
        )

    async def unit(self, stage: Stage, video: int) -> dict[str, Any]:
        key = stage_key(self.pipeline, stage, video)
        task = stage_task(self.pipeline, stage, video, self.storage)
        state = await task(self.pipeline, stage, video, key, return_state=True)
        if not state.is_completed():
            error = await error_text(state)
            get_run_logger().warning("%s: video %d failed: %s", stage.name, video, error)
            # The task's exception is the cause: the scheduler tells a disk that is full or a
            # request refused on every video from one video's failure by it.
            cause = await state.aresult(raise_on_failure=False)
            raise UnitFailed(error) from (cause if isinstance(cause, BaseException) else None)
        outcome = await state.aresult()
        return {**outcome, "cached": outcome.get("cached") or state.name == "Cached"}

    async def frames_unit(self, pair: VideoPair) -> dict[str, Any]:
        state = await frames_video.with_options(task_run_name=f"frames-video-{pair.video_id}")(
            self.pipeline, pair, return_state=True
        )
        if not state.is_completed():
            exc = await state.aresult(raise_on_failure=False)
            if isinstance(exc, BaseException):
                raise exc
            raise UnitFailed(state.message or "failed")
        return await state.aresult()


@asynccontextmanager
async def holding_results(folder: Path) -> AsyncIterator[None]:
    """One run per results folder (coool.runlock), for a flow the user or a deployment
    started; inside ``coool run`` or the pipeline flow the lock is already held here."""
    async with aresults_lock(folder, on_wait=lambda message: get_run_logger().warning(message)):
        yield


# The run started by the outermost flow; the stage flows it calls use it.
ACTIVE_RUN: ContextVar[FlowRun | None] = ContextVar("coool_flow_run", default=None)


class UnitFailed(RuntimeError):
    """A task run that ended failed; the message is why (its exception, else its state)."""


# Stage 1 checks the inputs' content hashes itself and skips finished
# videos, so Prefect's cache would add nothing but storage.
@task(cache_policy=NONE, retries=0)
async def frames_video(pipeline: Run, pair: VideoPair) -> dict[str, Any]:
    return await pipeline.frames_unit(pair)


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The stage's key, computed once by the caller: the key its output records too."""
    return parameters["key"]


def stage_key(pipeline: Run, stage: Stage, video: int) -> str | None:
    try:
        return pipeline.stage_key(stage, video)
    except Exception:  # a key we can't compute means: run it (the unit reports why)
        return None


def _retry_worthwhile(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass next time (server trouble), not missing inputs or bad data.

    Prefect's failed-state message names the exception type ("Task run
    encountered an exception StageError: ..."), which is all we need here.
    """
    message = state.message or ""
    # Nor a full or read-only disk: the scheduler stops the run on it (coool.preflight.ENVIRONMENT_ERRNOS).
    environment = any(int(n) in ENVIRONMENT_ERRNOS for n in re.findall(r"\[Errno (\d+)\]", message))
    return StageError.__name__ not in message and not environment


@task(
    cache_key_fn=_cache_key,
    persist_result=True,
    result_serializer="json",
    cache_result_in_memory=False,
    retry_condition_fn=_retry_worthwhile,
)
async def stage_video(pipeline: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
    """One stage for one video (a Prefect task run named like ``caption-video-17``; its cache key is ``key``).

    Its page in the UI says what it is and what it did in two log lines: Prefect 3 shows no
    parameter values for a task run (only upstream task inputs) and leaves its "Cache Key"
    field empty (the key lives in the state's details), and log lines are sent in batches,
    so they cost the task no API round trip (artifacts or tags per task would).
    """
    logger = get_run_logger()
    logger.info(unit_start_text(stage, video, pipeline.identity(stage), key))
    outcome = await pipeline.run_stage(stage, video, key)
    logger.info(unit_end_text(outcome))
    return outcome


def task_name(stage: Stage, video: int) -> str:
    return f"{re.sub(r'[^a-zA-Z0-9+-]+', '-', stage.name)}-video-{video}"


def stage_tags(stage: Stage) -> list[str]:
    return [f"stage:{stage.kind}", f"role:{stage.role}"] + ([f"config:{stage.config}"] if stage.config else [])


def stage_task(pipeline: Run, stage: Stage, video: int, storage: WritableFileSystem) -> Any:
    # No tags on task runs: Prefect asks its server for tag concurrency limits
    # before a tagged task runs (one serialized API call per tag set, the first
    # task of every stage waiting on it). The stage's flow run carries the tags.
    s = pipeline.settings
    return stage_video.with_options(
        task_run_name=task_name(stage, video),
        retries=s.task_retries,
        retry_delay_seconds=s.task_retry_delay_s,
        result_storage=storage,
        # A cached result is only trusted while its output is on disk.
        refresh_cache=not pipeline.has_output(stage, video),
    )


async def error_text(state: Any) -> str:
    """Why a task run failed: its exception, else the state's message."""
    exc = await state.aresult(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "failed"


class StageProgress:
    """A stage's progress artifact, written beside the work and never in its way.

    Creating and updating an artifact is a round trip to the Prefect server
    (a write, slow when the server is busy recording task runs); the stage's
    tasks don't wait for it. One background writer creates the artifact,
    updates it at most every ``every_s`` seconds while videos finish, and
    writes the final count when the stage is done.
    """

    def __init__(self, stage: str, total: int, every_s: float = 2.0) -> None:
        self.stage, self.total, self.every_s = stage, total, every_s
        self.finished = 0
        self._done = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def _description(self, finished: int) -> str:
        return f"{self.stage}: {finished} of {self.total} videos"

    async def _write(self) -> None:
        artifact = await acreate_progress_artifact(0.0, description=self._description(0))
        shown = 0
        while True:
            try:
                await asyncio.wait_for(self._done.wait(), timeout=self.every_s)
            except TimeoutError:
                pass
            finished = self.finished
            if finished != shown or self._done.is_set():
                await aupdate_progress_artifact(
                    artifact, 100.0 * finished / max(1, self.total), description=self._description(finished)
                )
                shown = finished
            if self._done.is_set():
                return

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    def advance(self) -> None:
        self.finished += 1

    def cancel(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def close(self) -> None:
        """Write the final count (the artifact shows 100% for a finished stage)."""
        self._done.set()
        if self._writer is not None:
            await self._writer


@asynccontextmanager
async def artifact_progress(label: str, total: int) -> AsyncIterator[Callable[[], None]]:
    """A stage's progress artifact (the scheduler's progress display in flows)."""
    progress = StageProgress(label, total)
    progress.start()
    try:
        yield progress.advance
    except BaseException:
        progress.cancel()
        raise
    await progress.close()


def stage_summary_markdown(report: StageReport, total: int, stage: Stage | None = None) -> str:
    """The stage's summary artifact. Its per-video table is what each task run did (cache key,
    responses, re-asks, fallbacks, tokens): one artifact per stage, not one per task run,
    so the task runs cost no extra API calls."""
    lines = [
        f"# {report.stage}",
        "",
        "| videos | done | from cache | skipped | failed | seconds |",
        "|---|---|---|---|---|---|",
        f"| {total} | {report.done} | {report.cached} | {report.skipped} | {len(report.failed)} | {report.seconds:.1f} |",
    ]
    if report.requests:
        counts = {k: v for k, v in report.requests.items() if k != "errors"}
        lines += ["", "**Requests**: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
        lines += ["", f"**Tokens**: {tokens_text(report.tokens)}"]
        errors = report.requests.get("errors") or {}
        if errors:
            lines += ["", "## Retried (transient errors, by type)", "", "| error | count |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in errors.items()]
    if report.reasked:
        lines += ["", "## Re-asked (unusable answers asked again)", "", "| video | re-asks |", "|---|---|"]
        lines += [f"| {v} | {n} |" for v, n in sorted(report.reasked.items())]
    if report.fallbacks:
        lines += ["", "## Fell back (the video finished with a fallback for part of its answer)", "", "| video | what |", "|---|---|"]
        lines += [f"| {v} | {'; '.join(notes).replace('|', '/')[:300]} |" for v, notes in sorted(report.fallbacks.items())]
    if report.warnings:
        lines += ["", "## Warnings (finished, but the result may be off)", "", "| video | warning |", "|---|---|"]
        lines += [f"| {v} | {'; '.join(notes).replace('|', '/')[:500]} |" for v, notes in sorted(report.warnings.items())]
    if report.skipped_why:
        lines += ["", "## Skipped (why)", "", "| reason | videos |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in report.skipped_why.items()]
    if report.failed:
        lines += ["", "## Failed (these videos get the fallback row)", "", "| video | error |", "|---|---|"]
        lines += [f"| {f.video} | {f.error.replace('|', '/')[:300]} |" for f in report.failed]
    units = units_markdown(report, (lambda v: task_name(stage, v)) if stage else None)
    if units:
        lines += ["", *units]
    return "\n".join(lines)


async def publish_stage_summary(report: StageReport, total: int, stage: Stage | None = None) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"summary-{report.stage}".lower())
    await acreate_markdown_artifact(
        stage_summary_markdown(report, total, stage), key=key, description=f"{report.stage} summary"
    )


async def publish_submission(path: Path, title: str) -> None:
    """The final submission as a table artifact (first 500 rows: the UI is not a spreadsheet)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False).head(500)
    await acreate_table_artifact(frame.to_dict("records"), key="submission", description=title)


async def run_stage_flow(
    stage_name: str,
    *,
    recipe: str,
    results_dir: str | None,
    settings_file: str | None,
    data_root: str | None,
    videos: list[int] | None,
) -> dict[str, Any]:
    """The body of every stage flow: a one-stage plan (its server up when started alone), a report."""
    from coool.servers import ServerManager

    run = await FlowRun.start(recipe, results_dir, settings_file, data_root)
    pipeline = run.pipeline
    stages = {s.name: s for s in pipeline.recipe.stages()}
    if stage_name not in stages:
        raise ValueError(f"recipe {pipeline.recipe.name!r} has no stage {stage_name!r} (stages: {', '.join(stages)})")
    stage = stages[stage_name]
    if videos is None:
        videos = pipeline.videos_with_frames()
    # Inside the pipeline flow, its scheduler has the servers up and the clients open.
    manager = ServerManager(pipeline.settings) if ACTIVE_RUN.get() is None else None
    token = ACTIVE_RUN.set(run)
    try:
        async with holding_results(pipeline.ws.root):
            if manager:
                await manager.ensure(stage.role)
            async with pipeline.open_clients([stage.role]):
                # The stage flow run's tags (set by the pipeline flow) stay off its task runs (see stage_task).
                with TagsContext(current_tags=set()):
                    report = await run.scheduler().stage(stage, videos)
    finally:
        ACTIVE_RUN.reset(token)
        if manager:
            await manager.stop_all()
    await publish_stage_summary(report, len(videos), stage)
    get_run_logger().info(
        "%s: %d done, %d cached, %d skipped, %d failed in %.1fs; tokens: %s",
        stage.name, report.done, report.cached, report.skipped, len(report.failed), report.seconds,
        tokens_text(report.tokens),
    )
    return report.as_dict()


async def cached_stage(pipeline: Run, stage: Stage, videos: list[int], storage: WritableFileSystem) -> bool:
    """True when every (stage, video) task would come from Prefect's cache: its output
    is on disk and a result is stored under its key (the task's own test, made
    without creating the flow run and task runs that would only report "Cached").

    Call it only when the stage's inputs are final (earlier stages finished).
    """
    from prefect.results import ResultStore

    store = ResultStore(result_storage=storage)
    for video in videos:
        if not pipeline.has_output(stage, video):
            return False
        key = stage_key(pipeline, stage, video)
        if key is None or not await store.aexists(key):
            return False
    return bool(videos)
