"""The whole pipeline as Prefect flows, on a real (test-harness) Prefect server,
against the SIMULATED model server (a test double: no model inside)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterName
from roles import point_roles_at

from coool import schema as cols
from coool.recipe import load_recipe
from coool.sim.testing import SIM_SERVER_COMMAND, free_port
from coool.submission import read_submission, validate
from flows.pipeline import pipeline_flow

pytestmark = pytest.mark.slow


def run_flow(**kwargs) -> dict:
    return asyncio.run(pipeline_flow(**kwargs))


def assert_valid(path: Path, videos: int) -> pd.DataFrame:
    frame = read_submission(path)
    errors = [p for p in validate(frame, strict=True) if p.level == "error"]
    assert not errors, errors
    assert len(frame) == videos
    return frame


@pytest.fixture(scope="module")
def second_place_run(prefect_api, synthetic_data, tmp_path_factory):
    """One full second-place run and an immediate rerun, with the sim's request counts."""
    from coool.sim.testing import running_sim_server

    results = tmp_path_factory.mktemp("results")
    monkey = pytest.MonkeyPatch()
    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkey.setenv(key, value)
        try:
            first = run_flow(data_root=str(synthetic_data.root), recipe="second-place", results_dir=str(results))
            first_requests = sim.stats()["received"]
            sim.reset()
            second = run_flow(data_root=str(synthetic_data.root), recipe="second-place", results_dir=str(results))
            second_requests = sim.stats()["received"]
        finally:
            monkey.undo()
    return {"results": results, "first": first, "second": second,
            "first_requests": first_requests, "second_requests": second_requests}


def test_submission_valid_and_frames_near_events(second_place_run, synthetic_data):
    frame = assert_valid(Path(second_place_run["first"]["written"]["final"]), len(synthetic_data.truths))
    assert second_place_run["first"]["failures"] == 0
    starts = dict(zip(frame[cols.VIDEO].astype(int), frame[cols.START_FRAME].astype(int)))
    for truth in synthetic_data.truths:
        assert truth.event_frame is not None
        assert abs(starts[truth.video_id] - truth.event_frame) <= 10, (truth.video_id, starts, truth.event_frame)


def test_every_recipe_submission_written_and_valid(second_place_run, synthetic_data):
    written = second_place_run["first"]["written"]
    recipe = load_recipe("second-place")
    assert set(recipe.submissions()) | {"final"} == set(written)
    for path in written.values():
        assert_valid(Path(path), len(synthetic_data.truths))
    results = second_place_run["results"]
    assert (results / "detect.csv").read_text().startswith("video,frame\n")
    assert (results / "failures.csv").exists()


def test_run_json_records_how_the_recipe_files_its_outputs(second_place_run):
    # The studio reads these to find a switched recipe's folders (captions+plus/, ...).
    run = json.loads((second_place_run["results"] / "run.json").read_text())
    assert run["recipe"] == "second-place" and run["variants"] == load_recipe("second-place").output_variants()


def test_rerun_sends_zero_requests(second_place_run):
    assert second_place_run["first_requests"] > 0
    assert second_place_run["second_requests"] == 0
    first = Path(second_place_run["first"]["written"]["final"]).read_text()
    assert Path(second_place_run["second"]["written"]["final"]).read_text() == first
    # Every stage of the rerun came from the cache or was skipped.
    for report in second_place_run["second"]["stages"]:
        assert report["done"] == 0, report


def test_ui_shows_named_runs_and_artifacts(second_place_run, prefect_api):
    async def look() -> tuple[list[str], list[str], list[str]]:
        async with get_client() as client:
            flows = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["describe-v4", "caption-second-place"])))
            tasks = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["caption-video-0", "describe-v4-video-1"])))
            artifacts = await client.read_artifacts()
        return [f.name for f in flows], [t.name for t in tasks], [a.key for a in artifacts if a.key]

    flows, tasks, keys = asyncio.run(look())
    assert {"describe-v4", "caption-second-place"} <= set(flows)
    assert {"caption-video-0", "describe-v4-video-1"} <= set(tasks)
    assert {"submission", "run-summary", "summary-caption", "summary-describe-v4"} <= set(keys)


