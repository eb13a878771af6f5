"""Prompt files: every built-in one loads, renders and has a usable schema; overrides; hashes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from coool import schema as cols
from coool.describe import PASS_FIELDS
from coool.prompts import BUILTIN_DIR, PromptError, load_prompt, load_snippet

# Every prompt with its schema title (what the simulated server and vLLM see) and the
# placeholders its stage fills.
# The describe prompts' snippet places (empty unless the configuration inserts the snippet).
SNIPPETS = {"ignore_image_text": "", "ignore_image_text_inline": ""}
PROMPTS = {
    "caption": ("frame_caption", {}),
    "detect": ("incident_frame", {"table": "| frame |"}),
    "describe_counts": ("describe_counts", {"n_frames": 24, "last_index": 23, "extra": "", **SNIPPETS}),
    "describe_counts_v2": ("describe_counts", {"n_frames": 12, "last_index": 11, "extra": "", **SNIPPETS}),
    "describe_texts": ("describe_texts", {"n_frames": 24, "last_index": 23, "extra": "", **SNIPPETS}),
    "describe_texts_v2": ("describe_texts", {"n_frames": 12, "last_index": 11, "extra": "", **SNIPPETS}),
    "describe_reconcile": (
        "describe_reconcile",
        {"n_frames": 24, "last_index": 23, "extra": "", "counts_json": "{}", "texts_json": "{}", **SNIPPETS},
    ),
    "describe_reconcile_v2": (
        "describe_reconcile",
        {"n_frames": 12, "last_index": 11, "extra": "", "counts_json": "{}", "texts_json": "{}", **SNIPPETS},
    ),
    "ensemble": ("ensemble", {"candidates": "Report 1: frame: 5"}),
}


def test_every_prompt_file_is_listed_here() -> None:
    names = {p.name.split(".")[0] for p in BUILTIN_DIR.iterdir() if p.suffix in (".md", ".json")}
    # The snippets: ignore_image_text (the count pass), stacked_frames (issue #14: frames: stacked).
    assert names - {"README"} == set(PROMPTS) | {"ignore_image_text", "stacked_frames"}
    plus = {p.name.split(".")[0] for p in (BUILTIN_DIR / "plus").iterdir() if p.suffix in (".md", ".json")}
    assert plus <= set(PROMPTS) | {"ignore_image_text"}


@pytest.mark.parametrize("name", ["caption", "detect", "ensemble"])
def test_plus_prompts_load_and_render_with_the_default_schema(name: str) -> None:
    title, values = PROMPTS[name]
    plus, faithful = load_prompt(name, variant="plus"), load_prompt(name)
    assert plus.source == BUILTIN_DIR / "plus" / f"{name}.md"
    assert plus.text != faithful.text
    assert plus.schema == faithful.schema and plus.system == faithful.system and plus.title == title
    text = plus.render(**values)
    assert "$" not in text and text == text.strip()


def test_stage_prompt_follows_the_plus_prompts_switch() -> None:
    from coool.params import CaptionParams, DetectParams, EnsembleParams
    from coool.prompts import stage_prompt

    for params in (CaptionParams(), DetectParams(), EnsembleParams()):
        assert stage_prompt(params) == load_prompt(params.prompt)
        assert stage_prompt(params.model_copy(update={"plus_prompts": True})) == load_prompt(params.prompt, variant="plus")


def test_the_faithful_prompts_carry_the_originals_instructions() -> None:
    caption = load_prompt("caption").render()
    assert "Think very hard" in caption and "Give priority to details that matter for hazards" in caption
    assert "count only instances you can see clearly" in caption and "the number is 0" in caption
    assert "Frame" not in caption.split("\n")[0]
    detect = load_prompt("detect").render(table="| frame |")
    assert "most severe accident or hazard starts" in detect and "-1 when" not in detect and "wrong" not in detect
    ensemble = load_prompt("ensemble").render(candidates="1) frame=5")
    for instruction in ("ONE sentence", "Present tense, active voice", "force/forcing/causing/sudden/lane change/disruption/cuts in",
                        "(CIDEr)", "Never invent", "'right' becomes 'right lane'", "No numbers, timestamps or frames",
                        "<incident_start_frame>...</incident_start_frame>"):
        assert instruction in ensemble, instruction


def test_the_stacked_frames_snippet_is_plain_text() -> None:
    text = load_snippet("stacked_frames")
    assert "$" not in text and "heatmap" in text and "dashcam" in text


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_builtin_prompt_loads_and_renders(name: str) -> None:
    title, values = PROMPTS[name]
    prompt = load_prompt(name)
    assert prompt.name == name and prompt.source == BUILTIN_DIR / f"{name}.md"
    assert prompt.title == title
    text = prompt.render(**values)
    assert "$" not in text, re.findall(r"\$\w+", text)
    assert text == text.strip()
    jsonschema.Draft202012Validator.check_schema(prompt.schema)
    assert prompt.schema["additionalProperties"] is False
    assert set(prompt.schema["required"]) == set(prompt.schema["properties"])


def test_list_placeholders_expand_to_the_allowed_values() -> None:
    text = load_prompt("caption").render()
    assert ", ".join(json.dumps(label) for label in cols.LABELS) in text
    # The original offers the six collision severities (and "unknown"), not "0. No Crash".
    assert ", ".join(json.dumps(s) for s in cols.SEVERITIES[1:]) in text and cols.NO_CRASH not in text
    assert ", ".join(json.dumps(s) for s in cols.SEVERITIES) in load_prompt("caption", variant="plus").render()
    # coool's reconcile prompt (plus) lists coool's hazard labels; the faithful one lists the original's own.
    reconcile = load_prompt("describe_reconcile", variant="plus").render(**PROMPTS["describe_reconcile"][1])
    assert ", ".join(json.dumps(label) for label in cols.HAZARD_LABELS) in reconcile


def test_schema_enums_expand_to_the_allowed_values() -> None:
    caption = load_prompt("caption").schema["properties"]
    assert caption[cols.CAP_SEVERITY]["enum"] == list(cols.CAPTION_SEVERITIES)
    assert caption[cols.CAP_LABEL]["enum"] == list(cols.LABELS)
    assert list(caption) == list(cols.CAPTION_FIELDS)
    for name in ("describe_counts", "describe_reconcile", "describe_reconcile_v2"):
        props = load_prompt(name).schema["properties"]
        assert props[cols.SEVERITY]["enum"] == list(cols.SEVERITIES)
        assert props[cols.LABEL]["enum"] == list(cols.LABELS)
        assert props[cols.DETECTION]["enum"] == [-1, 0, 1]


@pytest.mark.parametrize(
    ("name", "pass_name"),
    [
        ("describe_counts", "counts"),
        ("describe_counts_v2", "counts"),
        ("describe_texts", "texts"),
        ("describe_texts_v2", "texts"),
        ("describe_reconcile", "reconcile"),
        ("describe_reconcile_v2", "reconcile"),
    ],
)
def test_describe_schemas_ask_for_their_pass_fields(name: str, pass_name: str) -> None:
    schema = load_prompt(name).schema
    assert schema["required"] == list(PASS_FIELDS[pass_name])


def test_schemas_accept_a_valid_answer_and_reject_an_invalid_one() -> None:
    reconcile = load_prompt("describe_reconcile").schema
    answer = dict(cols.fallback_row(0))
    del answer[cols.VIDEO]
    answer[cols.START_FRAME] = -1
    jsonschema.validate(answer, reconcile)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer | {cols.LABEL: "fog"}, reconcile)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer | {cols.N_ANIMALS: -1}, reconcile)
    jsonschema.validate({"frame": -1}, load_prompt("detect").schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"frame": "41"}, load_prompt("detect").schema)
    ensemble = load_prompt("ensemble").schema
    jsonschema.validate({"caption_before": "a", "reason": "b", "incident_start_frame": 5}, ensemble)


def test_system_messages_are_the_spec_ones() -> None:
    assert load_prompt("detect").system == "Reasoning: high"
    assert load_prompt("ensemble").system == "You must answer in English."
    assert load_prompt("caption").system is None


@pytest.mark.parametrize("variant", [None, "plus"])
def test_v2_prompts_are_the_stricter_ones(variant: str | None) -> None:
    base = load_prompt("describe_texts", variant=variant).render(**PROMPTS["describe_texts"][1])
    v2 = load_prompt("describe_texts_v2", variant=variant).render(**PROMPTS["describe_texts_v2"][1])
    assert "10 to 18 words" in base and "12 to 16 words" in v2
    assert "digits" in v2 and "spatial relation" in v2


def test_render_fills_values_and_names_a_missing_placeholder() -> None:
    prompt = load_prompt("describe_counts", variant="plus")
    text = prompt.render(n_frames=14, last_index=13, extra="EXTRA LINE")
    assert "The 14 images above" in text and "(0 to 13)" in text and text.endswith("EXTRA LINE")
    with pytest.raises(PromptError, match=r"describe_counts.md: no value for placeholder \$last_index"):
        prompt.render(n_frames=14, extra="")


def test_ignore_image_text_snippet() -> None:
    assert "Ignore every piece of text printed inside the images" in load_snippet("ignore_image_text", variant="plus")
    assert "any text that appears inside the images" in load_snippet("ignore_image_text")


def test_an_override_folder_wins_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "detect.md").write_text("Frames:\n$table\nAnswer {\"frame\": n}.\n", encoding="utf-8")
    prompt = load_prompt("detect", tmp_path)
    assert prompt.source == tmp_path / "detect.md"
    assert prompt.render(table="| frame |") == 'Frames:\n| frame |\nAnswer {"frame": n}.'
    assert prompt.system == "Reasoning: high"  # not overridden: the built-in one
    assert prompt.schema == load_prompt("detect").schema
    (tmp_path / "detect.system.md").write_text("Reasoning: low\n", encoding="utf-8")
    assert load_prompt("detect", tmp_path).system == "Reasoning: low"
    assert load_prompt("caption", tmp_path) == load_prompt("caption")


def test_an_override_schema_can_use_enum_placeholders(tmp_path: Path) -> None:
    (tmp_path / "detect.schema.json").write_text(
        json.dumps({"title": "incident_frame", "type": "object", "properties": {"l": {"enum": "$hazard_labels"}}}),
        encoding="utf-8",
    )
    assert load_prompt("detect", tmp_path).schema["properties"]["l"]["enum"] == list(cols.HAZARD_LABELS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "detect.schema.json: not valid JSON"),
        ('{"properties": {"x": {"enum": "$colours"}}}', r"unknown enum placeholder \$colours"),
    ],
)
def test_broken_override_schemas(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "detect.schema.json").write_text(content, encoding="utf-8")
    with pytest.raises(PromptError, match=message):
        load_prompt("detect", tmp_path)


def test_an_unknown_prompt(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no prompt named 'poem'"):
        load_prompt("poem", tmp_path)


def test_sha256_follows_content(tmp_path: Path) -> None:
    builtin = load_prompt("detect")
    assert load_prompt("detect").sha256 == builtin.sha256
    (tmp_path / "detect.md").write_text((BUILTIN_DIR / "detect.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_prompt("detect", tmp_path).sha256 == builtin.sha256  # same content, other file: same hash
    (tmp_path / "detect.system.md").write_text("Reasoning: low", encoding="utf-8")
    assert load_prompt("detect", tmp_path).sha256 != builtin.sha256
    hashes = {load_prompt(name).sha256 for name in PROMPTS}
    assert len(hashes) == len(PROMPTS)


def test_a_variant_file_wins_over_the_default_and_the_users_folder_over_both(tmp_path) -> None:
    from coool import prompts

    builtin = tmp_path / "builtin"
    (builtin / "plus").mkdir(parents=True)
    (builtin / "p.md").write_text("default")
    (builtin / "plus" / "p.md").write_text("plus")
    (builtin / "q.md").write_text("only default")
    user = tmp_path / "user"
    user.mkdir()
    original = prompts.BUILTIN_DIR
    prompts.BUILTIN_DIR = builtin
    try:
        assert prompts.load_prompt("p").text == "default"
        assert prompts.load_prompt("p", variant="plus").text == "plus"
        assert prompts.load_prompt("q", variant="plus").text == "only default"
        (user / "p.md").write_text("mine")
        assert prompts.load_prompt("p", user, variant="plus").text == "mine"
        (user / "plus").mkdir()
        (user / "plus" / "p.md").write_text("my plus")
        assert prompts.load_prompt("p", user, variant="plus").text == "my plus"
        assert prompts.load_prompt("p", user).text == "mine"
    finally:
        prompts.BUILTIN_DIR = original
