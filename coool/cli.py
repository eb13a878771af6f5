"""The ``coool`` command: every stage alone, the whole pipeline, and the tools around it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from coool import schema as cols
from coool.workspace import MANIFEST, caption_files, video_frames_dir, video_json

if TYPE_CHECKING:
    from coool.frames import FrameManifest
    from coool.llm import ChatClient
    from coool.schedule import StageReport
    from coool.settings import Settings

app = typer.Typer(
    help="Dashcam videos + gaze heatmaps to a validated 2COOOL submission.csv.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    settings: Path | None = typer.Option(
        None, "--settings", help="YAML settings file (same as COOOL_SETTINGS_FILE)", exists=True, dir_okay=False
    ),
) -> None:
    # No telemetry from the Prefect servers coool starts (and no "Failed to send
    # telemetry" on a closed network); a user's explicit setting wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    ctx.obj = settings  # the commands load it: coool.settings.load_settings(settings_file)


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """The command's Settings: the --settings file, else COOOL_SETTINGS_FILE, the environment, the defaults.

    A bad settings file is one line naming it, exit 2."""
    from coool.preflight import UserError, load_checked_settings

    try:
        return load_checked_settings(ctx.find_root().obj, **overrides)
    except UserError as exc:
        _fail(f"error: {exc}")
        raise  # (unreachable: _fail exits)


def _one_stage(
    settings: Settings,
    name: str,
    role: str,
    unit: Callable[[ChatClient, int], Awaitable[dict[str, Any]]],
    videos: list[int],
    folder: Path,
    media_root: Path | None = None,
) -> StageReport:
    """A one-stage plan through the run's scheduler, with a progress bar; ``unit(client, video)``;
    ``folder`` (the per-video outputs) held while it runs (``_held``)."""
    from coool.llm import ChatClient
    from coool.schedule import Scheduler
    from coool.stage import Stage
    from coool.terminal import rich_progress

    async def go() -> StageReport:
        async with ChatClient(role, settings.role(role), media_root=media_root) as client:
            scheduler = Scheduler(
                settings, lambda stage, video: unit(client, video), clients={role: client}, progress=rich_progress
            )
            return await scheduler.stage(Stage(name, name, role, ()), videos)

    return _held(folder, name, go)


def _held(folder: Path, name: str, work: Callable[[], Awaitable[Any]]) -> Any:
    """``work()`` run while ``folder`` is held as a run's results folder is (a second command on
    it waits, saying whose it is); Ctrl-C / SIGTERM: one line, exit 130, finished videos kept."""
    from coool.interrupt import EXIT_INTERRUPTED, Interrupted
    from coool.runlock import aresults_lock

    async def go() -> Any:
        async with aresults_lock(folder, on_wait=lambda m: typer.secho(m, fg="yellow", err=True), command=f"coool {name}"):
            return await work()

    try:
        return asyncio.run(_interruptible(go()))
    except Interrupted:
        typer.secho(f"interrupted: {name}; finished videos are kept in {folder}, rerun the same command to resume",
                    fg="yellow", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


def _output_folder(folder: Path) -> None:
    """A stage command's output folder must take files: checked before any work (one line, exit 2)."""
    from coool.preflight import UserError, check_results_folder

    try:
        check_results_folder(folder, "output folder")
    except UserError as exc:
        _fail(f"error: {exc}")


# -- submissions ---------------------------------------------------------------


@app.command()
def validate(
    file: Path = typer.Argument(..., help="submission CSV"),
    strict: bool = typer.Option(False, help="labels outside the 19 are errors, not warnings"),
) -> None:
    """Check a submission: exact header, one row per video, allowed values. Exit 1 if invalid."""
    from coool.submission import SubmissionError, read_submission
    from coool.submission import validate as check

    try:
        problems = check(read_submission(file), strict=strict)
    except SubmissionError as exc:
        _fail(str(exc), 1)
    errors = [p for p in problems if p.level == "error"]
    for problem in problems:
        typer.echo(str(problem), err=problem.level == "error")
    if errors:
        _fail(f"{file}: INVALID ({len(errors)} error(s), {len(problems) - len(errors)} warning(s))", 1)
    typer.echo(f"{file}: valid ({len(problems)} warning(s))")


