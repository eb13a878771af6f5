"""Recipes: which stages, configurations, merges, count pass and ensemble make a run.

A recipe is a YAML file (``coool/recipes/*.yaml``, package data), validated on
load. It names submissions: every describe configuration is one, a merge
makes one from two others, the count pass and the ensemble make one each;
``final`` names the one written as ``submission.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from coool.improvements import joint_variant, variant_of, with_improvements
from coool.improvements import resolve as resolve_improvements
from coool.params import (
    CaptionParams,
    CountPassParams,
    DescribeConfig,
    DetectParams,
    EnsembleParams,
    load_describe_configs,
)
from coool.stage import Stage, SubmissionKind

# Shipped as package data: an installed wheel finds them without the source tree.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(ValueError):
    """A recipe that can't be used; the message names the file and the problem."""


class MergeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    primary: str
    fallback: str


class CountPassSpec(CountPassParams):
    input: str
    name: str = "count-pass"


class EnsembleSpec(EnsembleParams):
    base: str
    inputs: list[str] = Field(min_length=1)
    name: str = "ensemble"


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    prompts_dir: Path | None = None
    caption: CaptionParams = CaptionParams()
    detect: DetectParams = DetectParams()
    describe: list[str] = Field(min_length=1)
    describe_configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    merges: dict[str, MergeSpec] = Field(default_factory=dict)
    count_pass: CountPassSpec | None = None
    ensemble: EnsembleSpec | None = None
    final: str
    # coool's improvements over the original method (coool/improvements.py): none in second-place.
    improvements: list[str] | Literal["all"] = Field(default_factory=list)

    _configs: dict[str, DescribeConfig] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _names_resolve(self) -> Recipe:
        enabled = resolve_improvements(self.improvements)
        # Frozen models: the switched parameters replace the parsed ones (and enter every cache key).
        for name in ("caption", "detect", "ensemble"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, with_improvements(value, enabled))
        self._configs = {
            n: with_improvements(c, enabled) for n, c in load_describe_configs(extra=self.describe_configs).items()
        }
        configs = self._configs
        missing = [c for c in self.describe if c not in configs]
        if missing:
            raise ValueError(f"describe: unknown configuration(s) {missing}; known: {sorted(configs)}")
        defined: list[str] = list(self.describe)

        def need(name: str, where: str) -> None:
            if name not in defined:
                raise ValueError(f"{where}: {name!r} is not a submission defined before it (have {defined})")

        for merge_name, spec in self.merges.items():
            need(spec.primary, f"merges.{merge_name}.primary")
            need(spec.fallback, f"merges.{merge_name}.fallback")
            defined.append(merge_name)
        if self.count_pass is not None:
            need(self.count_pass.input, "count_pass.input")
            if self.count_pass.config not in configs:
                raise ValueError(f"count_pass.config: unknown configuration {self.count_pass.config!r}")
            defined.append(self.count_pass.name)
        if self.ensemble is not None:
            need(self.ensemble.base, "ensemble.base")
            for name in self.ensemble.inputs:
                need(name, "ensemble.inputs")
            defined.append(self.ensemble.name)
        need(self.final, "final")
        if len(set(defined)) != len(defined):
            raise ValueError(f"submission names must be unique, got {defined}")
        return self

    @property
    def configs(self) -> dict[str, DescribeConfig]:
        """The describe configurations: built-in ones plus the recipe's own (loaded once)."""
        return dict(self._configs)

    def submission_kind(self, name: str) -> SubmissionKind:
        """The kind (coool.registry) that defines submission ``name``."""
        from coool.registry import SUBMISSION_KINDS

        for kind in SUBMISSION_KINDS:
            if name in kind.names(self):
                return kind
        raise KeyError(name)

    def submissions(self) -> list[str]:
        """Every submission the recipe defines, in definition order."""
        from coool.registry import SUBMISSION_KINDS

        return [n for kind in SUBMISSION_KINDS for n in kind.names(self)]

    def describe_sources(self, name: str) -> set[str]:
        """The describe configurations a submission is made from."""
        sources = self.submission_kind(name).sources(self, name)
        return set().union(*(self.describe_sources(s) for s in sources)) if sources else {name}

    def output_variants(self) -> dict[str, str]:
        """Per stage, the variant its outputs are filed under (coool.workspace.Workspace): what
        its own switches and those of the stages it reads make of it. All ``""`` in the original
        method; another recipe's switched outputs live beside the original's, never over them."""
        caption = variant_of(self.caption)
        detect = joint_variant([caption, variant_of(self.detect)])
        out = {"caption": caption, "detect": detect}
        for name, config in self._configs.items():
            out[f"describe:{name}"] = joint_variant([detect, variant_of(config)])
        used = [*self.describe, *([self.count_pass.config] if self.count_pass else [])]
        out["derived"] = joint_variant([out[f"describe:{c}"] for c in used])
        if self.ensemble is not None:
            out["ensemble"] = joint_variant([out["derived"], variant_of(self.ensemble)])
        return out

    def stages(self) -> list[Stage]:
        """The model stages with their roles and dependencies, in a valid order."""
        from coool.registry import STAGE_KINDS

        return [stage for kind in STAGE_KINDS.values() for stage in kind.plan(self)]


