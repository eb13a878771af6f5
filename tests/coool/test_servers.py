"""ServerManager's phase handling (which servers stop between phases) and the wait for /health."""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import threading
import time

import pytest

from coool.recipe import load_recipe, phases
from coool.servers import HealthTimeout, ServerManager, ServerUnavailable, is_healthy, wait_healthy, wait_until_healthy
from coool.settings import Settings, load_settings
from coool.sim.testing import free_port, running_sim_server


async def test_end_phase_stops_only_what_the_next_phase_does_not_use(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = phases(load_recipe("second-place").stages())
    manager = ServerManager(Settings(results_dir=tmp_path))
    stopped: list[str] = []

    async def stop(role: str) -> None:
        stopped.append(role)

    monkeypatch.setattr(manager, "stop", stop)
    for i, phase in enumerate(plan):
        stopped.clear()
        await manager.end_phase(plan, i)
        following = set(plan[i + 1].roles) if i + 1 < len(plan) else set()
        assert stopped == [r for r in phase.roles if r not in following], (i, phase.roles, following)
    assert stopped == plan[-1].roles  # after the last phase everything of it stops


async def test_end_phase_keeps_a_server_both_phases_share(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = phases(load_recipe("second-place").stages(), concurrent=True) * 2  # the same roles twice
    manager = ServerManager(Settings(results_dir=tmp_path))
    stopped: list[str] = []

    async def stop(role: str) -> None:
        stopped.append(role)

    monkeypatch.setattr(manager, "stop", stop)
    await manager.end_phase(plan, 0)
    assert stopped == []
    await manager.end_phase(plan, 1)
    assert sorted(stopped) == sorted(plan[1].roles)


# -- the one "wait until /health answers" ---------------------------------------------------------------


def test_wait_until_healthy_returns_once_the_server_answers() -> None:
    with running_sim_server() as sim:
        assert is_healthy(sim.base_url) and is_healthy(f"{sim.base_url}/v1")
        assert 0 <= wait_until_healthy(f"{sim.base_url}/v1", 5) < 5  # /v1 is vLLM's API root: /health beside it


def test_wait_until_healthy_gives_up_after_its_timeout_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(HealthTimeout, match=rf"probe: no answer from {url}/health after 1s") as info:
        wait_until_healthy(url, 1.0, name="probe")
    assert 1.0 <= time.monotonic() - started < 4
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ServerUnavailable)
    assert not is_healthy(url)


def test_wait_until_healthy_fails_fast_when_the_process_died() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="exited before") as info:
        wait_until_healthy(f"http://127.0.0.1:{free_port()}", 60, alive=lambda: dead.poll() is None, name="probe")
    assert not isinstance(info.value, HealthTimeout)
    assert time.monotonic() - started < 5


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    """A server that is up but not healthy yet: 503 to everything, each request counted."""

    requests = 0

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        type(self).requests += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_a_cancelled_role_wait_stops_polling(tmp_path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        settings = load_settings(results_dir=tmp_path, captioner={"urls": [url]})
        waiting = asyncio.create_task(wait_healthy("captioner", settings.captioner, 600))
        await asyncio.sleep(0.5)
        assert _Unhealthy.requests >= 2  # polling
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(1.0)  # the poller notices at its next poll
        seen = _Unhealthy.requests
        await asyncio.sleep(1.5)
        assert _Unhealthy.requests == seen, "the poller went on after the wait was cancelled"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_role_wait_that_times_out_names_role_url_backend_and_model(tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = load_settings(results_dir=tmp_path, detector={"urls": [url], "model": "m-1"})
    with pytest.raises(ServerUnavailable) as info:
        await wait_healthy("detector", settings.detector, 0.5)
    assert str(info.value) == (
        f"detector: no healthy model server at {url.removesuffix('/v1')}/health after 0s (backend external; model m-1)"
    )
