"""Stage 5: normalisation, candidates, answers in JSON or tags, fallbacks, and the real 661-video ensemble."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from coool import schema as cols
from coool.ensemble import (
    ORIGINAL_INPUT_FILES,
    Candidate,
    candidates_for,
    candidates_text,
    ensemble_unit,
    ensemble_video,
    input_order,
    normalize_text,
    parse_answer,
    parse_tags,
)
from coool.llm import ChatClient
from coool.params import EnsembleParams
from coool.prompts import load_prompt
from coool.submission import load_submission, read_submission, validate, write_submission
from coool.workspace import video_json

PROMPT = load_prompt("ensemble")
PROMPT_PLUS = load_prompt("ensemble", variant="plus")
# coool's answer handling: a JSON answer (tags accepted), re-asks with new seeds, broad normalisation.
PLUS = EnsembleParams(json_schema=True, plus_prompts=True, broad_normalise=True, strict_english=True)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("1. Ego-car stops at the light.", "ego car stops at the light."),
        ("2) The truck turns left.", "The truck turns left."),
        ("  3:  A van cuts in.", "A van cuts in."),
        ("4 - A dog runs out.", "A dog runs out."),
        ("EGO-CAR brakes; the ego-car's lane is blocked.", "ego car brakes; the ego car's lane is blocked."),
        ("  A car\n\n  waits   at\tthe  light ", "A car waits at the light"),
        ("A <b>bold</b> move > 3 m", "A (b)bold(/b) move ) 3 m"),
        ("1.5 m separate the cars.", "1.5 m separate the cars."),  # a decimal is not a list number
        ("Ego car 2 lanes over.", "Ego car 2 lanes over."),  # only a leading number goes
        ("", ""),
    ],
)
def test_normalize_text_broad(text: str, normal: str) -> None:
    assert normalize_text(text, broad=True) == normal


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("1. Ego-car stops at the light.", "1. Ego-car stops at the light."),  # a number then "." stays; case matters
        ("3 cars wait at the light.", "cars wait at the light."),  # a number then a space goes
        ("  12\tego-car brakes", "ego car brakes"),
        ("The ego-vehicle and the ego-car's lane", "The ego vehicle and the ego car's lane"),
        ("EGO-CAR and Ego-Vehicle", "EGO-CAR and Ego-Vehicle"),
        ("  A car\n\n  waits   at\tthe  light ", "A car waits at the light"),
        ("A <b>bold</b> move > 3 m", "A (b)bold(/b) move ) 3 m"),
        ("1.5 m separate the cars.", "1.5 m separate the cars."),
        ("", ""),
        (None, ""),
        (float("nan"), ""),
        (42, "42"),
    ],
)
def test_normalize_text_as_the_original(text: object, normal: str) -> None:
    assert normalize_text(text) == normal


def test_inputs_are_presented_in_the_sorted_order_of_the_originals_file_names() -> None:
    recipe_order = ["exp001+exp002", "exp004+exp005", "v5", "v3", "v4", "v3-prompt2"]
    assert input_order(recipe_order) == ["exp001+exp002", "exp004+exp005", "v4", "v3", "v5", "v3-prompt2"]
    assert [ORIGINAL_INPUT_FILES[n] for n in input_order(recipe_order)] == sorted(ORIGINAL_INPUT_FILES.values())
    assert input_order(["zeta", "v3", "alpha"]) == ["alpha", "v3", "zeta"]  # v3's original name starts "exp005"


def frame_of(video: int, start: int, caption: str = "A road.", reason: str = "A car stops.") -> dict[str, object]:
    row = cols.fallback_row(video)
    row.update({cols.START_FRAME: start, cols.DETECTION: 1, cols.SEVERITY: cols.SEVERITIES[6], cols.LABEL: "vehicle drives into another vehicle",
                cols.N_VEHICLES: 2, cols.CAPTION: caption, cols.REASON: reason})
    return row


def inputs_with(frames_by_name: dict[str, int | None], video: int = 3) -> dict[str, pd.DataFrame]:
    out = {}
    for name, start in frames_by_name.items():
        rows = [frame_of(0, 10)]
        if start is not None:
            rows.append(frame_of(video, start, caption=f"1. Ego-car follows {name}.", reason=f"{name} <brakes>."))
        out[name] = pd.DataFrame(rows, columns=list(cols.COLUMNS))
    return out


def test_candidates_for_matches_ids_and_records_the_missing() -> None:
    inputs = inputs_with({"c": 55, "a": 40, "b": None})
    found, missing = candidates_for(3, inputs, broad=True)
    assert found == [
        Candidate("a", 40, "ego car follows a.", "a (brakes)."),
        Candidate("c", 55, "ego car follows c.", "c (brakes)."),
    ]
    assert missing == ["b"]
    assert candidates_text(found) == (
        "Report 1: frame: 40\n  caption: ego car follows a.\n  reason: a (brakes).\n"
        "Report 2: frame: 55\n  caption: ego car follows c.\n  reason: c (brakes)."
    )
    original, _ = candidates_for(3, inputs)
    assert [c.caption for c in original] == ["1. Ego-car follows a.", "1. Ego-car follows c."]
    assert candidates_text(original, original=True) == (
        "1) frame=40\n   before: 1. Ego-car follows a.\n   reason: a (brakes).\n"
        "2) frame=55\n   before: 1. Ego-car follows c.\n   reason: c (brakes)."
    )


def test_candidates_from_the_real_inputs(ref) -> None:
    inputs = {p.stem: read_submission(p) for p in ref.ensemble_inputs}
    found, missing = candidates_for(0, inputs)
    # The real files keep the original's names: they are shown in their sorted order.
    assert missing == [] and [c.source for c in found] == sorted(p.stem for p in ref.ensemble_inputs)
    for candidate in found:
        row = read_submission(ref.root / f"{candidate.source}.csv").iloc[0]
        assert candidate.frame == int(row[cols.START_FRAME])
        assert candidate.caption == normalize_text(row[cols.CAPTION]) and "ego-car" not in candidate.caption


@pytest.mark.parametrize(
    ("content", "parsed"),
    [
        ('{"caption_before": " A road. ", "reason": "A car stops.", "incident_start_frame": 41}',
         {"caption_before": "A road.", "reason": "A car stops.", "incident_start_frame": 41}),
        ("<caption_before>\n A road.\n</caption_before>\n<reason>A car stops.</reason>\n"
         "<incident_start_frame> 41 </incident_start_frame>",
         {"caption_before": "A road.", "reason": "A car stops.", "incident_start_frame": "41"}),
        ("Thinking about clusters... <reason>A car stops.</reason>",
         {"caption_before": "", "reason": "A car stops.", "incident_start_frame": None}),
        ('```json\n{"caption_before": "A road.", "reason": "A car stops."}\n```',
         {"caption_before": "A road.", "reason": "A car stops.", "incident_start_frame": None}),
        ('{"frame": 41}', None),
        ("I do not know.", None),
        ("", None),
    ],
)
def test_parse_answer(content: str, parsed: dict | None) -> None:
    assert parse_answer(content) == parsed


def json_reply(frame: object = 40, caption: str = "Ego-car drives behind a truck.", reason: str = "The truck brakes hard.") -> str:
    return json.dumps({"caption_before": caption, "reason": reason, "incident_start_frame": frame}, ensure_ascii=False)


def reply(frame: object = 40, caption: str = "Ego-car drives behind a truck.", reason: str = "The truck brakes hard.") -> str:
    """An answer in the original's tags."""
    return (f"<caption_before>{caption}</caption_before>\n<reason>{reason}</reason>\n"
            f"<incident_start_frame>{frame}</incident_start_frame>")


