"""`make demo` as a user runs it: `python -m deployments.demo --keep` on a port
that is not Prefect's default, against SIMULATED model servers (a test
double: no model inside). The Prefect UI it serves must call its own API, list
the pipeline's flow run, and the demo must end without "Error logging to API".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coool.sim.testing import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@dataclass
class Demo:
    process: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        """Ctrl-C, as a user ends `make demo DEMO_ARGS=--keep`; returns everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.output()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    # A user's shell: no Prefect API named, so the demo starts its own server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COOOL_"))}
    env.update(PREFECT_HOME=str(root / "prefect-home"), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    log = root / "demo.log"
    argv = [sys.executable, "-m", "deployments.demo", "--data", str(root / "data"), "--results", str(root / "out" / "results"),
            "--videos", "1", "--prefect-port", str(port), "--keep"]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    demo = Demo(process, port, log)
    try:
        deadline = time.monotonic() + 300
        while "the Prefect server keeps running" not in demo.output():
            assert process.poll() is None, "the demo exited early:\n" + demo.output()[-4000:]
            assert time.monotonic() < deadline, "the demo did not finish in 300 s:\n" + demo.output()[-4000:]
            time.sleep(1)
        yield demo
    finally:
        demo.stop()


def test_the_ui_calls_the_api_on_its_own_port(demo: Demo) -> None:
    assert demo.port != 4200
    settings = httpx.get(f"{demo.base}/ui-settings", timeout=10).json()
    assert settings["api_url"] == f"{demo.base}/api"
    assert httpx.get(f"{demo.base}/api/health", timeout=10).status_code == 200


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_the_ui_lists_the_pipelines_flow_run(demo: Demo) -> None:
    from playwright.sync_api import sync_playwright

    runs = httpx.post(f"{demo.base}/api/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["pipeline-second-place"]}}},
                      timeout=10).json()  # fmt: skip
    (run,) = runs
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{demo.base}/runs", wait_until="domcontentloaded")
            page.get_by_text("pipeline-second-place").first.wait_for(timeout=60_000)
            assert "Can't connect to Server API" not in page.content()
            # The run's own page loads from the API too.
            page.goto(f"{demo.base}/runs/flow-run/{run['id']}", wait_until="domcontentloaded")
            page.get_by_text("pipeline-second-place").first.wait_for(timeout=60_000)
        finally:
            browser.close()


def test_a_clean_demo_ends_without_errors(demo: Demo) -> None:
    output = demo.stop()
    assert "demo: done" in output and ", valid)" in output
    assert "Error logging to API" not in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert demo.process.returncode == 0, output[-3000:]
