"""The process backend's default command, end to end, from an env built by `make env-cpu`.

The `cpu` env (images/cpu/requirements.lock, built by scripts/envs/build.sh,
the mechanism of `make env-glm45v` & co.) serves the tiny random-weight text
model. Nothing here writes a command: ServerManager builds
``<env>/bin/vllm serve WEIGHTS --served-model-name tiny FLAGS --host --port``
from coool/configs/servers.yaml (the ensembler's original launch), with
only what a CPU cannot take overridden by ``server.flags`` (a repeated flag
wins), and a chat completion comes back through ChatClient.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coool.launch import launch_for
from coool.llm import ChatClient, user_message
from coool.servers import ServerManager
from coool.settings import Settings

pytestmark = pytest.mark.vllm

HERE = Path(__file__).resolve().parent


def _vllm_server_module():
    import sys

    return sys.modules["coool_tests_vllm_server"]  # loaded by conftest.py


async def test_process_backend_default_command_serves_from_the_env(tmp_path: Path) -> None:
    server = _vllm_server_module()
    venv = server.vllm_venv()
    if not (venv / "bin" / "vllm").exists():
        pytest.fail(f"no env at {venv}: run `make env-cpu` (or bash scripts/vllm_cpu/setup.sh)", pytrace=False)
    model_dir = tmp_path / "tiny-text"
    server.build_tiny_model(model_dir, "text")
    port = server.free_port()
    settings = Settings(
        results_dir=tmp_path / "results",
        envs_dir=venv.parent,
        ensembler={
            "model": server.SERVED_NAME,
            "urls": [f"http://127.0.0.1:{port}/v1"],
            "timeout_s": 300,
            "max_attempts": 2,
            "server": {
                "backend": "process",
                "launch": "original",
                "venv": str(venv),
                "weights": str(model_dir),
                # What the CPU build cannot take from the GPU launch; the rest is the original's.
                "flags": ["--tensor-parallel-size", "1", "--max-model-len", "16384", "--dtype", "float32"],
                # Offline, 1 GiB of KV cache, no thread pinning on shared cores (tests/vllm/server.py).
                "env": {k: v for k, v in server.VllmServer(model_dir).env().items() if k.startswith(("HF_", "TRANSFORMERS_", "VLLM_"))},
                "health_timeout_s": float(os.environ.get("COOOL_VLLM_HEALTH_TIMEOUT", "600")),
            },
        },
    )
    manager = ServerManager(settings)
    running = await manager.ensure("ensembler")
    try:
        assert running.owned and running.process is not None
        argv = running.process.args
        assert argv[:3] == [str(venv / "bin" / "vllm"), "serve", str(model_dir)]
        # The ensembler's original flags are all there, in order, before the overrides.
        flags = list(launch_for("ensembler", "original").flags)
        start = argv.index(flags[0])
        assert argv[start : start + len(flags)] == flags
        assert argv[-4:] == ["--host", "127.0.0.1", "--port", str(port)]
        async with ChatClient("ensembler", settings.ensembler) as client:
            samples = await client.complete(
                [user_message("Answer in JSON with a key named reason.")],
                max_tokens=64,
                temperature=0.7,
                response_format={"type": "json_object"},
                n=2,
                seed=3,
            )
        assert len(samples) == 2
        for sample in samples:
            assert sample.finish_reason in ("stop", "length")
            if sample.finish_reason == "stop":
                assert isinstance(json.loads(sample.content), dict)
        log = running.log_path.read_text(errors="replace") if running.log_path else ""
        assert log, "the server's log is under <results>/servers/"
    finally:
        await manager.stop_all()
    assert running.process.poll() is not None, "the manager stopped the server it started"