@pytest.mark.parametrize(
    ("content", "parsed"),
    [
        ("<CAPTION_BEFORE>\n A road. </caption_before><reason>A car stops.</reason>"
         "<incident_start_frame>frame 41, maybe 50</incident_start_frame>",
         {"caption_before": "A road.", "reason": "A car stops.", "incident_start_frame": 41}),
        ("<reason>A car stops.</reason><incident_start_frame>-3</incident_start_frame>",
         {"caption_before": "", "reason": "A car stops.", "incident_start_frame": -3}),
        ('{"caption_before": "A road.", "reason": "A car stops.", "incident_start_frame": 41}',
         {"caption_before": "", "reason": "", "incident_start_frame": None}),
        ("", {"caption_before": "", "reason": "", "incident_start_frame": None}),
    ],
)
def test_parse_tags_as_the_original(content: str, parsed: dict) -> None:
    assert parse_tags(content) == parsed


BASE = frame_of(3, 77, caption="Base caption.", reason="Base reason.")


async def test_the_request(scripted_client) -> None:
    inputs = inputs_with({"a": 40, "b": 55})
    client = scripted_client([reply()])
    await ensemble_video(client, PROMPT, 3, BASE, inputs)
    (call,) = client.calls
    assert call["messages"][0] == {"role": "system", "content": "You must answer in English."}
    candidates, _ = candidates_for(3, inputs)
    assert client.user_text() == PROMPT.render(candidates=candidates_text(candidates, original=True))
    assert "1) frame=40\n   before: " in client.user_text() and "<incident_start_frame>" in client.user_text()
    expected = {"n": 1, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0, "max_tokens": 4096, "seed": 42,
                "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert {k: call[k] for k in expected} == expected
    assert call["response_format"] is None


async def test_the_request_with_coools_switches(scripted_client) -> None:
    inputs = inputs_with({"a": 40, "b": 55})
    client = scripted_client([json_reply()])
    result = await ensemble_video(client, PROMPT_PLUS, 3, BASE, inputs, PLUS)
    (call,) = client.calls
    candidates, _ = candidates_for(3, inputs, broad=True)
    assert client.user_text() == PROMPT_PLUS.render(candidates=candidates_text(candidates))
    assert call["response_format"]["json_schema"]["name"] == "ensemble"
    assert result.row[cols.CAPTION] == "Ego-car drives behind a truck."


async def test_the_json_schema_switch_changes_the_format_and_the_reading(scripted_client) -> None:
    inputs = inputs_with({"a": 40, "b": 55})
    original, switched = scripted_client([reply()]), scripted_client([json_reply(55)])
    await ensemble_video(original, PROMPT, 3, BASE, inputs)
    result = await ensemble_video(switched, PROMPT, 3, BASE, inputs, EnsembleParams(json_schema=True))
    before, after = original.calls[0], switched.calls[0]
    assert {k for k in before if before[k] != after[k]} == {"response_format"}
    assert result.row[cols.START_FRAME] == 55 and result.row[cols.REASON] == "The truck brakes hard."


async def test_only_frame_caption_and_reason_change(scripted_client) -> None:
    result = await ensemble_video(scripted_client([reply(55)]), PROMPT, 3, BASE, inputs_with({"a": 40, "b": 55}))
    assert result.row == BASE | {cols.START_FRAME: 55, cols.CAPTION: "Ego-car drives behind a truck.", cols.REASON: "The truck brakes hard."}
    assert result.notes == [] and result.missing_inputs == []


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (999, 30),  # not an input frame
        (None, 30),  # missing
        ("50", 50),  # a number as text is read
        ("fifty", 30),
        (70, 70),  # any input frame is fine, not only the most common
    ],
)
async def test_frame_fallback_is_the_most_common_input_frame(scripted_client, frame, expected: int) -> None:
    # 30 and 50 twice each: the tie goes to the smallest.
    inputs = inputs_with({"a": 50, "b": 30, "c": 50, "d": 30, "e": 70, "f": 90})
    result = await ensemble_video(scripted_client([reply(frame)]), PROMPT, 3, BASE, inputs)
    assert result.row[cols.START_FRAME] == expected
    assert (result.notes != []) is (expected != frame and str(expected) != frame)


