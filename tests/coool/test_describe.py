"""Stage 4: windows, the three passes with voting and re-asks, the final row, the resumable unit."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coool import schema as cols
from coool.captions import TABLE_COLUMNS, CaptionResult, save_captions
from coool.decode import read_frames
from coool.describe import (
    PASS_FIELDS,
    DescribePromptSet,
    PassResult,
    describe_unit,
    describe_video,
    final_row,
    reask_penalties,
    run_pass,
    select_window,
)
from coool.detect import detect_video
from coool.frames import extract_stacked_frames, stack
from coool.improvements import improvements_of
from coool.llm import ChatClient
from coool.params import DescribeConfig, load_describe_configs
from coool.parsing import MAX_COUNT
from coool.prompts import load_prompt, load_snippet
from coool.stage import StageError
from coool.submission import submission_text, validate
from coool.synthetic import read_stamp
from coool.workspace import caption_files, video_json

CONFIGS = load_describe_configs()
V4 = CONFIGS["v4"]
VALUES = DescribePromptSet.load(V4).values(24)
# coool's improvements (every describe switch but the plus prompts): the behaviour before issue #14.
SWITCHES = [i.name for i in improvements_of("describe", DescribeConfig)]
PLUS = V4.model_copy(update={name: True for name in SWITCHES if name != "plus_prompts"})
WINDOW = list(range(1, 117, 5))  # the v4 window of a 120-frame clip around frame 41
HIT = "1. Ego-car collided but did not stop"


def answer(**changes: object) -> dict[str, object]:
    """A complete, valid describe answer (11 fields)."""
    out: dict[str, object] = {
        cols.START_FRAME: 8, cols.DETECTION: 1, cols.SEVERITY: HIT, cols.EGO: 1, cols.LABEL: "ego-car hits barrier",
        cols.N_BICYCLISTS: 0, cols.N_ANIMALS: 0, cols.N_PEDESTRIANS: 0, cols.N_VEHICLES: 2,
        cols.CAPTION: "Ego-car drives in the middle lane of a straight road.",
        cols.REASON: "A red barrier appears in the ego lane and ego-car hits it.",
    }
    out.update(changes)
    return out


def as_json(fields: tuple[str, ...] = cols.ANSWER_FIELDS, **changes: object) -> str:
    full = answer(**changes)
    return json.dumps({f: full[f] for f in fields if f in full}, ensure_ascii=False)


def strict_problems(row: dict[str, object]) -> list[str]:
    frame = pd.read_csv(io.StringIO(submission_text([row])), dtype=str, keep_default_na=False)
    return [str(p) for p in validate(frame, strict=True)]


# -- windows -------------------------------------------------------------------------------------------


def captions(detections: list[int], clues: dict[int, str] | None = None, counts: dict[int, int] | None = None) -> pd.DataFrame:
    rows = []
    for i, detection in enumerate(detections):
        rows.append({
            "frame": 1 + 10 * i, "image": "", cols.SCENE: "", cols.HAZARD_CLUES: (clues or {}).get(i, "none"), cols.GAZE: "",
            cols.CAP_BICYCLISTS: 0, cols.CAP_ANIMALS: 0, cols.CAP_PEDESTRIANS: (counts or {}).get(i, 0), cols.CAP_VEHICLES: 0,
            cols.CAP_DETECTION: detection, cols.CAP_SEVERITY: "unknown", cols.CAP_EGO: 0, cols.CAP_LABEL: "unknown",
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


@pytest.mark.parametrize(
    ("name", "frame", "frames", "window"),
    [
        # (N-1)*6 = 138 is wider than 119 frames: the step drops to 119 // 23 = 5.
        ("v4", 41, 120, list(range(1, 117, 5))),
        ("v4", 71, 120, list(range(5, 121, 5))),  # shifted left to end on the last frame
        ("exp005", 41, 120, list(range(1, 80, 6))),  # 41-66 < 1: starts at frame 1
        ("exp005", 100, 120, list(range(34, 113, 6))),
        ("exp005", 115, 120, list(range(42, 121, 6))),
        ("v3", 64, 120, list(range(4, 115, 10))),
        ("v5", 64, 120, list(range(16, 105, 8))),
        ("v4", 10, 20, list(range(1, 21))),  # 24 frames wanted, 20 in the video: every frame
        ("v4", 999, 600, list(range(600 - 23 * 6, 601, 6))),  # a frame past the end is clamped first
    ],
)
def test_detected_frame_windows(name: str, frame: int, frames: int, window: list[int]) -> None:
    got = select_window(CONFIGS[name], frame_count=frames, detected_frame=frame)
    assert got == window
    assert len(got) == min(CONFIGS[name].size, frames)


@pytest.mark.parametrize(
    ("detections", "clues", "counts", "window"),
    [
        ([-1] * 10 + [1] * 10, None, None, list(range(41, 152, 10))),  # trigger row 10: rows 4..15
        ([-1, -1, 0] + [-1] * 17, None, None, list(range(1, 112, 10))),  # trigger row 2: shifted to row 0
        ([-1] * 18 + [1, 1], None, None, list(range(81, 192, 10))),  # trigger row 18: shifted to end at row 19
        ([-1] * 20, {9: "a dog near the kerb"}, None, list(range(31, 142, 10))),  # no detection: hazard clue
        ([-1] * 20, {9: "N/A"}, {14: 3, 16: 3}, list(range(81, 192, 10))),  # no clue: most participants (first)
        ([-1, 1, -1], None, None, [1, 11, 21]),  # fewer rows than N: all rows
    ],
)
def test_caption_trigger_windows(detections, clues, counts, window) -> None:
    assert select_window(CONFIGS["exp004"], frame_count=200, captions=captions(detections, clues, counts)) == window


def test_a_window_needs_its_input() -> None:
    with pytest.raises(ValueError, match="exp001: the caption-trigger window needs the video's caption table"):
        select_window(CONFIGS["exp001"], frame_count=120, detected_frame=41)
    with pytest.raises(ValueError, match="caption table"):
        select_window(CONFIGS["exp001"], frame_count=120, captions=captions([]))
    with pytest.raises(ValueError, match="v4: the detected-frame window needs the stage-3 frame"):
        select_window(V4, frame_count=120, captions=captions([1]))


async def test_the_v4_window_contains_the_event(sim, role, sim_captions, synthetic_data) -> None:
    async with ChatClient("detector", role(sim)) as client:
        for truth in synthetic_data.truths:
            detected = await detect_video(client, truth.video_id, sim_captions[truth.video_id], load_prompt("detect"))
            window = select_window(V4, frame_count=truth.frames, detected_frame=detected.frame)
            assert len(window) == 24 and window[0] <= truth.event_frame <= window[-1]
            trigger = select_window(CONFIGS["exp004"], frame_count=truth.frames, captions=sim_captions[truth.video_id])
            assert trigger[0] <= truth.event_frame <= trigger[-1]


# -- one pass: samples, vote, re-asks ----------------------------------------------------------------------


COUNTS = load_prompt("describe_counts")
TEXTS = load_prompt("describe_texts")


async def test_a_pass_sends_the_spec_sampling(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["counts"])])
    result = await run_pass(client, "counts", COUNTS, ["data:a", "data:b"], PLUS, VALUES)
    (call,) = client.calls
    assert (call["n"], call["temperature"], call["top_p"], call["top_k"]) == (4, 0.6, 0.95, -1)
    assert (call["repetition_penalty"], call["max_tokens"]) == (1.0, 8192)
    assert call["response_format"]["json_schema"]["name"] == "describe_counts"
    assert client.image_urls(call) == ["data:a", "data:b"]
    assert client.user_text() == COUNTS.render(**VALUES)
    assert result.reasks == [] and len(result.samples) == 4
    assert result.voted == {f: answer()[f] for f in PASS_FIELDS["counts"]}


async def test_votes_follow_the_rules(scripted_client) -> None:
    samples = [
        as_json(PASS_FIELDS["counts"], **{cols.START_FRAME: -1, cols.N_VEHICLES: 1, cols.LABEL: "Ego-car hits barrier"}),
        as_json(PASS_FIELDS["counts"], **{cols.START_FRAME: 9, cols.N_VEHICLES: 2, cols.SEVERITY: "2"}),
        as_json(PASS_FIELDS["counts"], **{cols.START_FRAME: 9, cols.N_VEHICLES: 5, cols.SEVERITY: "2"}),
        "```json\n" + as_json(PASS_FIELDS["counts"], **{cols.START_FRAME: "7", cols.N_VEHICLES: "4 cars"}) + "\n```",
    ]
    result = await run_pass(scripted_client([samples]), "counts", COUNTS, [], PLUS, VALUES)
    v = result.voted
    assert v[cols.START_FRAME] == 9  # majority ignoring -1
    assert v[cols.N_VEHICLES] == 3  # median of 1, 2, 4, 5 = 3.0
    # Severity "2" (canonicalised) twice against severity 1 twice: a tie, the smallest in sort order wins.
    assert v[cols.SEVERITY] == HIT
    assert v[cols.LABEL] == "ego-car hits barrier"


async def test_an_empty_voted_field_is_asked_again_with_a_rising_penalty(scripted_client) -> None:
    fields = PASS_FIELDS["counts"]
    client = scripted_client([
        as_json(fields, **{cols.LABEL: "fog"}),  # no sample gives an allowed label: the vote is empty
        as_json(fields, **{cols.LABEL: "banana"}),  # still no label
        "not json",
        json.dumps({cols.LABEL: "Animal on the road"}),  # a partial answer fills the gap
    ])
    result = await run_pass(client, "counts", COUNTS, [], PLUS, VALUES)
    assert [c["repetition_penalty"] for c in client.calls] == [1.0, 1.1, 1.2, 1.3]
    assert [c["n"] for c in client.calls] == [4, 1, 1, 1]
    assert result.voted[cols.LABEL] == "animal on the road"
    assert [(r["repetition_penalty"], r["missing"], r["filled"]) for r in result.reasks] == [
        (1.1, [cols.LABEL], []), (1.2, [cols.LABEL], []), (1.3, [cols.LABEL], [cols.LABEL]),
    ]
    assert all(c["messages"] == client.calls[0]["messages"] for c in client.calls)  # the same question


async def test_re_asks_stop_after_five_tries_capped_at_1_5(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["texts"], **{cols.CAPTION: ""})] + ["{}"] * 5)
    result = await run_pass(client, "texts", TEXTS, [], PLUS, VALUES)
    assert [c["repetition_penalty"] for c in client.calls] == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert result.voted[cols.CAPTION] == ""  # still empty: final_row will use the fallback sentence
    assert result.voted[cols.REASON] == answer()[cols.REASON]


async def test_a_failed_re_ask_keeps_the_vote_instead_of_failing_the_video(scripted_client) -> None:
    from coool.llm import ModelRequestError

    client = scripted_client([
        as_json(PASS_FIELDS["texts"], **{cols.CAPTION: ""}),
        ModelRequestError("describer: HTTP 503 from the server"),
    ])
    result = await run_pass(client, "texts", TEXTS, [], PLUS, VALUES)
    assert len(client.calls) == 2  # no more tries once the server failed for good
    assert result.voted[cols.REASON] == answer()[cols.REASON]
    assert result.reasks[0]["error"].startswith("describer: HTTP 503")


async def test_a_text_in_another_script_counts_as_empty(scripted_client) -> None:
    fields = PASS_FIELDS["texts"]
    client = scripted_client([
        as_json(fields, **{cols.CAPTION: "自车在车道内行驶。"}),
        as_json(fields, **{cols.CAPTION: "Ego-car follows a truck in the right lane."}),
    ])
    result = await run_pass(client, "texts", TEXTS, [], PLUS, VALUES)
    assert result.voted[cols.CAPTION] == "Ego-car follows a truck in the right lane."
    assert len(result.reasks) == 1


@pytest.mark.parametrize(
    ("changes", "penalties"),
    [
        ({}, [1.1, 1.2, 1.3, 1.4, 1.5]),
        ({"repetition_penalty": 1.3}, [1.4, 1.5, 1.5, 1.5, 1.5]),
        ({"reask_tries": 2}, [1.1, 1.2]),
        ({"reask_tries": 0}, []),
        ({"reask_penalty_step": 0.2, "reask_penalty_cap": 1.7, "reask_tries": 4}, [1.2, 1.4, 1.6, 1.7]),
    ],
)
async def test_the_re_ask_schedule_follows_the_configuration(scripted_client, changes: dict, penalties: list[float]) -> None:
    config = PLUS.model_copy(update=changes)
    assert reask_penalties(config) == penalties
    client = scripted_client(["{}"] * (1 + len(penalties)))
    await run_pass(client, "texts", TEXTS, [], config, VALUES)
    assert [c["repetition_penalty"] for c in client.calls[1:]] == penalties


async def test_nothing_parses(scripted_client) -> None:
    client = scripted_client(["Sorry, I can't help."] + ["no"] * 5)
    result = await run_pass(client, "counts", COUNTS, [], PLUS, VALUES)
    assert result.voted == {f: None for f in PASS_FIELDS["counts"]}
    assert [s["parsed"] for s in result.samples] == [False] * 4
    assert len(result.reasks) == 5


# -- the final row: never invalid -------------------------------------------------------------------------


def passes(reconcile: dict | None = None, texts: dict | None = None, counts: dict | None = None) -> dict[str, PassResult]:
    out = {}
    for name, voted in (("reconcile", reconcile), ("texts", texts), ("counts", counts)):
        if voted is not None:
            out[name] = PassResult(prompt=name, voted=voted)
    return out


def test_final_row_from_a_good_reconcile() -> None:
    notes: list[str] = []
    row = final_row(7, WINDOW, passes(answer()), notes, PLUS)
    assert row == {cols.VIDEO: 7, **answer(**{cols.START_FRAME: WINDOW[8]})}
    assert list(row) == list(cols.COLUMNS) and notes == [] and strict_problems(row) == []


@pytest.mark.parametrize(("index", "frame"), [(30, WINDOW[-1]), (24, WINDOW[-1]), (-3, WINDOW[0]), (10**12, WINDOW[-1])])
def test_an_index_outside_the_window_is_clamped(index: int, frame: int) -> None:
    notes: list[str] = []
    row = final_row(1, WINDOW, passes(answer(**{cols.START_FRAME: index})), notes, PLUS)
    assert row[cols.START_FRAME] == frame
    assert notes == [f"start index {index} is outside the 24-frame window: clamped"]


def test_index_minus_one_is_frame_1() -> None:
    notes: list[str] = []
    assert final_row(1, WINDOW, passes(answer(**{cols.START_FRAME: -1})), notes, PLUS)[cols.START_FRAME] == 1
    assert notes == []


def test_no_incident_forces_the_no_incident_values() -> None:
    hostile = answer(**{cols.DETECTION: -1, cols.SEVERITY: "5. Multiple vehicles collided with ego-car", cols.EGO: 1,
                        cols.N_PEDESTRIANS: 4, cols.N_VEHICLES: 9, cols.START_FRAME: 3})
    row = final_row(2, WINDOW, passes(hostile), [], PLUS)
    assert (row[cols.SEVERITY], row[cols.EGO], row[cols.LABEL]) == (cols.NO_CRASH, 0, cols.UNKNOWN_LABEL)
    assert [row[c] for c in cols.COUNT_COLUMNS] == [0, 0, 0, 0]
    assert row[cols.START_FRAME] == WINDOW[3]  # the start index is left alone
    assert strict_problems(row) == []


def test_a_hazard_gets_no_crash_and_a_hazard_label() -> None:
    row = final_row(2, WINDOW, passes(answer(**{cols.DETECTION: 0})), [], PLUS)
    assert (row[cols.SEVERITY], row[cols.LABEL]) == (cols.NO_CRASH, cols.UNKNOWN_LABEL)
    row = final_row(2, WINDOW, passes(answer(**{cols.DETECTION: 0, cols.LABEL: "animal on the road"})), [], PLUS)
    assert row[cols.LABEL] == "animal on the road"


def test_a_crash_never_says_no_crash() -> None:
    row = final_row(2, WINDOW, passes(answer(**{cols.SEVERITY: cols.NO_CRASH, cols.EGO: 0})), [], PLUS)
    assert row[cols.SEVERITY] == "6. One or Multiple vehicles collided but ego-car is fine"


def test_values_outside_the_allowed_ones_fall_through_to_the_next_pass() -> None:
    reconcile = answer(**{cols.LABEL: "debris on the road", cols.SEVERITY: "7. Apocalypse", cols.DETECTION: 4, cols.EGO: 3,
                          cols.N_ANIMALS: -2, cols.CAPTION: "自车在车道内行驶。", cols.REASON: "   "})
    texts = {cols.START_FRAME: 2, cols.CAPTION: "Ego-car waits at a red traffic light.", cols.REASON: None}
    counts = answer(**{cols.DETECTION: 1, cols.LABEL: "car hits barrier", cols.SEVERITY: "4", cols.EGO: 0, cols.N_ANIMALS: 1})
    counts = {f: counts[f] for f in PASS_FIELDS["counts"]}
    notes: list[str] = []
    row = final_row(3, WINDOW, passes(reconcile, texts, counts), notes, PLUS)
    assert row[cols.LABEL] == "car hits barrier"
    assert row[cols.SEVERITY] == "4. Other cars collided with person/car/object but ego-car is ok"
    assert (row[cols.DETECTION], row[cols.EGO], row[cols.N_ANIMALS]) == (1, 0, 1)
    assert row[cols.CAPTION] == "Ego-car waits at a red traffic light."
    assert row[cols.REASON] == cols.fallback_row(3)[cols.REASON]
    assert row[cols.START_FRAME] == WINDOW[8]
    assert notes == ["no usable 'Reason of Incident': the fallback sentence was used"]
    assert strict_problems(row) == []


def test_a_billion_is_a_valid_count() -> None:
    row = final_row(4, WINDOW, passes(answer(**{cols.N_VEHICLES: 1_000_000_000, cols.N_ANIMALS: 10**30})), [], PLUS)
    # A billion stays; a 30-digit count is capped like coerce_answer caps it (64-bit readers must hold it).
    assert (row[cols.N_VEHICLES], row[cols.N_ANIMALS]) == (1_000_000_000, MAX_COUNT)
    assert strict_problems(row) == []


def test_texts_become_one_clean_line() -> None:
    reconcile = answer(**{cols.CAPTION: "Ego-car waits\n  at the\tlight.\u200b", cols.REASON: "\x00\n \u200e"})
    texts = {cols.REASON: "A bus\r\nturns left."}
    row = final_row(4, WINDOW, passes(reconcile, texts), [], PLUS)
    assert (row[cols.CAPTION], row[cols.REASON]) == ("Ego-car waits at the light.", "A bus turns left.")
    assert strict_problems(row) == []


def test_nothing_from_any_pass_gives_the_fallback_row() -> None:
    notes: list[str] = []
    empty = {f: None for f in cols.ANSWER_FIELDS}
    row = final_row(9, WINDOW, passes(empty, {}, empty), notes, PLUS)
    assert row == cols.fallback_row(9)
    assert notes == [
        "no pass gave Incident Detection: treated as no incident (-1)",
        "no usable 'Caption Before Incident': the fallback sentence was used",
        "no usable 'Reason of Incident': the fallback sentence was used",
    ]
    assert final_row(9, [], {}, [], PLUS) == cols.fallback_row(9)


hostile_values = st.one_of(
    st.none(),
    st.integers(min_value=-10**15, max_value=10**15),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from([*cols.SEVERITIES, *cols.LABELS, "自车", "3", "-1", "unknown hazard", "  "]),
    st.lists(st.integers(), max_size=2),
)
hostile_answer = st.dictionaries(st.sampled_from(cols.ANSWER_FIELDS), hostile_values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reconcile=hostile_answer, texts=hostile_answer, counts=hostile_answer, size=st.integers(1, 30))
def test_final_row_is_never_invalid(reconcile: dict, texts: dict, counts: dict, size: int) -> None:
    row = final_row(5, list(range(1, 1 + 5 * size, 5)), passes(reconcile, texts, counts), [], PLUS)
    assert list(row) == list(cols.COLUMNS)
    assert strict_problems(row) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.one_of(st.text(max_size=40), st.builds(json.dumps, hostile_answer)), min_size=4, max_size=4))
async def test_hostile_answers_through_the_passes_give_a_valid_row(scripted_client, contents: list[str]) -> None:
    results = {}
    for name, prompt in (("counts", COUNTS), ("texts", TEXTS), ("reconcile", load_prompt("describe_reconcile"))):
        client = scripted_client([contents] + [contents[0]] * 5)
        results[name] = await run_pass(client, name, prompt, [], PLUS, VALUES | {"counts_json": "", "texts_json": ""})
    assert strict_problems(final_row(5, WINDOW, results, [], PLUS)) == []


# -- the whole video -----------------------------------------------------------------------------------------


def _full_answer(call: dict) -> str:
    return as_json()


async def test_describe_video_prompts_images_and_extras(scripted_client, tmp_path: Path) -> None:
    config = CONFIGS["v6-counts"].model_copy(update={name: True for name in SWITCHES})
    prompts = DescribePromptSet.load(config)
    window = [5, 10, 15]
    images = {f: tmp_path / f"{f:06d}.png" for f in window}
    client = scripted_client(responder=_full_answer)
    result = await describe_video(client, config, prompts, 12, window, images)
    snippet = load_snippet("ignore_image_text", variant="plus").strip()
    assert [c["response_format"]["json_schema"]["name"] for c in client.calls] == [
        "describe_counts", "describe_texts", "describe_reconcile",
    ]
    for i, call in enumerate(client.calls):
        assert client.image_urls(call) == [images[f].resolve().as_uri() for f in window]
        assert client.user_text(i).endswith(snippet)
        assert "The 3 images above" in client.user_text(i)
    reconcile_text = client.user_text(2)
    assert json.dumps(result.passes["counts"].voted, ensure_ascii=False, indent=1) in reconcile_text
    assert json.dumps(result.passes["texts"].voted, ensure_ascii=False, indent=1) in reconcile_text
    assert result.row == {cols.VIDEO: 12, **answer(**{cols.START_FRAME: 15})}  # index 8 clamped to the last image
    assert result.notes == ["start index 8 is outside the 3-frame window: clamped"]
    saved = result.as_dict()
    assert saved["frame"] == 15 and saved["window"] == window and set(saved["passes"]) == {"counts", "texts", "reconcile"}


def test_the_prompt_set_hash_follows_the_extras() -> None:
    v4, v6 = DescribePromptSet.load(V4), DescribePromptSet.load(CONFIGS["v6-counts"])
    assert v4.extra == "" and v6.extra == load_snippet("ignore_image_text")
    assert v4.counts == v6.counts and v4.sha256 != v6.sha256
    assert DescribePromptSet.load(CONFIGS["v3-prompt2"]).texts.name == "describe_texts_v2"


async def test_describe_unit_against_the_simulator_is_resumable(sim, role, stage1, sim_captions, synthetic_data, tmp_path: Path) -> None:
    truth = synthetic_data.truths[1]
    frames_dir = stage1.copy(truth.video_id, tmp_path / "frames")
    out = tmp_path / "describe" / "v4"
    async with ChatClient("describer", role(sim)) as client:
        detected = await detect_video(client, truth.video_id, sim_captions[truth.video_id], load_prompt("detect"))
        first = await describe_unit(client, truth.video_id, V4, DescribePromptSet.load(V4), frames_dir, video_json(out, truth.video_id),
                                    detected_frame=detected.frame)
        assert first["cached"] is False
        assert first["window"] == select_window(V4, frame_count=120, detected_frame=detected.frame)
        assert abs(first["frame"] - truth.event_frame) <= 10
        assert sorted(p.name for p in (frames_dir / "raw").iterdir()) == [f"{f:06d}.png" for f in first["window"]]
        saved = json.loads((out / f"{truth.video_id}.json").read_text())
        assert saved["row"][cols.DETECTION] == 1 and saved["row"][cols.LABEL] == "ego-car hits barrier"
        assert strict_problems(saved["row"]) == []
        sim.reset()
        again = await describe_unit(client, truth.video_id, V4, DescribePromptSet.load(V4), frames_dir, video_json(out, truth.video_id),
                                    detected_frame=detected.frame)
        assert again == {"video": truth.video_id, "frame": first["frame"], "window": first["window"], "cached": True}
        assert sim.stats()["received"] == 0
        # Another detected frame is another window: described again.
        moved = await describe_unit(client, truth.video_id, V4, DescribePromptSet.load(V4), frames_dir, video_json(out, truth.video_id),
                                    detected_frame=detected.frame - 40)
        assert moved["cached"] is False and sim.stats()["received"] >= 3


async def test_describe_unit_caption_trigger(sim, role, stage1, sim_captions, synthetic_data, tmp_path: Path) -> None:
    truth = synthetic_data.truths[0]
    frames_dir = stage1.copy(truth.video_id, tmp_path / "frames")
    captions_path = save_captions(
        CaptionResult(truth.video_id, sim_captions[truth.video_id]), caption_files(tmp_path / "captions", truth.video_id)
    )
    config = CONFIGS["exp004"]
    async with ChatClient("describer", role(sim)) as client:
        done = await describe_unit(client, truth.video_id, config, DescribePromptSet.load(config), frames_dir,
                                   video_json(tmp_path / "out", truth.video_id), captions_path=captions_path)
    assert done["window"] == list(range(1, 120, 10))  # 12 caption rows, N = 12: every row
    assert abs(done["frame"] - truth.event_frame) <= 10


# -- the "add heatmap" configuration: stacked frames ------------------------------------------------------


HEATMAP = CONFIGS["v4-heatmap"]


def test_v4_heatmap_is_v4_shown_stacked_frames() -> None:
    assert HEATMAP.frames == "stacked" and V4.frames == "raw"
    assert HEATMAP.model_dump(exclude={"name", "frames"}) == V4.model_dump(exclude={"name", "frames"})
    lead = load_snippet("stacked_frames").strip()
    stacked, raw = DescribePromptSet.load(HEATMAP), DescribePromptSet.load(V4)
    for name in ("counts", "texts", "reconcile"):
        assert getattr(stacked, name).text == f"{lead}\n\n{getattr(raw, name).text}"
    assert stacked.sha256 != raw.sha256  # the cache keys tell the two apart
    # Under plus prompts the lead opens coool's prompts the same way.
    plus = DescribePromptSet.load(HEATMAP.model_copy(update={"plus_prompts": True}))
    assert plus.counts.text.startswith(lead + "\n\n") and "$n_frames" in plus.counts.text


def _image_parts(body: dict) -> list[str]:
    return [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]


def _decoded(url: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)


async def test_v4_heatmap_describes_from_stacked_frames_end_to_end(sim, role, stage1, synthetic_data, tmp_path: Path) -> None:
    """On the simulated server: every describe request shows the window's stacked frames (heatmap
    above video, the caption stage's stacking), the prompts open with what the halves are, and a
    valid row comes back; v4 on the same window shows the raw frames."""
    truth = synthetic_data.truths[0]
    frames_dir = stage1.copy(truth.video_id, tmp_path / "frames")
    detected = truth.event_frame + 2
    async with ChatClient("describer", role(sim)) as client:
        done = await describe_unit(client, truth.video_id, HEATMAP, DescribePromptSet.load(HEATMAP), frames_dir,
                                   video_json(tmp_path / "heatmap", truth.video_id), detected_frame=detected)
        logged = sim.requests()
        sim.reset()
        await describe_unit(client, truth.video_id, V4, DescribePromptSet.load(V4), frames_dir, video_json(tmp_path / "raw", truth.video_id),
                            detected_frame=detected)
        raw_logged = sim.requests()
    window = select_window(HEATMAP, frame_count=truth.frames, detected_frame=detected)
    assert done["window"] == window and not done["cached"]
    assert sorted(p.name for p in (frames_dir / "stacked-window").iterdir()) == [f"{f:06d}.png" for f in window]
    assert len(logged) >= 3 and {r["task"] for r in logged} == {"describe_counts", "describe_texts", "describe_reconcile"}
    lead = load_snippet("stacked_frames").strip()
    heat_h, video_h = synthetic_data.truths[0].heatmap_height, synthetic_data.truths[0].height
    caption_frames = stage1.manifests[truth.video_id].paths(stage1.dir(truth.video_id))
    for request in logged:
        assert request["body"]["messages"][0]["content"][0]["text"].startswith(lead)
        images = [_decoded(u) for u in _image_parts(request["body"])]
        assert [read_stamp(i) for i in images] == window  # the window's frames, earliest first
        assert all(i.shape[0] == heat_h + video_h for i in images)
        for frame, image in zip(window, images):
            if frame in caption_frames:  # the same stacking as the caption stage's image of that frame
                assert np.array_equal(image, cv2.imread(str(caption_frames[frame])))
    for request in raw_logged:
        images = [_decoded(u) for u in _image_parts(request["body"])]
        assert [read_stamp(i) for i in images] == window and all(i.shape[0] == video_h for i in images)
        assert not request["body"]["messages"][0]["content"][0]["text"].startswith(lead)
    row = json.loads((tmp_path / "heatmap" / f"{truth.video_id}.json").read_text())["row"]
    assert strict_problems(row) == []
    assert row[cols.DETECTION] == 1 and abs(done["frame"] - truth.event_frame) <= 10


async def test_a_recipe_runs_v4_heatmap_to_a_valid_submission(sim, synthetic_data, tmp_path: Path) -> None:
    """v4-heatmap named in a recipe: the whole run (stages 1-4) on the simulated server ends in a valid
    submission, and every describe request showed stacked frames."""
    from coool.recipe import Recipe
    from coool.run import Run, run_plain
    from coool.settings import ROLES, RoleSettings, Settings
    from coool.submission import read_submission

    recipe = Recipe(name="heatmap", caption={"every": 10}, describe=["v4-heatmap"], final="v4-heatmap")
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    run = Run(Settings(results_dir=tmp_path / "results", **roles), recipe)
    outcome = await run_plain(run, synthetic_data.videos, synthetic_data.heatmaps, concurrent=False)
    assert (outcome["videos"], outcome["failures"]) == (3, 0)
    submission = read_submission(tmp_path / "results" / "submission.csv")
    assert validate(submission, expected_videos=[0, 1, 2], strict=True) == []
    described = [r for r in sim.requests() if r["task"] and r["task"].startswith("describe_")]
    assert len(described) >= 3 * 3
    heights = {t.height + t.heatmap_height for t in synthetic_data.truths}
    for request in described:
        assert {_decoded(u).shape[0] for u in _image_parts(request["body"])} <= heights
    for truth in synthetic_data.truths:
        assert (run.ws.frames_dir(truth.video_id) / "stacked-window").is_dir()


def test_stacked_window_frames_follow_the_heatmap_length_rule(synthetic_data, tmp_path: Path) -> None:
    """A heatmap shorter than its video: frames past its end get its last frame on top."""
    truth = synthetic_data.truths[2]
    short = tmp_path / "short.mp4"
    frames = dict(read_frames(synthetic_data.heatmap(truth.video_id), range(1, 61)))
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), 30, (truth.heatmap_width, truth.heatmap_height))
    for n in range(1, 61):
        writer.write(frames[n])
    writer.release()
    wanted = [5, 59, 60, 61, 100]
    paths = extract_stacked_frames(synthetic_data.video(truth.video_id), short, wanted, tmp_path / "out")
    assert list(paths) == wanted
    heat = dict(read_frames(short, [5, 59, 60]))
    video = dict(read_frames(synthetic_data.video(truth.video_id), wanted))
    for n in wanted:
        image = cv2.imread(str(paths[n]))
        assert np.array_equal(image, stack(heat[min(n, 60)], video[n])), n
    # Already there: nothing is decoded again (a missing video would fail otherwise).
    again = extract_stacked_frames(tmp_path / "gone.mp4", tmp_path / "gone.mp4", wanted, tmp_path / "out")
    assert again == paths


async def test_describe_unit_errors(scripted_client, stage1, tmp_path: Path) -> None:
    prompts = DescribePromptSet.load(V4)
    with pytest.raises(StageError, match="no frames manifest"):
        await describe_unit(scripted_client([]), 0, V4, prompts, tmp_path / "none", video_json(tmp_path / "out", 0), detected_frame=5)
    with pytest.raises(StageError, match="video 0: v4: the detected-frame window needs the stage-3 frame"):
        await describe_unit(scripted_client([]), 0, V4, prompts, stage1.dir(0), video_json(tmp_path / "out", 0))
    config = CONFIGS["exp004"]
    with pytest.raises(StageError, match="caption-trigger window needs the video's caption table"):
        await describe_unit(scripted_client([]), 0, config, DescribePromptSet.load(config), stage1.dir(0), video_json(tmp_path / "out", 0),
                            captions_path=tmp_path / "missing.csv")


def test_a_custom_configuration(tmp_path: Path) -> None:
    config = DescribeConfig(name="tiny", window="detected-frame", pre=1, post=1, step=3, n=2)
    assert select_window(config, frame_count=50, detected_frame=20) == [17, 20, 23]


# -- faithful by default (issue #14): the original's request layout, cleaning, vote and re-asks -----------------


RECONCILE = load_prompt("describe_reconcile")


async def test_faithful_request_text_first_json_object_original_sampling(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["counts"])])
    await run_pass(client, "counts", COUNTS, ["data:a", "data:b"], V4, VALUES)
    (call,) = client.calls
    content = call["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "image_url"]
    assert content[0]["text"] == COUNTS.render(**VALUES)
    assert call["response_format"] == {"type": "json_object"}
    assert (call["n"], call["temperature"], call["top_p"], call["top_k"]) == (4, 0.6, 0.95, -1)
    assert (call["repetition_penalty"], call["max_tokens"]) == (1.0, 8192)


async def test_faithful_unparsable_samples_vote_as_zeros_and_blanks(scripted_client) -> None:
    fields = PASS_FIELDS["counts"]
    good = as_json(fields, **{cols.N_VEHICLES: 3})
    single = as_json(fields, **{cols.N_VEHICLES: 1, cols.LABEL: "car hits barrier"})
    client = scripted_client([["not json", "sorry", good, good], single])
    result = await run_pass(client, "counts", COUNTS, [], V4, VALUES)
    # The two broken samples vote "" for severity and label: a 2-2 tie that "" wins (it sorts first),
    # so the pass is asked again with one sample, whose answer replaces the whole result.
    assert [s["parsed"] for s in result.samples] == [True] * 4
    assert [(c["n"], c["repetition_penalty"]) for c in client.calls] == [(4, 1.0), (1, 1.1)]
    assert result.voted == {f: json.loads(single)[f] for f in fields}


async def test_faithful_missing_numbers_are_zero_and_texts_from_the_first_sample(scripted_client) -> None:
    no_counts = {f: answer()[f] for f in PASS_FIELDS["counts"] if f not in cols.COUNT_COLUMNS}
    counts = await run_pass(scripted_client([json.dumps(no_counts)]), "counts", COUNTS, [], V4, VALUES)
    assert [counts.voted[c] for c in cols.COUNT_COLUMNS] == [0, 0, 0, 0]
    texts = [as_json(PASS_FIELDS["texts"], **{cols.CAPTION: f"Ego-car drives past parked car number {i}."}) for i in range(4)]
    result = await run_pass(scripted_client([texts]), "texts", TEXTS, [], V4, VALUES)
    assert result.voted[cols.CAPTION] == "Ego-car drives past parked car number 0."  # every sample scores 0: the first


async def test_faithful_reconcile_reasks_full_n_then_single(scripted_client) -> None:
    blank = as_json(cols.ANSWER_FIELDS, **{cols.REASON: ""})
    client = scripted_client([blank] * 11)
    result = await run_pass(client, "reconcile", RECONCILE, [], V4, VALUES, context="{}")
    assert [(c["n"], c["repetition_penalty"]) for c in client.calls] == [
        (4, 1.0), (4, 1.1), (4, 1.2), (4, 1.3), (4, 1.4), (4, 1.5), (1, 1.1), (1, 1.2), (1, 1.3), (1, 1.4), (1, 1.5),
    ]
    assert result.voted[cols.REASON] == ""  # still blank after every try: the guard in final_row acts
    assert client.user_text().endswith("\n\n{}")


async def test_faithful_counts_and_texts_reask_stops_once_filled(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["texts"], **{cols.CAPTION: ""}), "{}", as_json(PASS_FIELDS["texts"])])
    result = await run_pass(client, "texts", TEXTS, [], V4, VALUES)
    assert [(c["n"], c["repetition_penalty"]) for c in client.calls] == [(4, 1.0), (1, 1.1), (1, 1.2)]
    assert result.voted[cols.CAPTION] == answer()[cols.CAPTION]


async def test_faithful_reconcile_prompt_is_instructions_blank_line_and_the_two_results(scripted_client, tmp_path: Path) -> None:
    window = [5, 10, 15]
    images = {f: tmp_path / f"{f:06d}.png" for f in window}
    client = scripted_client(responder=_full_answer)
    result = await describe_video(client, V4, DescribePromptSet.load(V4), 3, window, images)
    counts, texts = result.passes["counts"].voted, result.passes["texts"].voted
    expected = json.dumps(
        {"First prediction (Counts JSON)": counts, "Second prediction (Texts JSON)": texts}, ensure_ascii=False
    )
    assert client.user_text(2) == RECONCILE.render(**DescribePromptSet.load(V4).values(3)) + "\n\n" + expected
    assert list(counts)[:4] == [cols.DETECTION, cols.EGO, cols.SEVERITY, cols.LABEL]  # the original's key order
    assert result.row[cols.START_FRAME] == 15  # index 8 of 3 frames: the guard clamps (the original crashes)


def test_faithful_prompts_v3_prompt2_and_the_v6_snippet_places() -> None:
    assert DescribePromptSet.load(CONFIGS["v3-prompt2"]).counts.name == "describe_counts_v2"
    v6 = DescribePromptSet.load(CONFIGS["v6-counts"])
    snippet = load_snippet("ignore_image_text").strip()
    values = v6.values(24)
    rendered = [p.render(**values) for p in (v6.counts, v6.texts, v6.reconcile)]
    assert [text.count(snippet) for text in rendered] == [2, 1, 1]  # the original's four places
    plain = DescribePromptSet.load(V4)
    assert all(snippet not in p.render(**plain.values(24)) for p in (plain.counts, plain.texts, plain.reconcile))


def test_faithful_prompts_carry_none_of_coools_additions() -> None:
    for name in ("describe_counts", "describe_counts_v2", "describe_texts", "describe_texts_v2",
                 "describe_reconcile", "describe_reconcile_v2"):
        text = load_prompt(name).text
        assert "several vehicles hit" not in text.lower()
        assert "$hazard_labels" not in text  # the original lists its own hazard labels
        assert load_prompt(name, variant="plus").text != text


def test_faithful_final_row_keeps_what_the_original_writes() -> None:
    notes: list[str] = []
    row = final_row(1, WINDOW, passes(answer(**{cols.START_FRAME: -2, cols.DETECTION: -1, cols.CAPTION: "Ego-car  waits."})), notes)
    assert row[cols.START_FRAME] == WINDOW[-2]  # Python's index from the end, as the original
    assert row[cols.DETECTION] == -1 and row[cols.SEVERITY] == HIT and row[cols.EGO] == 1  # no consistency rules
    assert row[cols.CAPTION] == "Ego-car  waits." and notes == []
    # Guards: an index past either end is clamped; an invalid severity falls through to the next pass.
    assert final_row(1, WINDOW, passes(answer(**{cols.START_FRAME: -30})), [])[cols.START_FRAME] == WINDOW[0]
    row = final_row(1, WINDOW, passes(answer(**{cols.SEVERITY: ""}), None, answer(**{cols.SEVERITY: "2"})), [])
    assert row[cols.SEVERITY] == "2. Ego-car collided and could not continue moving"


# -- each switch changes exactly what it says ------------------------------------------------------------------


def _on(name: str, base: DescribeConfig = V4) -> DescribeConfig:
    return base.model_copy(update={name: True})


async def test_switch_json_schema(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["counts"])] * 2)
    await run_pass(client, "counts", COUNTS, [], V4, VALUES)
    await run_pass(client, "counts", COUNTS, [], _on("json_schema"), VALUES)
    assert client.calls[0]["response_format"] == {"type": "json_object"}
    assert client.calls[1]["response_format"]["json_schema"]["name"] == "describe_counts"
    assert client.calls[0]["messages"] == client.calls[1]["messages"]


async def test_switch_images_first(scripted_client) -> None:
    client = scripted_client([as_json(PASS_FIELDS["counts"])] * 2)
    await run_pass(client, "counts", COUNTS, ["data:a"], V4, VALUES)
    await run_pass(client, "counts", COUNTS, ["data:a"], _on("images_first"), VALUES)
    first, second = (c["messages"][0]["content"] for c in client.calls)
    assert [p["type"] for p in first] == ["text", "image_url"] and [p["type"] for p in second] == ["image_url", "text"]
    assert first[0] == second[1] and client.calls[0]["response_format"] == client.calls[1]["response_format"]


@pytest.mark.parametrize(
    ("switch", "content", "faithful", "switched"),
    [
        ("lenient_parsing", "<think>{}</think>" + as_json(PASS_FIELDS["counts"]), 0, 2),
        ("lenient_parsing", as_json(PASS_FIELDS["counts"], **{cols.N_VEHICLES: "2.7"}), 2, 3),
    ],
)
def test_switch_lenient_parsing(switch: str, content: str, faithful: int, switched: int) -> None:
    from coool.describe import clean_answer

    assert clean_answer(content, PASS_FIELDS["counts"], V4)[cols.N_VEHICLES] == faithful
    assert clean_answer(content, PASS_FIELDS["counts"], _on(switch))[cols.N_VEHICLES] == switched


def test_switch_drop_unparsable() -> None:
    from coool.describe import clean_answer

    assert clean_answer("no", PASS_FIELDS["texts"], V4) == {cols.START_FRAME: 0, cols.CAPTION: "", cols.REASON: ""}
    assert clean_answer("no", PASS_FIELDS["texts"], _on("drop_unparsable")) is None
    assert clean_answer(as_json(PASS_FIELDS["texts"]), PASS_FIELDS["texts"], _on("drop_unparsable")) == \
        clean_answer(as_json(PASS_FIELDS["texts"]), PASS_FIELDS["texts"], V4)


def test_switch_blank_as_absent() -> None:
    from coool.describe import clean_answer, vote

    fields = PASS_FIELDS["counts"]
    samples = [json.dumps({cols.LABEL: ""}), json.dumps({cols.LABEL: ""}), as_json(fields), as_json(fields)]
    for config, label, vehicles in ((V4, "", 1), (_on("blank_as_absent"), answer()[cols.LABEL], 2)):
        answers = [clean_answer(c, fields, config) for c in samples]
        voted = vote(answers, fields, config)
        assert voted[cols.LABEL] == label  # the blank wins the tie only in the original
        assert voted[cols.N_VEHICLES] == vehicles  # a missing count votes 0 only in the original


def test_switch_canonical_values() -> None:
    from coool.describe import clean_answer

    content = as_json(PASS_FIELDS["counts"], **{cols.SEVERITY: "2", cols.LABEL: "Ego-car hits barrier"})
    faithful = clean_answer(content, PASS_FIELDS["counts"], V4)
    switched = clean_answer(content, PASS_FIELDS["counts"], _on("canonical_values"))
    assert (faithful[cols.SEVERITY], faithful[cols.LABEL]) == ("2", "Ego-car hits barrier")
    assert (switched[cols.SEVERITY], switched[cols.LABEL]) == ("2. Ego-car collided and could not continue moving",
                                                         "ego-car hits barrier")
    assert {f: v for f, v in faithful.items() if f not in (cols.SEVERITY, cols.LABEL)} == \
        {f: v for f, v in switched.items() if f not in (cols.SEVERITY, cols.LABEL)}


async def test_switch_english_reask(scripted_client) -> None:
    chinese = as_json(PASS_FIELDS["texts"], **{cols.CAPTION: "自车在车道内行驶。"})
    faithful = await run_pass(scripted_client([chinese]), "texts", TEXTS, [], V4, VALUES)
    assert faithful.voted[cols.CAPTION] == "自车在车道内行驶。" and faithful.reasks == []
    client = scripted_client([chinese, as_json(PASS_FIELDS["texts"])])
    switched = await run_pass(client, "texts", TEXTS, [], _on("english_reask"), VALUES)
    assert switched.voted[cols.CAPTION] == answer()[cols.CAPTION] and len(switched.reasks) == 1


async def test_switch_merge_reasks(scripted_client) -> None:
    fields = PASS_FIELDS["counts"]
    script = [as_json(fields, **{cols.LABEL: ""}), json.dumps({cols.LABEL: "car hits barrier", cols.SEVERITY: HIT})]
    faithful = await run_pass(scripted_client(list(script)), "counts", COUNTS, [], V4, VALUES)
    merged = await run_pass(scripted_client(list(script)), "counts", COUNTS, [], _on("merge_reasks"), VALUES)
    # The original replaces the result with the single answer (its missing fields 0 and blank)...
    assert faithful.voted[cols.LABEL] == "car hits barrier"
    assert (faithful.voted[cols.N_VEHICLES], faithful.voted[cols.START_FRAME]) == (0, 0)
    # ...the switch only fills the blank field and keeps the vote.
    assert merged.voted == {f: answer(**{cols.LABEL: "car hits barrier"})[f] for f in fields}
    # No full-n round for the reconcile pass under the switch.
    client = scripted_client([as_json(cols.ANSWER_FIELDS, **{cols.REASON: ""})] * 6)
    await run_pass(client, "reconcile", RECONCILE, [], _on("merge_reasks"), VALUES, context="{}")
    assert [c["n"] for c in client.calls] == [4, 1, 1, 1, 1, 1]


def test_switch_consistency_rules() -> None:
    hostile = answer(**{cols.DETECTION: -1, cols.N_VEHICLES: 3})
    faithful = final_row(2, WINDOW, passes(hostile), [])
    switched = final_row(2, WINDOW, passes(hostile), [], _on("consistency_rules"))
    assert (faithful[cols.SEVERITY], faithful[cols.N_VEHICLES]) == (HIT, 3)
    assert (switched[cols.SEVERITY], switched[cols.N_VEHICLES], switched[cols.EGO]) == (cols.NO_CRASH, 0, 0)
    assert faithful[cols.CAPTION] == switched[cols.CAPTION] and faithful[cols.START_FRAME] == switched[cols.START_FRAME]


def test_switch_clean_texts() -> None:
    reconcile = answer(**{cols.CAPTION: "Ego-car waits\n  at the light."})
    assert final_row(4, WINDOW, passes(reconcile), [])[cols.CAPTION] == "Ego-car waits\n  at the light."
    assert final_row(4, WINDOW, passes(reconcile), [], _on("clean_texts"))[cols.CAPTION] == "Ego-car waits at the light."


def test_switch_clamp_start_index() -> None:
    reconcile = answer(**{cols.START_FRAME: -3})
    assert final_row(4, WINDOW, passes(reconcile), [])[cols.START_FRAME] == WINDOW[-3]
    assert final_row(4, WINDOW, passes(reconcile), [], _on("clamp_start_index"))[cols.START_FRAME] == WINDOW[0]


def test_switch_plus_prompts() -> None:
    faithful, plus = DescribePromptSet.load(V4), DescribePromptSet.load(_on("plus_prompts"))
    for name in ("counts", "texts", "reconcile"):
        a, b = getattr(faithful, name), getattr(plus, name)
        assert a.name == b.name and a.text != b.text and a.schema == b.schema
        assert b.source is not None and b.source.parent.name == "plus"
    assert "several vehicles hit the ego-car: 5" in plus.reconcile.text


def test_switch_lenient_trigger(tmp_path: Path) -> None:
    # A caption row whose Incident_Detection the captioner left out: the original never triggers on it.
    rows = [{c: "" for c in TABLE_COLUMNS} | {"frame": f, "image": "x.png", cols.HAZARD_CLUES: "none", cols.CAP_DETECTION: -1}
            for f in range(1, 200, 10)]
    rows[3][cols.CAP_DETECTION] = ""
    rows[12][cols.CAP_DETECTION] = 1
    pd.DataFrame(rows).to_csv(tmp_path / "0.csv", index=False)
    from coool.captions import load_captions
    from coool.describe import select_window

    captions = load_captions(tmp_path / "0.csv", coerce=False)
    config = DescribeConfig(name="x", window="caption-trigger", pre=1, post=1)
    assert select_window(config, frame_count=200, captions=captions) == [111, 121, 131]
    lenient = config.model_copy(update={"lenient_trigger": True})
    assert select_window(lenient, frame_count=200, captions=captions) == [21, 31, 41]


def test_every_describe_switch_has_a_test_here() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    assert [name for name in SWITCHES if f"def test_switch_{name}" not in source] == []
