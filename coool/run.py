"""One run as plain Python: its settings, recipe, workspace, prompts, clients and failures.

``Run`` dispatches each (stage, video) to its stage kind (coool.registry)
and each submission row to its submission kind; ``coool.schedule`` decides
what runs when. ``run_plain`` is ``coool run --no-prefect``; the Prefect flows
drive the same objects through the same scheduler.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as cols
from coool.detect import write_detections
from coool.files import atomic_write_text, clean_stale_temp_files, combined_hash, read_json
from coool.frames import FrameManifest, extract_caption_frames, load_manifest, manifest_warnings
from coool.inputs import VideoPair, scan_inputs, video_id_of
from coool.llm import ChatClient, MediaPathError, UrlLimits
from coool.memory import limit_malloc_arenas
from coool.params import DescribeConfig
from coool.preflight import EnvironmentStop, RunStopped, environment_error, environment_message
from coool.recipe import Phase, Recipe, phases
from coool.registry import STAGE_KINDS
from coool.schedule import Failure, Progress, Scheduler, StageReport, no_progress
from coool.settings import Settings
from coool.stage import Stage, StageError, StageKind
from coool.submission import write_submission
from coool.workspace import MANIFEST, Workspace

if TYPE_CHECKING:
    from coool.servers import ServerManager

class Run:
    """One run: what it needs (settings, recipe, workspace, prompts, clients) and what it found
    (failures, reports); dispatches each (stage, video) to its stage kind. No Prefect in it."""

    def __init__(self, settings: Settings, recipe: Recipe, *, results_dir: Path | None = None) -> None:
        # Memory follows the work in flight, not the number of videos (coool.memory).
        limit_malloc_arenas()
        self.settings = settings
        self.recipe = recipe
        # The recipe's switched outputs are filed beside the original method's (docs/LAYOUT.md).
        self.ws = Workspace(results_dir or settings.results_dir, variants=recipe.output_variants())
        self.configs: dict[str, DescribeConfig] = recipe.configs
        # Each stage's prompts, loaded once (a bad prompt file fails the run before any work).
        self.prompts: dict[str, Any] = {st.name: self.kind(st).prompts(recipe, st) for st in recipe.stages()}
        self.clients: dict[str, ChatClient] = {}
        self.failures: list[Failure] = []
        # What finished but may be off (failures.csv rows of level "warning"; they don't count as failures).
        self.warnings: list[Failure] = []
        self.reports: list[StageReport] = []
        # The run's per-URL request bounds, shared by its clients (per event loop).
        self._url_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UrlLimits] = weakref.WeakKeyDictionary()

    # -- inputs --------------------------------------------------------------

    def collect_inputs(self, videos_dir: Path, heatmaps_dir: Path) -> tuple[list[VideoPair], list[int]]:
        """The usable (video, heatmap) pairs and every video id the submission must have.

        Input problems are recorded as failures; a bad file whose name is a
        video id (duplicate, missing heatmap) still gets a (fallback) row.
        Raises ValueError for an empty or missing videos folder.
        """
        pairs, problems = scan_inputs(videos_dir, heatmaps_dir)
        ids = {p.video_id for p in pairs}
        for problem in problems:
            # The same id rule as stage 1: ASCII digits only ("²".isdigit() is True but int()
            # refuses it), at most 18 (an id must fit the submission's 64-bit column).
            video = video_id_of(problem.path)
            if video is not None and Path(problem.path).parent.resolve() == Path(videos_dir).resolve():
                ids.add(video)
            else:
                video = None
            # "<file>: <problem>", as a stage-1 VideoError reads: the message names the file.
            self.fail(video, "inputs", str(problem), str(problem.path))
        return [p for p in pairs if p.heatmap is not None], sorted(ids)

    def record_start(self, videos_dir: Path, heatmaps_dir: Path, **extra: Any) -> Path:
        """``run.json``: the folders read, the recipe, how it files its outputs (``captions+plus/``, ...:
        the studio finds them by it), and what the caller adds (the flow: data root, Prefect run id)."""
        return self.ws.record_run({
            "videos_dir": str(Path(videos_dir).resolve()), "heatmaps_dir": str(Path(heatmaps_dir).resolve()),
            "recipe": self.recipe.name, "variants": dict(self.ws.variants), **extra,
        })

    def clean_temp_files(self) -> list[Path]:
        """Remove temp files that a killed run left in the results folder (see files.clean_stale_temp_files)."""
        return clean_stale_temp_files(self.ws.root)

    def frames(self, pair: VideoPair) -> FrameManifest:
        """Stage 1 for one video (idempotent; CPU-bound: call it in a thread)."""
        assert pair.heatmap is not None, "collect_inputs keeps only pairs with a heatmap"
        return extract_caption_frames(
            pair.video, pair.heatmap, self.ws.frames_dir(pair.video_id), self.recipe.caption.every, self.settings.image_format
        )

    async def frames_unit(self, pair: VideoPair) -> dict[str, Any]:
        """Stage 1 for one video, in a thread; "cached" when its frames were already there (reused as they were)."""
        manifest_file = self.ws.manifest_path(pair.video_id)
        before = manifest_file.stat().st_mtime_ns if manifest_file.exists() else None
        manifest = await asyncio.to_thread(self.frames, pair)
        cached = before is not None and manifest_file.stat().st_mtime_ns == before
        warnings = manifest_warnings(manifest)  # a cached video warns again: failures.csv is rewritten each run
        for warning in warnings:
            self.warnings.append(Failure(pair.video_id, "frames", warning, str(pair.video)))
        return {"video": pair.video_id, "frames": manifest.video.frames, "stacked": len(manifest.frames), "cached": cached,
                "warnings": warnings}

    def videos_with_frames(self) -> list[int]:
        """Video ids whose stage-1 output is in the results folder."""
        # A folder name is an id by the stage-1 rule (video_id_of): "²".isdigit() is True, int() refuses it.
        return sorted(v for p in self.ws.frames_root.glob(f"*/{MANIFEST}") if (v := video_id_of(p.parent.name + ".mp4")) is not None)

    def plan(self, *, concurrent: bool = False) -> list[Phase]:
        return phases(self.recipe.stages(), concurrent=concurrent)

    # -- clients ---------------------------------------------------------------

    @asynccontextmanager
    async def open_clients(self, roles: Iterable[str]) -> AsyncIterator[dict[str, ChatClient]]:
        """Clients for ``roles``, bound to the running event loop, closed after."""
        media_root = Path(self.settings.data_root or self.ws.root).resolve()
        roles = list(roles)
        for role in roles:
            # The frames sent are under the results folder: with file:// images it must lie
            # under the allowed media root, or every request would be refused one by one.
            if self.settings.role(role).image_transport == "file" and not self.ws.root.is_relative_to(media_root):
                raise MediaPathError(
                    f"{role}: image_transport=file sends frames from {self.ws.root}, outside the allowed media "
                    f"root {media_root} (the data root): put the results folder under it or use image_transport=data"
                )
        # Roles already open (a stage flow inside the pipeline flow) keep their client.
        limits = self._url_limits.setdefault(asyncio.get_running_loop(), {})  # semaphores belong to a loop
        opened = {
            r: ChatClient(r, self.settings.role(r), media_root=media_root, url_limits=limits)
            for r in roles if r not in self.clients
        }
        self.clients.update(opened)
        try:
            yield opened
        finally:
            for role, client in opened.items():
                await client.close()
                self.clients.pop(role, None)

    def client(self, role: str) -> ChatClient:
        try:
            return self.clients[role]
        except KeyError:
            raise StageError(f"no open client for role {role!r}") from None

    # -- one (stage, video) ------------------------------------------------------

    def detected_frame(self, video: int) -> int | None:
        path = self.ws.detect_path(video)
        return int(read_json(path)["frame"]) if path.exists() else None

    @staticmethod
    def kind(stage: Stage) -> StageKind:
        """The behaviour of ``stage`` (coool.registry)."""
        try:
            return STAGE_KINDS[stage.kind]
        except KeyError:
            raise StageError(f"unknown stage kind {stage.kind!r}") from None

    def prompt(self, stage: Stage) -> Any:
        return self.prompts[stage.name]

    def identity(self, stage: Stage) -> str:
        """The model part of the stage's keys: name and pinned revision."""
        return self.settings.role(stage.role).identity

    def manifest(self, video: int) -> FrameManifest:
        """The video's stage-1 manifest; StageError when stage 1 gave it none."""
        manifest = load_manifest(self.ws.frames_dir(video))
        if manifest is None:
            raise StageError(f"video {video}: no frames (stage 1 failed or was not run)")
        return manifest

    async def run_stage(self, stage: Stage, video: int, key: str | None = None) -> dict[str, Any]:
        """One stage for one video; raises StageError (or a request error) on failure.

        ``key``: the stage key if the caller computed it already (the Prefect task's cache key).
        """
        key = key or self.stage_key(stage, video)
        outcome = await self.kind(stage).run(self, stage, video, key)
        return {**outcome, "key": key}  # the stage summary's per-video table shows it

    def stage_key(self, stage: Stage, video: int) -> str | None:
        """The key of (stage, video): what determines its output, recorded in the output
        file and used as the Prefect task's cache key (one value for both).

        The stage and video are part of it (two videos with the same content
        still get their own result); None when it can't be computed yet (inputs
        missing), so the work runs and the unit reports what is missing.
        """
        key = self.kind(stage).key(self, stage, video)
        return None if key is None else combined_hash([stage.name, str(video), key])

    def has_output(self, stage: Stage, video: int) -> bool:
        """Whether the stage's output for the video is on disk (a cached run is only
        trusted when it is: deleting an output file makes the work run again)."""
        return self.kind(stage).done(self, stage, video)

    # -- rows and submissions ------------------------------------------------------

    def row(self, name: str, video: int) -> dict[str, Any] | None:
        """Submission ``name``'s row for ``video``, from what is on disk (None: none)."""
        try:
            kind = self.recipe.submission_kind(name)
        except KeyError:
            raise KeyError(f"recipe {self.recipe.name!r} defines no submission {name!r}") from None
        return kind.row(self, name, video)

    def submission_path(self, name: str) -> Path:
        return self.recipe.submission_kind(name).path(self, name)

    def assemble(self, videos: list[int]) -> dict[str, Path]:
        """``failures.csv``, every submission of the recipe as a CSV, the same rows as the recipe's
        own ``submissions/<recipe>.csv`` (kept when another recipe runs), and last ``submission.csv``.

        A video with no row (it failed) gets the fallback row: the files are
        always complete and valid. The order matters when a write fails (a
        full disk): failures.csv says what happened, and no final submission
        is written unless every other file was.
        """
        self.write_failures()
        written = {}
        final_rows: list[dict[str, Any]] = []
        for name in self.recipe.submissions():
            rows = [self.row(name, v) or cols.fallback_row(v) for v in videos]
            written[name] = write_submission(rows, self.submission_path(name), expected_videos=videos)
            if name == self.recipe.final:
                final_rows = rows
        # Not in ``written`` (its keys are the recipe's submissions and "final").
        write_submission(final_rows, self.ws.recipe_submission(self.recipe.name), expected_videos=videos)
        written["final"] = write_submission(final_rows, self.ws.submission_csv, expected_videos=videos)
        return written

    def write_failures(self) -> Path:
        """failures.csv: what failed (level "error") and what finished but may be off (level "warning")."""
        rows = [{**f.__dict__, "level": "error"} for f in self.failures]
        rows += [{**f.__dict__, "level": "warning"} for f in self.warnings]
        frame = pd.DataFrame(rows, columns=["video", "stage", "error", "path", "level"]).sort_values(
            ["video", "stage", "level"], na_position="first"
        )
        return atomic_write_text(self.ws.failures_csv, frame.to_csv(index=False))

    def fail(self, video: int | None, stage: str, error: BaseException | str, path: str = "") -> Failure:
        failure = Failure(video, stage, str(error), path)
        self.failures.append(failure)
        return failure




    def finish(self, videos: list[int]) -> dict[str, Path]:
        """After the last stage: the detections table and every submission.

        An error of the environment while writing them (no space, read-only)
        stops the run (EnvironmentStop) rather than leaving a traceback.
        """
        try:
            detections = {v: f for v in videos if (f := self.detected_frame(v)) is not None}
            if detections:
                write_detections(detections, self.ws.detections_csv)
            return self.assemble(videos)
        except OSError as exc:
            if (env := environment_error(exc)) is None:
                raise
            raise EnvironmentStop(environment_message(env, self.ws.root)) from exc

    def stopped(self) -> None:
        """The run stops before its submissions (RunStopped): record what failed, if the disk lets us."""
        try:
            self.write_failures()
        except OSError:
            pass  # the stop's own message names the problem; failures.csv is what could not be written