async def test_an_id_missing_from_an_input_is_skipped_and_recorded(scripted_client) -> None:
    client = scripted_client([reply(55)])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "gone": None, "c": 55}))
    assert result.missing_inputs == ["gone"]
    assert result.notes == ["inputs without this video (skipped): gone"]
    assert [c.source for c in result.candidates] == ["a", "c"]
    assert "gone" not in client.user_text() and "3) frame=" not in client.user_text()


async def test_no_input_has_the_video(scripted_client) -> None:
    client = scripted_client([])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": None, "b": None}))
    assert result.row == BASE and client.calls == []
    assert result.notes[-1] == "no input has this video: the base row is kept"


async def test_a_non_ascii_answer_is_asked_again_once_as_the_original(scripted_client) -> None:
    client = scripted_client([reply(40, caption="自车在卡车后面行驶。"), reply(55, reason="The truck brakes – hard.")])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "b": 55}))
    assert [c["seed"] for c in client.calls] == [42, 42]  # the same request again
    assert client.calls[0] == client.calls[1]
    # The second answer replaces the first, non-ASCII or not.
    assert (result.row[cols.START_FRAME], result.row[cols.REASON]) == (55, "The truck brakes – hard.")
    assert result.notes == ["attempt 1: a text is not ASCII", "attempt 2: a text is not ASCII"]
    client = scripted_client([reply(40)])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40}))
    assert len(client.calls) == 1 and result.notes == []


