"""Fault injection of the simulated model server.

Faults are drawn from their own RNG, one draw per request in arrival order,
so a retried request gets a fresh draw (and can succeed) while the answers
themselves stay a pure function of the request body.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from coool.sim.config import FAULT_MODES, check_rates

SERVER_ERROR_STATUSES: tuple[int, ...] = (500, 502, 503)
FAIL_NEXT = "fail_next"  # the stats key of forced failures


@dataclass
class FaultState:
    """Rates per mode, plus "the next N requests fail with status S"."""

    rates: dict[str, float]
    seed: int = 0
    hang_s: float = 3600.0
    fail_next: int = 0
    fail_status: int = 503
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rates = check_rates(dict(self.rates))
        self.restart()

    def restart(self) -> None:
        """Start the arrival-order sequence again (same seed, same faults)."""
        self.rng = random.Random(f"coool-sim-faults:{self.seed}")

    def draw(self) -> str | None:
        """The fault for the next arriving request, or None. Exactly one uniform draw."""
        u = self.rng.random()
        threshold = 0.0
        for mode in FAULT_MODES:
            threshold += self.rates.get(mode, 0.0)
            if u < threshold:
                return mode
        return None

    def take_forced(self) -> int | None:
        """The status to fail this request with, if a fail_next budget is left."""
        if self.fail_next <= 0:
            return None
        self.fail_next -= 1
        return self.fail_status

    def server_error_status(self) -> int:
        return self.rng.choice(SERVER_ERROR_STATUSES)

    def break_json(self, content: str) -> str:
        """Content a strict JSON parser rejects, in one of the ways real servers break it."""
        variant = self.rng.randrange(3)
        stripped = content.rstrip()
        if variant == 1:
            return content + "\n<|im_end|> }"  # trailing garbage after the object
        if variant == 2 and stripped.endswith("}"):
            return "```json\n" + stripped[:-1] + "\n```"  # fenced, closing brace lost
        return content[: max(1, len(content) // 2)]  # cut off mid-answer
