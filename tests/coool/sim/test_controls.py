"""The simulated server's controls for reliability tests: scripted answers (/sim/script),
runtime latency (/sim/latency), a required API key, per-task activity in /sim/stats.
(The server is a SIMULATION: a test double, no model inside.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coool.sim.testing import SimHandle, running_sim_server

MODEL = "sim-model"
http = httpx.Client(timeout=10)
DETECT_SCHEMA = {"title": "incident_frame", "type": "object", "properties": {"frame": {"type": "integer"}},
                 "required": ["frame"]}


@pytest.fixture(scope="module")
def server() -> Iterator[SimHandle]:
    with running_sim_server(model=[MODEL]) as handle:
        yield handle


@pytest.fixture
def sim(server: SimHandle) -> SimHandle:
    server.reset()
    server.set_latency(0.0, tasks={"incident_frame": None})
    return server


def detect(sim: SimHandle, n: int = 1, **headers: str) -> httpx.Response:
    body = {"model": MODEL, "n": n, "messages": [{"role": "user", "content": "Which frame?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "incident_frame", "schema": DETECT_SCHEMA}}}
    return http.post(f"{sim.url}/chat/completions", json=body, headers=headers)


def contents(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["message"]["content"] for c in response.json()["choices"]]


def test_a_script_answers_the_next_requests_of_its_task(sim: SimHandle) -> None:
    normal = contents(detect(sim))
    sim.script("incident_frame", {"frame": 99999}, requests=2)
    assert sim.pending_scripts() == {"incident_frame": [{"contents": ['{"frame": 99999}'], "requests": 2}]}
    assert contents(detect(sim, n=3)) == ['{"frame": 99999}'] * 3
    assert contents(detect(sim)) == ['{"frame": 99999}']
    assert contents(detect(sim)) == normal  # used up
    stats = sim.stats()
    assert stats["scripted"] == 2 and stats["tasks"] == {"incident_frame": 4}


def test_contents_go_one_per_choice_and_scripts_queue(sim: SimHandle) -> None:
    sim.script("incident_frame", contents=["not json", {"frame": 3}])
    sim.script("incident_frame", "second")
    assert contents(detect(sim, n=3)) == ["not json", '{"frame": 3}', "not json"]
    assert contents(detect(sim)) == ["second"]


def test_scripted_answers_get_no_content_fault_and_survive_a_5xx(sim: SimHandle) -> None:
    sim.script("incident_frame", "kept")
    sim.set_faults(fail_next=1, status=503)
    assert detect(sim).status_code == 503  # the failed request leaves the script for its retry
    assert contents(detect(sim)) == ["kept"]
    sim.script("incident_frame", "kept again")
    sim.set_faults({"empty": 1.0})
    try:
        assert contents(detect(sim)) == ["kept again"]
    finally:
        sim.set_faults({"empty": 0.0})


def test_reset_and_delete_drop_pending_scripts(sim: SimHandle) -> None:
    sim.script("ensemble", "x")
    sim.reset()
    assert sim.pending_scripts() == {}
    sim.script("ensemble", "x")
    sim.clear_scripts()
    assert sim.pending_scripts() == {}


@pytest.mark.parametrize("body", [
    {"task": "no_such_task", "content": "x"},
    {"task": "ensemble"},
    {"task": "ensemble", "content": "x", "contents": ["y"]},
    {"task": "ensemble", "contents": []},
    {"task": "ensemble", "content": "x", "requests": 0},
    {"task": "ensemble", "content": "x", "extra": 1},
    ["not", "an", "object"],
])
def test_bad_scripts_are_refused(sim: SimHandle, body: Any) -> None:
    response = http.post(f"{sim.base_url}/sim/script", json=body)
    assert response.status_code == 400 and "bad script" in response.text


def test_latency_per_task_at_runtime_and_activity_in_stats(sim: SimHandle) -> None:
    assert sim.set_latency(tasks={"incident_frame": 0.6})["tasks"] == {"incident_frame": 0.6}
    seen: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen:
            active = sim.stats()["active"]
            if active:
                seen.update(active)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    contents(detect(sim))
    took = time.monotonic() - started
    watcher.join()
    assert took >= 0.6 and seen == {"incident_frame": 1}
    assert sim.stats()["active"] == {}
    sim.set_latency(tasks={"incident_frame": None})
    started = time.monotonic()
    contents(detect(sim))
    assert time.monotonic() - started < 0.5
    assert http.post(f"{sim.base_url}/sim/latency", json={"latency_s": -1}).status_code == 400


def test_an_api_key_is_required_when_set() -> None:
    with running_sim_server(model=[MODEL], api_key="k-123") as sim:
        assert detect(sim).status_code == 401
        assert detect(sim, Authorization="Bearer wrong").status_code == 401
        assert http.get(f"{sim.url}/models").status_code == 401
        ok = detect(sim, Authorization="Bearer k-123")
        assert json.loads(contents(ok)[0])["frame"] == -1
        assert http.get(f"{sim.base_url}/health").status_code == 200  # health stays open, as vLLM's
        assert "k-123" not in json.dumps(sim.stats())