async def test_a_blank_text_keeps_the_base_text(scripted_client) -> None:
    # A guard: the original would write a blank caption, which is not a valid submission row.
    client = scripted_client(["<reason>The truck brakes hard.</reason><incident_start_frame>55</incident_start_frame>"])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "b": 55}))
    assert len(client.calls) == 1
    assert (result.row[cols.CAPTION], result.row[cols.REASON], result.row[cols.START_FRAME]) == (BASE[cols.CAPTION], "The truck brakes hard.", 55)
    assert result.notes == ["no caption_before in the answer: the base row's text is kept"]


async def test_a_text_still_not_english_keeps_the_base_text_and_texts_are_one_line(scripted_client) -> None:
    client = scripted_client([reply(40, caption="自车在卡车后面行驶。", reason="The truck\n\nbrakes\u202e hard."),
                              reply(40, caption="自车在卡车后面行驶。", reason="The truck\n\nbrakes\u202e hard.")])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40}))
    assert len(client.calls) == 2
    assert (result.row[cols.CAPTION], result.row[cols.REASON]) == (BASE[cols.CAPTION], "The truck brakes hard.")
    assert result.notes[-1] == "caption_before is still not English: the base row's text is kept"


async def test_non_ascii_texts_are_asked_again_with_strict_english(scripted_client) -> None:
    client = scripted_client([reply(40, caption="自车在卡车后面行驶。"), reply(55, reason="The truck brakes – hard.")])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "b": 55}), EnsembleParams(strict_english=True))
    assert [c["seed"] for c in client.calls] == [42, 43]  # a new seed, or the same answer comes back
    assert result.row[cols.CAPTION] == BASE[cols.CAPTION] and result.row[cols.REASON] == BASE[cols.REASON]
    assert result.row[cols.START_FRAME] == 55  # the frame of the last answer still counts
    assert result.notes == [
        "attempt 1: texts empty, unparsable or not ASCII",
        "attempt 2: texts empty, unparsable or not ASCII",
        "no usable texts: the base row's caption and reason are kept",
    ]
    client = scripted_client([reply(40, caption="自车"), reply(40, caption="Ego-car waits.")])
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40}), EnsembleParams(strict_english=True))
    assert result.row[cols.CAPTION] == "Ego-car waits." and len(client.calls) == 2