def plain_scheduler(pipeline: Run, *, servers: ServerManager | None = None, progress: Progress = no_progress) -> Scheduler:
    """The scheduler that runs every unit directly (no Prefect)."""
    return Scheduler(
        pipeline.settings, pipeline.run_stage, pipeline.frames_unit, failures=pipeline.failures,
        clients=pipeline.clients, servers=servers, progress=progress,
    )


async def run_plain(
    pipeline: Run, videos_dir: Path, heatmaps_dir: Path, *, concurrent: bool = False
) -> dict[str, Any]:
    """The whole recipe without Prefect: ``coool run --no-prefect``.

    The schedule (coool.schedule) and the server handling are the pipeline
    flow's: each phase's servers are started (process/docker backends) or
    checked (external: a server that is down fails the run fast, naming the
    role and URL) and stopped when no later phase needs them.
    """
    from coool.servers import ServerManager
    from coool.summary import role_models, total_tokens

    started = time.perf_counter()
    pipeline.record_start(videos_dir, heatmaps_dir)
    pairs, videos = pipeline.collect_inputs(videos_dir, heatmaps_dir)
    pipeline.clean_temp_files()
    scheduler = plain_scheduler(pipeline, servers=ServerManager(pipeline.settings))
    try:
        pipeline.reports = await scheduler.run(pipeline, pairs, videos, concurrent=concurrent)
    except RunStopped:
        pipeline.stopped()
        raise
    written = pipeline.finish(videos)
    stages = [r.as_dict() for r in pipeline.reports]
    return {
        "videos": len(videos), "failures": len(pipeline.failures), "warnings": len(pipeline.warnings),
        "seconds": time.perf_counter() - started,
        "written": written, "stages": stages, "roles": role_models(pipeline), "tokens": total_tokens(stages).as_dict(),
    }
