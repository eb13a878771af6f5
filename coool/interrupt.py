"""Ctrl-C (SIGINT) and SIGTERM during a run: stop cleanly, say how far it got.

The run's coroutine is cancelled, so its own ``finally`` blocks do the
cleanup (the scheduler stops the model servers coool started, clients are
closed, the results lock is released by its caller); the caller then prints
``interrupted_message`` and exits 130. Finished (stage, video) outputs are on
disk (atomic writes), so rerunning the same command resumes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from coool.run import Run

T = TypeVar("T")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class Interrupted(Exception):
    """The run was stopped by a signal (after its cleanup ran)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


async def interruptible(work: Awaitable[T], *, on_signal: Callable[[], None] = lambda: None) -> T:
    """Await ``work``; on SIGINT or SIGTERM call ``on_signal()``, cancel the work, let it
    clean up, raise Interrupted.

    A second signal while it cleans up is ignored: the cleanup stops the servers.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def received_signal(signum: int) -> None:
        if not received:
            received.append(signum)
            on_signal()
            task.cancel()

    signums = (signal.SIGINT, signal.SIGTERM)
    for signum in signums:
        loop.add_signal_handler(signum, received_signal, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    except BaseException:
        if received:  # the work turned the cancellation into an error of its own
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in signums:
            loop.remove_signal_handler(signum)


class _InterruptedNotCrashed(logging.Filter):
    """Prefect logs a cancelled flow or task run as "Crash detected!": after a Ctrl-C it is
    not a crash. The record is kept (the Prefect UI shows why the run ended), reworded."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.active:
            return True
        message = record.getMessage()
        if "Crash detected" in message:
            record.msg, record.args = "interrupted by a signal (Ctrl-C / SIGTERM); rerun to resume", ()
        elif "Finished in state Crashed" in message:  # the state Prefect records; an interrupt, not an error
            record.msg, record.args = f"{message} (interrupted)", ()
        else:
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


@contextmanager
def prefect_interrupt_wording() -> Iterator[_InterruptedNotCrashed]:
    """Reword Prefect's crash records once the filter is made ``active`` (after a signal)."""
    wording = _InterruptedNotCrashed()
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addFilter(wording)
    try:
        yield wording
    finally:
        for logger in loggers:
            logger.removeFilter(wording)


def units_done(pipeline: Run, videos: list[int]) -> tuple[int, int]:
    """(units whose output is on disk, all units): stage 1 and every stage of the
    recipe, per video (what a rerun would not redo)."""
    stages = pipeline.recipe.stages()
    done = 0
    for video in videos:
        done += (Path(pipeline.ws.manifest_path(video))).exists()
        for stage in stages:
            try:
                done += bool(pipeline.has_output(stage, video))
            except Exception:  # an output that can't be judged is not done
                pass
    return done, len(videos) * (1 + len(stages))


def interrupted_message(done: int, total: int) -> str:
    return f"interrupted: {done} of {total} units done; rerun the same command to resume"
