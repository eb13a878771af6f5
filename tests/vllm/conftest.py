"""Tests against REAL vLLM (the CPU build) serving tiny random-weight models.

Off by default: every test in this folder is skipped unless ``-m vllm`` is
selected or ``COOOL_TEST_VLLM=1`` is set (``make test-vllm`` does both).
They need ``envs/cpu`` (``make env-cpu``, or ``bash scripts/vllm_cpu/setup.sh``); when they
are asked for and it is missing, they fail rather than skip.

Fixtures a stage-level test needs (nothing else):

- ``vllm_role_settings``: a RoleSettings for the text model (Qwen2
  architecture) served as ``tiny``: point any text role (detector,
  ensembler) at it;
- ``vllm_vl_role_settings``: the same for the vision-language model
  (Qwen2-VL architecture; ``COOOL_VLLM_VL_KIND=llava`` for LLaVA): the
  image roles (captioner, describer). Data URLs work; ``file://`` URLs work
  for files under ``vllm_media_root`` (the server's
  ``--allowed-local-media-path``; give ChatClient ``media_root=`` it);
- ``vllm_reasoning_role_settings``: a text model that "thinks" (writes a
  few tokens, then ``</think>``) behind ``--reasoning-parser qwen3``, as
  the captioner (glm45) and the Qwen3-VL Thinking describer are served;
- ``vllm_plain_role_settings``: a plainly random text model (no lean).

Each server starts on a free port the first time a test asks for it; the
text and VL servers stop at the end of the session, the reasoning and plain
ones at the end of their test module. Environment knobs:
``COOOL_VLLM_VENV``, ``COOOL_VLLM_HEALTH_TIMEOUT`` (s, default 600),
``COOOL_VLLM_EAGER`` (1: --enforce-eager, the default), ``COOOL_VLLM_SO_BACKEND``
(structured outputs backend, default auto), ``COOOL_VLLM_VL_KIND`` (qwen2vl
or llava), ``COOOL_VLLM_REASONING_PARSER`` (default qwen3),
``COOOL_VLLM_LOG_DIR`` (keep the server logs there).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coool.settings import RoleSettings

HERE = Path(__file__).resolve().parent

# The tests run with --import-mode=importlib: load the helper by its path.
_spec = importlib.util.spec_from_file_location("coool_tests_vllm_server", HERE / "server.py")
vllm_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = vllm_server
_spec.loader.exec_module(vllm_server)

SERVED_NAME = vllm_server.SERVED_NAME
TIMINGS: dict[str, float] = {}
_INFO: dict[str, str] = {}


def _enabled(config: pytest.Config) -> bool:
    if os.environ.get("COOOL_TEST_VLLM") == "1":
        return True
    expr = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ")
    words = expr.split()
    # "-m vllm", "-m 'vllm and not slow'"... but not "-m 'not vllm'".
    return any(w == "vllm" and (i == 0 or words[i - 1] != "not") for i, w in enumerate(words))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = _enabled(config)
    skip = pytest.mark.skip(reason="real vLLM tests: run with -m vllm or COOOL_TEST_VLLM=1 (make test-vllm)")
    for item in items:
        if HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.vllm)
        if not enabled:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("real vLLM timings")
    for key, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{key:<28} {seconds:7.1f} s")
    for key, value in _INFO.items():
        terminalreporter.write_line(f"{key:<28} {value}")


def _require_venv() -> None:
    python = vllm_server.vllm_python()
    if not python.exists():
        pytest.fail(f"no vLLM venv at {vllm_server.vllm_venv()}: run `bash scripts/vllm_cpu/setup.sh` first", pytrace=False)


def _log_path(tmp: Path, name: str) -> Path:
    folder = os.environ.get("COOOL_VLLM_LOG_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder) / f"{name}.log"
    return tmp / f"{name}.log"


def _serve(
    tmp: Path,
    kind: str,
    name: str,
    media_root: Path | None = None,
    thinks: bool = False,
    extra_args: list[str] | None = None,
    closer_bias: float | None = None,
    stats: bool = False,
) -> Iterator[vllm_server.VllmServer]:
    _require_venv()
    model_dir = tmp / f"model-{kind}"
    started = time.monotonic()
    info = vllm_server.build_tiny_model(model_dir, kind, thinks=thinks, closer_bias=closer_bias)
    TIMINGS[f"{name}: model build"] = time.monotonic() - started
    _INFO[f"{name}: model"] = f"{info['architecture']} ({info['parameters']:,} parameters) in {model_dir}"
    server = vllm_server.VllmServer(
        model_dir,
        log_path=_log_path(tmp, f"vllm-{name}"),
        vision=kind != "text",
        media_root=media_root,
        extra_args=list(extra_args or []),
        stats=stats,
    )
    server.start()
    atexit.register(server.stop)  # should teardown be skipped (a hard interrupt)
    try:
        timeout = float(os.environ.get("COOOL_VLLM_HEALTH_TIMEOUT", "600"))
        TIMINGS[f"{name}: start to /health"] = server.wait_healthy(timeout)
        _INFO[f"{name}: log"] = str(server.log_path)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_server.VllmServer]:
    """vLLM serving the tiny Qwen2 text model (started on first use)."""
    yield from _serve(tmp_path_factory.mktemp("vllm-text"), "text", "text")


@pytest.fixture(scope="session")
def vllm_media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the VL server may read file:// images from."""
    return tmp_path_factory.mktemp("vllm-media")


