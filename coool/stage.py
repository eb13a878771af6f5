"""What every model stage shares: errors, raw-answer records, bounded gather."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from coool.llm import Sample

T = TypeVar("T")


class StageError(RuntimeError):
    """A video that a stage could not process; the message says why."""


def sample_record(sample: Sample, **context: Any) -> dict[str, Any]:
    """A raw answer as saved to disk, with what it was an answer to."""
    return {**context, "content": sample.content, "reasoning": sample.reasoning, "finish_reason": sample.finish_reason}


async def gather_bounded(awaitables: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` running at once, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def run(aw: Awaitable[T]) -> T:
        async with semaphore:
            return await aw

    return list(await asyncio.gather(*(run(aw) for aw in awaitables)))
