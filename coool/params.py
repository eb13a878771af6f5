"""Stage parameters: the spec's values as defaults, every one overridable.

Recipes (coool/recipes/*.yaml) and the CLI build these models; the
stage functions take them. Each model's JSON form is part of the cache key
of the work it parameterises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coool.settings import ROLES

CONFIGS_FILE = Path(__file__).parent / "configs" / "describe.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptionParams(_Strict):
    every: int = Field(10, ge=1)
    temperature: float = 0.01
    max_tokens: int = 8192
    thinking: bool = True
    prompt: str = "caption"


class DetectParams(_Strict):
    samples: int = Field(12, ge=1)
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512
    video_attempts: int = Field(30, ge=1, description="whole-video retries when no sample parses")
    retry_delay_s: float = Field(3.0, ge=0)
    prompt: str = "detect"


class DescribePrompts(_Strict):
    counts: str = "describe_counts"
    texts: str = "describe_texts"
    reconcile: str = "describe_reconcile"


class DescribeConfig(_Strict):
    name: str
    role: str = "describer"
    window: Literal["caption-trigger", "detected-frame"]
    pre: int = Field(ge=0)
    post: int = Field(ge=0)
    step: int = Field(1, ge=1)
    prompts: DescribePrompts = Field(default_factory=DescribePrompts)
    extra: tuple[str, ...] = Field((), description="snippets appended to every describe prompt")
    n: int = Field(4, ge=1)
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1  # off
    repetition_penalty: float = 1.0
    max_tokens: int = 8192
    reask_tries: int = Field(5, ge=0)
    reask_penalty_step: float = 0.1
    reask_penalty_cap: float = 1.5

    @model_validator(mode="after")
    def _known_role(self) -> DescribeConfig:
        if self.role not in ROLES:
            raise ValueError(f"describe config {self.name!r}: unknown role {self.role!r} (roles: {', '.join(ROLES)})")
        return self

    @property
    def size(self) -> int:
        return self.pre + self.post + 1


class CountPassParams(_Strict):
    config: str = "v6-counts"
    threshold: int = Field(10, ge=0, description="re-describe rows with any count above this")
    clip: int = Field(20, ge=0, description="then clip animals, pedestrians, vehicles to this")


class EnsembleParams(_Strict):
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    max_tokens: int = 4096
    seed: int = 42
    english_retries: int = Field(1, ge=0, description="re-asks when a text has non-ASCII characters")
    prompt: str = "ensemble"


def load_describe_configs(path: str | Path | None = None, extra: dict | None = None) -> dict[str, DescribeConfig]:
    """The named describe configurations (built-in file, then ``extra`` on top)."""
    raw = yaml.safe_load(Path(path or CONFIGS_FILE).read_text(encoding="utf-8")) or {}
    raw.update(extra or {})
    configs = {}
    for name, body in raw.items():
        try:
            configs[name] = DescribeConfig(name=name, **(body or {}))
        except Exception as exc:
            raise ValueError(f"describe config {name!r} in {path or CONFIGS_FILE}: {exc}") from exc
    return configs
