"""What the Prefect UI shows of a run (issue #12.5-6, #16.1): a task run's page (its log lines:
stage, video, model, cache key, what it did), the stage summaries (tokens, one row per task
run) and the run summary (every stage, models and revisions, tokens). A real Prefect test
server; the SIMULATED model server (a test double, no model inside) answers."""

from __future__ import annotations

import asyncio
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId, TaskRunFilter, TaskRunFilterName

from coool.llm import Usage
from coool.summary import tokens_text
from flows.pipeline import pipeline_flow

pytestmark = pytest.mark.slow

REVISION = "feedface00000000000000000000000000000000"  # keys unique to this test's run


async def markdown_artifacts(key: str) -> list[str]:
    async with get_client() as client:
        return [str(a.data) for a in await client.read_artifacts() if a.key == key]


async def task_run_logs(name: str) -> list[str]:
    """Every log line of the task runs named ``name`` (log lines reach the server in batches)."""
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])))
        logs = await client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])))
    return [log.message for log in logs]


def test_task_runs_stage_and_run_summaries_say_what_happened(
    prefect_api, roles_on_sim, synthetic_data, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("COOOL_CAPTIONER__REVISION", REVISION)
    roles_on_sim.reset()
    out = asyncio.run(pipeline_flow(data_root=str(synthetic_data.root), recipe="quick", results_dir=str(tmp_path)))
    stats = roles_on_sim.stats()
    assert out["failures"] == 0
    # Every token the server reported, summed over the run.
    assert (out["tokens"]["prompt_tokens"], out["tokens"]["completion_tokens"]) == (
        stats["prompt_tokens"], stats["completion_tokens"]
    )
    assert {r["role"]: r["revision"] for r in out["roles"]}["captioner"] == REVISION
    caption = next(r for r in out["stages"] if r["stage"] == "caption")
    key = caption["units"]["0"]["key"]

    # The run summary: stage 1 and every stage, each role's model and revision, tokens.
    runs = [m for m in asyncio.run(markdown_artifacts("run-summary")) if str(tmp_path) in m]
    assert len(runs) == 1
    summary = runs[0]
    assert "| frames |" in summary and "| caption |" in summary and "| describe:v4 |" in summary
    assert f"| captioner | `sim-model` | {REVISION} |" in summary
    assert f"**Tokens** (this run): {tokens_text(out['tokens'])}" in summary

    # The caption stage's summary: its tokens, and one row per task run with its cache key.
    stage = [m for m in asyncio.run(markdown_artifacts("summary-caption")) if key in m]
    assert len(stage) == 1
    assert f"**Tokens**: {tokens_text(Usage.from_dict(caption['tokens']))}" in stage[0]
    assert f"| 0 | caption-video-0 | done | `{key}` |" in stage[0]

    # The task run's own page: what it is (video, model with revision, cache key) and what it did.
    deadline = time.monotonic() + 20
    while True:
        logs = [m for m in asyncio.run(task_run_logs("caption-video-0")) if key in m or "response(s)" in m]
        if any(key in m for m in logs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    mine = [m for m in logs if key in m]
    assert mine == [f"caption for video 0: role captioner, model sim-model@{REVISION}, cache key {key}"]
    usage = caption["units"]["0"]["usage"]
    assert any(f"{usage['responses']} response(s)" in m and tokens_text(usage) in m for m in logs), logs
