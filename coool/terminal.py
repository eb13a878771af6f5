"""The CLI stage commands' view of a scheduled stage: a rich progress bar and a summary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coool.llm import Usage
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
    table = Table("stage", "done", "cached", "skipped", "failed", "requests", "prompt tok", "cached prompt tok",
                  "completion tok", "seconds", title="stages")
    for r in outcome.get("stages") or []:
        tokens = Usage.from_dict(r.get("tokens"))
        table.add_row(
            r["stage"], str(r["done"]), str(r["cached"]), skipped_text(r), str(len(r["failed"])),
            str((r.get("requests") or {}).get("requests", "")), f"{tokens.prompt_tokens:,}",
            "" if tokens.cached_prompt_tokens is None else f"{tokens.cached_prompt_tokens:,}",
            f"{tokens.completion_tokens:,}", f"{float(r['seconds']):.1f}",
        )
    out.print(table)
    out.print(f"tokens (this run): {tokens_text(outcome.get('tokens'))}", soft_wrap=True)