async def test_english_retries_is_a_parameter(scripted_client) -> None:
    client = scripted_client(["garbage"] * 3)
    params = EnsembleParams(english_retries=2, strict_english=True)
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "b": 40}), params)
    assert len(client.calls) == 3 and result.row[cols.START_FRAME] == 40 and result.row[cols.CAPTION] == BASE[cols.CAPTION]


async def test_a_tag_answer_is_used(scripted_client) -> None:
    tags = ("<caption_before>Ego-car waits at a crosswalk.</caption_before>\n"
            "<reason>A pedestrian steps out and ego-car brakes.</reason>\n<incident_start_frame>55</incident_start_frame>")
    client = scripted_client([tags], structured=False)
    result = await ensemble_video(client, PROMPT, 3, BASE, inputs_with({"a": 40, "b": 55}), EnsembleParams(json_schema=True))
    assert client.calls[0]["response_format"] == {"type": "json_object"}
    assert (result.row[cols.START_FRAME], result.row[cols.CAPTION], result.row[cols.REASON]) == (
        55, "Ego-car waits at a crosswalk.", "A pedestrian steps out and ego-car brakes.",
    )


async def test_ensemble_unit_is_resumable(sim, role, tmp_path: Path) -> None:
    inputs = inputs_with({"a": 40, "b": 55, "c": 40})
    async with ChatClient("ensembler", role(sim)) as client:
        first = await ensemble_unit(client, 3, BASE, inputs, video_json(tmp_path, 3), PROMPT)
        assert first["cached"] is False and first["row"][cols.START_FRAME] == 40
        sim.reset()
        again = await ensemble_unit(client, 3, BASE, inputs, video_json(tmp_path, 3), PROMPT)
        assert again == {"video": 3, "row": first["row"], "cached": True} and sim.stats()["received"] == 0
        changed = await ensemble_unit(client, 3, BASE, inputs_with({"a": 40, "b": 55, "c": 55}), video_json(tmp_path, 3), PROMPT)
        assert changed["cached"] is False and changed["row"][cols.START_FRAME] == 55
    saved = json.loads((tmp_path / "3.json").read_text())
    assert [c["source"] for c in saved["candidates"]] == ["a", "b", "c"] and saved["model"] == "sim-model"


# -- the real ensemble: six inputs and the base, 661 videos, against the simulator ---------------------


@pytest.mark.slow
async def test_the_real_ensemble_of_661_videos(sim, role, ref, tmp_path: Path) -> None:
    base = load_submission(ref.base)
    inputs = {p.stem: load_submission(p) for p in ref.ensemble_inputs}
    base_rows = {int(r[cols.VIDEO]): r for r in base.to_dict("records")}
    async with ChatClient("ensembler", role(sim, max_concurrency=32)) as client:
        outcomes = await asyncio.gather(
            *(ensemble_unit(client, v, base_rows[v], inputs, video_json(tmp_path / "work", v), PROMPT) for v in sorted(base_rows))
        )
    assert sim.stats()["received"] == 661 and sim.stats()["tasks"] == {"ensemble": 661}
    out = write_submission([o["row"] for o in outcomes], tmp_path / "ensemble.csv", expected_videos=range(661))
    written = read_submission(out)
    assert [p for p in validate(written, strict=True)] == []
    result = load_submission(out)
    kept = [c for c in cols.COLUMNS if c not in (cols.START_FRAME, cols.CAPTION, cols.REASON)]
    assert result[kept].equals(base[kept])
    frames = {v: {int(f.loc[v, cols.START_FRAME]) for f in inputs.values()} for v in range(661)}
    assert all(int(result.loc[v, cols.START_FRAME]) in frames[v] for v in range(661))
    # The simulated ensembler answers the most common input frame (ties smallest), so that is what is chosen.
    for v in range(661):
        counts = Counter(int(f.loc[v, cols.START_FRAME]) for f in inputs.values())
        top = max(counts.values())
        assert result.loc[v, cols.START_FRAME] == min(f for f, c in counts.items() if c == top), v
    assert (result[cols.CAPTION] != base[cols.CAPTION]).all()