@app.command()
def merge(
    primary: Path,
    fallback: Path,
    output: Path = typer.Option(..., "-o", "--output"),
) -> None:
    """merge(PRIMARY, FALLBACK): take FALLBACK's row where PRIMARY found nothing and FALLBACK did."""
    from coool.submission import SubmissionError, load_submission, write_submission
    from coool.submission import merge as merge_frames

    try:
        merged, taken = merge_frames(load_submission(primary), load_submission(fallback))
        write_submission(merged, output, strict=False)
    except SubmissionError as exc:
        _fail(str(exc), 1)
    typer.echo(f"{output}: {len(merged)} rows, {len(taken)} taken from {fallback.name}")


# -- stage 1 and test data ----------------------------------------------------------


@app.command()
def frames(
    ctx: typer.Context,
    videos_dir: Path,
    heatmaps_dir: Path,
    out_dir: Path,
    every: int = typer.Option(10, help="stack every k-th frame (1, 1+k, ...)"),
) -> None:
    """Stage 1: write the stacked heatmap-over-video frames that captioning reads.

    Exit 0 all done, 1 some problems, 2 nothing done.
    """
    from rich.console import Console
    from rich.table import Table

    from coool.frames import extract_caption_frames, load_manifest
    from coool.inputs import VideoPair, scan_inputs
    from coool.schedule import Scheduler
    from coool.terminal import rich_progress

    console = Console()
    try:
        pairs, problems = scan_inputs(videos_dir, heatmaps_dir)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    _output_folder(out_dir)
    settings = _settings(ctx)

    async def unit(pair: VideoPair) -> dict[str, Any]:
        assert pair.heatmap is not None
        await asyncio.to_thread(extract_caption_frames, pair.video, pair.heatmap, video_frames_dir(out_dir, pair.video_id), every)
        return {"video": pair.video_id}

    scheduler = Scheduler(settings, lambda stage, video: unit(video), unit, progress=rich_progress)
    report = _held(out_dir, "frames", lambda: scheduler.frames([p for p in pairs if p.heatmap is not None]))
    failed = {f.video for f in report.failed}
    manifests: dict[int, FrameManifest] = {
        p.video_id: m for p in pairs if p.heatmap is not None and p.video_id not in failed
        if (m := load_manifest(video_frames_dir(out_dir, p.video_id))) is not None
    }
    table = Table(title=f"stage 1: frames -> {out_dir}")
    for col in ("video", "frames", "heatmap frames", "stacked images", "heatmap rule"):
        table.add_column(col)
    for vid, m in manifests.items():
        rule = m.heatmap_rule.detail if m.heatmap_rule.applied else "-"
        table.add_row(str(vid), str(m.video.frames), str(m.heatmap.frames), str(len(m.frames)), rule)
    console.print(table)
    lines = [f"{p.path}: {p.problem}" for p in problems] + [f.error for f in report.failed]
    for line in lines:
        console.print(f"[yellow]problem:[/yellow] {line}", soft_wrap=True)
    console.print(f"{len(manifests)} videos done, {len(lines)} problems")
    raise typer.Exit(2 if not manifests else 1 if lines else 0)


@app.command()
def synth(
    root: Path,
    n: int = typer.Option(3, help="number of clips"),
    frames: int = typer.Option(120, help="frames per clip"),
    seed: int = 0,
) -> None:
    """Write synthetic dashcam + heatmap clips with a scripted red obstacle (test data)."""
    from coool.synthetic import synth_command

    raise typer.Exit(synth_command(root, n, frames, seed))


@app.command("sim-server")
def sim_server(
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = 8000,
    latency: float = typer.Option(0.0, help="seconds per request"),
    per_token_latency: float = typer.Option(0.0, help="seconds per completion token"),
    capacity: int = typer.Option(64, help="requests processed at once; more queue"),
    faults: str = typer.Option("", help='e.g. "5xx=0.1,hang=0.05,malformed=0.05,empty=0.02,nonenglish=0.02"'),
    seed: int = 0,
    model: list[str] = typer.Option(["sim-model"], help="served model name (repeat for several)"),
    allowed_local_media_path: Path | None = typer.Option(None, help="file:// images allowed under this folder"),
    max_n: int = typer.Option(16, help="largest n (samples per request) accepted"),
    hang_s: float = typer.Option(3600.0, help="how long a 'hang' fault holds a request"),
    api_key: str | None = typer.Option(
        None, help="require 'Authorization: Bearer KEY' on /v1 (as vLLM --api-key); default: $COOOL_SIM_API_KEY"
    ),
) -> None:
    """Start the SIMULATED OpenAI-compatible server (a test double: no model inside)."""
    from coool.sim.serve import sim_server_command

    sim_server_command(
        host=host, port=port, latency=latency, per_token_latency=per_token_latency, capacity=capacity,
        faults=faults, seed=seed, model=model, allowed_local_media_path=allowed_local_media_path,
        max_n=max_n, hang_s=hang_s,
        # From the environment by default, so the key never has to appear in a process listing.
        api_key=api_key or os.environ.get("COOOL_SIM_API_KEY") or None,
    )


