"""A SIMULATED OpenAI-compatible model server: a test double for vLLM, with no model inside.

It answers chat completions with scripted, deterministic, schema-valid answers
that follow simple colour rules on the images it is sent, and can simulate
latency, a batch capacity and faults. Used by tests, the demo and benchmarks;
its answers are never model output.

- ``SimConfig``: settings; ``create_app(config)``: the FastAPI app;
  ``serve`` / ``sim_server_command``: run it; ``python -m coool.sim``: the same from a shell.
- ``coool.sim.testing``: ``running_sim_server`` (in-process, for tests) and
  ``start_sim_process`` (a separate process).
"""

from coool.sim.config import FAULT_MODES, SimConfig, parse_faults
from coool.sim.serve import serve, sim_server_command
from coool.sim.server import OWNED_BY, SIM_HEADER, create_app

__all__ = [
    "FAULT_MODES",
    "OWNED_BY",
    "SIM_HEADER",
    "SimConfig",
    "create_app",
    "parse_faults",
    "serve",
    "sim_server_command",
]
