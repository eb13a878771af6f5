"""The one schedule of a run: stage 1, then each role's phase wave by wave (or one
chain per video), blocked videos, failure bookkeeping, stage reports.

Who runs a unit is the caller's choice: ``coool run --no-prefect`` and the CLI
stage commands call the stage kinds directly, the Prefect flows pass a runner
that wraps each unit in a task (and each stage in a flow run). Plain Python,
no Prefect in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coool.decode import VideoError
from coool.inputs import VideoPair
from coool.llm import Usage
from coool.preflight import EnvironmentStop, RefusedStop, RunStopped, environment_error, environment_message, refusal
from coool.recipe import Phase, waves
from coool.stage import Stage

if TYPE_CHECKING:
    from coool.llm import ChatClient
    from coool.run import Run
    from coool.servers import ServerManager
    from coool.settings import Settings

# The stage-1 node of every plan: no model, no server (its role is never started).
FRAMES = Stage("frames", "frames", "", ())

# Stages whose failure leaves nothing for the video's later stages to work
# on; a failed describe only costs its own rows (merges and the ensemble
# work with what the other configurations gave).
HARD_DEPENDENCIES = frozenset({"caption", "detect"})


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
    # Why videos were skipped: {reason: count}.
    skipped_why: dict[str, int] = field(default_factory=dict)
    # The tokens of the responses this run received for the stage (cached videos cost none).
    tokens: Usage = field(default_factory=Usage)
    # Per video: what the task-run-level view shows (cache key, tokens, cached or not).
    units: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Finished (or cached) videos whose result may be off: e.g. a heatmap that drifts from its video.
    warnings: dict[int, list[str]] = field(default_factory=dict)

    def add(self, outcome: Mapping[str, Any]) -> None:
        video = outcome.get("video")
        if video is not None:
            self.units[int(video)] = unit_record(outcome)
            if outcome.get("warnings"):
                self.warnings[int(video)] = [str(w) for w in outcome["warnings"]]
        if outcome.get("skipped"):
            self.skipped += 1
            reason = str(outcome["skipped"])
            self.skipped_why[reason] = self.skipped_why.get(reason, 0) + 1
        elif outcome.get("cached"):
            self.cached += 1
        else:
            self.done += 1
            if outcome.get("usage"):
                self.tokens.add(outcome["usage"])
            if video is None:
                return
            if outcome.get("reasks"):
                self.reasked[int(video)] = int(outcome["reasks"])
            notes = [str(n) for n in outcome.get("notes") or []]
            if outcome.get("dropped"):
                notes.insert(0, f"{outcome['dropped']} frame answer(s) unusable: row(s) dropped")
            if notes:
                self.fallbacks[int(video)] = notes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (a flow run's return value, the run summary)."""
        return {
            "stage": self.stage,
            "done": self.done,
            "cached": self.cached,
            "skipped": self.skipped,
            "skipped_why": dict(sorted(self.skipped_why.items())),
            "failed": [asdict(f) for f in self.failed],
            "requests": self.requests,
            "reasked": {str(v): n for v, n in sorted(self.reasked.items())},
            "fallbacks": {str(v): notes for v, notes in sorted(self.fallbacks.items())},
            "warnings": {str(v): notes for v, notes in sorted(self.warnings.items())},
            "seconds": round(self.seconds, 3),
            "tokens": self.tokens.as_dict(),
            "units": {str(v): u for v, u in sorted(self.units.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageReport:
        return cls(
            data["stage"], data["done"], data["cached"], data["skipped"], [Failure(**f) for f in data["failed"]],
            dict(data.get("requests") or {}), float(data["seconds"]),
            {int(v): n for v, n in (data.get("reasked") or {}).items()},
            {int(v): list(n) for v, n in (data.get("fallbacks") or {}).items()}, dict(data.get("skipped_why") or {}),
            Usage.from_dict(data.get("tokens")), {int(v): dict(u) for v, u in (data.get("units") or {}).items()},
            {int(v): list(n) for v, n in (data.get("warnings") or {}).items()},
        )


# A stage stops when its first REFUSED_AFTER finished videos (all of them, if it has
# fewer) failed with the same refusal and none succeeded: a configuration error,
# not bad luck. A few refused videos among working ones stay per-video failures.
REFUSED_AFTER = 3


class StopRule:
    """Whether a stage's failures so far say the run must stop (see REFUSED_AFTER, environment_error)."""

    def __init__(self, stage: Stage, total: int, results_dir: Path) -> None:
        self.stage, self.total, self.results_dir = stage, total, results_dir
        self.finished: list[str | None] = []  # per finished video, in order: its refusal, None if it did not fail so
        self.example = ""  # the first failure's text, quoted in the stop

    def succeeded(self) -> None:
        self.finished.append(None)

    def failed(self, exc: BaseException) -> RunStopped | None:
        """The stop this failure calls for, if any."""
        if (env := environment_error(exc)) is not None:
            return EnvironmentStop(environment_message(env, self.results_dir))
        self.finished.append(refusal(exc))
        if len(self.finished) == 1:
            self.example = str(exc)
        first = self.finished[: min(REFUSED_AFTER, self.total)]
        if len(first) == min(REFUSED_AFTER, self.total) and first[0] is not None and len(set(first)) == 1:
            role = f" (role {self.stage.role})" if self.stage.role else ""
            example = " ".join(self.example.split())[-200:]
            return RefusedStop(
                f"{self.stage.name}{role}: every request was refused: {first[0]}; the first {len(first)} of "
                f"{self.total} video(s) failed this way and none succeeded: check the role's model, URL and key "
                f"(...{example})"
            )
        return None


def unit_record(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """What a stage summary shows of one video's unit: how it ended, its key, its tokens."""
    status = "skipped" if outcome.get("skipped") else "cached" if outcome.get("cached") else "done"
    record: dict[str, Any] = {"status": status}
    if outcome.get("key"):
        record["key"] = str(outcome["key"])
    if outcome.get("skipped"):
        record["why"] = str(outcome["skipped"])
    if status == "done" and outcome.get("usage"):
        record["usage"] = dict(outcome["usage"])
    return record


def blocked_by(stage: Stage, failed: set[str]) -> bool:
    """Whether a video that failed ``failed`` stages can't run ``stage``."""
    return bool(failed & (set(stage.deps) & HARD_DEPENDENCIES | {"frames"}))


# How a caller runs things: one (stage, video) unit; one stage over videos (a
# Prefect stage flow, say); progress display (a rich bar, a Prefect artifact).
UnitRunner = Callable[[Stage, int], Awaitable[dict[str, Any]]]
FramesRunner = Callable[[VideoPair], Awaitable[dict[str, Any]]]
Progress = Callable[[str, int], AbstractAsyncContextManager[Callable[[], None]]]


@asynccontextmanager
async def no_progress(label: str, total: int) -> AsyncIterator[Callable[[], None]]:
    yield lambda: None


def frames_error(exc: BaseException) -> str:
    """A stage-1 failure as the failures table reads it: the file and the problem."""
    return str(exc) if isinstance(exc, (VideoError, OSError)) else f"{type(exc).__name__}: {exc}"


class Scheduler:
    """Runs stages over videos, or a pipeline's whole plan; every unit goes through
    ``unit`` (and stage 1 through ``frames_unit``).

    ``failures`` collects what failed (a Run's list, so failures.csv has it);
    ``clients`` are the open clients whose request counts a stage report shows.
    """

    def __init__(
        self,
        settings: Settings,
        unit: UnitRunner,
        frames_unit: FramesRunner | None = None,
        *,
        failures: list[Failure] | None = None,
        clients: Mapping[str, ChatClient] | None = None,
        servers: ServerManager | None = None,
        progress: Progress = no_progress,
    ) -> None:
        self.settings, self.unit, self.frames_unit = settings, unit, frames_unit
        self.failures = failures if failures is not None else []
        self.clients = clients if clients is not None else {}
        self.servers, self.progress = servers, progress

    def fail(self, video: int | None, stage: str, error: BaseException | str, path: str = "") -> Failure:
        failure = Failure(video, stage, str(error), path)
        self.failures.append(failure)
        return failure

    # -- one stage over videos -------------------------------------------------------

    async def frames(self, pairs: list[VideoPair]) -> StageReport:
        """Stage 1 for every pair, ``settings.frames_concurrency`` at a time; failures recorded."""
        assert self.frames_unit is not None, "a scheduler for stage 1 needs a frames unit"
        unit, by_id = self.frames_unit, {p.video_id: p for p in pairs}
        report = await self._each(
            FRAMES, list(by_id), lambda v: unit(by_id[v]), self.settings.frames_concurrency,
            lambda v, exc: self.fail(v, FRAMES.name, frames_error(exc), str(by_id[v].video)),
        )
        report.requests = {"requests": 0, "retries": 0, "failures": 0, "samples": 0, "errors": {}}  # no model
        return report

    async def stage(self, stage: Stage, videos: list[int]) -> StageReport:
        """``stage`` for every video, at most ``settings.video_concurrency`` at once; failures recorded, never raised."""
        client = self.clients.get(stage.role)
        before = client.stats.as_dict() if client else {}
        report = await self._each(
            stage, videos, lambda v: self.unit(stage, v), self.settings.video_concurrency,
            lambda v, exc: self.fail(v, stage.name, exc),
        )
        if client:
            after = client.stats.as_dict()
            report.requests = {k: after[k] - before.get(k, 0) for k in ("requests", "retries", "failures", "samples")}
            # Why requests were retried (or failed for good), by error type: e.g. {"APITimeoutError": 3}.
            errors = {k: v - before.get("errors", {}).get(k, 0) for k, v in after["errors"].items()}
            report.requests["errors"] = {k: v for k, v in sorted(errors.items()) if v > 0}
        return report

    async def _each(
        self, stage: Stage, videos: list[int], unit: Callable[[int], Awaitable[dict[str, Any]]], bound: int,
        fail: Callable[[int, Exception], Failure],
    ) -> StageReport:
        report = StageReport(stage.name)
        limit = asyncio.Semaphore(bound)
        started = time.perf_counter()
        rule, stops = StopRule(stage, len(videos), self.settings.results_dir), []

        async def one(video: int, advance: Callable[[], None]) -> None:
            try:
                async with limit:
                    if stops:  # the run is stopping: start nothing more
                        return
                    report.add(await unit(video))
                    rule.succeeded()
            except Exception as exc:  # a failed video must not stop the others
                report.failed.append(fail(video, exc))
                if (stop := rule.failed(exc)) is not None:
                    stops.append(stop)
            finally:
                advance()

        async with self.progress(stage.name, len(videos)) as advance:
            await asyncio.gather(*(one(v, advance) for v in videos))
        report.seconds = time.perf_counter() - started
        if stops:
            raise stops[0]
        return report

    # -- the whole plan ---------------------------------------------------------------

    async def run(
        self,
        pipeline: Run,
        pairs: list[VideoPair],
        videos: list[int],
        *,
        concurrent: bool = False,
        run_frames: Callable[[list[VideoPair]], Awaitable[StageReport]] | None = None,
        run_stage: Callable[[Stage, list[int]], Awaitable[StageReport]] | None = None,
        cached: Callable[[Stage, list[int]], Awaitable[bool]] | None = None,
    ) -> list[StageReport]:
        """Stage 1, then every phase of the plan; the reports, stage 1's first.

        ``run_frames``/``run_stage`` replace ``self.frames``/``self.stage`` (a
        Prefect flow run per stage); ``cached(stage, videos)`` says a stage has
        nothing to do (it then gets a cached report and starts no server). The
        first phase's servers start while stage 1 runs.
        """
        plan = pipeline.plan(concurrent=concurrent)
        first_cached = cached is not None and await self._phase_cached(pipeline, plan[0], cached)
        first_up = asyncio.create_task(self._ensure([] if first_cached else plan[0].roles))
        try:
            frames = await (run_frames or self.frames)(pairs)
            failed_ids = {f.video for f in frames.failed}
            usable = [p.video_id for p in pairs if p.video_id not in failed_ids]
            failed: dict[int, set[str]] = {v: {FRAMES.name} for v in videos if v not in usable}
            reports = [frames]
            await first_up
            for i, phase in enumerate(plan):
                async with pipeline.open_clients(phase.roles):
                    if concurrent:
                        await self._ensure(phase.roles)
                        reports += await self._chains(phase.stages, usable, failed)
                    else:
                        for wave in waves(phase.stages):
                            reports += await self._wave(phase, wave, usable, failed, run_stage or self.stage, cached)
                if self.servers:
                    await self.servers.end_phase(plan, i)
        finally:
            if not first_up.done():
                first_up.cancel()
            if self.servers:
                await self.servers.stop_all()
        return reports

    async def _ensure(self, roles: list[str]) -> None:
        if self.servers:
            await self.servers.ensure_all(roles)

    async def _phase_cached(
        self, pipeline: Run, phase: Phase, cached: Callable[[Stage, list[int]], Awaitable[bool]]
    ) -> bool:
        videos = pipeline.videos_with_frames()
        return all([await cached(stage, videos) for stage in phase.stages])

    async def _wave(
        self,
        phase: Phase,
        wave: list[Stage],
        usable: list[int],
        failed: dict[int, set[str]],
        run_stage: Callable[[Stage, list[int]], Awaitable[StageReport]],
        cached: Callable[[Stage, list[int]], Awaitable[bool]] | None,
    ) -> list[StageReport]:
        """A wave's stages at once, each over the videos not blocked by an earlier failure."""
        runs: list[Awaitable[StageReport]] = []
        for stage in wave:
            ready = [v for v in usable if not blocked_by(stage, failed.get(v, set()))]
            for v in set(usable) - set(ready):
                failed.setdefault(v, set()).add(stage.name)
            # A stage whose every result is cached needs no run and no server
            # (checked now: the earlier waves and phases that feed it are finished).
            if cached is not None and await cached(stage, ready):
                runs.append(_cached_report(stage, ready))
                continue
            await self._ensure(phase.roles)
            runs.append(run_stage(stage, ready))
        reports = list(await asyncio.gather(*runs))
        for report in reports:
            for f in report.failed:
                failed.setdefault(int(f.video), set()).add(report.stage)  # type: ignore[arg-type]
        return reports

    async def _chains(self, stages: list[Stage], videos: list[int], failed: dict[int, set[str]]) -> list[StageReport]:
        """Concurrent mode: each video runs its stages in order, no stage barrier; one report per stage."""
        reports = {s.name: StageReport(s.name) for s in stages}
        rules = {s.name: StopRule(s, len(videos), self.settings.results_dir) for s in stages}
        stops: list[RunStopped] = []
        limit = asyncio.Semaphore(self.settings.video_concurrency)
        started = time.perf_counter()

        async def chain(video: int) -> None:
            async with limit:
                for stage in stages:
                    if stops:  # the run is stopping: start nothing more
                        return
                    if blocked_by(stage, failed.setdefault(video, set())):
                        failed[video].add(stage.name)
                        continue
                    try:
                        reports[stage.name].add(await self.unit(stage, video))
                        rules[stage.name].succeeded()
                    except Exception as exc:  # a failed video must not stop the others
                        failed[video].add(stage.name)
                        reports[stage.name].failed.append(self.fail(video, stage.name, exc))
                        if (stop := rules[stage.name].failed(exc)) is not None:
                            stops.append(stop)

        await asyncio.gather(*(chain(v) for v in videos))
        for report in reports.values():
            report.seconds = time.perf_counter() - started
        if stops:
            raise stops[0]
        return list(reports.values())


async def _cached_report(stage: Stage, videos: list[int]) -> StageReport:
    """The report of a stage whose every video came from the cache without running."""
    return StageReport(stage.name, cached=len(videos))