# -- stages 2-5 alone ----------------------------------------------------------------


def _ids_in(folder: Path, pattern: str) -> list[int]:
    ids = []
    for p in folder.glob(pattern):
        stem = p.name.split(".")[0] if pattern.endswith(".csv") else p.parent.name
        if re.fullmatch(r"[0-9]{1,18}", stem):  # not isdigit(): "²" passes it and int() refuses it
            ids.append(int(stem))
    return sorted(set(ids))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@app.command()
def caption(
    ctx: typer.Context,
    frames_dir: Path = typer.Argument(..., help="output of `coool frames` (<id>/manifest.json)"),
    out_dir: Path = typer.Argument(..., help="captions folder: <id>.csv, <id>.raw.jsonl"),
    prompts: Path | None = typer.Option(None, help="folder of prompt files overriding the built-in ones"),
) -> None:
    """Stage 2: caption every k-th stacked frame (role: captioner)."""
    from coool.captions import caption_unit
    from coool.params import CaptionParams
    from coool.prompts import load_prompt
    from coool.terminal import report

    settings = _settings(ctx)
    videos = _ids_in(frames_dir, f"*/{MANIFEST}")
    if not videos:
        _fail(f"{frames_dir}: no <id>/manifest.json (run `coool frames` first)")
    _output_folder(out_dir)
    prompt, params = load_prompt("caption", prompts), CaptionParams()
    result = _one_stage(
        settings, "caption", "captioner",
        lambda client, v: caption_unit(client, v, video_frames_dir(frames_dir, v), caption_files(out_dir, v), prompt, params),
        videos, out_dir, media_root=settings.data_root or frames_dir,
    )
    raise typer.Exit(report("caption", result))


@app.command()
def detect(
    ctx: typer.Context,
    captions_dir: Path = typer.Argument(..., help="output of `coool caption`"),
    output: Path = typer.Argument(..., help="CSV video,frame"),
    work: Path | None = typer.Option(None, help="per-video votes (default: <output dir>/detect)"),
    prompts: Path | None = typer.Option(None),
) -> None:
    """Stage 3: the frame where each video's incident begins (role: detector)."""
    from coool.detect import detect_unit, write_detections
    from coool.files import read_json
    from coool.params import DetectParams
    from coool.prompts import load_prompt
    from coool.terminal import report

    settings = _settings(ctx)
    videos = _ids_in(captions_dir, "*.csv")
    if not videos:
        _fail(f"{captions_dir}: no <id>.csv caption tables")
    out = work or output.parent / "detect"
    _output_folder(out)
    prompt = load_prompt("detect", prompts)
    result = _one_stage(
        settings, "detect", "detector",
        lambda client, v: detect_unit(
            client, v, caption_files(captions_dir, v).table, video_json(out, v), prompt, DetectParams()
        ),
        videos, out,
    )
    failed = {f.video for f in result.failed}
    write_detections({v: int(read_json(video_json(out, v))["frame"]) for v in videos if v not in failed}, output)
    raise typer.Exit(report("detect", result))


def _describe_rows(
    settings: Settings,
    config_name: str,
    videos: list[int],
    frames_dir: Path,
    captions_dir: Path | None,
    detections: Path | None,
    work: Path,
    prompts: Path | None,
) -> tuple[dict[int, dict[str, Any]], int]:
    from coool.describe import DescribePromptSet, describe_unit, load_description_row
    from coool.detect import read_detections
    from coool.params import load_describe_configs
    from coool.terminal import report

    configs = load_describe_configs()
    if config_name not in configs:
        _fail(f"unknown describe configuration {config_name!r}; known: {', '.join(configs)}")
    config = configs[config_name]
    prompt_set = DescribePromptSet.load(config, prompts)
    frames_by_video = read_detections(detections) if detections else {}
    if config.window == "detected-frame" and not detections:
        _fail(f"{config_name} uses the detected-frame window: give --detections (output of `coool detect`)")
    if config.window == "caption-trigger" and not captions_dir:
        _fail(f"{config_name} uses the caption-trigger window: give --captions (output of `coool caption`)")

    result = _one_stage(
        settings, f"describe {config_name}", config.role,
        lambda client, v: describe_unit(
            client, v, config, prompt_set, video_frames_dir(frames_dir, v), video_json(work, v),
            captions_path=caption_files(captions_dir, v).table if captions_dir else None,
            detected_frame=frames_by_video.get(v),
        ),
        videos, work, media_root=settings.data_root or frames_dir,
    )
    code = report(f"describe {config_name}", result)
    rows = {v: load_description_row(path) for v in videos if (path := video_json(work, v)).exists()}
    return rows, code


