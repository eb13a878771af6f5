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

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from coool.launch import env_name, launch_env, process_command, url_host_port
from coool.settings import RoleSettings, Settings

if TYPE_CHECKING:
    from coool.recipe import Phase

log = logging.getLogger(__name__)


class ServerUnavailable(RuntimeError):
    """A server that did not become healthy."""


class HealthTimeout(ServerUnavailable, TimeoutError):
    """A server that did not answer /health in time (it may still be starting)."""


class ServedModelMismatch(ServerUnavailable):
    """A healthy server that does not serve the role's model name: every request would be a 404."""


def health_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/health`` (vLLM's health route); other roots get ``/health``."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return f"{root}/health"


def _client(url: str, timeout_s: float) -> httpx.Client:
    # No TLS context for plain http: loading the CA certificates costs ~50 ms a client.
    return httpx.Client(timeout=timeout_s, verify=url.startswith("https://"))


def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    """One look: does ``health_url(base_url)`` answer 200 now?"""
    url = health_url(base_url)
    try:
        with _client(url, timeout_s) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_healthy(
    base_url: str,
    timeout_s: float,
    *,
    alive: Callable[[], bool] | None = None,
    name: str = "server",
    announce: bool = False,
) -> float:
    """Poll ``health_url(base_url)`` until it answers 200; the seconds waited.

    The one "wait for /health" of the project (model servers, the simulated
    server, a Prefect server: pass ``http://host:port/api``). ``alive()``
    returning False (the process we started died) fails at once with
    ServerUnavailable; no answer within ``timeout_s`` raises HealthTimeout.
    Polls fast at first (a simulated server is up in milliseconds), then
    backs off to every few seconds (a model takes minutes to load).
    ``announce`` logs once that we wait, or a long wait looks like a hang.
    """
    url = health_url(base_url)
    start = time.monotonic()
    deadline = start + timeout_s
    delay = 0.05
    with _client(url, 2.0) as client:
        while True:
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if alive is not None and not alive():
                raise ServerUnavailable(f"{name}: the server process exited before {url} answered")
            now = time.monotonic()
            if now >= deadline:
                raise HealthTimeout(f"{name}: no answer from {url} after {timeout_s:.0f}s")
            if announce:
                log.warning("%s: waiting up to %.0fs for %s", name, timeout_s, url)
                announce = False
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, 5.0)


async def wait_healthy(role: str, settings: RoleSettings, timeout_s: float, *, alive: Callable[[], bool] | None = None) -> None:
    """Wait until every URL of ``role`` answers /health; raise ServerUnavailable naming role and URL.

    ``alive`` (optional) is polled: a started process that died fails fast.
    The polling runs in a thread; a cancelled wait stops it at its next poll.
    """
    cancelled = threading.Event()

    def running() -> bool:
        return not cancelled.is_set() and (alive is None or alive())

    deadline = time.monotonic() + timeout_s
    for url in settings.urls:
        try:
            await asyncio.to_thread(
                wait_until_healthy, url, max(0.0, deadline - time.monotonic()), alive=running, name=role, announce=True
            )
        except HealthTimeout:
            raise ServerUnavailable(
                f"{role}: no healthy model server at {health_url(url)} after {timeout_s:.0f}s "
                f"(backend {settings.server.backend}; model {settings.model})"
            ) from None
        except asyncio.CancelledError:
            cancelled.set()
            raise


async def served_models(base_url: str, api_key: str = "", timeout_s: float = 10.0) -> list[str] | None:
    """The model names ``GET <base_url>/models`` lists, or None when it can't tell
    (an older server without the route, a refused key, an unreadable answer)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{base_url.rstrip('/')}/models", headers=headers)
        if response.status_code != 200:
            return None
        data = response.json().get("data")
        return [str(m["id"]) for m in data] if isinstance(data, list) else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


async def check_served_model(role: str, settings: RoleSettings) -> None:
    """Raise ServedModelMismatch, naming role, URL, expected and served names, when a URL
    of ``role`` serves other models than ``settings.model``; a URL that can't say passes."""
    key = settings.api_key.get_secret_value()
    for url in settings.urls:
        names = await served_models(url, key)
        if names is not None and settings.model not in names:
            raise ServedModelMismatch(
                f"{role}: {url} serves {', '.join(repr(n) for n in names) or 'no model'}, "
                f"not the configured {settings.model!r} (COOOL_{role.upper()}__MODEL); every request would be refused"
            )


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


class ServerManager:
    """Brings role servers up and down; stops only what it started."""

    def __init__(self, settings: Settings, *, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.log_dir = Path(log_dir) if log_dir else Path(settings.results_dir) / "servers"
        self.running: dict[str, Running] = {}

    async def ensure(self, role: str) -> Running:
        """The role's server, healthy and serving the role's model name (checked each
        time: a phase starts with this, and the server may have changed between phases)."""
        running = await self._healthy(role)
        try:
            await check_served_model(role, self.settings.role(role))
        except ServedModelMismatch:
            await self.stop(role)  # a server we started for nothing; not one we found running
            raise
        return running

    async def _healthy(self, role: str) -> Running:
        if role in self.running:
            return self.running[role]
        rs = self.settings.role(role)
        if all([await asyncio.to_thread(is_healthy, u) for u in rs.urls]):
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
            rs.server.image, command=command, detach=True, name=container_name(role), network_mode="host",
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


def container_name(role: str) -> str:
    """The docker container a role's server runs in (one per role and machine)."""
    return f"coool-{role}"


def stop_container(role: str) -> None:
    """Stop a role's docker container, whoever started it (``coool server stop ROLE``)."""
    import docker

    docker.from_env().containers.get(container_name(role)).stop(timeout=30)


def _container_alive(container: Any) -> bool:
    try:
        container.reload()
        return container.status in ("created", "running")
    except Exception:
        return False
