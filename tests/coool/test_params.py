"""Stage parameters: the spec's values as defaults, the named describe configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from coool.params import (
    CaptionParams,
    CountPassParams,
    DescribeConfig,
    DetectParams,
    EnsembleParams,
    load_describe_configs,
)


def test_stage_defaults_are_the_spec_values() -> None:
    assert CaptionParams().model_dump() == {
        "every": 10, "temperature": 0.01, "max_tokens": 8192, "thinking": True, "prompt": "caption",
        "json_schema": False, "plus_prompts": False, "clean_captions": False,
    }
    assert DetectParams().model_dump() == {
        "samples": 12, "temperature": 0.6, "top_p": 0.95, "max_tokens": 512,
        "video_attempts": 30, "retry_delay_s": 3.0, "top_k": 0, "repetition_penalty": 1.0, "prompt": "detect",
        "json_schema": False, "plus_prompts": False, "batched_samples": False, "compact_table": False,
    }
    assert EnsembleParams().model_dump() == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0, "max_tokens": 4096, "seed": 42,
        "english_retries": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "prompt": "ensemble",
        "json_schema": False, "plus_prompts": False, "broad_normalise": False, "strict_english": False,
    }
    assert CountPassParams().model_dump() == {"config": "v6-counts", "threshold": 10, "clip": 20}


def test_the_switches_of_stages_2_3_and_5_are_improvements_off_by_default() -> None:
    from coool.improvements import catalogue

    mine = {(i.stage, i.name) for i in catalogue() if i.stage in ("caption", "detect", "ensemble")}
    assert mine == {
        ("caption", "json_schema"), ("caption", "plus_prompts"), ("caption", "clean_captions"),
        ("detect", "json_schema"), ("detect", "plus_prompts"), ("detect", "batched_samples"), ("detect", "compact_table"),
        ("ensemble", "json_schema"), ("ensemble", "plus_prompts"), ("ensemble", "broad_normalise"),
        ("ensemble", "strict_english"),
    }
    assert all(i.what and i.why for i in catalogue())
    config = DescribeConfig(name="x", window="caption-trigger", pre=1, post=1)
    assert config.lenient_trigger is False
    assert "lenient_trigger" in {i.name for i in catalogue() if i.stage == "describe"}


def test_describe_sampling_defaults() -> None:
    config = DescribeConfig(name="x", window="detected-frame", pre=1, post=1)
    assert (config.n, config.temperature, config.top_p, config.top_k) == (4, 0.6, 0.95, -1)
    assert (config.repetition_penalty, config.max_tokens) == (1.0, 8192)
    assert (config.reask_tries, config.reask_penalty_step, config.reask_penalty_cap) == (5, 0.1, 1.5)
    assert (config.step, config.role, config.extra) == (1, "describer", ())


BASE = ("describe_counts", "describe_texts", "describe_reconcile")
V2 = ("describe_counts_v2", "describe_texts_v2", "describe_reconcile_v2")  # v3-prompt2 replaces all three

# PIPELINE.md "The configurations that were run" (GLM-4.5V is the captioner's model).
TABLE = {
    "exp001": ("captioner", "caption-trigger", 6, 5, 1, BASE, ()),
    "exp002": ("captioner", "detected-frame", 11, 2, 6, BASE, ()),
    "exp004": ("describer", "caption-trigger", 6, 5, 1, BASE, ()),
    "exp005": ("describer", "detected-frame", 11, 2, 6, BASE, ()),
    "v3": ("describer", "detected-frame", 6, 5, 10, BASE, ()),
    "v3-prompt2": ("describer", "detected-frame", 6, 5, 10, V2, ()),
    "v4": ("describer", "detected-frame", 12, 11, 6, BASE, ()),
    "v5": ("describer", "detected-frame", 6, 5, 8, BASE, ()),
    "v6-counts": ("describer", "detected-frame", 12, 11, 6, BASE, ("ignore_image_text",)),
    # issue #14: the original's unpublished "add heatmap" run, v4 shown stacked frames (frames: stacked)
    "v4-heatmap": ("describer", "detected-frame", 12, 11, 6, BASE, ()),
}


def test_the_named_configurations_are_the_spec_table() -> None:
    configs = load_describe_configs()
    assert list(configs) == list(TABLE)
    for name, (role, window, pre, post, step, prompts, extra) in TABLE.items():
        c = configs[name]
        got = (c.name, c.role, c.window, c.pre, c.post, c.step, (c.prompts.counts, c.prompts.texts, c.prompts.reconcile), c.extra)
        assert got == (name, role, window, pre, post, step, prompts, extra), name
        assert c.n == 4 and c.temperature == 0.6
        assert c.frames == ("stacked" if name == "v4-heatmap" else "raw"), name


@pytest.mark.parametrize(("name", "size"), [("exp001", 12), ("exp002", 14), ("v3", 12), ("v4", 24), ("v5", 12)])
def test_window_size(name: str, size: int) -> None:
    assert load_describe_configs()[name].size == size


def test_extra_configurations_add_and_replace() -> None:
    configs = load_describe_configs(
        extra={
            "mine": {"window": "detected-frame", "pre": 3, "post": 3, "step": 2, "n": 8},
            "v4": {"window": "caption-trigger", "pre": 1, "post": 1},
        }
    )
    assert configs["mine"].size == 7 and configs["mine"].n == 8
    assert configs["v4"].window == "caption-trigger" and configs["v4"].step == 1
    assert configs["v5"].step == 8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"window": "detected-frame", "pre": 1, "post": 1, "colour": "red"}, "colour"),
        ({"window": "middle", "pre": 1, "post": 1}, "window"),
        ({"window": "detected-frame", "pre": -1, "post": 1}, "pre"),
        ({"window": "detected-frame", "pre": 1, "post": 1, "step": 0}, "step"),
        ({"window": "detected-frame", "pre": 1, "post": 1, "role": "painter"}, "unknown role 'painter'"),
        ({"window": "detected-frame", "pre": 1}, "post"),
        ({"window": "detected-frame", "pre": 1, "post": 1, "prompts": {"summary": "x"}}, "summary"),
    ],
)
def test_a_bad_configuration_names_itself(body: dict, message: str) -> None:
    with pytest.raises(ValueError, match="describe config 'bad'") as info:
        load_describe_configs(extra={"bad": body})
    assert message in str(info.value)


def test_a_bad_configuration_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "configs.yaml"
    path.write_text("only:\n  window: detected-frame\n  pre: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"describe config 'only' in {path}"):
        load_describe_configs(path)


def test_params_are_frozen_and_strict() -> None:
    params = DetectParams()
    with pytest.raises(ValidationError):
        params.samples = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        DetectParams(sample=3)  # a typo is an error, not ignored
    with pytest.raises(ValidationError):
        CaptionParams(every=0)
    assert DetectParams(samples=3).model_dump_json() != params.model_dump_json()  # part of cache keys
