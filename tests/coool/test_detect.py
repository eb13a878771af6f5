"""Stage 3: the incident frame from the caption table (markdown, strict parse, vote, retries, clamps)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from coool import schema as cols
from coool.captions import TABLE_COLUMNS, CaptionResult, save_captions
from coool.detect import (
    ORIGINAL_COLUMNS,
    caption_markdown,
    detect_unit,
    detect_video,
    original_markdown,
    parse_frame,
    read_detections,
    write_detections,
)
from coool.llm import ChatClient, ModelRequestError
from coool.params import DetectParams
from coool.prompts import load_prompt
from coool.stage import StageError
from coool.workspace import caption_files, video_json

DETECT = load_prompt("detect")
DETECT_PLUS = load_prompt("detect", variant="plus")
# The decision tests script one request of 12 samples: coool's batched requests (the decision is the same).
BATCHED = DetectParams(batched_samples=True)
PLUS = DetectParams(json_schema=True, plus_prompts=True, batched_samples=True, compact_table=True)


def caption_row(frame: int, detection: int = -1, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "frame": frame, "image": f"/frames/{frame:06d}.png", cols.SCENE: "road", cols.HAZARD_CLUES: "none",
        cols.GAZE: "road", cols.CAP_BICYCLISTS: 0, cols.CAP_ANIMALS: 0, cols.CAP_PEDESTRIANS: 0, cols.CAP_VEHICLES: 1,
        cols.CAP_DETECTION: detection, cols.CAP_SEVERITY: cols.NO_CRASH, cols.CAP_EGO: 0, cols.CAP_LABEL: cols.UNKNOWN_LABEL,
    }
    row.update(changes)
    return row


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame([caption_row(n, 1 if n >= 41 else -1) for n in range(1, 120, 10)], columns=list(TABLE_COLUMNS))


class Sleeps:
    """A no-op ``sleep`` that records its delays."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# -- the table and the parse -------------------------------------------------------------------------


def test_caption_markdown_by_hand() -> None:
    frame = pd.DataFrame([caption_row(11, 0, **{cols.SCENE: "a | b\nc ", cols.CAP_VEHICLES: 2, cols.CAP_PEDESTRIANS: 1})])
    assert caption_markdown(frame).splitlines() == [
        "| frame | Scene_Description | Hazard_Clues | Gaze_Focus | Number_of_Bicyclists_Scooters | Number_of_Animals"
        " | Number_of_Pedestrians | Number_of_Vehicles_excluding_ego | Incident_Detection | Crash_Severity"
        " | Ego_car_involved | Label |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| 11 | a / b c | none | road | 0 | 0 | 1 | 2 | 0 | 0. No Crash | 0 | unknown |",
    ]


def test_caption_markdown_leaves_out_the_image_path(table: pd.DataFrame) -> None:
    text = caption_markdown(table)
    assert "/frames/" not in text and "image" not in text.splitlines()[0]
    assert len(text.splitlines()) == 2 + len(table)


@pytest.mark.parametrize(
    ("content", "frame"),
    [
        ('{"frame": 41}', 41),
        ('  {"frame": -1}\n', -1),
        ('{"frame": 0}', 0),
        ('{"frame": "41"}', None),
        ('{"frame": 41.0}', None),
        ('{"frame": true}', None),
        ('{"frame": null}', None),
        ('{"start": 41}', None),
        ('```json\n{"frame": 41}\n```', None),  # strict: a fenced answer is not parsed
        ('The frame is {"frame": 41}', None),
        ("[41]", None),
        ("", None),
    ],
)
def test_parse_frame_is_strict(content: str, frame: int | None) -> None:
    assert parse_frame(content) == frame


def test_the_original_parse_takes_booleans_as_integers() -> None:
    # The original keeps a sample when isinstance(frame, int), which a Python bool is.
    assert parse_frame('{"frame": true}', original=True) == 1
    assert parse_frame('{"frame": false}', original=True) == 0
    assert parse_frame('{"frame": "41"}', original=True) is None
    assert parse_frame('{"frame": 41}', original=True) == 41


def test_original_markdown_is_pandas_rendering_of_the_saved_table(table: pd.DataFrame, tmp_path: Path) -> None:
    path = save_captions(CaptionResult(0, table), caption_files(tmp_path, 0))
    lines = original_markdown(table).splitlines()
    # The same from the table as saved and read back as text (what detect_unit does).
    from coool.captions import load_captions

    assert original_markdown(load_captions(path, coerce=False)).splitlines() == lines
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == list(ORIGINAL_COLUMNS) and header[1] == "path"  # the original's CSV: frame, path, fields
    assert len(lines) == 2 + len(table)
    assert "/frames/000041.png" in lines[2 + 4]
    assert lines == pd.read_csv(path).rename(columns={"image": "path"})[list(ORIGINAL_COLUMNS)].to_markdown(index=False).splitlines()


