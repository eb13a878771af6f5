"""The CLI stage commands' view of a scheduled stage: a rich progress bar and a summary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from coool.schedule import StageReport
from coool.summary import revision_text, skipped_text, tokens_text

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
    if result.requests and result.stage != "frames":
        console.print(f"  tokens: {tokens_text(result.tokens)}")
    for failure in sorted(result.failed, key=lambda f: f.video or -1):
        console.print(f"  [red]video {failure.video}[/red]: {failure.error}")
    return 1 if result.failed else 0


def run_summary(outcome: Mapping[str, Any], out: Console | None = None) -> None:
    """``coool run``'s summary: each role's model and revision, then every stage with its tokens."""
    out = out or Console()
    for role in outcome.get("roles") or []:
        out.print(f"{role['role']}: {role['model']}  revision {revision_text(role['revision'])}", soft_wrap=True)
    for r in outcome.get("stages") or []:
        # One line per stage (stage 1 included): a table would not fit an 80-column terminal.
        line = (
            f"{r['stage']}: {r['done']} done, {r['cached']} from cache, {skipped_text(r)} skipped, "
            f"{len(r['failed'])} failed, {float(r['seconds']):.1f} s"
        )
        requests = (r.get("requests") or {}).get("requests")
        if requests:
            line += f"; {requests} requests, tokens: {tokens_text(r.get('tokens'))}"
        out.print(line, soft_wrap=True)
    out.print(f"tokens (this run): {tokens_text(outcome.get('tokens'))}", soft_wrap=True)