def test_changing_one_prompt_reruns_only_what_uses_it(second_place_run, synthetic_data, tmp_path, monkeypatch):
    """A prompts folder that overrides the v2 texts prompt: only v3-prompt2 (and the
    ensemble that reads it) is asked again; captions, detection and the other
    configurations come from the cache."""
    from coool.prompts import BUILTIN_DIR
    from coool.sim.testing import running_sim_server

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    text = (BUILTIN_DIR / "describe_texts_v2.md").read_text()
    (prompts / "describe_texts_v2.md").write_text(text + "\nKeep the wording plain.\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path("coool/recipes/second-place.yaml").read_text() + f"prompts_dir: {prompts}\n")
    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkeypatch.setenv(key, value)
        out = run_flow(data_root=str(synthetic_data.root), recipe=str(recipe), results_dir=str(second_place_run["results"]))
        tasks = sim.stats()["tasks"]
    done = {r["stage"]: r["done"] for r in out["stages"]}
    assert done["describe:v3-prompt2"] == len(synthetic_data.truths)
    assert all(done[s] == 0 for s in done if s not in ("describe:v3-prompt2", "ensemble", "count-pass")), done
    assert "frame_caption" not in tasks and "incident_frame" not in tasks
    assert tasks.get("describe_texts", 0) > 0


def test_concurrent_mode_same_submission(second_place_run, synthetic_data, tmp_path, roles_on_sim):
    out = run_flow(data_root=str(synthetic_data.root), recipe="second-place", results_dir=str(tmp_path), concurrent=True)
    assert Path(out["written"]["final"]).read_text() == Path(second_place_run["first"]["written"]["final"]).read_text()


def test_process_backend_starts_and_stops_servers(prefect_api, synthetic_data, tmp_path, monkeypatch):
    """Each role's server is a process we start (the simulated server as the command)
    and stop after its phase; a rerun of the finished run starts none."""
    ports = {}
    for role in ("CAPTIONER", "DETECTOR", "DESCRIBER"):
        port = ports[role] = free_port()
        monkeypatch.setenv(f"COOOL_{role}__URLS", f"http://127.0.0.1:{port}/v1")
        monkeypatch.setenv(f"COOOL_{role}__MODEL", "sim-model")
        monkeypatch.setenv(f"COOOL_{role}__SERVER__BACKEND", "process")
        monkeypatch.setenv(
            f"COOOL_{role}__SERVER__COMMAND",
            json.dumps([*SIM_SERVER_COMMAND, "--port", str(port), "--model", "sim-model"]),
        )
        monkeypatch.setenv(f"COOOL_{role}__SERVER__HEALTH_TIMEOUT_S", "60")
    out = run_flow(data_root=str(synthetic_data.root), recipe="quick", results_dir=str(tmp_path))
    assert_valid(Path(out["written"]["final"]), len(synthetic_data.truths))
    logs = {role: (tmp_path / "servers" / f"{role.lower()}.log") for role in ports}
    assert all(p.exists() for p in logs.values()), "each role's server was started by the pipeline"
    import httpx

    for port in ports.values():  # and stopped
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)

    for path in logs.values():
        path.unlink()
    again = run_flow(data_root=str(synthetic_data.root), recipe="quick", results_dir=str(tmp_path))
    assert Path(again["written"]["final"]).read_text() == Path(out["written"]["final"]).read_text()
    assert not any(p.exists() for p in logs.values()), "a rerun with everything cached loads no model"


def test_external_server_down_fails_fast_naming_role_and_url(prefect_api, synthetic_data, tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("COOOL_CAPTIONER__URLS", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("COOOL_CAPTIONER__SERVER__HEALTH_TIMEOUT_S", "1")
    with pytest.raises(Exception) as info:
        run_flow(data_root=str(synthetic_data.root), recipe="quick", results_dir=str(tmp_path))
    assert "captioner" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    assert not (tmp_path / "submission.csv").exists()


def test_a_stage_kind_added_to_the_registry_runs_as_a_flow(prefect_api, synthetic_data, tmp_path):
    """#13: a new kind (its module + one registry entry, tests/support/notes_stage.py) runs in the
    Prefect pipeline as a flow run of its own, one task per video, with nothing else edited."""
    from notes_stage import notes_registered

    from coool.sim.testing import running_sim_server

    results = tmp_path / "results"
    monkey = pytest.MonkeyPatch()
    with notes_registered(), running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkey.setenv(key, value)
        try:
            outcome = run_flow(data_root=str(synthetic_data.root), recipe="quick", results_dir=str(results))
        finally:
            monkey.undo()
    assert outcome["failures"] == 0
    assert [r["done"] for r in outcome["stages"] if r["stage"] == "notes"] == [3]
    assert sorted(p.name for p in (results / "notes").glob("*.json")) == ["0.json", "1.json", "2.json"]

    async def look() -> tuple[list[str], list[str]]:
        async with get_client() as client:
            flows = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["notes"])))
            tasks = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["notes-video-2"])))
        return [f.name for f in flows], [t.name for t in tasks]

    flows, tasks = asyncio.run(look())
    assert flows and tasks
