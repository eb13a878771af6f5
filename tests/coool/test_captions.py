"""Stage 2: captions of every k-th stacked frame, against the simulated server and a scripted client."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from coool import schema as cols
from coool.captions import (
    TABLE_COLUMNS,
    CaptionResult,
    caption_frame,
    caption_unit,
    caption_video,
    load_captions,
    save_captions,
)
from coool.llm import ChatClient, ModelRequestError
from coool.params import CaptionParams
from coool.prompts import BUILTIN_DIR, load_prompt
from coool.stage import StageError
from coool.workspace import caption_files

CAPTION = load_prompt("caption")
CAPTION_PLUS = load_prompt("caption", variant="plus")


def caption_json(**changes: object) -> str:
    answer: dict[str, object] = {
        cols.SCENE: "Ego-car drives on a straight road.",
        cols.HAZARD_CLUES: "none",
        cols.GAZE: "the road ahead",
        cols.CAP_BICYCLISTS: 0,
        cols.CAP_ANIMALS: 0,
        cols.CAP_PEDESTRIANS: 0,
        cols.CAP_VEHICLES: 1,
        cols.CAP_DETECTION: -1,
        cols.CAP_SEVERITY: cols.NO_CRASH,
        cols.CAP_EGO: 0,
        cols.CAP_LABEL: cols.UNKNOWN_LABEL,
    }
    answer.update(changes)
    return json.dumps(answer)


# -- against the simulated captioner ---------------------------------------------------------------


def test_captions_flag_the_event_frames(sim_captions: dict[int, pd.DataFrame], synthetic_data) -> None:
    for truth in synthetic_data.truths:
        table = sim_captions[truth.video_id]
        assert list(table.columns) == list(TABLE_COLUMNS)
        assert table["frame"].tolist() == list(range(1, 120, 10))
        event = truth.event_frame
        after = table[table["frame"] >= event]
        before = table[table["frame"] < event]
        assert len(after) >= 1 and len(before) >= 1, truth.video_id
        assert (after[cols.CAP_DETECTION] != -1).all(), (truth.video_id, event, table[["frame", cols.CAP_DETECTION]])
        assert (before[cols.CAP_DETECTION] == -1).all(), (truth.video_id, event, table[["frame", cols.CAP_DETECTION]])
        assert (before[cols.HAZARD_CLUES] == "none").all()
        assert (after[cols.HAZARD_CLUES] != "none").all()
        for image in table["image"]:
            assert Path(image).is_file() and Path(image).parent.name == "stacked"


# -- one frame, one request ------------------------------------------------------------------------------


async def test_caption_frame_request(scripted_client, stage1) -> None:
    client = scripted_client([caption_json()])
    frame, image = stage1.frames(0)[2]
    record = await caption_frame(client, CAPTION, frame, image, CaptionParams())
    (call,) = client.calls
    assert call["n"] == 1 and call["temperature"] == 0.01 and call["max_tokens"] == 8192
    assert call["chat_template_kwargs"] == {"enable_thinking": True}
    # The original's request: no response format; the prompt, then "Frame N", then the frame's image.
    assert call["response_format"] is None
    assert "seed" not in call and "top_p" not in call
    (message,) = call["messages"]
    assert message["role"] == "user"
    assert message["content"] == [
        {"type": "text", "text": CAPTION.render()},
        {"type": "text", "text": "Frame 21"},
        {"type": "image_url", "image_url": {"url": image.resolve().as_uri()}},
    ]
    assert record["parsed"] is True and record["frame"] == 21
    assert record["row"] == {"frame": 21, "image": str(image), **json.loads(caption_json())}
    quiet = scripted_client([caption_json()])
    await caption_frame(quiet, CAPTION, frame, image, CaptionParams(thinking=False))
    assert quiet.calls[0]["chat_template_kwargs"] == {"enable_thinking": False}


async def test_the_json_schema_switch_adds_only_the_response_format(scripted_client, stage1) -> None:
    frame, image = stage1.frames(0)[2]
    original, switched = scripted_client([caption_json()]), scripted_client([caption_json()])
    await caption_frame(original, CAPTION, frame, image, CaptionParams())
    await caption_frame(switched, CAPTION, frame, image, CaptionParams(json_schema=True))
    before, after = original.calls[0], switched.calls[0]
    assert after["response_format"]["json_schema"]["name"] == "frame_caption"
    assert after["response_format"]["json_schema"]["schema"] == CAPTION.schema
    assert {k: v for k, v in after.items() if k != "response_format"} == {k: v for k, v in before.items() if k != "response_format"}


async def test_the_plus_prompt_is_coools(scripted_client, stage1) -> None:
    frame, image = stage1.frames(0)[2]
    client = scripted_client([caption_json()])
    await caption_frame(client, CAPTION_PLUS, frame, image, CaptionParams(plus_prompts=True))
    assert client.calls[0]["messages"][0]["content"][0]["text"] == CAPTION_PLUS.render()
    assert "counting only participants" in CAPTION_PLUS.render() and "clearly" in CAPTION.render()


LOOSE = {
    cols.CAP_DETECTION: "1", cols.CAP_VEHICLES: "2 cars", cols.CAP_PEDESTRIANS: -3, cols.CAP_EGO: 7,
    cols.CAP_SEVERITY: "3", cols.CAP_LABEL: "Ego-car hits a pedestrian", cols.HAZARD_CLUES: "  a pedestrian steps out ",
}
LOOSE_ANSWERS = {
    "000001.png": caption_json(),
    "000011.png": "I cannot see anything in this picture.",
    "000021.png": "```json\n" + caption_json(**LOOSE) + "\n```",
}


async def test_the_original_keeps_values_as_written(scripted_client, tmp_path: Path) -> None:
    frames = [(n, tmp_path / f"{n:06d}.png") for n in (1, 11, 21, 31, 41)]
    answers = LOOSE_ANSWERS | {
        "000031.png": 'Here: {"Scene_Description": "a road", "Incident_Detection": -1}',  # missing keys: blank
        "000041.png": "\u201cScene_Description\u201d: \u201ca road\u201d",  # curly quotes: not JSON
    }
    client = scripted_client(responder=lambda call: answers[Path(scripted_client.image_urls(call)[0]).name])
    result = await caption_video(client, 4, frames, CAPTION)
    assert result.table["frame"].tolist() == [1, 21, 31] and result.dropped == 2
    assert result.table.iloc[1].to_dict() == {"frame": 21, "image": str(frames[2][1]), **json.loads(caption_json(**LOOSE))}
    missing = result.table.iloc[2].to_dict()
    assert missing[cols.SCENE] == "a road" and missing[cols.CAP_DETECTION] == -1
    assert all(missing[f] == "" for f in cols.CAPTION_FIELDS if f not in (cols.SCENE, cols.CAP_DETECTION))


async def test_unparsable_answers_are_dropped_and_loose_ones_coerced(scripted_client, tmp_path: Path) -> None:
    frames = [(n, tmp_path / f"{n:06d}.png") for n in (1, 11, 21)]
    answers = LOOSE_ANSWERS
    client = scripted_client(responder=lambda call: answers[Path(scripted_client.image_urls(call)[0]).name])
    result = await caption_video(client, 4, frames, CAPTION, CaptionParams(clean_captions=True))
    assert result.table["frame"].tolist() == [1, 21]
    assert result.dropped == 1
    assert [r["parsed"] for r in result.raw] == [True, False, True]
    assert result.raw[1]["error"] == "answer is not a JSON object"
    assert result.raw[1]["content"] == "I cannot see anything in this picture."
    row = result.table.iloc[1].to_dict()
    assert row[cols.CAP_DETECTION] == 1 and row[cols.CAP_VEHICLES] == 2 and row[cols.CAP_PEDESTRIANS] == 0
    assert row[cols.CAP_EGO] == 0
    assert row[cols.CAP_SEVERITY] == "3. Ego-car collided with at-least one person or cyclist"
    assert row[cols.CAP_LABEL] == "ego-car hits a pedestrian"
    assert row[cols.HAZARD_CLUES] == "a pedestrian steps out"


async def test_a_failed_request_is_recorded_not_raised(scripted_client, tmp_path: Path) -> None:
    frames = [(1, tmp_path / "000001.png"), (11, tmp_path / "000011.png")]
    client = scripted_client([caption_json(), ModelRequestError("captioner (m): HTTP 503 for good")])
    result = await caption_video(client, 0, frames, CAPTION)
    assert result.table["frame"].tolist() == [1]
    assert result.raw[1] == {"frame": 11, "image": str(frames[1][1]), "parsed": False,
                             "error": "captioner (m): HTTP 503 for good"}


async def test_no_frame_captioned_is_a_stage_error(scripted_client, tmp_path: Path) -> None:
    frames = [(1, tmp_path / "000001.png"), (11, tmp_path / "000011.png")]
    client = scripted_client(["nope", ModelRequestError("HTTP 400")])
    with pytest.raises(StageError, match=r"video 9: no frame could be captioned \(.*HTTP 400.*not a JSON object"):
        await caption_video(client, 9, frames, CAPTION)


async def test_no_frames_means_no_requests(scripted_client) -> None:
    client = scripted_client([])
    result = await caption_video(client, 0, [], CAPTION)
    assert result.table.empty and list(result.table.columns) == list(TABLE_COLUMNS)
    assert client.calls == []


# -- files -------------------------------------------------------------------------------------------------


def test_save_and_load_captions(sim_captions, tmp_path: Path) -> None:
    table = sim_captions[1]
    path = save_captions(CaptionResult(1, table, raw=[{"frame": 1, "parsed": True}]), caption_files(tmp_path, 1))
    assert path == tmp_path / "1.csv"
    assert (tmp_path / "1.raw.jsonl").read_text(encoding="utf-8") == '{"frame": 1, "parsed": true}\n'
    loaded = load_captions(path)
    pd.testing.assert_frame_equal(loaded, table, check_dtype=False)
    for column in ("frame", cols.CAP_DETECTION, cols.CAP_EGO, *cols.CAPTION_COUNT_FIELDS):
        assert pd.api.types.is_integer_dtype(loaded[column]), column


def test_load_captions_sorts_and_coerces(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    row = {c: "" for c in TABLE_COLUMNS}
    rows = [row | {"frame": "21", cols.CAP_DETECTION: "1"}, row | {"frame": "1", cols.CAP_DETECTION: "", cols.CAP_VEHICLES: "x"}]
    pd.DataFrame(rows).to_csv(path, index=False)
    table = load_captions(path)
    assert table["frame"].tolist() == [1, 21]
    assert table[cols.CAP_DETECTION].tolist() == [0, 1] and table[cols.CAP_VEHICLES].tolist() == [0, 0]


def test_load_captions_without_coercion_keeps_the_saved_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    row = {c: "" for c in TABLE_COLUMNS}
    rows = [row | {"frame": "21", cols.CAP_DETECTION: "1"}, row | {"frame": "1", cols.CAP_DETECTION: "", cols.CAP_VEHICLES: "x"}]
    pd.DataFrame(rows).to_csv(path, index=False)
    table = load_captions(path, coerce=False)
    assert table["frame"].tolist() == [1, 21]
    assert table[cols.CAP_DETECTION].tolist() == ["", "1"] and table[cols.CAP_VEHICLES].tolist() == ["x", ""]


def test_load_captions_refuses_another_table(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("frame,Scene_Description\n1,road\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"not a caption table \(missing \['image', 'Hazard_Clues'"):
        load_captions(path)


# -- one video, resumable -------------------------------------------------------------------------------------


async def test_caption_unit_is_resumable(sim, role, stage1, tmp_path: Path) -> None:
    out = tmp_path / "captions"
    async with ChatClient("captioner", role(sim)) as client:
        first = await caption_unit(client, 2, stage1.dir(2), caption_files(out, 2), CAPTION)
        assert first["cached"] is False and first["rows"] == 12 and first["dropped"] == 0
        assert sim.stats()["received"] == 12
        sim.reset()
        again = await caption_unit(client, 2, stage1.dir(2), caption_files(out, 2), CAPTION)
        assert again == first | {"cached": True}
        assert sim.stats()["received"] == 0
        # Another prompt is other work: it runs again.
        overrides = tmp_path / "prompts"
        overrides.mkdir()
        text = (BUILTIN_DIR / "caption.md").read_text(encoding="utf-8") + "\nBe brief.\n"
        (overrides / "caption.md").write_text(text, encoding="utf-8")
        changed = await caption_unit(client, 2, stage1.dir(2), caption_files(out, 2), load_prompt("caption", overrides))
        assert changed["cached"] is False and sim.stats()["received"] == 12
        # A lost table is redone even though its summary says done.
        sim.reset()
        (out / "2.csv").unlink()
        redone = await caption_unit(client, 2, stage1.dir(2), caption_files(out, 2), load_prompt("caption", overrides))
        assert redone["cached"] is False and sim.stats()["received"] == 12
    assert json.loads((out / "2.json").read_text())["key"] == redone["key"]
    assert len(load_captions(out / "2.csv")) == 12


async def test_caption_unit_needs_stage_1(scripted_client, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="no frames manifest"):
        await caption_unit(scripted_client([]), 0, tmp_path / "nothing", caption_files(tmp_path / "out", 0), CAPTION)
