"""Model servers: make sure a role's server is up, and stop what we started.

The models don't fit on the GPUs together, so the pipeline brings one
role's server up, runs every stage that needs it and stops it before the
next. Three backends (``COOOL_<ROLE>__SERVER__BACKEND``):

- ``external``: someone else runs it at the role's URLs; we only wait for
  ``/health`` (with a clear error naming the role and URL);
- ``process``: a command (e.g. ``vllm serve ...`` from a pinned venv), argv
  list only, in its own process group, log under ``<results>/servers/``;
- ``docker``: the role's image from ``images/`` via the docker SDK, GPUs
  requested, the data root mounted read-only at the same path.

A server that is already healthy is used as it is and never stopped by us.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from coool.launch import env_name, launch_env, process_command, url_host_port
from coool.settings import ROLES, RoleSettings, Settings, load_settings

if TYPE_CHECKING:
    from coool.recipe import Phase

log = logging.getLogger(__name__)


class ServerUnavailable(RuntimeError):
    """A role's server that did not become healthy."""


def health_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/health`` (vLLM's health route)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return f"{root}/health"


async def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(health_url(base_url))
        return response.status_code == 200
    except httpx.HTTPError:
        return False


async def wait_healthy(role: str, settings: RoleSettings, timeout_s: float, *, alive: Any = None) -> None:
    """Wait until every URL of ``role`` answers /health; raise ServerUnavailable naming role and URL.

    ``alive`` (optional) is polled: a started process that died fails fast.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(settings.urls)
    delay = 0.2
    told = False
    while pending:
        pending = [u for u in pending if not await is_healthy(u)]
        if not pending:
            return
        if not told:  # say what we wait for, or a long wait looks like a hang
            log.warning("%s: waiting up to %.0fs for %s", role, timeout_s, ", ".join(health_url(u) for u in pending))
            told = True
        if alive is not None and not alive():
            raise ServerUnavailable(f"{role}: the server process exited before {health_url(pending[0])} answered")
        if time.monotonic() >= deadline:
            raise ServerUnavailable(
                f"{role}: no healthy model server at {health_url(pending[0])} after {timeout_s:.0f}s "
                f"(backend {settings.server.backend}; model {settings.model})"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def safe_media_root(data_root: Path | None) -> Path | None:
    """The folder a server may read images from: the data root, never ``/``."""
    if data_root is None:
        return None
    root = Path(data_root).resolve()
    if root == Path(root.anchor):
        raise ValueError("the data root must not be the filesystem root: servers would be allowed to read any file")
    return root


def process_argv(settings: RoleSettings, media_root: Path | None, *, role: str = "", envs_dir: Path = Path("envs")) -> list[str]:
    """The process backend's command.

    ``server.command`` when given (with the data root as the allowed media
    path and ``--revision`` added when missing); otherwise the role's env's
    ``vllm serve`` with the launch flags of coool/configs/servers.yaml.
    """
    argv = [str(a) for a in settings.server.command]
    if not argv:
        if not role:
            raise ValueError("the process backend needs server.command (an argv list) or a role to build it for")
        return process_command(role, settings, envs_dir, media_root)
    if media_root is not None and "--allowed-local-media-path" not in argv and settings.image_transport == "file":
        argv += ["--allowed-local-media-path", str(media_root)]
    if settings.revision and "--revision" not in argv:
        argv += ["--revision", settings.revision]
    return argv


def docker_command(role: str, settings: RoleSettings, media_root: Path | None) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment for a role's image: its serve.sh picks the launch
    (COOOL_ROLE, COOOL_LAUNCH) and the settings' name, port, revision and media path are appended."""
    port = settings.server.port or url_host_port(settings.urls[0])[1]
    command = [*settings.server.flags, "--served-model-name", settings.model, "--port", str(port)]
    if settings.revision:
        command += ["--revision", settings.revision]
    if media_root is not None:
        command += ["--allowed-local-media-path", str(media_root)]
    environment = {"COOOL_ROLE": role, "COOOL_LAUNCH": settings.server.launch}
    if settings.server.weights:
        environment["COOOL_WEIGHTS"] = settings.server.weights
    environment.update(settings.server.env)
    return command, environment


@dataclass
class Running:
    role: str
    owned: bool
    process: subprocess.Popen[bytes] | None = None
    container: Any = None
    log_path: Path | None = None
    started_at: float = field(default_factory=time.time)


class ServerManager:
    """Brings role servers up and down; stops only what it started."""

    def __init__(self, settings: Settings, *, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir) if log_dir else Path(settings.results_dir) / "servers"
        self.running: dict[str, Running] = {}

    async def ensure(self, role: str) -> Running:
        if role in self.running:
            return self.running[role]
        rs = self.settings.role(role)
        if all([await is_healthy(u) for u in rs.urls]):
            log.info("%s: already healthy at %s", role, ", ".join(rs.urls))
            self.running[role] = Running(role, owned=False)
            return self.running[role]
        backend = rs.server.backend
        if backend == "external":
            await wait_healthy(role, rs, rs.server.health_timeout_s)
            self.running[role] = Running(role, owned=False)
        elif backend == "process":
            self.running[role] = await self._start_process(role, rs)
        else:
            self.running[role] = await self._start_docker(role, rs)
        return self.running[role]

    async def _start_process(self, role: str, rs: RoleSettings) -> Running:
        argv = process_argv(rs, safe_media_root(self.settings.data_root), role=role, envs_dir=self.settings.envs_dir)
        if not Path(argv[0]).exists() and not rs.server.command:
            raise ServerUnavailable(
                f"{role}: no vLLM at {argv[0]}: build the env with `make env-{env_name(role)}` "
                f"(or set {role}.server.venv / server.command)"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{role}.log"
        with open(log_path, "ab") as out:
            # Own process group: stopping it stops the server's workers too.
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **launch_env(role, rs)}, start_new_session=True
            )
        log.info("%s: started %s (pid %d, log %s)", role, argv[0], proc.pid, log_path)
        running = Running(role, owned=True, process=proc, log_path=log_path)
        try:
            await wait_healthy(role, rs, rs.server.health_timeout_s, alive=lambda: proc.poll() is None)
        except BaseException:
            self._stop_process(running)
            raise
        return running

    async def _start_docker(self, role: str, rs: RoleSettings) -> Running:
        import docker  # the docker SDK comes with prefect-docker
        from docker.types import DeviceRequest

        if not rs.server.image:
            raise ValueError(f"{role}: the docker backend needs server.image")
        media_root = safe_media_root(self.settings.data_root)
        volumes = {str(media_root): {"bind": str(media_root), "mode": "ro"}} if media_root else {}
        if rs.server.model_cache:
            # Weights are hundreds of GB: keep them on the host across container restarts.
            volumes[str(Path(rs.server.model_cache).resolve())] = {"bind": "/root/.cache/huggingface", "mode": "rw"}
        command, environment = docker_command(role, rs, media_root)
        gpus = rs.server.gpus
        request = DeviceRequest(count=-1, capabilities=[["gpu"]]) if gpus == "all" else DeviceRequest(
            device_ids=gpus.split(","), capabilities=[["gpu"]]
        )
        client = docker.from_env()
        container = client.containers.run(
            rs.server.image, command=command, detach=True, name=f"coool-{role}", network_mode="host",
            device_requests=[request], volumes=volumes, environment=environment, ipc_mode="host", remove=True,
        )
        running = Running(role, owned=True, container=container)
        try:
            await wait_healthy(role, rs, rs.server.health_timeout_s, alive=lambda: _container_alive(container))
        except BaseException:
            self._stop_container(running)
            raise
        return running

    async def stop(self, role: str) -> None:
        running = self.running.pop(role, None)
        if running is None or not running.owned:
            return
        if running.process is not None:
            await asyncio.to_thread(self._stop_process, running)
        if running.container is not None:
            await asyncio.to_thread(self._stop_container, running)

    async def ensure_all(self, roles: Iterable[str]) -> None:
        for role in roles:
            await self.ensure(role)

    async def end_phase(self, plan: Sequence[Phase], i: int) -> None:
        """After phase ``i`` of ``plan``: stop its servers the next phase does not use
        (the models don't fit on the GPUs together; a shared one stays loaded)."""
        following = set(plan[i + 1].roles) if i + 1 < len(plan) else set()
        for role in plan[i].roles:
            if role not in following:
                await self.stop(role)

    async def stop_all(self) -> None:
        for role in list(self.running):
            await self.stop(role)

    @staticmethod
    def _stop_process(running: Running, grace_s: float = 20.0) -> None:
        proc = running.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    @staticmethod
    def _stop_container(running: Running) -> None:
        try:
            running.container.stop(timeout=30)
        except Exception as exc:  # already gone
            log.warning("%s: stopping container: %s", running.role, exc)


def _container_alive(container: Any) -> bool:
    try:
        container.reload()
        return container.status in ("created", "running")
    except Exception:
        return False


def main(argv: list[str] | None = None) -> None:
    """``python -m coool.servers start|stop ROLE``: the Makefile's serve-/stop- targets (docker)."""
    parser = argparse.ArgumentParser(prog="python -m coool.servers")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--settings", help="YAML settings file")
    args = parser.parse_args(argv)
    if args.settings:
        os.environ["COOOL_SETTINGS_FILE"] = args.settings
    settings = load_settings()
    if args.action == "stop":
        import docker

        try:
            docker.from_env().containers.get(f"coool-{args.role}").stop(timeout=30)
        except Exception as exc:
            raise SystemExit(f"{args.role}: {exc}") from exc
        return
    role = settings.role(args.role)
    role.server.backend = "docker"
    manager = ServerManager(settings)
    running = asyncio.run(manager.ensure(args.role))
    print(f"{args.role}: up at {', '.join(role.urls)} ({'started' if running.owned else 'already running'})")


if __name__ == "__main__":  # pragma: no cover
    main()
