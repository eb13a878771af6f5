"""Run the SIMULATED model server (no model inside) with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from coool.sim.config import SimConfig
from coool.sim.server import create_app

log = logging.getLogger("coool.sim")


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted. Logs loudly that this is a simulation."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.warning("coool SIMULATED model server, no model inside: listening on http://%s:%d/v1", host, port)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info", timeout_graceful_shutdown=2)


def sim_server_command(
    host: str = "127.0.0.1",
    port: int = 8000,
    latency: float = 0.0,
    per_token_latency: float = 0.0,
    capacity: int = 64,
    faults: str = "",
    seed: int = 0,
    model: Sequence[str] | str = ("sim-model",),
    allowed_local_media_path: str | Path | None = None,
    max_n: int = 16,
    hang_s: float = 3600.0,
    api_key: str | None = None,
) -> None:
    """The CLI's entry point: build the config from plain options and serve."""
    config = SimConfig(
        models=[model] if isinstance(model, str) else list(model) or ["sim-model"],
        latency_s=latency,
        per_token_latency_s=per_token_latency,
        capacity=capacity,
        faults=faults,
        seed=seed,
        allowed_local_media_path=Path(allowed_local_media_path) if allowed_local_media_path else None,
        max_n=max_n,
        hang_s=hang_s,
        api_key=api_key,
    )
    serve(config, host, port)