# -- against the simulated detector ----------------------------------------------------------------


async def test_detection_lands_within_10_frames_of_the_event(sim, role, sim_captions, synthetic_data) -> None:
    async with ChatClient("detector", role(sim)) as client:
        for truth in synthetic_data.truths:
            result = await detect_video(client, truth.video_id, sim_captions[truth.video_id], DETECT, last_frame=120)
            assert truth.event_frame <= result.frame <= truth.event_frame + 10, (truth.video_id, result.votes)
            assert result.attempts == 1 and len(result.votes) == 12 and result.notes == []
            assert all(s["reasoning"] for s in result.samples)  # gpt-oss reasons: kept beside the answer
    assert sim.stats()["received"] == 3 * 12  # as the original: one request per sample


async def test_the_original_request(scripted_client, table: pd.DataFrame) -> None:
    client = scripted_client(['{"frame": 41}'] * 12)
    result = await detect_video(client, 0, table, DETECT)
    markdown = original_markdown(table)
    assert len(client.calls) == 12 and result.votes == [41] * 12 and result.requests == 12
    for i, call in enumerate(client.calls):
        assert call["messages"][0] == {"role": "system", "content": "Reasoning: high"}
        text = client.user_text(i)
        assert text == DETECT.render(table=markdown)
        assert text.startswith('Answer with valid JSON only, in the form {"frame": int}.\n\n')
        assert text.endswith("follow:\n\n" + markdown) and "| path " in markdown
        sampling = {k: call[k] for k in ("n", "temperature", "top_p", "max_tokens", "top_k", "repetition_penalty")}
        assert sampling == {"n": 1, "temperature": 0.6, "top_p": 0.95, "max_tokens": 512, "top_k": 0, "repetition_penalty": 1.0}
        assert call["response_format"] is None and "seed" not in call


async def test_the_request_with_coools_switches(scripted_client, table: pd.DataFrame) -> None:
    client = scripted_client(['{"frame": 41}'])
    await detect_video(client, 0, table, DETECT_PLUS, PLUS)
    (call,) = client.calls
    assert call["messages"][0] == {"role": "system", "content": "Reasoning: high"}
    assert client.user_text() == DETECT_PLUS.render(table=caption_markdown(table))
    assert "Single frames can be wrong" in client.user_text()
    assert (call["n"], call["temperature"], call["top_p"], call["max_tokens"]) == (12, 0.6, 0.95, 512)
    assert call["response_format"]["json_schema"]["name"] == "incident_frame"


@pytest.mark.parametrize("switch", ["json_schema", "batched_samples"])
async def test_each_request_switch_changes_only_its_part(scripted_client, table: pd.DataFrame, switch: str) -> None:
    original = scripted_client(['{"frame": 41}'] * 12)
    await detect_video(original, 0, table, DETECT)
    params = DetectParams(**{switch: True})
    changed = scripted_client(['{"frame": 41}'] * (1 if switch == "batched_samples" else 12))
    await detect_video(changed, 0, table, DETECT, params)
    before, after = original.calls[0], changed.calls[0]
    differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert differing == ({"n"} if switch == "batched_samples" else {"response_format"})


# -- the decision ----------------------------------------------------------------------------------------


async def test_a_video_is_asked_again_until_a_sample_parses(scripted_client, table: pd.DataFrame) -> None:
    sleeps = Sleeps()
    client = scripted_client(["no idea", '```json\n{"frame": 41}\n```', ['{"frame": 51}'] * 3 + ["junk"] * 9])
    result = await detect_video(client, 0, table, DETECT, BATCHED, sleep=sleeps)
    assert result.attempts == 3 and len(client.calls) == 3
    assert sleeps.delays == [3.0, 3.0]
    assert result.votes == [51, 51, 51] and result.frame == 51
    assert len(result.samples) == 36
    assert [s["attempt"] for s in result.samples] == [1] * 12 + [2] * 12 + [3] * 12
    assert all(s["frame"] is None for s in result.samples[:24])


async def test_retries_stop_after_video_attempts(scripted_client, table: pd.DataFrame) -> None:
    sleeps = Sleeps()
    client = scripted_client(["nope"] * 3)
    params = DetectParams(video_attempts=3, retry_delay_s=0.5, batched_samples=True)
    result = await detect_video(client, 0, table, DETECT, params, sleep=sleeps)
    assert (result.frame, result.attempts, result.votes) == (1, 3, [])
    assert sleeps.delays == [0.5, 0.5]  # no sleep after the last attempt
    assert result.notes == ["no sample parsed in 3 attempts: frame 1"]


