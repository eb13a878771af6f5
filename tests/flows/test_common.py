"""What every stage flow shares, on the session's real (test-harness) Prefect server."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.context import get_run_context

from flows.common import StageProgress

pytestmark = pytest.mark.slow


async def progress_artifacts(flow_run_id) -> list:
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["progress"])
            )
        )


def test_stage_progress_ends_at_the_final_count_without_holding_up_the_work(prefect_api) -> None:
    @flow
    async def stage_with_progress(total: int) -> tuple[str, float]:
        progress = StageProgress("caption", total, every_s=0.05)
        progress.start()
        started = asyncio.get_running_loop().time()
        for _ in range(total):  # the work never awaits the artifact's round trips
            progress.advance()
        advanced_in = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.2)  # a few background updates
        await progress.close()
        return str(get_run_context().flow_run.id), advanced_in

    flow_run_id, advanced_in = asyncio.run(stage_with_progress(3))
    assert advanced_in < 0.05
    (artifact,) = asyncio.run(progress_artifacts(flow_run_id))
    assert float(artifact.data) == 100.0
    assert artifact.description == "caption: 3 of 3 videos"


def test_a_failed_stage_stops_its_progress_writer(prefect_api) -> None:
    @flow
    async def failing_stage() -> None:
        progress = StageProgress("describe:v4", 2, every_s=0.05)
        progress.start()
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            progress.cancel()
            await asyncio.sleep(0.1)
            assert progress._writer is not None and progress._writer.cancelled()
            raise

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(failing_stage())
