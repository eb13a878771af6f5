"""What the Prefect UI shows of a run stopped by Ctrl-C or SIGTERM.

Prefect records a flow run whose coroutine was cancelled as Crashed, and its
running task runs likewise. After a signal that is wrong: nothing crashed,
the user stopped the run and a rerun resumes it. Once the run has stopped,
``cancel_interrupted`` moves the pipeline's flow run, its stage flow runs
and their task runs that were left Crashed (or still Running/Pending: the
process that ran them is gone) to Cancelled, with a message saying so.
``signals_left_to_coool`` keeps Prefect's SIGTERM bridge out of ``coool run``,
so SIGTERM takes the same clean path as Ctrl-C.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from uuid import UUID

import prefect.flow_engine
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelled

INTERRUPTED = "interrupted by a signal (Ctrl-C / SIGTERM); rerun the same command to resume"
# States a run stopped by the signal can be left in.
LEFT_BEHIND = (StateType.CRASHED, StateType.RUNNING, StateType.PENDING)


async def cancel_interrupted(flow_run_id: str | UUID, since: datetime, message: str = INTERRUPTED) -> int:
    """Mark the interrupted pipeline run and what ran under it Cancelled; how many runs changed.

    ``since``: when the interrupted command started; a flow run created before it is
    an earlier run's (the signal came before this one recorded its id) and is left alone.
    """
    top = UUID(str(flow_run_id))
    changed = 0
    async with get_client() as client:
        flow_runs = [await client.read_flow_run(top)]
        if flow_runs[0].created is None or flow_runs[0].created < since:
            return 0
        flow_runs += await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[top]))
        )
        for run in flow_runs:
            if run.state is not None and run.state.type in LEFT_BEHIND:
                await client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
                changed += 1
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in flow_runs])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(LEFT_BEHIND)))),
        )
        for task_run in task_runs:
            await client.set_task_run_state(task_run.id, Cancelled(message=message), force=True)
            changed += 1
    return changed


@contextlib.contextmanager
def signals_left_to_coool() -> Iterator[None]:
    """Flows run in the block leave SIGTERM to coool (``coool.interrupt.interruptible``).

    Prefect's flow engine replaces the SIGTERM handler with one that raises
    TerminationSignal wherever the main thread happens to be (inside a socket
    write, say, which asyncio then logs as a fatal error with a traceback). It is
    meant for runs a Prefect runner or worker supervises; ``coool run`` has its
    own handling, the same for SIGINT and SIGTERM: cancel the run and let it clean
    up. So, for the block, the engine's SIGTERM bridge does nothing.
    """
    saved = getattr(prefect.flow_engine, "capture_sigterm", None)
    if saved is None:  # another Prefect version: nothing to turn off
        yield
        return
    prefect.flow_engine.capture_sigterm = contextlib.nullcontext
    try:
        yield
    finally:
        prefect.flow_engine.capture_sigterm = saved