@app.command()
def describe(
    ctx: typer.Context,
    config: str = typer.Option(..., "--config", help="exp001, exp002, exp004, exp005, v3, v3-prompt2, v4, v5 ..."),
    frames_dir: Path = typer.Option(..., "--frames", help="output of `coool frames`"),
    output: Path = typer.Option(..., "-o", "--output", help="submission CSV"),
    captions_dir: Path | None = typer.Option(None, "--captions", help="output of `coool caption`"),
    detections: Path | None = typer.Option(None, "--detections", help="output of `coool detect`"),
    work: Path | None = typer.Option(None, help="per-video JSON (default: <output dir>/describe/<config>)"),
    prompts: Path | None = typer.Option(None),
) -> None:
    """Stage 4: describe each video's incident with one configuration; write a submission."""
    from coool.submission import write_submission

    videos = _ids_in(frames_dir, f"*/{MANIFEST}")
    if not videos:
        _fail(f"{frames_dir}: no <id>/manifest.json (run `coool frames` first)")
    work = work or output.parent / "describe" / config
    _output_folder(work)
    rows, code = _describe_rows(_settings(ctx), config, videos, frames_dir, captions_dir, detections, work, prompts)
    write_submission([rows.get(v) or cols.fallback_row(v) for v in videos], output, expected_videos=videos)
    typer.echo(f"{output}: {len(videos)} rows ({len(videos) - len(rows)} fallback)")
    raise typer.Exit(code)


@app.command("count-pass")
def count_pass(
    ctx: typer.Context,
    submission: Path,
    frames_dir: Path = typer.Option(..., "--frames"),
    detections: Path = typer.Option(..., "--detections"),
    output: Path = typer.Option(..., "-o", "--output"),
    config: str = typer.Option("v6-counts", help="describe configuration for the re-description"),
    threshold: int = typer.Option(10, help="re-describe rows with any count above this"),
    clip: int = typer.Option(20, help="then clip animals, pedestrians and vehicles to this"),
    work: Path | None = typer.Option(None),
    prompts: Path | None = typer.Option(None),
) -> None:
    """The count sanity pass: re-describe rows with implausible counts, then clip."""
    from coool.count_pass import apply_count_pass, videos_needing_count_pass
    from coool.submission import SubmissionError, load_submission, write_submission

    try:
        frame = load_submission(submission)
    except SubmissionError as exc:
        _fail(str(exc), 1)
    videos = videos_needing_count_pass(frame, threshold)
    work = work or output.parent / "describe" / config
    _output_folder(work)
    rows, code = (
        _describe_rows(_settings(ctx), config, videos, frames_dir, None, detections, work, prompts) if videos else ({}, 0)
    )
    write_submission(apply_count_pass(frame, rows, threshold, clip), output, strict=False)
    typer.echo(f"{output}: {len(videos)} row(s) re-described ({', '.join(map(str, videos)) or 'none'})")
    raise typer.Exit(code)


