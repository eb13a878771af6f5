"""A whole run as plain Python: inputs, per-(stage, video) work, rows, submissions.

The Prefect flows call these same methods inside tasks; ``run_plain`` runs
them without Prefect (benchmarks compare the two).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coool import schema as S
from coool.captions import caption_key, caption_unit, load_captions
from coool.countpass import clip_counts, needs_count_pass
from coool.decode import VideoError
from coool.describe import DescribePromptSet, describe_key, describe_unit, load_description_row, select_window
from coool.detect import detect_key, detect_unit, write_detections
from coool.ensemble import candidates_for, ensemble_key, ensemble_unit
from coool.files import atomic_write_text, clean_stale_temp_files, combined_hash, json_sha256, read_json
from coool.frames import FrameManifest, extract_caption_frames, load_manifest
from coool.inputs import VideoPair, scan_inputs, video_id_of
from coool.llm import ChatClient, MediaPathError
from coool.params import DescribeConfig
from coool.prompts import Prompt, load_prompt
from coool.recipe import Phase, Recipe, Stage, phases, waves
from coool.servers import ServerManager
from coool.settings import Settings
from coool.stage import StageError
from coool.submission import merge_row, write_submission
from coool.workspace import Workspace


@dataclass
class Failure:
    video: int | None
    stage: str
    error: str
    path: str = ""


@dataclass
class StageReport:
    """What one stage did across videos: the stage summaries report this."""

    stage: str
    done: int = 0
    cached: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    requests: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # What a finished video needed beyond a clean answer: answers re-asked, fallbacks used.
    reasked: dict[int, int] = field(default_factory=dict)
    fallbacks: dict[int, list[str]] = field(default_factory=dict)

    def add(self, outcome: Mapping[str, Any]) -> None:
        if outcome.get("skipped"):
            self.skipped += 1
        elif outcome.get("cached"):
            self.cached += 1
        else:
            self.done += 1
            video = outcome.get("video")
            if video is None:
                return
            if outcome.get("reasks"):
                self.reasked[int(video)] = int(outcome["reasks"])
            notes = [str(n) for n in outcome.get("notes") or []]
            if outcome.get("dropped"):
                notes.insert(0, f"{outcome['dropped']} frame answer(s) unusable: row(s) dropped")
            if notes:
                self.fallbacks[int(video)] = notes


class Pipeline:
    """Everything a run needs, with no Prefect in it."""

    def __init__(self, settings: Settings, recipe: Recipe, *, results_dir: Path | None = None) -> None:
        self.settings = settings
        self.recipe = recipe
        self.ws = Workspace(results_dir or settings.results_dir)
        self.configs: dict[str, DescribeConfig] = recipe.configs
        pdir = recipe.prompts_dir
        self.caption_prompt: Prompt = load_prompt(recipe.caption.prompt, pdir)
        self.detect_prompt: Prompt = load_prompt(recipe.detect.prompt, pdir)
        self.ensemble_prompt: Prompt | None = load_prompt(recipe.ensemble.prompt, pdir) if recipe.ensemble else None
        names = set(recipe.describe) | ({recipe.count_pass.config} if recipe.count_pass else set())
        self.prompt_sets = {n: DescribePromptSet.load(self.configs[n], pdir) for n in names}
        self.clients: dict[str, ChatClient] = {}
        self.failures: list[Failure] = []

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

    def clean_temp_files(self) -> list[Path]:
        """Remove temp files that a killed run left in the results folder (see files.clean_stale_temp_files)."""
        return clean_stale_temp_files(self.ws.root)

    def frames(self, pair: VideoPair) -> FrameManifest:
        """Stage 1 for one video (idempotent; CPU-bound: call it in a thread)."""
        assert pair.heatmap is not None, "collect_inputs keeps only pairs with a heatmap"
        return extract_caption_frames(
            pair.video, pair.heatmap, self.ws.frames_dir(pair.video_id), self.recipe.caption.every, self.settings.image_format
        )

    def videos_with_frames(self) -> list[int]:
        """Video ids whose stage-1 output is in the results folder."""
        root = self.ws.root / "frames"
        # A folder name is an id by the stage-1 rule (video_id_of): "²".isdigit() is True, int() refuses it.
        return sorted(v for p in root.glob("*/manifest.json") if (v := video_id_of(p.parent.name + ".mp4")) is not None)

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
        opened = {r: ChatClient(r, self.settings.role(r), media_root=media_root) for r in roles}
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

    async def run_stage(self, stage: Stage, video: int) -> dict[str, Any]:
        """One stage for one video; raises StageError (or a request error) on failure."""
        ws, recipe = self.ws, self.recipe
        if stage.kind == "caption":
            return await caption_unit(
                self.client(stage.role), video, ws.frames_dir(video), ws.captions_dir, self.caption_prompt, recipe.caption
            )
        manifest = load_manifest(ws.frames_dir(video))
        if manifest is None:
            raise StageError(f"video {video}: no frames (stage 1 failed or was not run)")
        if stage.kind == "detect":
            return await detect_unit(
                self.client(stage.role), video, ws.captions_path(video), ws.detect_dir, self.detect_prompt,
                recipe.detect, last_frame=manifest.video.frames,
            )
        if stage.kind == "describe":
            assert stage.config is not None
            return await self._describe(stage, video, stage.config)
        if stage.kind == "countpass":
            assert recipe.count_pass is not None and stage.config is not None
            row = self.row(recipe.count_pass.input, video)
            if row is None or not needs_count_pass(row, recipe.count_pass.threshold):
                return {"video": video, "skipped": "no count above the threshold"}
            return await self._describe(stage, video, stage.config)
        if stage.kind == "ensemble":
            assert recipe.ensemble is not None and self.ensemble_prompt is not None
            base = self.row(recipe.ensemble.base, video) or S.fallback_row(video)
            inputs = {}
            for name in recipe.ensemble.inputs:
                row = self.row(name, video)
                if row is not None:
                    inputs[name] = pd.DataFrame([row], columns=list(S.COLUMNS))
            return await ensemble_unit(
                self.client(stage.role), video, base, inputs, ws.ensemble_dir, self.ensemble_prompt, recipe.ensemble
            )
        raise StageError(f"unknown stage kind {stage.kind!r}")

    def stage_key(self, stage: Stage, video: int) -> str | None:
        """The cache key of (stage, video): what determines its output.

        The same key the stage's unit records in its output file; None when
        it can't be computed yet (inputs missing), so the work runs and the
        unit reports what is missing.
        """
        ws, recipe = self.ws, self.recipe
        model = self.settings.role(stage.role).identity
        manifest = load_manifest(ws.frames_dir(video))
        if manifest is None:
            return None
        if stage.kind == "caption":
            key = caption_key(manifest, recipe.caption, self.caption_prompt, model)
        elif stage.kind == "detect":
            if not ws.captions_path(video).exists():
                return None
            key = detect_key(ws.captions_path(video), recipe.detect, self.detect_prompt, model)
        elif stage.kind in ("describe", "countpass"):
            assert stage.config is not None
            if stage.kind == "countpass":
                assert recipe.count_pass is not None
                row = self.row(recipe.count_pass.input, video)
                if row is None or not needs_count_pass(row, recipe.count_pass.threshold):
                    return combined_hash(["countpass-skip", json_sha256(row), str(recipe.count_pass.threshold)])
            config = self.configs[stage.config]
            captions = load_captions(ws.captions_path(video)) if ws.captions_path(video).exists() else None
            try:
                window = select_window(
                    config, frame_count=manifest.video.frames, captions=captions, detected_frame=self.detected_frame(video)
                )
            except ValueError:
                return None
            key = describe_key(manifest.video_sha256, window, config, self.prompt_sets[stage.config], model)
        elif stage.kind == "ensemble":
            assert recipe.ensemble is not None and self.ensemble_prompt is not None
            base = self.row(recipe.ensemble.base, video) or S.fallback_row(video)
            inputs = {n: pd.DataFrame([r], columns=list(S.COLUMNS)) for n in recipe.ensemble.inputs if (r := self.row(n, video))}
            candidates, _ = candidates_for(video, inputs)
            key = ensemble_key(base, candidates, recipe.ensemble, self.ensemble_prompt, model)
        else:
            return None
        return combined_hash([stage.name, str(video), key])

    def has_output(self, stage: Stage, video: int) -> bool:
        """Whether the stage's output for the video is on disk (a cached run is only
        trusted when it is: deleting an output file makes the work run again)."""
        ws = self.ws
        if stage.kind == "caption":
            return ws.captions_path(video).exists()
        if stage.kind == "detect":
            return ws.detect_path(video).exists()
        if stage.kind == "ensemble":
            return ws.ensemble_path(video).exists()
        assert stage.config is not None
        if stage.kind == "countpass":
            assert self.recipe.count_pass is not None
            row = self.row(self.recipe.count_pass.input, video)
            if row is None or not needs_count_pass(row, self.recipe.count_pass.threshold):
                return True
        return ws.describe_path(stage.config, video).exists()

    async def _describe(self, stage: Stage, video: int, config_name: str) -> dict[str, Any]:
        config = self.configs[config_name]
        return await describe_unit(
            self.client(stage.role), video, config, self.prompt_sets[config_name], self.ws.frames_dir(video),
            self.ws.describe_dir(config_name), captions_path=self.ws.captions_path(video),
            detected_frame=self.detected_frame(video),
        )

    # -- rows and submissions ------------------------------------------------------

    def row(self, name: str, video: int) -> dict[str, Any] | None:
        """Submission ``name``'s row for ``video``, from what is on disk (None: none)."""
        recipe = self.recipe
        if name in recipe.describe:
            path = self.ws.describe_path(name, video)
            return load_description_row(path) if path.exists() else None
        if name in recipe.merges:
            spec = recipe.merges[name]
            merged = merge_row(self.row(spec.primary, video), self.row(spec.fallback, video))
            return dict(merged) if merged is not None else None
        if recipe.count_pass and name == recipe.count_pass.name:
            spec = recipe.count_pass
            row = self.row(spec.input, video)
            if row is None or not needs_count_pass(row, spec.threshold):
                return row
            path = self.ws.describe_path(spec.config, video)
            return clip_counts(load_description_row(path) if path.exists() else row, spec.clip)
        if recipe.ensemble and name == recipe.ensemble.name:
            path = self.ws.ensemble_path(video)
            return dict(read_json(path)["row"]) if path.exists() else self.row(recipe.ensemble.base, video)
        raise KeyError(f"recipe {recipe.name!r} defines no submission {name!r}")

    def submission_path(self, name: str) -> Path:
        recipe = self.recipe
        if name in recipe.describe:
            return self.ws.describe_submission(name)
        if recipe.count_pass and name == recipe.count_pass.name:
            return self.ws.countpass_csv
        if recipe.ensemble and name == recipe.ensemble.name:
            return self.ws.ensemble_dir / "submission.csv"
        return self.ws.merge_csv(name)

    def assemble(self, videos: list[int]) -> dict[str, Path]:
        """Every submission of the recipe as a CSV, and the final ``submission.csv``.

        A video with no row (it failed) gets the fallback row: the files are
        always complete and valid.
        """
        written = {}
        final_rows: list[dict[str, Any]] = []
        for name in self.recipe.submissions():
            rows = [self.row(name, v) or S.fallback_row(v) for v in videos]
            written[name] = write_submission(rows, self.submission_path(name), expected_videos=videos)
            if name == self.recipe.final:
                final_rows = rows
        written["final"] = write_submission(final_rows, self.ws.submission_csv, expected_videos=videos)
        self.write_failures()
        return written

    def write_failures(self) -> Path:
        frame = pd.DataFrame(
            [f.__dict__ for f in self.failures], columns=["video", "stage", "error", "path"]
        ).sort_values(["video", "stage"], na_position="first")
        return atomic_write_text(self.ws.failures_csv, frame.to_csv(index=False))

    def fail(self, video: int | None, stage: str, error: BaseException | str, path: str = "") -> Failure:
        failure = Failure(video, stage, str(error), path)
        self.failures.append(failure)
        return failure