@pytest.fixture(scope="session")
def vllm_vl_server(
    tmp_path_factory: pytest.TempPathFactory, vllm_media_root: Path
) -> Iterator[vllm_server.VllmServer]:
    """vLLM serving the tiny vision-language model (started on first use)."""
    kind = os.environ.get("COOOL_VLLM_VL_KIND", "qwen2vl")
    yield from _serve(tmp_path_factory.mktemp("vllm-vl"), kind, "vl", media_root=vllm_media_root)


# Module scope: only their own test module uses these, and every live
# server holds ~2.5 GB.
@pytest.fixture(scope="module")
def vllm_vl_stats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_server.VllmServer]:
    """The tiny vision-language model with vLLM's counters kept (/metrics), prefix caching on and
    ``POST /reset_prefix_cache`` served (test_prefix_cache_vllm.py)."""
    yield from _serve(
        tmp_path_factory.mktemp("vllm-vl-stats"), "qwen2vl", "vl-stats", extra_args=["--enable-prefix-caching"], stats=True
    )


@pytest.fixture(scope="module")
def vllm_reasoning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_server.VllmServer]:
    """vLLM with a reasoning parser (qwen3) serving a tiny text model that closes a think block."""
    parser = os.environ.get("COOOL_VLLM_REASONING_PARSER", "qwen3")
    yield from _serve(
        tmp_path_factory.mktemp("vllm-reasoning"),
        "text",
        "reasoning",
        thinks=True,
        extra_args=["--reasoning-parser", parser],
    )


@pytest.fixture(scope="module")
def vllm_plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_server.VllmServer]:
    """vLLM serving a plainly random text model (no lean: any token, any length)."""
    yield from _serve(tmp_path_factory.mktemp("vllm-plain"), "text", "plain", closer_bias=0.0)


@pytest.fixture(scope="module")
def vllm_usage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vllm_server.VllmServer]:
    """vLLM reporting cached prompt tokens (``usage.prompt_tokens_details``) with its prefix cache on."""
    yield from _serve(
        tmp_path_factory.mktemp("vllm-usage"), "text", "usage",
        extra_args=["--enable-prompt-tokens-details", "--enable-prefix-caching"],
    )


def role_settings(server: vllm_server.VllmServer, **overrides: object) -> RoleSettings:
    values: dict[str, object] = dict(
        model=SERVED_NAME,
        urls=[server.base_url],
        timeout_s=300.0,
        max_attempts=2,
        backoff_s=0.2,
        max_concurrency=8,
    )
    values.update(overrides)
    return RoleSettings(**values)


@pytest.fixture
def vllm_role_settings(vllm_text_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the real vLLM text server (model ``tiny``); a fresh copy per test."""
    return role_settings(vllm_text_server)


@pytest.fixture
def vllm_usage_role_settings(vllm_usage_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the server that reports cached prompt tokens."""
    return role_settings(vllm_usage_server)


@pytest.fixture
def vllm_reasoning_role_settings(vllm_reasoning_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the server that splits reasoning from the answer."""
    return role_settings(vllm_reasoning_server)


@pytest.fixture
def vllm_plain_role_settings(vllm_plain_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the plainly random model."""
    return role_settings(vllm_plain_server)


@pytest.fixture
def vllm_vl_role_settings(vllm_vl_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the real vLLM vision-language server (model ``tiny``)."""
    return role_settings(vllm_vl_server)


@pytest.fixture
def vllm_vl_stats_role_settings(vllm_vl_stats_server: vllm_server.VllmServer) -> RoleSettings:
    """RoleSettings for the vision-language server that keeps its counters."""
    return role_settings(vllm_vl_stats_server)