@dataclass
class Phase:
    """Stages that run while one role's server is up (role None: all servers up)."""

    role: str | None
    stages: list[Stage] = field(default_factory=list)

    @property
    def roles(self) -> list[str]:
        return sorted({s.role for s in self.stages})


def phases(stages: list[Stage], *, concurrent: bool = False) -> list[Phase]:
    """Group stages so that one server runs at a time, dependencies respected.

    Greedy, in recipe order: take the role of the first ready stage, then
    every stage of that role that is or becomes ready; repeat. With
    ``concurrent`` servers there is a single phase and no barrier.
    """
    if concurrent:
        return [Phase(None, list(stages))]
    done: set[str] = set()
    remaining = list(stages)
    out: list[Phase] = []
    while remaining:
        ready = [s for s in remaining if set(s.deps) <= done]
        if not ready:
            raise RecipeError(f"stages with unmet dependencies: {[s.name for s in remaining]}")
        phase = Phase(ready[0].role)
        grew = True
        while grew:
            grew = False
            for s in list(remaining):
                if s.role == phase.role and set(s.deps) <= done | {p.name for p in phase.stages}:
                    phase.stages.append(s)
                    remaining.remove(s)
                    grew = True
        done |= {s.name for s in phase.stages}
        out.append(phase)
    return out


def waves(stages: list[Stage]) -> list[list[Stage]]:
    """Stages of one phase in dependency levels: a level's stages run at once
    (the pipeline flow and ``run_plain`` both run a phase wave by wave)."""
    names = {s.name for s in stages}
    done: set[str] = set()
    remaining = list(stages)
    out = []
    while remaining:
        level = [s for s in remaining if not (set(s.deps) & names) - done]
        out.append(level)
        done |= {s.name for s in level}
        remaining = [s for s in remaining if s not in level]
    return out


def load_recipe(path: str | Path) -> Recipe:
    """A recipe from a path, or from a name in ``coool/recipes/`` (``quick``)."""
    candidate = Path(path)
    if not candidate.exists() and (RECIPES_DIR / f"{path}.yaml").exists():
        candidate = RECIPES_DIR / f"{path}.yaml"
    if not candidate.is_file():
        raise RecipeError(f"{path}: no such recipe (nor {RECIPES_DIR}/{path}.yaml)")
    try:
        raw = yaml.safe_load(candidate.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{candidate}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{candidate}: a recipe is a mapping of settings, got {type(raw).__name__}")
    if raw.get("prompts_dir"):
        raw["prompts_dir"] = (candidate.parent / raw["prompts_dir"]).resolve()
    try:
        # model_validate, not Recipe(**raw): a non-string YAML key (``1: x``) must be a
        # validation error naming the file, not a TypeError from the call.
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(recipe)'}: {e['msg']}" for e in exc.errors()]
        raise RecipeError(f"{candidate}: invalid recipe:\n  " + "\n  ".join(lines)) from exc
