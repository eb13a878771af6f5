"""Differential test: the ORIGINAL scripts and coool's second-place send the same requests.

Each stage runs twice against one SIMULATED model server (a test double, no model
inside), with the same scripted answers: once as the original's own scripts
(subprocesses with their own command lines, from a copy of the reference checkout:
nothing of theirs is stubbed), once as coool's stage with second-place's settings.
The server's request log must hold the same requests (messages, image parts compared
by the frame they show and their pixels, sampling parameters, n, response format,
vLLM extras), and the stage's rows must be equal.

The original's scripts address the server at a URL written into them (localhost:8000
for captioning and detection): the simulated server is their HTTP proxy.

Known, allowed differences are listed where they arise (``ALLOWED`` below) and compared as
exactly that difference: the caption table's image path column (file locations are the
user's: tables are compared cell by cell, paths by file name) and captioning's thinking flag.
Equivalent spellings: a body without ``n`` asks for one choice.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from differential_world import GLM, GPT_OSS, QWEN_NEXT, QWEN_VL, World
from requests_diff import compare_requests

from coool import schema as cols
from coool.captions import caption_unit
from coool.describe import DescribePromptSet, describe_unit, load_description_row
from coool.detect import detect_unit
from coool.ensemble import ensemble_unit
from coool.frames import extract_caption_frames
from coool.llm import ChatClient
from coool.prompts import load_prompt
from coool.recipe import Recipe, load_recipe
from coool.settings import RoleSettings
from coool.workspace import caption_files, video_json

pytestmark = [pytest.mark.reference, pytest.mark.slow]

CAPTION_DIR = "results/glm45v_image_frames_infer_perception_vllm_server"
DETECT_CSV = "results/gpt-oss-120b_infer_vllm_sc_from_frames_csv.csv"


# ---- the recipe and the authors' prompts ------------------------------------------


@pytest.fixture(scope="session")
def second_place() -> Recipe:
    """The recipe whose stages are compared: its stage parameters and describe configurations."""
    return load_recipe("second-place")



@pytest.fixture(scope="session")
def prompts_dir(original_dir: Path, world: World) -> Path | None:
    """The authors' exact prompt words, imported by ``coool prompts import`` (None before it exists:
    the prompt text is then not compared, everything else is)."""
    try:
        from coool.prompt_import import import_prompts
    except ImportError:
        return None
    out = world.root / "imported-prompts"
    import_prompts(original_dir, out)
    return out


def text_compared(prompts_dir: Path | None) -> bool:
    return prompts_dir is not None


# ---- running coool's stages -----------------------------------------------------


def client(world: World, role: str, model: str, **settings: Any) -> ChatClient:
    return ChatClient(role, RoleSettings(model=model, urls=[world.sim.url], backoff_s=0.0, **settings))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def frames_dir(world: World, vid: int) -> Path:
    """coool's stage 1 for one clip (the stacked caption frames, every 10th)."""
    out = world.coool / "frames" / str(vid)
    extract_caption_frames(world.videos / f"{vid}.mp4", world.heatmaps / f"{vid}.mp4", out, every=10)
    return out


def logged(world: World) -> list[dict[str, Any]]:
    got = world.sim.requests()
    refused = [r for r in got if r["task"] is None]
    assert not refused, f"the simulated server refused {len(refused)} requests: {refused[0]['body'].get('model')}"
    return got


def assert_same_requests(original: list[dict], coool: list[dict], prompt_text: bool, equivalences: tuple = ()) -> None:
    diffs = compare_requests(original, coool, prompt_text=prompt_text, equivalences=equivalences)
    assert not diffs, f"{len(diffs)} differences (original != coool):\n" + "\n".join(diffs[:40])


# ---- scripted answers -------------------------------------------------------------