@pytest.mark.parametrize(
    ("votes", "frame"),
    [
        ([41] * 7 + [51] * 5, 41),
        ([51, 51, 51, 41, 41, 41, -1, -1, 61, 71, 81, 91], 41),  # tie: the smallest
        ([-1] * 5 + [30, 41, 50, 61, 70, 81, 90], 41),  # majority -1: the UPPER median (the lower is 30)
        ([-1] * 6 + [20, 30, 40, 50, 60, 70], 20),  # upper median of 12 is the 7th value
        ([-1] * 7 + [30, 41, 50, 61, 70], 1),  # the upper median is -1 too: frame 1
        ([-1] * 12, 1),
    ],
)
async def test_majority_and_upper_median(scripted_client, table: pd.DataFrame, votes: list[int], frame: int) -> None:
    client = scripted_client([[json.dumps({"frame": v}) for v in votes]])
    result = await detect_video(client, 0, table, DETECT, BATCHED)
    assert result.frame == frame and result.votes == votes and result.notes == []


async def test_unparsable_samples_do_not_vote(scripted_client, table: pd.DataFrame) -> None:
    answers = ['{"frame": "21"}', '{"frame": true}', '{"frame": 21.0}'] * 3 + ['{"frame": 81}'] * 3
    result = await detect_video(scripted_client([answers]), 0, table, DETECT, DetectParams(batched_samples=True, json_schema=True))
    assert result.votes == [81, 81, 81] and result.frame == 81
    # As the original: a boolean frame is an integer and votes.
    result = await detect_video(scripted_client([answers]), 0, table, DETECT, BATCHED)
    assert result.votes == [1, 1, 1, 81, 81, 81] and result.frame == 1


@pytest.mark.parametrize(
    ("vote", "last_frame", "frame", "note"),
    [
        (500, 120, 120, "decided frame 500 is past the last frame 120: clamped"),
        (0, 120, 1, "decided frame 0 is before the video: clamped to 1"),
        (-7, 120, 1, "decided frame -7 is before the video: clamped to 1"),
        (500, None, 500, None),
        (120, 120, 120, None),
    ],
)
async def test_a_frame_outside_the_video_is_clamped(
    scripted_client, table: pd.DataFrame, vote: int, last_frame: int | None, frame: int, note: str | None
) -> None:
    client = scripted_client([json.dumps({"frame": vote})])
    result = await detect_video(client, 0, table, DETECT, BATCHED, last_frame=last_frame)
    assert result.frame == frame
    assert result.notes == ([note] if note else [])


async def test_no_caption_rows_means_frame_1_without_asking(scripted_client) -> None:
    client = scripted_client([])
    result = await detect_video(client, 3, pd.DataFrame(columns=list(TABLE_COLUMNS)), DETECT)
    assert (result.frame, result.attempts, client.calls) == (1, 0, [])
    assert result.notes == ["no caption rows: frame 1 without asking"]


async def test_a_failed_request_is_raised(scripted_client, table: pd.DataFrame) -> None:
    with pytest.raises(ModelRequestError):
        await detect_video(scripted_client([ModelRequestError("gone")]), 0, table, DETECT)


# -- files and the resumable unit -------------------------------------------------------------------------


def test_detections_csv_round_trip(tmp_path: Path) -> None:
    path = write_detections({10: 5, 2: 41, 0: 1}, tmp_path / "detect.csv")
    assert path.read_text(encoding="utf-8") == "video,frame\n0,1\n2,41\n10,5\n"
    assert read_detections(path) == {0: 1, 2: 41, 10: 5}
    (tmp_path / "bad.csv").write_text("id,start\n0,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected the header video,frame, got id,start"):
        read_detections(tmp_path / "bad.csv")


async def test_detect_unit_is_resumable(sim, role, sim_captions, tmp_path: Path) -> None:
    captions_dir, out = tmp_path / "captions", tmp_path / "detect"
    captions = save_captions(CaptionResult(1, sim_captions[1]), caption_files(captions_dir, 1))
    async with ChatClient("detector", role(sim)) as client:
        first = await detect_unit(client, 1, captions, video_json(out, 1), DETECT, last_frame=120)
        assert first["cached"] is False and sim.stats()["received"] == 12
        saved = json.loads((out / "1.json").read_text())
        assert saved["frame"] == first["frame"] and len(saved["votes"]) == 12 and saved["model"] == "sim-model"
        sim.reset()
        again = await detect_unit(client, 1, captions, video_json(out, 1), DETECT, last_frame=120)
        assert again == {"video": 1, "frame": first["frame"], "cached": True}
        assert sim.stats()["received"] == 0
        # New captions are new work.
        changed = sim_captions[1].copy()
        changed[cols.CAP_DETECTION] = -1
        save_captions(CaptionResult(1, changed), caption_files(captions_dir, 1))
        redone = await detect_unit(client, 1, captions, video_json(out, 1), DETECT, last_frame=120)
        assert redone["cached"] is False and redone["frame"] == 1 and sim.stats()["received"] == 12


async def test_detect_unit_needs_captions(scripted_client, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="no caption table"):
        await detect_unit(scripted_client([]), 0, tmp_path / "0.csv", video_json(tmp_path, 0), DETECT)
