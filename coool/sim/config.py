"""Settings of the simulated model server (a test double with no model inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

# The fault modes the simulation can inject, in the order a draw tests them.
FAULT_MODES: tuple[str, ...] = ("5xx", "hang", "malformed", "empty", "nonenglish")


def parse_faults(text: str) -> dict[str, float]:
    """``"5xx=0.1,hang=0.05"`` -> ``{"5xx": 0.1, "hang": 0.05}``; raises ValueError on junk."""
    rates: dict[str, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fault {item!r}: expected mode=rate")
        rates[key.strip()] = float(value)
    return check_rates(rates)


def check_rates(rates: dict[str, float]) -> dict[str, float]:
    """Known modes only, each rate in [0, 1], and at most one fault per request in total."""
    for mode, rate in rates.items():
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; known: {', '.join(FAULT_MODES)}")
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"fault rate {mode}={rate} is outside [0, 1]")
    # One uniform draw picks at most one mode, so the rates must fit in [0, 1] together.
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates add up to {sum(rates.values()):.3f} > 1")
    return {mode: float(rate) for mode, rate in rates.items()}


class SimConfig(BaseModel):
    """How the simulated server behaves. Every default means: fast, faultless, one model."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # One server can pose as several roles, so it serves a list of names.
    models: list[str] = Field(
        default_factory=lambda: ["sim-model"],
        min_length=1,
        validation_alias=AliasChoices("models", "model"),
    )
    latency_s: float = Field(0.0, ge=0)
    per_token_latency_s: float = Field(0.0, ge=0)
    capacity: int = Field(64, ge=1)
    faults: dict[str, float] = Field(default_factory=dict)
    seed: int = 0
    allowed_local_media_path: Path | None = None
    max_n: int = Field(16, ge=1)
    hang_s: float = Field(3600.0, ge=0)
    # Per task title (frame_caption, describe_counts, ...): a latency used instead of latency_s.
    task_latency_s: dict[str, float] = Field(default_factory=dict)
    # Like vLLM's --api-key: /v1/* requests must carry "Authorization: Bearer <key>" (else 401).
    api_key: str | None = Field(None, repr=False)
    # How many chat requests /sim/requests keeps (the most recent; 0: none). Bodies carry
    # their images, so the log is bounded.
    request_log: int = Field(100, ge=0)

    @field_validator("models", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("faults", mode="before")
    @classmethod
    def _faults_from_text(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            return parse_faults(value)
        return value

    @model_validator(mode="after")
    def _check_faults(self) -> SimConfig:
        self.faults = check_rates(self.faults)
        if any(float(v) < 0 for v in self.task_latency_s.values()):
            raise ValueError("task_latency_s values must be >= 0")
        return self
