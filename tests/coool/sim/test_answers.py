"""The scripted answer logic and the schema filler of the simulated server."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import sim_scenes as scenes

from coool import schema as cols
from coool.sim import answers
from coool.sim.fill import MISSING, fill_schema
from coool.sim.images import analyse_frame

# ---- fill_schema ----


def test_fill_keeps_valid_proposals_and_replaces_invalid_ones() -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["a", "b"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 20},
            "text": {"type": "string", "minLength": 8},
            "flag": {"type": "boolean"},
        },
        "required": ["label", "n", "text", "flag"],
        "additionalProperties": False,
    }
    filled = fill_schema(schema, {"label": "b", "n": 3, "text": "long enough", "flag": True, "extra": 1})
    assert filled == {"label": "b", "n": 3, "text": "long enough", "flag": True}
    filled = fill_schema(schema, {"label": "zzz", "n": 99, "text": "short", "flag": "yes"})
    jsonschema.validate(filled, schema)
    assert filled["label"] == "a"  # enum: first value
    assert filled["n"] == 20  # clamped into range
    assert len(filled["text"]) >= 8
    assert filled["flag"] is False


def test_fill_defaults_from_schema_alone() -> None:
    schema = {
        "type": "object",
        "properties": {
            "i": {"type": "integer", "minimum": 3},
            "x": {"type": ["null", "number"], "exclusiveMinimum": 1},
            "s": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "inner": {"type": "object", "properties": {"k": {"const": 7}}, "required": ["k"]},
            "optional": {"type": "string"},
        },
        "required": ["i", "x", "s", "tags", "inner"],
    }
    filled = fill_schema(schema)
    jsonschema.validate(filled, schema)
    assert filled["i"] == 3 and filled["s"] == "none" and filled["inner"] == {"k": 7}
    assert "optional" not in filled


def test_fill_follows_refs_and_optional_unions() -> None:
    # What pydantic generates for an Enum field and an Optional[int] field.
    schema = {
        "$defs": {"Colour": {"enum": ["red", "blue"], "type": "string"}},
        "type": "object",
        "properties": {
            "colour": {"$ref": "#/$defs/Colour"},
            "maybe": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
            "both": {"allOf": [{"type": "integer"}, {"maximum": -2}]},
        },
        "required": ["colour", "maybe", "both"],
    }
    jsonschema.validate(fill_schema(schema, {"colour": "green", "maybe": "x", "both": 5}), schema)
    kept = fill_schema(schema, {"colour": "blue", "maybe": None, "both": -3})
    assert kept == {"colour": "blue", "maybe": None, "both": -3}


def test_fill_scalar_root_and_missing() -> None:
    assert fill_schema({"type": "integer", "enum": [4, 5]}, MISSING) == 4
    assert fill_schema({"type": "integer"}, 2.0) == 2


# ---- task recognition and the handlers ----


@pytest.mark.parametrize(
    ("title", "name", "text", "task"),
    [
        ("frame_caption", None, "", answers.FRAME_CAPTION),
        ("FrameCaption", None, "", answers.FRAME_CAPTION),
        (None, "describe-texts", "", answers.DESCRIBE_TEXTS),
        (None, None, scenes.caption_table([(1, -1)]), answers.INCIDENT_FRAME),
        (None, None, "answer in <caption_before> tags", answers.ENSEMBLE),
        (None, None, f"Give {cols.SCENE} and {cols.GAZE}", answers.FRAME_CAPTION),
        (None, None, f"Give {cols.CAPTION} and {cols.N_VEHICLES}", answers.DESCRIBE_RECONCILE),
        (None, None, f"Give {cols.CAPTION} and {cols.REASON}", answers.DESCRIBE_TEXTS),
        (None, None, f"Give {cols.SEVERITY} and {cols.N_ANIMALS}", answers.DESCRIBE_COUNTS),
        (None, None, "tell me a joke", answers.GENERIC),
    ],
)
def test_recognise_task(title: str | None, name: str | None, text: str, task: str) -> None:
    schema = {"title": title, "type": "object"} if title else None
    assert answers.recognise_task(schema, name, text) == task


def test_incident_frame_is_first_flagged_row_without_temperature() -> None:
    import random

    text = "Here is the table:\n" + scenes.caption_table([(1, -1), (11, -1), (21, 0), (31, 1), (41, -1)])
    for i in range(40):
        answer, _ = answers.incident_frame(text, 0.0, random.Random(i))
        assert answer == {"frame": 21}
    none_flagged = scenes.caption_table([(1, -1), (11, -1)])
    assert answers.incident_frame(none_flagged, 0.6, random.Random(0))[0] == {"frame": -1}


def test_incident_frame_jitters_a_minority_with_temperature() -> None:
    import random

    text = scenes.caption_table([(1, -1), (11, 0), (21, 1), (31, 1)])
    frames = [answers.incident_frame(text, 0.6, random.Random(i))[0]["frame"] for i in range(400)]
    assert set(frames) == {11, 21}
    assert 0.1 < frames.count(21) / len(frames) < 0.4  # jitter is a minority: voting recovers 11


def test_describe_start_is_first_red_image_and_fields_are_consistent() -> None:
    frames = [analyse_frame(scenes.road(r, vehicles=2)) for r in (0, 0, 0, 12, 30, 45)]
    fields, _ = answers.describe(frames, 0)
    assert fields[cols.START_FRAME] == 3
    assert fields[cols.DETECTION] == 1
    assert fields[cols.SEVERITY] != cols.NO_CRASH and fields[cols.EGO] == 1
    assert fields[cols.LABEL] in cols.LABELS and fields[cols.LABEL] != cols.UNKNOWN_LABEL
    assert fields[cols.N_VEHICLES] == 2

    calm, _ = answers.describe([analyse_frame(scenes.road(0, vehicles=2)) for _ in range(4)], 0)
    assert calm[cols.START_FRAME] == -1 and calm[cols.DETECTION] == -1
    assert calm[cols.SEVERITY] == cols.NO_CRASH and calm[cols.EGO] == 0 and calm[cols.LABEL] == cols.UNKNOWN_LABEL
    assert all(calm[c] == 0 for c in cols.COUNT_COLUMNS)

    small, _ = answers.describe([analyse_frame(scenes.road(r)) for r in (0, 10)], 0)
    assert small[cols.DETECTION] == 0 and small[cols.SEVERITY] == cols.NO_CRASH and small[cols.LABEL] in cols.HAZARD_LABELS


def test_describe_texts_vary_by_sample_and_keep_the_style() -> None:
    frames = [analyse_frame(scenes.road(r)) for r in (0, 30)]
    captions = {answers.describe(frames, i)[0][cols.CAPTION] for i in range(4)}
    assert len(captions) > 1
    sentences = [c.format(cars=cars) for c in answers.CAPTIONS for cars in ("no other cars", "one car", "two cars")]
    sentences += [r for group in answers.REASONS.values() for r in group]
    for sentence in sentences:
        assert 10 <= len(sentence.split()) <= 18, sentence
        assert sentence.isascii() and sentence.endswith(".") and sentence.count(".") == 1


def test_ensemble_takes_smallest_of_most_common_frames() -> None:
    text = "1. frame: 120 ...\n2. Frame: 40 ...\n3. frame = 120\n4. FRAME: 40\n5. frame 7"
    fields, _ = answers.ensemble(text, 0)
    assert fields[answers.ENS_FRAME] == 40
    assert answers.ensemble("no numbers here", 0)[0][answers.ENS_FRAME] == 1


def test_nonenglish_keeps_enum_values() -> None:
    schema = scenes.FRAME_CAPTION_SCHEMA
    fields, _ = answers.frame_caption(None)
    swapped = answers.to_nonenglish(fill_schema(schema, fields), schema)
    jsonschema.validate(swapped, schema)
    assert swapped[cols.SCENE] == answers.NON_ENGLISH_TEXT
    assert swapped[cols.CAP_LABEL] == cols.UNKNOWN_LABEL


def _input(**kw: Any) -> answers.ChatInput:
    base: dict[str, Any] = dict(
        text="",
        user_text="",
        images=(),
        schema=None,
        schema_name=None,
        json_mode=False,
        temperature=0.6,
        reasoning=False,
        canonical='{"x":1}',
    )
    return answers.ChatInput(**{**base, **kw})


def test_answer_request_is_a_function_of_body_and_index() -> None:
    text = scenes.caption_table([(1, -1), (11, 0), (21, 1), (31, 1)])
    one = answers.answer_request(_input(text=text, canonical="a"), 12)
    two = answers.answer_request(_input(text=text, canonical="a"), 12)
    assert one == two
    other = answers.answer_request(_input(text=text, canonical="b"), 12)
    assert [a.content for a in one[1]] != [a.content for a in other[1]]  # a different body reseeds
    assert answers.choice_seed("a", 0) != answers.choice_seed("a", 1)


def test_ensemble_without_json_answers_in_tags() -> None:
    task, [answer] = answers.answer_request(_input(user_text="frame: 5\nframe: 5", text="x"), 1)
    assert task == answers.GENERIC  # nothing marks this as an ensemble prompt...
    task, [answer] = answers.answer_request(
        _input(user_text="frame: 5\nframe: 9", text="use <incident_start_frame> tags"), 1
    )
    assert task == answers.ENSEMBLE
    match = re.search(r"<incident_start_frame>(\d+)</incident_start_frame>", answer.content)
    assert match and match.group(1) == "5"
    assert "<caption_before>" in answer.content and "<reason>" in answer.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)


# The prompts of stages 2, 3 and 5, faithful and plus, as the stages render them: the simulated
# server must recognise each request with its schema (json_schema switch) and without (the original).
_TABLE = "| frame | path | Scene_Description | Incident_Detection |\n|--:|:--|:--|--:|\n| 1 | /f/000001.png | road | -1 |"
_STAGE_PROMPTS = [
    ("caption", {}, answers.FRAME_CAPTION),
    ("detect", {"table": _TABLE}, answers.INCIDENT_FRAME),
    ("ensemble", {"candidates": "1) frame=41\n   before: a road\n   reason: a car stops"}, answers.ENSEMBLE),
]


@pytest.mark.parametrize("variant", [None, "plus"])
@pytest.mark.parametrize("with_schema", [False, True])
@pytest.mark.parametrize(("name", "values", "task"), _STAGE_PROMPTS)
def test_stage_prompts_are_recognised(name: str, values: dict, task: str, variant: str | None, with_schema: bool) -> None:
    from coool.prompts import load_prompt

    prompt = load_prompt(name, variant=variant)
    text = "\n".join(filter(None, [prompt.system, prompt.render(**values)]))
    schema = prompt.schema if with_schema else None
    assert answers.recognise_task(schema, prompt.title if with_schema else None, text) == task


def test_the_original_ensemble_block_gives_the_frames() -> None:
    from coool.prompts import load_prompt

    block = "\n".join(f"{i}) frame={f}\n   before: a road\n   reason: a car stops" for i, f in enumerate([50, 30, 50, 30, 70], 1))
    text = load_prompt("ensemble").render(candidates=block)
    fields, _ = answers.ensemble(text, 0)
    assert fields[answers.ENS_FRAME] == 30  # 30 and 50 tie: the smallest; no number of the prompt's own text counts


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("config", ["v4", "v3-prompt2", "v6-counts"])
@pytest.mark.parametrize("with_schema", [False, True])
def test_every_describe_request_is_recognised(config: str, plus: bool, with_schema: bool) -> None:
    """The faithful prompts (json_object, no schema) and the plus ones, as describe renders them."""
    from coool.describe import DescribePromptSet, reconcile_context
    from coool.params import load_describe_configs

    prompts = DescribePromptSet.load(load_describe_configs()[config].model_copy(update={"plus_prompts": plus}))
    values = {**prompts.values(24), "counts_json": "{}", "texts_json": "{}"}
    context = "\n\n" + reconcile_context({cols.LABEL: "unknown"}, {cols.CAPTION: "A car."})
    for prompt, task, tail in ((prompts.counts, answers.DESCRIBE_COUNTS, ""), (prompts.texts, answers.DESCRIBE_TEXTS, ""),
                               (prompts.reconcile, answers.DESCRIBE_RECONCILE, context)):
        schema = prompt.schema if with_schema else None
        assert answers.recognise_task(schema, None, prompt.render(**values) + tail) == task
