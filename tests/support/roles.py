"""Environment that points every model role at one (simulated) server."""

from __future__ import annotations

ROLE_NAMES = ("CAPTIONER", "DETECTOR", "DESCRIBER", "ENSEMBLER")


def point_roles_at(url: str, model: str = "sim-model") -> dict[str, str]:
    """COOOL_* variables sending every role to ``url``, with quick retries for tests."""
    env = {}
    for role in ROLE_NAMES:
        env[f"COOOL_{role}__URLS"] = url
        env[f"COOOL_{role}__MODEL"] = model
        env[f"COOOL_{role}__BACKOFF_S"] = "0.05"
    env["COOOL_TASK_RETRY_DELAY_S"] = "0"
    return env
