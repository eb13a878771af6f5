"""Running one per-video stage function over many videos, for the CLI.

Plain asyncio with a bound and a rich progress bar; a video that fails is
reported and never stops the others. (Prefect runs use flows/ instead.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@dataclass
class BatchResult:
    outcomes: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def cached(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.get("cached"))


async def run_batch(
    label: str,
    videos: Iterable[int],
    work: Callable[[int], Awaitable[dict[str, Any]]],
    *,
    concurrency: int = 8,
    show: bool = True,
) -> BatchResult:
    """``work(video)`` for every video, at most ``concurrency`` at once."""
    videos = list(videos)
    result = BatchResult()
    limit = asyncio.Semaphore(concurrency)
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show, transient=False,
    ) as progress:
        bar = progress.add_task(label, total=len(videos))

        async def one(video: int) -> None:
            async with limit:
                try:
                    result.outcomes[video] = await work(video)
                except Exception as exc:  # reported below; the other videos go on
                    result.errors[video] = f"{type(exc).__name__}: {exc}"
                finally:
                    progress.advance(bar)

        await asyncio.gather(*(one(v) for v in videos))
    return result


def report(label: str, result: BatchResult) -> int:
    """Print a summary; exit code 0 when every video succeeded, 1 otherwise."""
    done = len(result.outcomes)
    console.print(f"{label}: {done} done ({result.cached} from cache), {len(result.errors)} failed")
    for video, error in sorted(result.errors.items()):
        console.print(f"  [red]video {video}[/red]: {error}")
    return 1 if result.errors else 0
