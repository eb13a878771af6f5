"""The CLI stage commands' view of a scheduled stage: a rich progress bar and a summary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coool.schedule import StageReport

console = Console(stderr=True)


@asynccontextmanager
async def rich_progress(label: str, total: int) -> AsyncIterator[Callable[[], None]]:
    """A progress bar on stderr (coool.schedule.Progress)."""
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        bar = progress.add_task(label, total=total)
        yield lambda: progress.advance(bar)


def report(label: str, result: StageReport) -> int:
    """Print a stage's summary; exit code 0 when every video succeeded, 1 otherwise."""
    finished = result.done + result.cached + result.skipped
    console.print(f"{label}: {finished} done ({result.cached} from cache), {len(result.failed)} failed")
    for why, n in result.skipped_why.items():
        console.print(f"  {n} skipped: {why}")
    for video, warnings in sorted(result.warnings.items()):
        for warning in warnings:
            console.print(f"  [yellow]video {video} (warning)[/yellow]: {warning}")
    for failure in sorted(result.failed, key=lambda f: f.video or -1):
        console.print(f"  [red]video {failure.video}[/red]: {failure.error}")
    return 1 if result.failed else 0
