"""A model name the server does not serve fails the run at the start of the phase.

Before, every request got a 404, every video the fallback row, and the run exit 0.
Now ``ServerManager.ensure`` (used by the Prefect flow and the plain run alike)
compares ``GET /v1/models`` with the role's model and stops, naming the role, the
URL, the expected and the served names; no request is sent with the wrong name
and no submission is written. A server without /v1/models (older) is not an error.

The model server is the SIMULATED one (a test double, no model inside), serving
``sim-model``.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from reliability_support import COOOL, REPO, child_env, role_env

from coool.servers import ServedModelMismatch, ServerManager
from coool.settings import load_settings
from coool.sim.testing import SimHandle, running_sim_server


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_sim_server(model=["sim-model"]) as handle:
        yield handle


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _assert_fails_naming(done: subprocess.CompletedProcess[str], role: str, url: str, results: Path,
                         *, prefect: bool = False) -> None:
    assert done.returncode != 0, done.stdout[-2000:]
    err = done.stderr
    if not prefect:  # (Prefect's own log of the failed flow run carries the traceback, for its UI)
        assert "Traceback" not in err, err[-3000:]
    # The command's last word is one line saying it all.
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err[-3000:]
    assert role in line and url in line and "'wrong/model'" in line and "'sim-model'" in line, err[-3000:]
    assert not (results / "submission.csv").exists()


@pytest.mark.parametrize("role", ["captioner", "detector"])  # the first phase, and a later one
def test_a_wrong_model_name_fails_the_plain_run_at_its_phase(sim: SimHandle, clips4: Path, tmp_path: Path,
                                                              role: str) -> None:
    sim.reset()
    env = role_env(sim.url, **{f"COOOL_{role.upper()}__MODEL": "wrong/model"})
    results = tmp_path / "results"
    argv = [COOOL, "run", "--no-prefect", "--data", str(clips4), "--results", str(results), "--recipe", "quick"]
    done = _run(argv, child_env("http://127.0.0.1:9/api", env))
    _assert_fails_naming(done, role, sim.url, results)
    stats = sim.stats()
    assert stats["rejected"] == 0, stats  # not one request went out with the wrong name
    if role == "captioner":
        assert stats["received"] == 0, stats


@pytest.mark.slow
def test_a_wrong_model_name_fails_the_prefect_run(prefect_api: str, sim: SimHandle, clips4: Path,
                                                  tmp_path: Path) -> None:
    sim.reset()
    env = role_env(sim.url, COOOL_DETECTOR__MODEL="wrong/model")
    results = tmp_path / "results"
    argv = [COOOL, "run", "--data", str(clips4), "--results", str(results), "--recipe", "quick"]
    done = _run(argv, child_env(prefect_api, env))
    _assert_fails_naming(done, "detector", sim.url, results, prefect=True)
    assert sim.stats()["rejected"] == 0


def test_the_right_name_on_every_url_passes(sim: SimHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in role_env(f"{sim.url},{sim.url}").items():
        monkeypatch.setenv(key, value)
    manager = ServerManager(load_settings())
    asyncio.run(manager.ensure_all(["captioner", "describer"]))


def test_ensure_raises_a_mismatch_naming_everything(sim: SimHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in role_env(sim.url, COOOL_DESCRIBER__MODEL="wrong/model").items():
        monkeypatch.setenv(key, value)
    manager = ServerManager(load_settings())
    with pytest.raises(ServedModelMismatch, match=r"describer: .* serves 'sim-model', not the configured 'wrong/model'"):
        asyncio.run(manager.ensure("describer"))


@contextmanager
def _server_without_models() -> Iterator[str]:
    """An older OpenAI-compatible server: /health, but 404 on /v1/models."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_without_v1_models_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with _server_without_models() as url:
        for key, value in role_env(url, COOOL_DETECTOR__MODEL="any/model").items():
            monkeypatch.setenv(key, value)
        manager = ServerManager(load_settings())
        running = asyncio.run(manager.ensure("detector"))
    assert running.role == "detector" and not running.owned
