"""The improvement switches: declared on stage parameters, off unless a recipe turns them on."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from coool.improvements import catalogue, improvements_of, resolve, switch, with_improvements


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    temperature: float = 0.6
    tidy: bool = switch("tidies the answer", "answers are untidy")


def test_a_switch_is_off_until_enabled_and_only_its_own_fields_change() -> None:
    params = _Params()
    assert params.tidy is False
    assert with_improvements(params, {"elsewhere"}) is params
    on = with_improvements(params, {"tidy", "elsewhere"})
    assert on.tidy is True and on.temperature == params.temperature
    assert [i.name for i in improvements_of("x", _Params)] == ["tidy"]
    assert improvements_of("x", _Params)[0].why == "answers are untidy"


def test_recipe_names_are_checked() -> None:
    known = {i.name for i in catalogue()}
    assert resolve("all") == known
    assert resolve([]) == set()
    with pytest.raises(ValueError, match="unknown switch"):
        resolve(["no-such-switch"])
    with pytest.raises(ValueError, match="list of names or 'all'"):
        resolve("some")