@app.command()
def ensemble(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="the submissions to ensemble"),
    base: Path = typer.Option(..., "--base", help="submission whose other columns are kept"),
    output: Path = typer.Option(..., "-o", "--output"),
    work: Path | None = typer.Option(None, help="per-video JSON (default: <output dir>/ensemble)"),
    prompts: Path | None = typer.Option(None),
) -> None:
    """Stage 5: one caption, reason and start frame per video from several submissions (role: ensembler)."""
    from coool.ensemble import ensemble_unit
    from coool.files import read_json
    from coool.params import EnsembleParams
    from coool.prompts import load_prompt
    from coool.submission import SubmissionError, load_submission, write_submission
    from coool.terminal import report

    settings = _settings(ctx)
    # Inputs are named by file stem; when stems collide (two folders' submission.csv)
    # by path, or one input would silently replace the other.
    stems = [p.stem for p in inputs]
    names = [p.stem if stems.count(p.stem) == 1 else str(p) for p in inputs]
    try:
        base_frame = load_submission(base)
        frames = {name: load_submission(p) for name, p in zip(names, inputs)}
    except SubmissionError as exc:
        _fail(str(exc), 1)
    out = work or output.parent / "ensemble"
    _output_folder(out)
    prompt = load_prompt("ensemble", prompts)
    base_rows = {int(r[cols.VIDEO]): r for r in base_frame.to_dict("records")}
    result = _one_stage(
        settings, "ensemble", "ensembler",
        lambda client, v: ensemble_unit(client, v, base_rows[v], frames, video_json(out, v), prompt, EnsembleParams()),
        sorted(base_rows), out,
    )
    code = report("ensemble", result)
    failed = {f.video for f in result.failed}
    rows = {v: read_json(video_json(out, v))["row"] for v in base_rows if v not in failed}
    write_submission([rows.get(v, base_rows[v]) for v in sorted(base_rows)], output, strict=False)
    typer.echo(f"{output}: {len(base_rows)} rows ({len(base_rows) - len(rows)} kept from the base)")
    raise typer.Exit(code)


# -- whole pipeline --------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="folder with videos/ and heatmaps/"),
    recipe: str = typer.Option("second-place", help="recipe name (coool/recipes) or YAML path"),
    results: Path | None = typer.Option(None, help="results folder (default: settings results_dir)"),
    concurrent: bool = typer.Option(False, help="all role servers up at once: no stage barriers"),
    prefect: bool = typer.Option(True, help="run as Prefect flows (--no-prefect: plain asyncio)"),
    wait: bool = typer.Option(True, help="wait while another run holds the results folder (--no-wait: exit 2)"),
) -> None:
    """The whole recipe, from videos to submission.csv; rerun to resume (Ctrl-C stops it cleanly)."""
    from coool.terminal import run_summary

    outcome = _run_recipe(ctx, data, recipe, results, concurrent=concurrent, prefect=prefect, wait=wait)
    run_summary(outcome)
    warned = f", {outcome['warnings']} warning(s) in failures.csv" if outcome.get("warnings") else ""
    typer.echo(
        f"submission: {outcome['written']['final']}  ({outcome['videos']} videos, {outcome['failures']} failure(s){warned})"
    )