# Stages whose failure leaves nothing for the video's later stages to work
# on; a failed describe only costs its own rows (merges and the ensemble
# work with what the other configurations gave).
HARD_DEPENDENCIES = frozenset({"caption", "detect"})


def blocked_by(stage: Stage, failed: set[str]) -> bool:
    """Whether a video that failed ``failed`` stages can't run ``stage``."""
    return bool(failed & (set(stage.deps) & HARD_DEPENDENCIES | {"frames"}))


async def run_plain(
    pipeline: Pipeline, videos_dir: Path, heatmaps_dir: Path, *, concurrent: bool = False
) -> dict[str, Any]:
    """The whole recipe without Prefect: ``coool run --no-prefect``.

    Same library calls, the same schedule (phases, and waves within a
    phase; ``concurrent``: one chain per video) and the same server handling
    as the pipeline flow: each phase's servers are started (process/docker
    backends) or checked (external: a server that is down fails the run
    fast, naming the role and URL) and stopped when no later phase needs
    them. Also what the benchmarks compare Prefect against.
    """
    started = time.perf_counter()
    pairs, videos = pipeline.collect_inputs(videos_dir, heatmaps_dir)
    pipeline.clean_temp_files()
    failed: dict[int, set[str]] = {v: {"frames"} for v in videos}

    async def frames(pair: VideoPair) -> None:
        try:
            await asyncio.to_thread(pipeline.frames, pair)
            failed.pop(pair.video_id, None)
        except (VideoError, OSError) as exc:
            pipeline.fail(pair.video_id, "frames", exc, str(pair.video))

    await asyncio.gather(*(frames(p) for p in pairs))

    async def unit(stage: Stage, video: int) -> None:
        if blocked_by(stage, failed.get(video, set())):
            failed.setdefault(video, set()).add(stage.name)
            return
        try:
            await pipeline.run_stage(stage, video)
        except Exception as exc:  # a failed video must not stop the others
            failed.setdefault(video, set()).add(stage.name)
            pipeline.fail(video, stage.name, exc)

    async def chain(stages: list[Stage], video: int) -> None:
        for stage in stages:
            await unit(stage, video)

    async def bounded(limit: asyncio.Semaphore, work: Awaitable[None]) -> None:
        async with limit:
            await work

    def limit() -> asyncio.Semaphore:
        return asyncio.Semaphore(pipeline.settings.video_concurrency)

    plan = pipeline.plan(concurrent=concurrent)
    manager = ServerManager(pipeline.settings)
    try:
        for i, phase in enumerate(plan):
            await manager.ensure_all(phase.roles)
            async with pipeline.open_clients(phase.roles):
                if concurrent:  # each video runs its chain of stages, no barrier between stages
                    shared = limit()
                    await asyncio.gather(*(bounded(shared, chain(phase.stages, v)) for v in videos))
                else:  # as the flow: a wave's stages at once, each with its own bound on videos
                    for wave in waves(phase.stages):
                        limits = {stage.name: limit() for stage in wave}
                        await asyncio.gather(*(bounded(limits[s.name], unit(s, v)) for s in wave for v in videos))
            await manager.end_phase(plan, i)
    finally:
        await manager.stop_all()
    detections = {v: f for v in videos if (f := pipeline.detected_frame(v)) is not None}
    if detections:
        write_detections(detections, pipeline.ws.detections_csv)
    written = pipeline.assemble(videos)
    return {"videos": len(videos), "failures": len(pipeline.failures), "seconds": time.perf_counter() - started, "written": written}
