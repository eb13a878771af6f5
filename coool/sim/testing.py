"""Helpers to run the SIMULATED model server (no model inside) from tests.

- ``running_sim_server``: in this process, uvicorn on a background thread, a free port.
- ``start_sim_process``: ``coool sim-server`` as a separate process (crash tests,
  the process backend); ``SIM_SERVER_COMMAND`` is its argv without options.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from coool.servers import wait_until_healthy
from coool.sim.config import SimConfig
from coool.sim.server import create_app

# ``coool sim-server`` with this interpreter: works without the installed ``coool`` script.
SIM_SERVER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "coool.cli", "sim-server")

# Python-friendly spellings of the "5xx" fault mode for keyword arguments.
_MODE_ALIASES = {"five_xx": "5xx", "server_error": "5xx", "http_5xx": "5xx"}
_PROCESS_OPTIONS = {
    "host",
    "latency",
    "per_token_latency",
    "capacity",
    "faults",
    "seed",
    "model",
    "allowed_local_media_path",
    "max_n",
    "hang_s",
}


@dataclass(frozen=True)
class SimHandle:
    """A running simulated server: its URLs and its /sim control endpoints."""

    base_url: str  # http://127.0.0.1:PORT
    config: SimConfig

    @property
    def url(self) -> str:
        """The OpenAI base URL (what a client's ``base_url`` wants)."""
        return f"{self.base_url}/v1"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def stats(self) -> dict[str, Any]:
        return _call("GET", f"{self.base_url}/sim/stats")

    def reset(self) -> dict[str, Any]:
        """Zero the stats and restart the fault sequence."""
        return _call("POST", f"{self.base_url}/sim/reset")

    def set_faults(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        fail_next: int | None = None,
        status: int | None = None,
        hang_s: float | None = None,
        **named_rates: float,
    ) -> dict[str, Any]:
        """Change faults at runtime, e.g. ``set_faults(fail_next=2, status=503)`` or
        ``set_faults({"5xx": 0.5})`` / ``set_faults(five_xx=0.5, hang=0.1)``."""
        body: dict[str, Any] = dict(rates or {})
        body.update({_MODE_ALIASES.get(k, k): v for k, v in named_rates.items()})
        for key, value in (("fail_next", fail_next), ("status", status), ("hang_s", hang_s)):
            if value is not None:
                body[key] = value
        return _call("POST", f"{self.base_url}/sim/faults", json=body)

    def script(self, task: str, content: Any = None, *, contents: list[Any] | None = None, requests: int = 1) -> dict[str, Any]:
        """Make the next ``requests`` requests of ``task`` (a task title: frame_caption,
        incident_frame, describe_counts, describe_texts, describe_reconcile, ensemble)
        answer ``content`` in every choice, or ``contents[i % len]`` in choice i.
        Non-string contents are sent as their JSON text."""
        body: dict[str, Any] = {"task": task, "requests": requests}
        if contents is not None:
            body["contents"] = list(contents)
        else:
            body["content"] = content
        return _call("POST", f"{self.base_url}/sim/script", json=body)

    def clear_scripts(self) -> dict[str, Any]:
        return _call("DELETE", f"{self.base_url}/sim/script")

    def pending_scripts(self) -> dict[str, Any]:
        return _call("GET", f"{self.base_url}/sim/script")["pending"]

    def requests(self) -> list[dict[str, Any]]:
        """The chat requests received since the last reset, oldest first: ``seq``, ``task``
        (None when refused) and ``body`` (the JSON the client sent, images included)."""
        return _call("GET", f"{self.base_url}/sim/requests")["requests"]

    def clear_requests(self) -> None:
        _call("DELETE", f"{self.base_url}/sim/requests")

    def set_latency(self, latency_s: float | None = None, *, tasks: Mapping[str, float | None] | None = None) -> dict[str, Any]:
        """Change the simulated latency at runtime: the base one and/or per task title (None: back to the base)."""
        body: dict[str, Any] = {}
        if latency_s is not None:
            body["latency_s"] = latency_s
        if tasks is not None:
            body["tasks"] = dict(tasks)
        return _call("POST", f"{self.base_url}/sim/latency", json=body)


def _call(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    # verify=False: plain http to localhost, and it spares ~50 ms of loading CA certificates per call.
    response = httpx.request(method, url, timeout=10, verify=False, **kwargs)
    response.raise_for_status()
    return response.json()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (may be taken by the time it is used)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_sim_server(config: SimConfig | None = None, **overrides: Any) -> Iterator[SimHandle]:
    """A simulated server on 127.0.0.1 and a free port for the duration of the block.

    ``overrides`` are SimConfig fields (``latency_s=0.2``, ``faults="5xx=0.5"``,
    ``model=["a", "b"]``...) applied on top of ``config``.
    """
    if "model" in overrides:
        overrides["models"] = overrides.pop("model")
    base = (config or SimConfig()).model_dump()
    config = SimConfig.model_validate({**base, **overrides})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it Nagle + delayed ACK add ~40 ms per POST
    # (uvicorn sets it itself only on sockets it creates).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))  # bound here, so the port is ours before uvicorn starts
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,  # hung requests must not hold up the exit
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"sim-server-{port}", daemon=True)
    thread.start()
    handle = SimHandle(base_url=f"http://127.0.0.1:{port}", config=config)
    try:
        wait_until_healthy(handle.base_url, 15, alive=thread.is_alive, name="simulated server")
        yield handle
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def start_sim_process(
    port: int,
    *,
    wait: bool = True,
    timeout_s: float = 30.0,
    log_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> subprocess.Popen[bytes]:
    """``coool sim-server --port PORT ...`` as a child process; waits for /health unless ``wait=False``.

    ``options`` are the CLI's: host, latency, per_token_latency, capacity, faults
    (a string or a dict of rates), seed, model (a name or a list), allowed_local_media_path,
    max_n, hang_s. The caller owns the process: terminate() and wait() it.
    An API key goes through the environment (``COOOL_SIM_API_KEY``, via ``env``), never argv.
    """
    unknown = set(options) - _PROCESS_OPTIONS
    if unknown:
        raise TypeError(f"unknown simulated-server options: {sorted(unknown)}")
    args = [*SIM_SERVER_COMMAND, "--port", str(port)]
    for key, value in options.items():
        if value is None:
            continue
        if key == "faults" and isinstance(value, Mapping):
            value = ",".join(f"{mode}={rate}" for mode, rate in value.items())
        values = [value] if isinstance(value, (str, int, float, Path)) else list(value)
        for item in values:
            args += [f"--{key.replace('_', '-')}", str(item)]
    output = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child keeps it)
    try:
        process = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT if output else None, env=dict(env) if env is not None else None
        )
    finally:
        if output is not None:
            output.close()
    if wait:
        host = options.get("host") or "127.0.0.1"
        try:
            wait_until_healthy(f"http://{host}:{port}", timeout_s, alive=lambda: process.poll() is None, name="simulated server")
        except BaseException:
            process.kill()
            process.wait()
            raise
    return process