def _run_recipe(
    ctx: typer.Context, data: Path, recipe: str, results: Path | None, *, concurrent: bool, prefect: bool, wait: bool = True
) -> dict[str, Any]:
    """One recipe, end to end (``coool run``): the results folder's lock, Ctrl-C, and a clear
    error and exit 2 when it can't start."""
    from coool.interrupt import EXIT_INTERRUPTED, Interrupted, interrupted_message, prefect_interrupt_wording
    from coool.preflight import RunStopped, UserError, check_data, check_results_folder, folders_line, load_checked_settings
    from coool.recipe import RecipeError, load_recipe
    from coool.run import Run, run_plain
    from coool.runlock import ResultsInUse, results_lock
    from coool.servers import ServerUnavailable

    settings_file = ctx.find_root().obj
    # Everything the user gave is checked before Prefect or any server starts: one line, exit 2.
    try:
        videos_dir, heatmaps_dir = check_data(data)
        loaded = load_recipe(recipe)
        settings = load_checked_settings(settings_file, **({"results_dir": results} if results else {}))
        results_dir = check_results_folder(settings.results_dir)
        if settings.data_root is None:  # as the flow does: file:// images may come from under it
            settings.data_root = data.resolve()
        pipeline = Run(settings, loaded)  # prompts load here: a bad prompt file is the user's too
    except (UserError, RecipeError, ValueError, OSError) as exc:
        _fail(f"error: {exc}")
    typer.echo(folders_line(videos_dir, heatmaps_dir, results_dir, recipe, settings_file))
    started = datetime.now(UTC)
    try:
        # One run per results folder (the flow takes the same lock: here it finds it held).
        with results_lock(settings.results_dir, wait=wait, on_wait=lambda m: typer.secho(m, fg="yellow", err=True)):
            if prefect:
                from flows.interrupted import signals_left_to_coool
                from flows.pipeline import pipeline_flow

                with prefect_interrupt_wording() as wording, signals_left_to_coool():
                    outcome: dict[str, Any] = asyncio.run(_interruptible(
                        pipeline_flow(
                            data_root=str(data), recipe=recipe, results_dir=str(results) if results else None,
                            concurrent=concurrent, settings_file=str(settings_file) if settings_file else None,
                        ),
                        on_signal=lambda: setattr(wording, "active", True),
                    ))
            else:
                outcome = asyncio.run(
                    _interruptible(run_plain(pipeline, videos_dir, heatmaps_dir, concurrent=concurrent))
                )
    except ResultsInUse as exc:
        _fail(f"error: {exc}")
    except RunStopped as exc:
        # An error of the environment or a stage refused on every request: the run
        # stopped, failures.csv says what happened, no final submission was written.
        _fail(f"error: {exc}", 1)
    except (ServerUnavailable, ValueError) as exc:
        # Inputs that can't be used at all (no videos) or a model server that is not
        # there: one clear line, no traceback, and no submission was written.
        _fail(f"error: {exc}")
    except BaseException as exc:
        # Ctrl-C / SIGTERM (Prefect turns a SIGTERM during a flow into its TerminationSignal).
        if not isinstance(exc, (Interrupted, KeyboardInterrupt)) and type(exc).__name__ != "TerminationSignal":
            raise
        done, total = _units_done(pipeline or Run(settings, loaded), data)
        if prefect:
            _cancel_interrupted_runs(pipeline.ws.run_json, started)
        typer.secho(interrupted_message(done, total), fg="yellow", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    return outcome


def _cancel_interrupted_runs(run_json: Path, since: datetime) -> None:
    """Prefect recorded the interrupted run as Crashed: mark it (and what ran under it) Cancelled.
    Best effort: the results are safe either way, so a Prefect API that is gone changes nothing."""
    from coool.files import read_json

    try:
        flow_run_id = read_json(run_json).get("prefect_flow_run_id")
        if flow_run_id:
            from flows.interrupted import cancel_interrupted

            asyncio.run(cancel_interrupted(flow_run_id, since))
    except Exception:  # noqa: BLE001 - never let the UI's wording fail the exit
        pass


@app.command("compare-recipes")
def compare_recipes(
    ctx: typer.Context,
    recipes: list[str] = typer.Argument(
        None, help="two recipes, names (coool/recipes) or YAML paths (default: second-place second-place-plus)"
    ),
    data: Path = typer.Option(..., "--data", help="folder with videos/ and heatmaps/"),
    results: Path | None = typer.Option(None, help="ONE results folder for both (default: settings results_dir)"),
    concurrent: bool = typer.Option(False, help="all role servers up at once: no stage barriers"),
    prefect: bool = typer.Option(True, help="run as Prefect flows (--no-prefect: plain asyncio)"),
    meteor: bool = typer.Option(True, help="METEOR in the text metrics (--no-meteor: skip java)"),
    studio: bool = typer.Option(False, "--studio", help="then serve the studio on the results folder"),
    port: int = typer.Option(8765, help="the studio's port"),
    wait: bool = typer.Option(True, help="wait while another run holds the results folder (--no-wait: exit 2)"),
) -> None:
    """Run two recipes into one results folder (sharing every cached stage they have in common),
    compare their final submissions and point at the studio's blind A/B page for the pair."""
    from coool.compare import compare_command
    from coool.recipe import RecipeError, load_recipe
    from coool.recipe_compare import DEFAULT_PAIR, ab_url, check_pair
    from coool.workspace import Workspace

    pair = list(recipes or DEFAULT_PAIR)
    try:
        loaded = [load_recipe(r) for r in pair]
        check_pair([r.name for r in loaded])
    except (RecipeError, ValueError) as exc:
        _fail(str(exc))
    folder = (results or _settings(ctx).results_dir).resolve()
    finals = []
    for name, recipe in zip(pair, loaded):
        typer.secho(f"== {recipe.name}", bold=True)
        outcome = _run_recipe(ctx, data, name, folder, concurrent=concurrent, prefect=prefect, wait=wait)
        finals.append(Workspace(folder).recipe_submission(recipe.name))
        typer.echo(f"{recipe.name}: {finals[-1]}  ({outcome['videos']} videos, {outcome['failures']} failure(s))")
    code = compare_command(finals, meteor=meteor)
    url = ab_url(folder, finals[0], finals[1], port=port)
    typer.echo(f"blind A/B of the pair: coool studio {folder} --port {port}   then open {url}")
    if studio:
        from coool.studio.app import studio_command

        try:
            studio_command(folder, None, [], host="127.0.0.1", port=port, truth=None, allow_remote=False)
        except ValueError as exc:
            _fail(str(exc))
    raise typer.Exit(code)


async def _interruptible(work: Awaitable[Any], on_signal: Callable[[], None] = lambda: None) -> Any:
    from coool.interrupt import interruptible

    return await interruptible(work, on_signal=on_signal)


def _units_done(pipeline: Any, data: Path) -> tuple[int, int]:
    """How far an interrupted run got: units on disk of (every usable video x stage 1 and each stage)."""
    from coool.inputs import scan_inputs
    from coool.interrupt import units_done

    try:
        pairs, _ = scan_inputs(data / "videos", data / "heatmaps")
    except ValueError:
        return 0, 0
    return units_done(pipeline, sorted(p.video_id for p in pairs if p.heatmap is not None))


@app.command()
def estimate(
    ctx: typer.Context,
    results: Path = typer.Argument(..., help="results folder of a finished run on a sample of videos"),
    videos: int = typer.Option(661, "--videos", help="videos in the run to project to (the test set has 661)"),
    recipe: str | None = typer.Option(None, help="the run's recipe (default: the one run.json records, else second-place)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A full run's tokens per stage and role, projected from a finished run's recorded usage."""
    import json

    from rich.console import Console
    from rich.table import Table

    from coool.estimate import CAVEATS, estimate_run
    from coool.files import read_json
    from coool.recipe import RecipeError, load_recipe
    from coool.run import Run

    if not results.is_dir():
        _fail(f"error: {results}: no such results folder")
    recorded = results / "run.json"
    name = recipe or (str(read_json(recorded).get("recipe") or "") if recorded.exists() else "") or "second-place"
    try:
        run = Run(_settings(ctx, results_dir=results), load_recipe(name))
        est = estimate_run(run, videos)
    except (RecipeError, ValueError) as exc:
        _fail(f"error: {exc}")
    if as_json:
        typer.echo(json.dumps(est.as_dict(), indent=2))
        return
    console = Console()
    console.print(f"{results}: recipe {est.recipe}, {est.sample} video(s) in the sample; projected to {videos} videos")
    table = Table("stage", "role", "model", "videos counted", "no usage", "prompt/video (sd)", "completion/video (sd)",
                  "projected prompt (95%)", "projected completion (95%)", title="tokens per stage")
    for s in est.stages:
        cells = []
        for field in ("prompt_tokens", "completion_tokens"):
            cells.append(f"{s.mean(field):,.0f} ({s.stdev(field):,.0f})")
        for field in ("prompt_tokens", "completion_tokens"):
            total, half = s.projected(field, videos)
            cells.append(f"{total:,.0f} ± {half:,.0f}")
        table.add_row(s.stage, s.role, s.model, str(s.counted), str(s.missing), *cells)
    console.print(table)
    roles = Table("role", "projected prompt", "projected cached prompt", "projected completion", title="tokens per role")
    for role, totals in est.by_role().items():
        roles.add_row(role, f"{totals['prompt_tokens']:,.0f}", f"{totals['cached_prompt_tokens']:,.0f}",
                      f"{totals['completion_tokens']:,.0f}")
    console.print(roles)
    console.print("What a sample can't tell:")
    for caveat in CAVEATS:
        console.print(f"  - {caveat}")


# -- comparing and scoring ------------------------------------------------------------------


@app.command()
def score(
    submission: Path,
    truth: Path = typer.Option(..., "--truth", help="ground-truth CSV in the submission format"),
    as_json: bool = typer.Option(False, "--json"),
    spice_jar: Path | None = typer.Option(None, help="folder with SPICE's jars (else SPICE is reported unavailable)"),
) -> None:
    """Per-column scores of a submission against the truth (leaderboard-style) and text metrics."""
    from coool.score import score_command

    raise typer.Exit(score_command(submission, truth, as_json, spice_jar=spice_jar))


@app.command()
def compare(
    files: list[Path] = typer.Argument(..., help="two or more submissions"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """How submissions differ: agreement per column and text metrics of each against the others."""
    from coool.compare import compare_command

    raise typer.Exit(compare_command(files, as_json))


@app.command()
def studio(
    results: Path = typer.Argument(Path("results"), help="results folder to browse"),
    videos: Path | None = typer.Option(None, help="videos folder (default: from results/run.json)"),
    submission: list[Path] = typer.Option([], help="extra submission CSVs to show"),
    truth: Path | None = typer.Option(None, help="ground-truth CSV for the score page"),
    host: str = typer.Option("127.0.0.1", help="bind address (loopback only unless --allow-remote)"),
    port: int = 8765,
    allow_remote: bool = typer.Option(False, help="allow binding a non-loopback address"),
) -> None:
    """The web studio: browse runs, compare submissions, blind A/B votes, scores."""
    from coool.studio.app import studio_command

    try:
        studio_command(results, videos, submission, host=host, port=port, truth=truth, allow_remote=allow_remote)
    except ValueError as exc:
        _fail(str(exc))


# -- coool prompts ... (the authors' prompts from a user's own checkout; coool/prompt_import.py) --

prompts_app = typer.Typer(help="Prompt folders for a recipe's prompts_dir:.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("import")
def prompts_import(
    checkout: Path = typer.Argument(..., help="your checkout of the original 2nd-place repository"),
    out_dir: Path = typer.Option(..., "-o", "--out", help="folder to write the prompts to (a recipe's prompts_dir:)"),
) -> None:
    """Write the authors' own prompts, read from their Python files, as a prompts folder."""
    from coool.prompt_import import PromptImportError, import_prompts

    try:
        written = import_prompts(checkout, out_dir)
    except (PromptImportError, OSError) as exc:
        _fail(str(exc))
    for path in written:
        typer.echo(str(path))
    typer.echo(f"{out_dir}: {len(written)} prompt files; name it as prompts_dir: in a recipe")




# == model servers: `coool server start|stop ROLE` (a typer sub-app) ======================================

server_app = typer.Typer(help="A role's model server: start or stop it (docker), its launch command, its image's flags.", no_args_is_help=True)
app.add_typer(server_app, name="server")

ROLE_HELP = "captioner, detector, describer or ensembler"


def _known_role(role: str) -> str:
    from coool.settings import ROLES

    if role not in ROLES:
        _fail(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


@server_app.command("start")
def server_start(ctx: typer.Context, role: str = typer.Argument(..., help=ROLE_HELP)) -> None:
    """Start ROLE's model server in docker (the role's image) and wait for /health; a healthy one is kept."""
    from coool.servers import ServerManager, ServerUnavailable

    role = _known_role(role)
    settings = _settings(ctx)
    role_settings = settings.role(role)
    role_settings.server.backend = "docker"
    try:
        running = asyncio.run(ServerManager(settings).ensure(role))
    except (ServerUnavailable, ValueError) as exc:
        _fail(f"error: {exc}", 1)
    except Exception as exc:  # docker missing or refusing: one line, no traceback
        _fail(f"error: {role}: docker: {exc}", 1)
    typer.echo(f"{role}: up at {', '.join(role_settings.urls)} ({'started' if running.owned else 'already running'})")


@server_app.command("stop")
def server_stop(role: str = typer.Argument(..., help=ROLE_HELP)) -> None:
    """Stop ROLE's docker model server (the container coool-ROLE)."""
    from coool.servers import container_name, stop_container

    role = _known_role(role)
    try:
        stop_container(role)
    except Exception as exc:  # no docker, or no such container
        _fail(f"error: {role}: cannot stop container {container_name(role)}: {exc}", 1)
    typer.echo(f"{role}: stopped")

@server_app.command("command")
def server_command(
    role: str = typer.Argument(..., help=ROLE_HELP),
    launch: str = typer.Option("original", help="original (the method's flags) or plus (coool's extra flags)"),
) -> None:
    """Print ROLE's `vllm serve` command line as the process backend runs it (from coool/configs/servers.yaml)."""
    from coool.launch import VARIANTS, show_command

    if launch not in VARIANTS:
        _fail(f"unknown launch {launch!r}; one of: {', '.join(VARIANTS)}")
    typer.echo(show_command(_known_role(role), launch))  # type: ignore[arg-type]


@server_app.command("images")
def server_images(
    check: bool = typer.Option(False, "--check", help="only say whether they are current (exit 1 if not)"),
) -> None:
    """Write the launch flags of coool/configs/servers.yaml into images/*/Dockerfile (one definition for both)."""
    from coool.launch import IMAGES_DIR, image_names, stale_dockerfiles, write_block

    if check:
        if stale := stale_dockerfiles():
            _fail("stale launch flags (run `coool server images`): " + ", ".join(map(str, stale)), 1)
        typer.echo("launch flags current in every image")
        return
    for image in image_names():
        try:
            if write_block(dockerfile := IMAGES_DIR / image / "Dockerfile", image):
                typer.echo(f"updated {dockerfile}")
        except (ValueError, OSError) as exc:
            _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