def caption_answer(vid: int, frame: int, event: int | None) -> Any:
    """One frame's caption: detection from the event, one unparsable answer, one missing key."""
    if (vid, frame) == (0, 21):
        return "I cannot describe this frame."  # not JSON: the row is dropped
    det = -1 if event is None or frame < event - 10 else (0 if frame < event else 1)
    answer = {
        cols.SCENE: f"A three-lane road, frame {frame}.",
        cols.HAZARD_CLUES: "none" if det == -1 else "a red barrier in the ego lane",
        cols.GAZE: "center ahead",
        "Number_of_Bicyclists_Scooters": 0,
        "Number_of_Animals": 0,
        "Number_of_Pedestrians": 0,
        "Number_of_Vehicles_excluding_ego": 1,
        "Incident_Detection": det,
        "Crash_Severity": "1. Ego-car collided but did not stop" if det == 1 else "unknown",
        "Ego_car_involved": int(det == 1),
        "Label": "ego-car hits barrier" if det >= 0 else "unknown",
    }
    if (vid, frame) == (1, 31):
        del answer[cols.GAZE]  # a missing key: a blank cell
    if (vid, frame) == (1, 41):
        answer["Incident_Detection"] = "n/a"  # not a number: never triggers the caption-trigger window
    return answer


def counts_answers(vid: int, index: int) -> list[dict[str, Any]]:
    one = {
        cols.START_FRAME: index,
        cols.DETECTION: 1,
        cols.SEVERITY: "1. Ego-car collided but did not stop",
        cols.EGO: 1,
        cols.LABEL: "ego-car hits barrier",
        cols.N_BICYCLISTS: 0,
        cols.N_ANIMALS: 0,
        cols.N_PEDESTRIANS: 0,
        cols.N_VEHICLES: 1 + vid,
    }
    other = {**one, cols.START_FRAME: index + 1, cols.N_VEHICLES: 2}
    return [one, other, one, {**one, cols.LABEL: "car hits barrier"}]


def texts_answers(vid: int, index: int) -> list[dict[str, Any]]:
    texts = {
        cols.START_FRAME: index,
        cols.CAPTION: f"The ego-car drives in the middle lane of clip {vid}.",
        cols.REASON: "The ego-car hits a red barrier in its lane.",
    }
    if vid == 1:  # every sample leaves the reason blank: the texts pass is asked again
        return [{**texts, cols.REASON: ""}] * 4
    return [texts, {**texts, cols.CAPTION: "A road with a red barrier ahead."}, texts, texts]


def reconcile_answers(vid: int, index: int) -> list[dict[str, Any]]:
    row = {**counts_answers(vid, index)[0], **texts_answers(0, index)[0]}
    return [row, {**row, cols.START_FRAME: index + 2}, row, {**row, cols.EGO: 0}]


# ---- stage 2: captioning ------------------------------------------------------------

THINK = {"enable_thinking": True}


