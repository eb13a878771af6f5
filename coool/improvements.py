"""coool's improvements over the original method: named switches, off by default.

The ``second-place`` recipe is the original method; every departure of
ours is a boolean field on the parameters of the stage it changes
(``CaptionParams``, ``DetectParams``, ``DescribeConfig``, ``EnsembleParams``),
declared with :func:`switch`. A recipe turns switches on by name
(``improvements: [name, ...]`` or ``improvements: all``). Because stage
parameters are part of every cache key, a switch reruns exactly the stages
it changes, and two recipes share every stage they have in common.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

MARK = "coool_improvement"


def switch(what: str, why: str) -> Any:
    """A pydantic field for one improvement: off (the original's behaviour) unless a recipe turns it on."""
    return Field(False, description=what, json_schema_extra={MARK: why})


@dataclass(frozen=True)
class Improvement:
    name: str
    stage: str
    what: str
    why: str


def improvements_of(stage: str, params_type: type[BaseModel]) -> list[Improvement]:
    """The switches that ``params_type`` declares."""
    out = []
    for name, info in params_type.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and MARK in extra:
            out.append(Improvement(name, stage, info.description or "", str(extra[MARK])))
    return out


def catalogue() -> list[Improvement]:
    """Every improvement, by stage (the README's "faithful vs plus" table is this list)."""
    from coool.params import CaptionParams, DescribeConfig, DetectParams, EnsembleParams

    return [
        *improvements_of("caption", CaptionParams),
        *improvements_of("detect", DetectParams),
        *improvements_of("describe", DescribeConfig),
        *improvements_of("ensemble", EnsembleParams),
    ]


def with_improvements(params: BaseModel, enabled: set[str]) -> BaseModel:
    """``params`` with the switches it declares that are in ``enabled`` turned on."""
    mine = {i.name for i in improvements_of("", type(params))}
    update = {name: True for name in enabled & mine}
    return params.model_copy(update=update) if update else params


def resolve(names: list[str] | str) -> set[str]:
    """The switch names a recipe asks for (``all`` means every one); unknown names are an error."""
    known = {i.name for i in catalogue()}
    if names == "all":
        return known
    if isinstance(names, str):
        raise ValueError(f"improvements: a list of names or 'all', got {names!r}")
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"improvements: unknown switch(es) {unknown}; known: {sorted(known)}")
    return set(names)


PLUS = "plus"


def enabled_switches(params: BaseModel) -> list[str]:
    """The names of the switches that are on in ``params``, sorted."""
    return sorted(i.name for i in improvements_of("", type(params)) if getattr(params, i.name, False) is True)


def variant_of(params: BaseModel) -> str:
    """The name of the outputs ``params`` makes, beside the original's: ``""`` with no switch on
    (the original's paths), ``plus`` with every switch the stage declares on, else ``sw-`` and a
    short hash of the switches that are on (two sets of switches never share a folder)."""
    on = enabled_switches(params)
    if not on:
        return ""
    if len(on) == len(improvements_of("", type(params))):
        return PLUS
    return "sw-" + hashlib.sha256(",".join(on).encode("utf-8")).hexdigest()[:8]


def joint_variant(variants: list[str]) -> str:
    """The variant of something made from outputs of these variants (merges, the count pass's
    table, the recipe's submissions): the common one, else a short hash of all of them."""
    distinct = sorted(set(variants))
    if distinct in ([], [""]):
        return ""
    if len(distinct) == 1:
        return distinct[0]
    return "sw-" + hashlib.sha256("|".join(distinct).encode("utf-8")).hexdigest()[:8]
