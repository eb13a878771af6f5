"""Safe defaults: images only from under the data root, secrets never written or
logged, local servers on 127.0.0.1, no shell anywhere.

Model servers here are the SIMULATED one (a test double, no model inside).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from reliability_support import (
    COOOL,
    REPO,
    assert_valid_submission,
    child_env,
    failures,
    per_role,
    role_env,
    run_tree,
)

from coool.llm import ChatClient, MediaPathError, image_url
from coool.recipe import load_recipe
from coool.run import Run
from coool.servers import ServerManager, process_argv, safe_media_root
from coool.settings import RoleSettings, load_settings
from coool.sim.testing import SIM_SERVER_COMMAND, free_port, running_sim_server, start_sim_process
from coool.studio.media import transcode_h264
from flows.pipeline import pipeline_flow

SECRET = "sk-coool-test-7f3a9c1e5d2b4a68"


# -- images by file:// only from under the data root ------------------------------------------------


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "data"
    (root / "frames").mkdir(parents=True)
    inside = root / "frames" / "000001.png"
    inside.write_bytes(b"png")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"png")
    link = root / "frames" / "link.png"
    link.symlink_to(outside)
    return {"root": root, "inside": inside, "outside": outside, "link": link}


def test_file_urls_only_for_files_under_the_media_root(media: dict[str, Path]) -> None:
    root = media["root"]
    assert image_url(media["inside"], "file", root) == media["inside"].resolve().as_uri()
    for escape in (media["outside"], root / "frames" / ".." / ".." / "secret.png", media["link"], Path("/etc/passwd")):
        with pytest.raises(MediaPathError, match="outside the allowed media root"):
            image_url(escape, "file", root)
    with pytest.raises(MediaPathError, match="need a media root"):
        image_url(media["inside"], "file", None)


def test_the_client_refuses_file_urls_outside_its_media_root(media: dict[str, Path]) -> None:
    client = ChatClient("describer", RoleSettings(image_transport="file"), media_root=media["root"])
    assert client.image_url(media["inside"]).startswith("file://")
    with pytest.raises(MediaPathError):
        client.image_url(media["outside"])


async def test_file_transport_with_results_outside_the_data_root_fails_before_any_request(tmp_path: Path) -> None:
    settings = load_settings(results_dir=tmp_path / "results", data_root=tmp_path / "data",
                             captioner={"image_transport": "file"})
    pipeline = Run(settings, load_recipe("quick"))
    with pytest.raises(MediaPathError, match="outside the allowed media root"):
        async with pipeline.open_clients(["captioner"]):
            pass
    inside = Run(load_settings(results_dir=tmp_path / "data" / "results", data_root=tmp_path / "data",
                                    captioner={"image_transport": "file"}), load_recipe("quick"))
    async with inside.open_clients(["captioner"]) as clients:
        assert clients["captioner"].media_root == (tmp_path / "data").resolve()


def test_server_launch_allows_only_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be the filesystem root"):
        safe_media_root(Path("/"))
    assert safe_media_root(tmp_path / "data" / ".." / "data") == (tmp_path / "data").resolve()
    role = RoleSettings(image_transport="file", server={"backend": "process", "command": ["vllm", "serve", "m"]})
    argv = process_argv(role, safe_media_root(tmp_path / "data"))
    assert argv[-2:] == ["--allowed-local-media-path", str((tmp_path / "data").resolve())]


async def test_process_backend_serves_images_from_the_data_root_only(media: dict[str, Path], tmp_path: Path) -> None:
    """A real process-backend server (the simulation, started as `vllm serve` would be): it is given the
    data root as its only media path, listens on 127.0.0.1, and refuses a file outside it."""
    import cv2
    import numpy as np

    cv2.imwrite(str(media["inside"]), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(media["outside"]), np.zeros((8, 8, 3), np.uint8))
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    role = {"urls": [url], "model": "sim-model", "image_transport": "file",
            "server": {"backend": "process", "command": [*SIM_SERVER_COMMAND, "--port", str(port)],
                       "health_timeout_s": 60}}
    settings = load_settings(results_dir=tmp_path / "r", data_root=media["root"], describer=role)
    manager = ServerManager(settings, log_dir=tmp_path / "logs")
    running = await manager.ensure("describer")
    try:
        proc = psutil.Process(running.process.pid)
        cmdline = proc.cmdline()
        assert cmdline[cmdline.index("--allowed-local-media-path") + 1] == str(media["root"].resolve())
        assert {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN} == {"127.0.0.1"}

        def ask(path: Path) -> httpx.Response:
            body = {"model": "sim-model", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}}, {"type": "text", "text": "hi"}]}]}
            return httpx.post(f"{url}/chat/completions", json=body, timeout=10)

        assert ask(media["inside"]).status_code == 200
        refused = ask(media["outside"])
        assert refused.status_code == 400 and "allowed-local-media-path" in refused.text
    finally:
        await manager.stop_all()
    assert running.process.poll() is not None  # we stopped what we started


async def test_docker_backend_mounts_only_the_data_root_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}

    class Container:
        status = "running"

        def reload(self) -> None:
            pass

        def stop(self, timeout: int) -> None:
            calls["stopped"] = True

    class Containers:
        def run(self, image: str, **kwargs: Any) -> Container:
            calls.update(kwargs, image=image)
            return Container()

    docker = types.ModuleType("docker")
    docker.from_env = lambda: types.SimpleNamespace(containers=Containers())  # type: ignore[attr-defined]
    docker_types = types.ModuleType("docker.types")
    docker_types.DeviceRequest = lambda **kw: kw  # type: ignore[attr-defined]
    docker.types = docker_types  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "docker", docker)
    monkeypatch.setitem(sys.modules, "docker.types", docker_types)
    data = tmp_path / "data"
    data.mkdir()
    with running_sim_server(model=["sim-model"]) as sim:
        settings = load_settings(results_dir=tmp_path / "r", data_root=data,
                                 describer={"urls": [sim.url], "server": {"backend": "docker", "image": "coool/qwen3"}})
        manager = ServerManager(settings)
        await manager._start_docker("describer", settings.describer)
    root = str(data.resolve())
    assert calls["volumes"] == {root: {"bind": root, "mode": "ro"}}
    assert calls["command"][calls["command"].index("--allowed-local-media-path") + 1] == root
    settings.data_root = Path("/")
    with pytest.raises(ValueError, match="filesystem root"):
        await ServerManager(settings)._start_docker("describer", settings.describer)


# -- secrets ----------------------------------------------------------------------------------------------


def _grep_tree(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


@pytest.mark.slow
def test_an_api_key_never_reaches_results_logs_or_prefect(
    prefect_api: str, clips4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    results = tmp_path / "results"
    # The server requires the key (as vLLM --api-key): a run that completes proves it was sent.
    with running_sim_server(model=["sim-model"], api_key=SECRET) as sim:
        for key, value in {**role_env(sim.url), **per_role("API_KEY", SECRET)}.items():
            monkeypatch.setenv(key, value)
        state = asyncio.run(pipeline_flow(data_root=str(clips4), recipe="quick", results_dir=str(results),
                                          return_state=True))
        stats = sim.stats()
        assert httpx.post(f"{sim.url}/chat/completions", json={}).status_code == 401  # no key: refused
    assert state.is_completed(), state.message
    assert stats["rejected"] == 0 and stats["completed"] > 0
    assert_valid_submission(results / "submission.csv", [0, 1, 2, 3])
    assert failures(results).empty
    # Not in any file of the results folder (outputs, raw answers, run.json, Prefect's cache) ...
    assert _grep_tree(results, SECRET) == []
    # ... nor in what Prefect holds about the run: flow runs (parameters), task runs, logs, artifacts.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the buffered run logs (no loop running here: blocks until sent)

    async def prefect_text() -> str:
        ids = await run_tree(state.state_details.flow_run_id)
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            logs = []
            for _ in range(20):  # logs arrive in batches: wait until the run's last ones are in
                logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
                if any("submission:" in log.message for log in logs):
                    break
                await asyncio.sleep(0.5)
            artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        assert logs and artifacts and len(tasks) >= 12
        return "\n".join(x.model_dump_json() for x in [*runs, *tasks, *logs, *artifacts])

    text = asyncio.run(prefect_text())
    assert "submission" in text
    assert SECRET not in text
    # ... nor in anything logged or printed in this process.
    assert SECRET not in caplog.text
    out, err = capfd.readouterr()
    assert SECRET not in out + err
    # The settings keep it as a secret: masked in repr and in JSON dumps.
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in settings.model_dump_json()
    assert settings.captioner.api_key.get_secret_value() == SECRET


def test_a_wrong_api_key_is_not_echoed_in_failures(clips4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from coool.preflight import RunStopped
    from coool.run import run_plain

    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-0123456789abcdef"
    with running_sim_server(model=["sim-model"], api_key=SECRET) as sim:
        for key, value in {**role_env(sim.url), **per_role("API_KEY", wrong)}.items():
            monkeypatch.setenv(key, value)
        pipeline = Run(load_settings(results_dir=tmp_path / "r"), load_recipe("quick"))
        # Every request refused the same way stops the run (issue #15.4), saying why, key not shown.
        with pytest.raises(RunStopped) as stopped:
            asyncio.run(run_plain(pipeline, clips4 / "videos", clips4 / "heatmaps"))
        assert sim.stats()["rejected"] > 0
    assert "401" in str(stopped.value) and wrong not in str(stopped.value)
    listed = failures(tmp_path / "r")
    assert not listed.empty and listed["error"].str.contains("401").all()  # a 4xx: not retried, reported
    assert _grep_tree(tmp_path / "r", wrong) == []
    assert wrong not in caplog.text


# -- local servers bind 127.0.0.1 by default ------------------------------------------------------------


def _listening(pid: int) -> set[str]:
    addresses: set[str] = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        addresses |= {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    return addresses


def test_the_simulated_server_binds_loopback_by_default(tmp_path: Path) -> None:
    from coool.cli import sim_server
    from coool.sim.serve import serve, sim_server_command

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(sim_server_command).parameters["host"].default == "127.0.0.1"
    # The command line (``coool sim-server``; ``python -m coool.sim`` delegates to it).
    assert inspect.signature(sim_server).parameters["host"].default.default == "127.0.0.1"
    port = free_port()
    proc = start_sim_process(port)  # no host given
    try:
        assert _listening(proc.pid) == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_studio_binds_loopback_by_default_and_refuses_other_addresses(tmp_path: Path) -> None:
    from coool.studio.app import studio_command

    assert inspect.signature(studio_command).parameters["host"].default == "127.0.0.1"
    with pytest.raises(ValueError, match="refusing to bind the studio"):
        studio_command(tmp_path, host="0.0.0.0")
    port = free_port()
    (tmp_path / "results").mkdir()
    proc = subprocess.Popen([COOOL, "studio", str(tmp_path / "results"), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=child_env("http://127.0.0.1:9/api", {}))
    try:
        _wait_listening(proc, port)
        assert _listening(proc.pid) == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the studio exited"
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the studio never listened")


def test_the_demo_starts_prefect_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deployments.demo as demo

    started: list[list[str]] = []

    class Proc:
        def poll(self) -> None:
            return None

    def popen(argv: list[str], **kwargs: Any) -> Proc:
        started.append(list(argv))
        assert "shell" not in kwargs
        return Proc()

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(demo.subprocess, "Popen", popen)
    monkeypatch.setattr(demo, "wait_until_healthy", lambda *a, **k: 0.0)
    demo.start_prefect(free_port(), tmp_path / "home", tmp_path / "prefect.log")
    (argv,) = started
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    makefile = (REPO / "Makefile").read_text()
    assert "prefect server start --host 127.0.0.1" in makefile


# -- no shell ---------------------------------------------------------------------------------------------


SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("asyncio", "create_subprocess_shell")}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _python_sources() -> list[Path]:
    folders = ("coool", "flows", "deployments", "bench", "scripts")
    return sorted(p for f in folders if (REPO / f).is_dir() for p in (REPO / f).rglob("*.py"))


def test_no_shell_strings_anywhere_in_the_source() -> None:
    """Every process is started from an argument list: no shell=True, os.system, popen or
    *_shell call, and no string (or f-string) as a subprocess command."""
    problems = []
    sources = _python_sources()
    assert len(sources) > 40
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    problems.append(f"{where}: shell=")
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if (func.value.id, func.attr) in SHELL_CALLS:
                    problems.append(f"{where}: {func.value.id}.{func.attr}")
                if func.value.id == "subprocess" and func.attr in SUBPROCESS_CALLS and node.args:
                    if isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                        problems.append(f"{where}: a string as the command")
    assert problems == []


@pytest.mark.slow
def test_hostile_file_and_folder_names_go_through_as_data(clips4: Path, tmp_path: Path) -> None:
    """A data root, results folder and video names with spaces, quotes, ``$(...)``, backticks and
    ``;``: the run works, the odd video is reported by name, and no shell ever ran them."""
    hostile = "my data $(touch PWNED) `touch PWNED2`; touch PWNED3 'q' \"dq\""
    data = tmp_path / hostile
    shutil.copytree(clips4, data)
    odd = data / "videos" / "5 $(touch PWNED4).mp4"
    shutil.copy(data / "videos" / "0.mp4", odd)
    results = tmp_path / f"results {hostile}"
    with running_sim_server(model=["sim-model"]) as sim:
        argv = [COOOL, "run", "--no-prefect", "--data", str(data), "--results", str(results), "--recipe", "quick"]
        done = subprocess.run(argv, cwd=tmp_path, env=child_env("http://127.0.0.1:9/api", role_env(sim.url)),
                              capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert_valid_submission(results / "submission.csv", [0, 1, 2, 3])
    listed = failures(results)
    assert listed["path"].tolist() == [str(odd)] and "not a video id" in listed["error"].iloc[0]
    # ffmpeg (the studio's H.264 transcode) is handed the odd name as one argument too.
    transcoded = transcode_h264(odd, results / "studio" / f"{odd.stem} h264.mp4")
    assert transcoded.stat().st_size > 0
    for marker in ("PWNED", "PWNED2", "PWNED3", "PWNED4"):
        assert not list(tmp_path.rglob(marker)) and not (REPO / marker).exists()
