"""The simulated server's request log (/sim/requests) and its HTTP-proxy addressing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests

from coool.sim.testing import SimHandle, running_sim_server

MODEL = "sim-model"


@pytest.fixture(scope="module")
def server() -> Iterator[SimHandle]:
    with running_sim_server(model=[MODEL], request_log=3) as handle:
        yield handle


@pytest.fixture
def sim(server: SimHandle) -> SimHandle:
    server.reset()
    return server


def post(sim: SimHandle, body: dict) -> httpx.Response:
    return httpx.post(f"{sim.url}/chat/completions", json=body, timeout=10)


def test_every_request_is_logged_with_its_body_and_task(sim: SimHandle) -> None:
    caption = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Scene_Description, Hazard_Clues, Gaze_Focus as JSON"}],
        "temperature": 0.01,
        "chat_template_kwargs": {"enable_thinking": True},
    }
    refused = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    assert post(sim, caption).status_code == 200
    assert post(sim, refused).status_code == 404
    logged = sim.requests()
    assert [r["seq"] for r in logged] == [0, 1]
    assert logged[0]["body"] == caption  # exactly what was sent, vLLM extras included
    assert logged[0]["task"] == "frame_caption"
    assert logged[1] == {"seq": 1, "task": None, "body": refused}


def test_log_keeps_the_most_recent_and_clears(sim: SimHandle) -> None:
    for i in range(5):
        post(sim, {"model": MODEL, "messages": [{"role": "user", "content": f"hello {i}"}]})
    logged = sim.requests()
    assert [r["seq"] for r in logged] == [2, 3, 4]  # request_log=3 keeps the last three
    assert [r["body"]["messages"][0]["content"] for r in logged] == ["hello 2", "hello 3", "hello 4"]
    sim.clear_requests()
    assert sim.requests() == []
    post(sim, {"model": MODEL, "messages": [{"role": "user", "content": "again"}]})
    assert [r["seq"] for r in sim.requests()] == [0]


def test_reset_clears_the_log(sim: SimHandle) -> None:
    post(sim, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    sim.reset()
    assert sim.requests() == []


def test_a_client_with_a_fixed_url_reaches_it_through_http_proxy(sim: SimHandle) -> None:
    # Nothing listens on this address: only the proxy setting can deliver the request.
    fixed = "http://localhost:9/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "proxied"}]}
    proxies = {"http": sim.base_url}
    response = requests.post(fixed, json=body, proxies=proxies, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["x-coool-simulated"] == "true"
    assert sim.requests()[-1]["body"] == body
    health = requests.get("http://localhost:9/health", proxies=proxies, timeout=10)
    assert health.status_code == 200


def test_log_can_be_switched_off() -> None:
    with running_sim_server(model=[MODEL], request_log=0) as sim:
        post(sim, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert sim.requests() == []
