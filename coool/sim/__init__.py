"""A SIMULATED OpenAI-compatible model server: a test double for vLLM, with no model inside.

It answers chat completions with scripted, deterministic, schema-valid answers
that follow simple colour rules on the images it is sent, and can simulate
latency, a batch capacity and faults. Used by tests, the demo and benchmarks;
its answers are never model output.

HTTP: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (as vLLM),
plus the simulation's controls: ``GET /sim/stats``, ``POST /sim/reset`` (zero the stats,
restart the fault sequence, drop pending scripts), ``GET|POST /sim/faults`` (rates per mode,
``fail_next`` + ``status``, ``hang_s``), ``GET|POST|DELETE /sim/script`` (the next N answers
of a task title are a given content: hostile or broken model output on demand),
``GET|POST /sim/latency`` (the latency, overall and per task title, at runtime).
``api_key`` (``--api-key`` / ``COOOL_SIM_API_KEY``) makes /v1 require that bearer token, as vLLM's. Tasks are recognised from the JSON schema's title or name
(frame_caption, incident_frame, describe_counts, describe_texts, describe_reconcile,
ensemble), else from keywords in the prompt.

- ``SimConfig``: settings; ``create_app(config)``: the FastAPI app;
  ``serve`` / ``sim_server_command``: run it; ``coool sim-server``: the same from a shell.
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