def _without(body: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``body`` without ``key`` when it holds exactly ``value`` (anything else stays, and differs)."""
    return {k: v for k, v in body.items() if not (k == key and v == value)}


# ALLOWED (captioning): the original posts its payload with `requests`, so its "extra_body" is a
# literal top-level key, which vLLM ignores: enable_thinking never reaches the chat template and
# GLM-4.5V runs with its template's default, which is to think. coool sends
# chat_template_kwargs {"enable_thinking": true}: the same template output, said explicitly.
CAPTION_THINKING = (
    lambda body: _without(body, "extra_body", {"chat_template_kwargs": THINK}),
    lambda body: _without(body, "chat_template_kwargs", THINK),
)


def script_captions(world: World) -> None:
    for truth in world.truths:
        for frame in range(1, truth.frames + 1, 10):
            world.sim.script("frame_caption", caption_answer(truth.video_id, frame, truth.event_frame))


@pytest.fixture(scope="session")
def captions(world: World, second_place: Recipe, prompts_dir: Path | None) -> dict[str, Any]:
    world.sim.reset()
    script_captions(world)
    world.run_original("002_frame_captioning", ["bash", "run_glm45v_image_frames_infer_perception_vllm_server.sh"])
    original = logged(world)

    world.sim.reset()
    script_captions(world)
    out = world.coool / "captions"

    async def go() -> None:
        # One request at a time, videos and frames in order: the scripted answers go to the same frames.
        async with client(world, "captioner", GLM, max_concurrency=1) as chat:
            params = second_place.caption
            prompt = load_prompt(params.prompt, prompts_dir)
            for vid in world.ids:
                await caption_unit(chat, vid, frames_dir(world, vid), caption_files(out, vid), prompt, params)

    run(go())
    return {"original": original, "coool": logged(world), "coool_dir": out}


def test_captioning_requests_equal(world: World, captions: dict[str, Any], prompts_dir: Path | None) -> None:
    assert len(captions["original"]) == sum(len(range(1, t.frames + 1, 10)) for t in world.truths)  # frames 1, 11, ...
    assert_same_requests(captions["original"], captions["coool"], text_compared(prompts_dir), (CAPTION_THINKING,))


def test_caption_tables_equal(world: World, captions: dict[str, Any]) -> None:
    for vid in world.ids:
        theirs = pd.read_csv(world.original / "002_frame_captioning" / CAPTION_DIR / f"{vid}.csv", dtype=str, keep_default_na=False)
        ours = pd.read_csv(captions["coool_dir"] / f"{vid}.csv", dtype=str, keep_default_na=False)
        # ALLOWED: the frame image's path column (the original's "path", coool's "image"): the
        # two runs keep their frames in different folders (the detector's table: requests_diff).
        theirs = theirs.drop(columns=["path"])
        ours = ours.drop(columns=["image"])
        assert list(theirs["frame"]) == list(ours["frame"])
        for column in theirs.columns:
            assert list(theirs[column]) == list(ours[column]), f"video {vid}, column {column}"


# ---- stage 3: detection --------------------------------------------------------------


def detect_votes(truth: Any) -> list[int]:
    """Twelve answers: seven say just after the event, five say at it."""
    event = truth.event_frame or 1
    return [event + 1] * 7 + [event] * 5


def script_detection(world: World) -> None:
    for truth in world.truths:
        # The twelve requests of one video are identical: the order answers arrive in is free.
        for frame in detect_votes(truth):
            world.sim.script("incident_frame", {"frame": frame})


@pytest.fixture(scope="session")
def detection(world: World, second_place: Recipe, captions: dict[str, Any], prompts_dir: Path | None) -> dict[str, Any]:
    world.sim.reset()
    script_detection(world)
    world.run_original("003_frame_detection", ["bash", "run_gpt-oss-120b_infer_vllm_sc_from_frames_csv.sh"])
    original = logged(world)

    world.sim.reset()
    script_detection(world)
    out = world.coool / "detect"
    frames: dict[int, int] = {}

    async def go() -> None:
        async with client(world, "detector", GPT_OSS) as chat:
            params = second_place.detect
            prompt = load_prompt(params.prompt, prompts_dir)
            for vid in world.ids:
                done = await detect_unit(chat, vid, captions["coool_dir"] / f"{vid}.csv", video_json(out, vid), prompt, params,
                                        last_frame=90)
                frames[vid] = int(done["frame"])

    run(go())
    return {"original": original, "coool": logged(world), "frames": frames}


def test_detection_requests_equal(detection: dict[str, Any], prompts_dir: Path | None) -> None:
    assert len(detection["original"]) == 12 * 2  # one request per sample, as the original sends them
    assert_same_requests(detection["original"], detection["coool"], text_compared(prompts_dir))


def test_detected_frames_equal(world: World, detection: dict[str, Any]) -> None:
    theirs = pd.read_csv(world.original / "003_frame_detection" / DETECT_CSV)
    assert dict(zip(theirs["video"], theirs["frame"])) == detection["frames"]


# ---- stage 4: describe (GLM: exp001, exp002; Qwen: v3-prompt2) ---------------------------------

# configuration -> (the original's run script, its model, the CSV it aggregates to)
DESCRIBE = {
    "exp001": (
        "scripts_glm45v/run_glm45v_multi_image_select_frames_from_csv_infer_vllm_v2.sh",
        GLM,
        "results/run_glm45v_multi_image_select_frames_from_csv_infer_vllm_v2/exp001_n_sample.csv",
    ),
    "exp002": (
        "scripts_glm45v/run_glm45v_multi_image_select_frames_from_gptoss_csv_infer_vllm_v2.sh",
        GLM,
        "results/run_glm45v_multi_image_select_frames_from_gptoss_csv_infer_vllm_v2/exp002_n_sample4_step6.csv",
    ),
    "v3-prompt2": (
        "scripts_qwen3vl/run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2.sh",
        QWEN_VL,
        "results/run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2/"
        "run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2.csv",
    ),
}


def script_describe(world: World) -> None:
    for vid in world.ids:
        index = 3 + vid
        world.sim.script("describe_counts", contents=counts_answers(vid, index))
        world.sim.script("describe_texts", contents=texts_answers(vid, index))
        if vid == 1:  # the re-ask (n=1) after the blank reason
            world.sim.script("describe_texts", texts_answers(0, index)[0])
        world.sim.script("describe_reconcile", contents=reconcile_answers(vid, index))


def run_describe(world: World, recipe: Recipe, name: str, captions: dict[str, Any], prompts_dir: Path | None) -> dict[str, Any]:
    script, model, csv_name = DESCRIBE[name]
    folder, sh = script.split("/")
    # The original's describe scripts read the detector's CSV where stage 3 wrote it.
    world.sim.reset()
    script_describe(world)
    world.run_original(f"004_description/{folder}", ["bash", sh])
    original = logged(world)
    theirs = pd.read_csv(world.original / "004_description" / folder / csv_name)
    # coool describes from the frames the original's detector chose: this stage is compared alone
    # (test_detected_frames_equal compares the frames themselves).
    detected = pd.read_csv(world.original / "003_frame_detection" / DETECT_CSV)
    detected_frames = dict(zip(detected["video"].astype(int), detected["frame"].astype(int)))

    world.sim.reset()
    script_describe(world)
    assert name in recipe.describe
    config = recipe.configs[name]
    out = world.coool / "describe" / name
    rows = {}

    async def go() -> None:
        async with client(world, config.role, model, max_concurrency=1) as chat:
            prompts = DescribePromptSet.load(config, prompts_dir)
            for vid in world.ids:
                # The caption-trigger window (exp001) reads coool's caption table (equal to the original's).
                await describe_unit(
                    chat, vid, config, prompts, frames_dir(world, vid), video_json(out, vid),
                    captions_path=captions["coool_dir"] / f"{vid}.csv", detected_frame=detected_frames[vid],
                )
                rows[vid] = load_description_row(out / f"{vid}.json")

    run(go())
    return {"original": original, "coool": logged(world), "theirs": theirs, "rows": rows}


@pytest.fixture(scope="session", params=list(DESCRIBE))
def described(
    request: pytest.FixtureRequest,
    world: World,
    second_place: Recipe,
    captions: dict[str, Any],
    detection: dict[str, Any],
    prompts_dir: Path | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    yield request.param, run_describe(world, second_place, request.param, captions, prompts_dir)


def test_describe_requests_equal(described: tuple[str, dict[str, Any]], prompts_dir: Path | None) -> None:
    name, got = described
    # counts, texts, reconcile per video, and video 1's texts re-ask
    assert len(got["original"]) == 3 * 2 + 1, name
    assert_same_requests(got["original"], got["coool"], text_compared(prompts_dir))


def test_describe_rows_equal(described: tuple[str, dict[str, Any]]) -> None:
    name, got = described
    theirs = got["theirs"]
    assert sorted(theirs["video"]) == sorted(got["rows"])
    for record in theirs.to_dict("records"):
        ours = got["rows"][int(record["video"])]
        for column in cols.COLUMNS:
            assert str(record[column]) == str(ours[column]), f"{name}, video {record['video']}, {column}"


# ---- stage 5: the ensemble ---------------------------------------------------------------

# coool's input name -> the original's file in 005_ensemble/sub_csv (cp_sub_csv.sh)
ENSEMBLE_FILES = {
    "exp001+exp002": "exp001_and_exp002_n_sample4_step_merged.csv",
    "exp004+exp005": "exp004_and_exp005_n_sample4.csv",
    "v5": "exp005_n_sample4_6_5_8.csv",
    "v3": "exp005_n_sample4_6_5_10.csv",
    "v4": "exp005_n_sample4_12_11_6.csv",
    "v3-prompt2": "run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2.csv",
}
BASE_FILE = "20250927_ens2_clip20.csv"


def submission_rows(k: int) -> list[dict[str, Any]]:
    """Input k's rows: texts with what the original normalises (a leading count, ego-car, ego-vehicle, '<')."""
    rows = []
    for vid in range(2):
        rows.append({
            cols.VIDEO: vid,
            cols.START_FRAME: 30 + vid + (k % 3),
            cols.DETECTION: 1,
            cols.SEVERITY: "1. Ego-car collided but did not stop",
            cols.EGO: 1,
            cols.LABEL: "ego-car hits barrier",
            cols.N_BICYCLISTS: 0,
            cols.N_ANIMALS: 0,
            cols.N_PEDESTRIANS: 0,
            cols.N_VEHICLES: k % 2,
            cols.CAPTION: f"{k} The ego-car drives  in the <middle> lane.",
            cols.REASON: "The ego-vehicle hits a red barrier." if k % 2 else "The Ego-car hits a barrier.",
        })
    return rows


def write_submission(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(cols.COLUMNS), quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(rows)


ENSEMBLE_ANSWERS = [
    "<caption_before>The ego car drives in the middle lane.</caption_before>\n<reason>The ego car hits a red barrier.</reason>\n"
    "<incident_start_frame>31</incident_start_frame>",
    "<caption_before>A road with a barrier ahead.</caption_before>\n<reason>The ego car hits a barrier.</reason>\n"
    "<incident_start_frame>7</incident_start_frame>",  # not an input frame: the consensus frame
]


@pytest.fixture(scope="session")
def ensembled(world: World, second_place: Recipe, prompts_dir: Path | None) -> dict[str, Any]:
    stage = world.original / "005_ensemble"
    inputs = {name: submission_rows(k) for k, name in enumerate(ENSEMBLE_FILES)}
    for name, rows in inputs.items():
        write_submission(stage / "sub_csv" / ENSEMBLE_FILES[name], rows)
    base = submission_rows(9)
    write_submission(stage / BASE_FILE, base)

    world.sim.reset()
    for answer in ENSEMBLE_ANSWERS:
        world.sim.script("ensemble", answer)
    # run_qwen3_next_ensemble.sh's two commands (its wrapper aggregates only when all 661 videos are done)
    common = ["--base-sub", BASE_FILE, "--json-dir", "./output/jsons"]
    world.run_original("005_ensemble", [
        "python", "./src/qwen3_next_infer_vllm_submit_ensemble_caption.py", "--base-url", "http://localhost:22002/v1",
        "--model", QWEN_NEXT, "--input-csvs", "./sub_csv/*.csv", *common, "--skip-existing-json",
    ])
    world.run_original("005_ensemble", [
        "python", "./src/qwen3_next_infer_vllm_submit_ensemble_caption.py", "--collect-jsons", *common,
        "--output-csv", "./output/20250928_ens002_submit_ensemble.csv",
    ])
    original = logged(world)
    theirs = pd.read_csv(stage / "output" / "20250928_ens002_submit_ensemble.csv")

    world.sim.reset()
    for answer in ENSEMBLE_ANSWERS:
        world.sim.script("ensemble", answer)
    frames = {name: pd.read_csv(stage / "sub_csv" / file) for name, file in ENSEMBLE_FILES.items()}
    rows = {}

    async def go() -> None:
        async with client(world, "ensembler", QWEN_NEXT, max_concurrency=1) as chat:
            params = second_place.ensemble
            assert params is not None and sorted(params.inputs) == sorted(ENSEMBLE_FILES)
            prompt = load_prompt(params.prompt, prompts_dir)
            for row in base:
                done = await ensemble_unit(chat, row[cols.VIDEO], row, frames, video_json(world.coool / "ensemble", row[cols.VIDEO]), prompt,
                                         params)
                rows[row[cols.VIDEO]] = done["row"]

    run(go())
    return {"original": original, "coool": logged(world), "theirs": theirs, "rows": rows}


def test_ensemble_requests_equal(ensembled: dict[str, Any], prompts_dir: Path | None) -> None:
    assert len(ensembled["original"]) == 2
    assert_same_requests(ensembled["original"], ensembled["coool"], text_compared(prompts_dir))


def test_ensemble_rows_equal(ensembled: dict[str, Any]) -> None:
    for record in ensembled["theirs"].to_dict("records"):
        ours = ensembled["rows"][int(record[cols.VIDEO])]
        for column in cols.COLUMNS:
            assert str(record[column]) == str(ours[column]), f"video {record[cols.VIDEO]}, {column}: {json.dumps(ours)}"
