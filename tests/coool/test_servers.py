"""ServerManager: which servers stop between phases; the process and docker backends' commands; the wait for /health."""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from coool import launch
from coool.recipe import load_recipe, phases
from coool.servers import (
    HealthTimeout,
    ServerManager,
    ServerUnavailable,
    docker_command,
    is_healthy,
    process_argv,
    wait_healthy,
    wait_until_healthy,
)
from coool.settings import ROLE_DEFAULTS, ROLES, RoleSettings, Settings, load_settings
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


# ---- the process backend's default command (issue #17) -------------------------

REPO = Path(__file__).resolve().parents[2]


def role_settings(role: str, **server: object) -> RoleSettings:
    model, port = ROLE_DEFAULTS[role]
    return RoleSettings(model=model, urls=[f"http://127.0.0.1:{port}/v1"], server={"backend": "process", **server})


@pytest.mark.parametrize("role", ROLES)
def test_default_command_is_the_roles_env_vllm_serve_with_its_launch(role: str, tmp_path: Path) -> None:
    rs = role_settings(role)
    argv = process_argv(rs, None, role=role, envs_dir=tmp_path / "envs")
    spec = launch.launch_for(role, "original")
    model, port = ROLE_DEFAULTS[role]
    assert argv[:3] == [str(tmp_path / "envs" / spec.env_name / "bin" / "vllm"), "serve", spec.weights]
    assert argv[3:5] == ["--served-model-name", model]
    assert argv[5 : 5 + len(spec.flags)] == list(spec.flags)
    assert argv[5 + len(spec.flags) :] == ["--host", "127.0.0.1", "--port", str(port)]


def test_describer_original_launch_is_the_authors(tmp_path: Path) -> None:
    """Issue #14 item 7: BF16 weights, --quantization fp8, encoder TP data, expert parallel, eager, no parser."""
    argv = process_argv(role_settings("describer"), None, role="describer", envs_dir=tmp_path)
    assert argv[2] == "Qwen/Qwen3-VL-235B-A22B-Thinking"
    joined = " ".join(argv)
    for part in ("--quantization fp8", "--mm-encoder-tp-mode data", "--enable-expert-parallel", "--enforce-eager"):
        assert part in joined
    assert "--reasoning-parser" not in argv
    plus = process_argv(role_settings("describer", launch="plus"), None, role="describer", envs_dir=tmp_path)
    assert plus[2] == "Qwen/Qwen3-VL-235B-A22B-Thinking-FP8" and "--reasoning-parser" in plus


def test_revision_weights_venv_flags_and_media_path_reach_the_command(tmp_path: Path) -> None:
    rs = role_settings("captioner", venv=str(tmp_path / "my-env"), weights="/models/glm", flags=["--max-num-seqs", "8"])
    rs.revision = "0123abcd"
    rs.image_transport = "file"
    argv = process_argv(rs, tmp_path / "data", role="captioner", envs_dir=tmp_path / "unused")
    assert argv[:3] == [str(tmp_path / "my-env" / "bin" / "vllm"), "serve", "/models/glm"]
    i = argv.index("--max-num-seqs")
    assert argv[i:] == [
        "--max-num-seqs", "8", "--host", "127.0.0.1", "--port", "8000",
        "--revision", "0123abcd", "--allowed-local-media-path", str(tmp_path / "data"),
    ]


def test_a_given_command_is_kept_and_gets_the_revision(tmp_path: Path) -> None:
    rs = role_settings("detector", command=["/opt/vllm/bin/vllm", "serve", "openai/gpt-oss-120b"])
    assert process_argv(rs, None, role="detector") == ["/opt/vllm/bin/vllm", "serve", "openai/gpt-oss-120b"]
    rs.revision = "v1.0"
    assert process_argv(rs, None, role="detector")[-2:] == ["--revision", "v1.0"]
    rs.server.command = [*rs.server.command, "--revision", "mine"]
    assert process_argv(rs, None, role="detector").count("--revision") == 1, "the user's own --revision stays"


def test_docker_backend_passes_role_variant_name_port_and_revision() -> None:
    rs = role_settings("describer", launch="plus", env={"HF_TOKEN_PATH": "/x"})
    rs.revision = "deadbeef"
    command, environment = docker_command("describer", rs, None)
    assert command == ["--served-model-name", rs.model, "--port", "22002", "--revision", "deadbeef"]
    assert environment == {"COOOL_ROLE": "describer", "COOOL_LAUNCH": "plus", "HF_TOKEN_PATH": "/x"}


def test_launch_env_adds_the_variants_environment_and_the_gpus() -> None:
    rs = role_settings("describer", gpus="0,1,2,3,4,5,6,7", env={"NCCL_DEBUG": "WARN"})
    env = launch.launch_env("describer", rs)
    assert env["CUDA_LAUNCH_BLOCKING"] == "1", "the original's launch environment"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert env["NCCL_DEBUG"] == "WARN", "server.env wins"
    assert "CUDA_LAUNCH_BLOCKING" not in launch.launch_env("describer", role_settings("describer", launch="plus"))


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError):
        RoleSettings(server={"launch": "best"})
    with pytest.raises(ValueError, match="original or plus"):
        launch.launch_for("captioner", "best")


async def test_a_missing_env_says_which_make_target_builds_it(tmp_path: Path) -> None:
    settings = Settings(
        results_dir=tmp_path,
        envs_dir=tmp_path / "envs",
        detector={"urls": ["http://127.0.0.1:9/v1"], "server": {"backend": "process", "health_timeout_s": 1}},
    )
    with pytest.raises(ServerUnavailable, match="make env-gpt-oss"):
        await ServerManager(settings).ensure("detector")


async def test_the_default_command_really_starts_from_the_env(tmp_path: Path) -> None:
    """A stand-in env whose bin/vllm records its argv and environment, then exits: the
    manager runs exactly the default command, with the launch environment."""
    venv = tmp_path / "envs" / "qwen3"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "argv.txt"
    vllm = venv / "bin" / "vllm"
    vllm.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "CUDA_LAUNCH_BLOCKING=$CUDA_LAUNCH_BLOCKING" >> {record}\nexit 3\n'
    )
    vllm.chmod(0o755)
    settings = Settings(
        results_dir=tmp_path / "results",
        envs_dir=tmp_path / "envs",
        describer={"urls": ["http://127.0.0.1:9/v1"], "revision": "r1", "server": {"backend": "process", "health_timeout_s": 30}},
    )
    with pytest.raises(ServerUnavailable, match="exited"):
        await ServerManager(settings).ensure("describer")
    lines = record.read_text().splitlines()
    expected = process_argv(settings.describer, None, role="describer", envs_dir=settings.envs_dir)
    assert ["vllm", *lines[:-1]] == ["vllm", *expected[1:]]
    assert lines[-1] == "CUDA_LAUNCH_BLOCKING=1"
    assert "--revision" in lines and lines[lines.index("--revision") + 1] == "r1"


def test_venv_settings_differ_from_the_docker_ones_only_in_how_servers_start() -> None:
    folder = REPO / "deployments" / "settings"
    docker = yaml.safe_load((folder / "gpu-single-node.yaml").read_text())
    venv = yaml.safe_load((folder / "gpu-single-node-venv.yaml").read_text())
    for role in ROLES:
        d, v = dict(docker[role]), dict(venv[role])
        assert v.pop("server")["backend"] == "process"
        d.pop("server")
        assert d == v, role


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
