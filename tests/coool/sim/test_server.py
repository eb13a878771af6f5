"""The simulated model server over real HTTP: endpoints, answers, capacity, faults."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import jsonschema
import pytest
import sim_scenes as scenes

from coool import schema as cols
from coool.sim import FAULT_MODES, OWNED_BY, SimConfig, parse_faults
from coool.sim.answers import NON_ENGLISH_TEXT
from coool.sim.testing import SimHandle, free_port, running_sim_server, start_sim_process

MODEL = "sim-model"
NO_FAULTS = {mode: 0.0 for mode in FAULT_MODES}
# One client for the module: creating one per call costs ~50 ms (CA certificates).
http = httpx.Client(timeout=10)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(media: Path) -> Iterator[SimHandle]:
    with running_sim_server(model=[MODEL, "captioner"], allowed_local_media_path=media, max_n=16) as handle:
        yield handle


@pytest.fixture
def sim(server: SimHandle) -> Iterator[SimHandle]:
    server.set_faults(NO_FAULTS, fail_next=0, hang_s=3600)
    server.reset()
    yield server
    server.set_faults(NO_FAULTS, fail_next=0, hang_s=3600)


def chat(sim: SimHandle, timeout: float = 10, **body: Any) -> httpx.Response:
    body.setdefault("model", MODEL)
    return http.post(f"{sim.url}/chat/completions", json=body, timeout=timeout)


def contents(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["message"]["content"] for c in response.json()["choices"]]


# ---- endpoints and shapes ----


def test_health_models_and_simulation_markers(sim: SimHandle) -> None:
    health = http.get(f"{sim.base_url}/health")
    assert health.status_code == 200 and health.content == b""
    assert health.headers["x-coool-simulated"] == "true"
    models = http.get(f"{sim.url}/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL, "captioner"]
    assert {m["owned_by"] for m in models["data"]} == {OWNED_BY}
    missing = http.get(f"{sim.base_url}/no/such/route")
    assert missing.status_code == 404 and missing.headers["x-coool-simulated"] == "true"


def test_completion_shape_n_choices_and_usage(sim: SimHandle) -> None:
    r = chat(sim, messages=[{"role": "user", "content": "hello"}], n=3, model="captioner")
    assert r.headers["x-coool-simulated"] == "true"
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "captioner" and body["id"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for choice in body["choices"]:
        assert choice["finish_reason"] == "stop"
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["reasoning_content"] is None
        json.loads(choice["message"]["content"])
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_image_tokens_are_counted(sim: SimHandle) -> None:
    text_only = chat(sim, messages=[scenes.user("describe")]).json()["usage"]["prompt_tokens"]
    url = scenes.data_url(scenes.road())
    with_image = chat(sim, messages=[scenes.user("describe", [url])]).json()["usage"]["prompt_tokens"]
    assert with_image - text_only >= 256


def test_unknown_model_is_404_with_openai_error_body(sim: SimHandle) -> None:
    r = chat(sim, model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert r.status_code == 404
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["code"] == 404 and "gpt-9" in error["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"n": 0},
        {"n": 17},  # above max_n
        {"temperature": -0.1},
        {"top_p": 0},
        {"max_tokens": 0},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
        {"response_format": {"type": "yaml"}},
        {"stream": True},
        {"top_k": "many"},
        {"model": None},
    ],
)
def test_bad_values_are_400(sim: SimHandle, change: dict[str, Any]) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **change}
    r = http.post(f"{sim.url}/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 400 and r.json()["error"]["message"]
    assert sim.stats()["rejected"] == 1


def test_body_that_is_not_json_is_400(sim: SimHandle) -> None:
    r = http.post(f"{sim.url}/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_unknown_keys_and_vllm_extras_are_accepted(sim: SimHandle) -> None:
    r = chat(
        sim,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        min_p=0.0,
        repetition_penalty=1.1,
        seed=42,
        max_completion_tokens=100,
        chat_template_kwargs={"enable_thinking": False},
        skip_special_tokens=True,
        include_stop_str_in_output=False,
        some_future_option={"x": 1},
    )
    assert r.status_code == 200


# ---- answers ----

_TABLE = scenes.caption_table([(1, -1), (11, -1), (21, 0), (31, 1), (41, 1)])
_RED_FRAMES = [scenes.data_url(scenes.road(r, vehicles=1)) for r in (0, 0, 14, 30, 45)]

SCHEMA_CASES = {
    "frame_caption": (scenes.FRAME_CAPTION_SCHEMA, [scenes.data_url(scenes.stacked(30))], "Describe the frame."),
    "incident_frame": (scenes.INCIDENT_FRAME_SCHEMA, [], "From which frame?\n" + _TABLE),
    "describe_counts": (scenes.DESCRIBE_COUNTS_SCHEMA, _RED_FRAMES, "Count."),
    "describe_texts": (scenes.DESCRIBE_TEXTS_SCHEMA, _RED_FRAMES, "Write texts."),
    "describe_reconcile": (scenes.DESCRIBE_RECONCILE_SCHEMA, _RED_FRAMES, "Reconcile {} {}."),
    "ensemble": (scenes.ENSEMBLE_SCHEMA, [], "A) frame: 30 ... B) frame: 30 ... C) frame: 12"),
}


@pytest.mark.parametrize("title", list(SCHEMA_CASES))
def test_json_schema_answers_validate(sim: SimHandle, title: str) -> None:
    schema, urls, text = SCHEMA_CASES[title]
    r = chat(
        sim,
        messages=[scenes.user(text, urls)],
        n=4,
        temperature=0.6,
        response_format=scenes.json_schema(title, schema),
    )
    answers = [json.loads(c) for c in contents(r)]
    for answer in answers:
        jsonschema.validate(answer, schema)
    assert sim.stats()["tasks"] == {title: 1}


def test_schema_recognised_by_name_when_untitled(sim: SimHandle) -> None:
    schema = {k: v for k, v in scenes.INCIDENT_FRAME_SCHEMA.items() if k != "title"}
    r = chat(sim, messages=[scenes.user(_TABLE)], temperature=0, response_format=scenes.json_schema("incident_frame", schema))
    assert json.loads(contents(r)[0]) == {"frame": 21}


def test_guided_json_extra_is_honoured(sim: SimHandle) -> None:
    r = chat(sim, messages=[scenes.user(_TABLE)], temperature=0, guided_json=json.dumps(scenes.INCIDENT_FRAME_SCHEMA))
    assert json.loads(contents(r)[0]) == {"frame": 21}


def test_same_request_gives_same_answers(sim: SimHandle) -> None:
    body = dict(messages=[scenes.user("From which frame?\n" + _TABLE)], n=12, temperature=0.6, seed=3)
    first, second = contents(chat(sim, **body)), contents(chat(sim, **body))
    assert first == second
    assert len(set(first)) > 1  # temperature > 0: some samples jitter


def test_an_unseeded_request_repeated_is_sampled_afresh(sim: SimHandle) -> None:
    # The original detector sends its 12 samples as 12 identical one-sample requests without a seed.
    body = dict(messages=[scenes.user("From which frame?\n" + _TABLE)], n=1, temperature=0.6)
    answers = [contents(chat(sim, **body))[0] for _ in range(12)]
    assert len(set(answers)) > 1
    sim.reset()  # and the count starts again: the same 12 answers in the same order
    assert [contents(chat(sim, **body))[0] for _ in range(12)] == answers


def _caption(sim: SimHandle, image_url: str, **extra: Any) -> dict[str, Any]:
    r = chat(
        sim,
        messages=[scenes.user("Describe the frame.", [image_url])],
        temperature=0.01,
        response_format=scenes.json_schema("frame_caption", scenes.FRAME_CAPTION_SCHEMA),
        **extra,
    )
    return json.loads(contents(r)[0])


def test_frame_caption_follows_the_red_obstacle(sim: SimHandle) -> None:
    calm = _caption(sim, scenes.data_url(scenes.stacked(red_radius=0, vehicles=2)))
    crash = _caption(sim, scenes.data_url(scenes.stacked(red_radius=40, vehicles=2)))
    hazard = _caption(sim, scenes.data_url(scenes.stacked(red_radius=12, vehicles=2)))
    assert calm[cols.CAP_DETECTION] == -1 and calm[cols.HAZARD_CLUES] == "none"
    assert calm[cols.CAP_SEVERITY] == cols.NO_CRASH and calm[cols.CAP_LABEL] == cols.UNKNOWN_LABEL
    assert crash[cols.CAP_DETECTION] == 1 and crash[cols.HAZARD_CLUES] != "none"
    assert crash[cols.CAP_SEVERITY] != cols.NO_CRASH and crash[cols.CAP_EGO] == 1
    assert crash[cols.CAP_LABEL] in cols.LABELS and crash[cols.CAP_LABEL] != cols.UNKNOWN_LABEL
    assert "red obstacle" in crash[cols.GAZE]  # gaze mark sits above the obstacle's column
    assert hazard[cols.CAP_DETECTION] == 0 and hazard[cols.CAP_LABEL] in cols.HAZARD_LABELS
    assert calm[cols.CAP_VEHICLES] == crash[cols.CAP_VEHICLES] == 2


def test_describe_start_index_is_first_red_image(sim: SimHandle) -> None:
    urls = [scenes.data_url(scenes.road(r)) for r in (0, 0, 0, 0, 16, 40)]
    r = chat(
        sim,
        messages=[scenes.user("What happens?", urls)],
        n=4,
        temperature=0.6,
        response_format=scenes.json_schema("describe_reconcile", scenes.DESCRIBE_RECONCILE_SCHEMA),
    )
    answers = [json.loads(c) for c in contents(r)]
    assert {a[cols.START_FRAME] for a in answers} == {4}
    assert {a[cols.DETECTION] for a in answers} == {1}
    assert len({a[cols.CAPTION] for a in answers}) > 1  # wording varies by sample


def test_incident_frame_from_markdown_table_with_reasoning(sim: SimHandle) -> None:
    r = chat(
        sim,
        messages=[{"role": "system", "content": "Reasoning: high"}, scenes.user("From which frame?\n" + _TABLE)],
        n=12,
        temperature=0.6,
        response_format={"type": "json_object"},
    )
    body = r.json()
    frames = [json.loads(c["message"]["content"])["frame"] for c in body["choices"]]
    assert max(set(frames), key=frames.count) == 21
    assert set(frames) <= {21, 31}
    assert all(c["message"]["reasoning_content"].startswith("simulated reasoning") for c in body["choices"])


def test_reasoning_only_when_thinking_is_on(sim: SimHandle) -> None:
    url = scenes.data_url(scenes.stacked(30))
    off = chat(sim, messages=[scenes.user("Describe the frame, Scene_Description...", [url])])
    on = chat(
        sim,
        messages=[scenes.user("Describe the frame, Scene_Description...", [url])],
        chat_template_kwargs={"enable_thinking": True},
    )
    assert off.json()["choices"][0]["message"]["reasoning_content"] is None
    assert on.json()["choices"][0]["message"]["reasoning_content"].startswith("simulated reasoning")
    assert contents(off) == contents(on)  # thinking changes the reasoning, not the answer


def test_ensemble_answers_in_tags_without_a_schema(sim: SimHandle) -> None:
    text = (
        "Answer with <caption_before>, <reason> and <incident_start_frame> tags.\n"
        "1. frame: 90, caption: x, reason: y\n2. frame: 40\n3. Frame: 90\n4. frame: 40"
    )
    r = chat(sim, messages=[{"role": "system", "content": "You must answer in English."}, scenes.user(text)])
    content = contents(r)[0]
    assert re.search(r"<incident_start_frame>40</incident_start_frame>", content)
    assert re.search(r"<caption_before>[^<]+</caption_before>", content)
    assert re.search(r"<reason>[^<]+</reason>", content)


def test_max_tokens_cuts_the_answer_and_stop_strings_apply(sim: SimHandle) -> None:
    url = scenes.data_url(scenes.stacked(30))
    cut = chat(sim, messages=[scenes.user("Describe the frame.", [url])], max_tokens=5,
               response_format=scenes.json_schema("frame_caption", scenes.FRAME_CAPTION_SCHEMA))  # fmt: skip
    choice = cut.json()["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"]) <= 20
    stopped = chat(sim, messages=[scenes.user(_TABLE)], stop=['"frame"'], temperature=0)
    assert contents(stopped) == ["{"]
    assert stopped.json()["choices"][0]["stop_reason"] == '"frame"'


# ---- local media ----


def test_file_urls_inside_allowed_path_only(sim: SimHandle, media: Path, tmp_path: Path) -> None:
    inside, outside = media / "frame.png", tmp_path / "frame.png"
    for path in (inside, outside):
        assert cv2.imwrite(str(path), scenes.stacked(40))
    ok = chat(sim, messages=[scenes.user("Describe.", [inside.as_uri()])],
              response_format=scenes.json_schema("frame_caption", scenes.FRAME_CAPTION_SCHEMA))  # fmt: skip
    assert json.loads(contents(ok)[0])[cols.CAP_DETECTION] == 1
    refused = chat(sim, messages=[scenes.user("Describe.", [outside.as_uri()])])
    assert refused.status_code == 400 and "allowed" in refused.json()["error"]["message"]


def test_server_without_media_path_refuses_every_file_url(media: Path) -> None:
    path = media / "frame2.png"
    assert cv2.imwrite(str(path), scenes.road())
    with running_sim_server() as bare:
        r = chat(bare, messages=[scenes.user("Describe.", [path.as_uri()])])
        assert r.status_code == 400


# ---- capacity ----


async def test_capacity_bounds_requests_processed_at_once() -> None:
    capacity, latency = 2, 0.25
    with running_sim_server(capacity=capacity, latency_s=latency) as sim:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}
            started = time.monotonic()
            responses = await asyncio.gather(
                *(client.post(f"{sim.url}/chat/completions", json=body) for _ in range(3 * capacity))
            )
            elapsed = time.monotonic() - started
        stats = sim.stats()
    assert all(r.status_code == 200 for r in responses)
    assert stats["max_processing"] == capacity  # full, never over
    assert stats["max_in_flight"] > capacity  # the rest waited in the queue
    assert elapsed >= 3 * latency * 0.95  # three batches, one after another
    assert stats["completed"] == 3 * capacity and stats["in_flight"] == 0 and stats["processing"] == 0


# ---- faults ----

_CAPTION_BODY: dict[str, Any] = dict(
    messages=[scenes.user("Describe the frame.", [scenes.data_url(scenes.stacked(30))])],
    response_format=scenes.json_schema("frame_caption", scenes.FRAME_CAPTION_SCHEMA),
)


def test_fault_5xx(sim: SimHandle) -> None:
    sim.set_faults(five_xx=1.0)
    r = chat(sim, **_CAPTION_BODY)
    assert r.status_code in (500, 502, 503)
    assert r.json()["error"]["code"] == r.status_code
    assert sim.stats()["faults"]["5xx"] == 1


def test_fault_malformed(sim: SimHandle) -> None:
    sim.set_faults(malformed=1.0)
    for _ in range(6):  # every variant of breakage
        for content in contents(chat(sim, n=2, **_CAPTION_BODY)):
            assert content
            with pytest.raises(json.JSONDecodeError):
                json.loads(content)
    assert sim.stats()["faults"]["malformed"] == 6


def test_fault_empty(sim: SimHandle) -> None:
    sim.set_faults(empty=1.0)
    assert contents(chat(sim, n=3, **_CAPTION_BODY)) == ["", "", ""]
    assert sim.stats()["faults"]["empty"] == 1


def test_fault_nonenglish_keeps_schema_but_not_english(sim: SimHandle) -> None:
    sim.set_faults(nonenglish=1.0)
    answer = json.loads(contents(chat(sim, **_CAPTION_BODY))[0])
    jsonschema.validate(answer, scenes.FRAME_CAPTION_SCHEMA)
    assert answer[cols.SCENE] == NON_ENGLISH_TEXT and not answer[cols.SCENE].isascii()
    assert answer[cols.CAP_LABEL] in cols.LABELS
    assert sim.stats()["faults"]["nonenglish"] == 1


def test_fault_hang_outlasts_the_client_then_is_abandoned(sim: SimHandle) -> None:
    sim.set_faults(hang=1.0, hang_s=30)
    with pytest.raises(httpx.ReadTimeout):
        chat(sim, timeout=0.4, **_CAPTION_BODY)
    deadline = time.monotonic() + 3
    while sim.stats()["abandoned"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = sim.stats()
    assert stats["faults"]["hang"] == 1 and stats["abandoned"] == 1 and stats["in_flight"] == 0


def test_fault_hang_answers_after_hang_s(sim: SimHandle) -> None:
    sim.set_faults(hang=1.0, hang_s=0.3)
    started = time.monotonic()
    r = chat(sim, **_CAPTION_BODY)
    assert r.status_code == 200 and time.monotonic() - started >= 0.3


@pytest.mark.parametrize("status", [503, 400])
def test_fail_next_fails_n_times_then_answers(sim: SimHandle, status: int) -> None:
    sim.set_faults(fail_next=2, status=status)
    codes = [chat(sim, **_CAPTION_BODY).status_code for _ in range(3)]
    assert codes == [status, status, 200]
    assert sim.stats()["faults"]["fail_next"] == 2


def test_fault_sequence_follows_arrival_order_and_restarts_on_reset(sim: SimHandle) -> None:
    sim.set_faults({"5xx": 0.5})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    first = [chat(sim, **body).status_code for _ in range(16)]
    sim.reset()
    second = [chat(sim, **body).status_code for _ in range(16)]
    assert first == second
    assert 200 in first and any(code >= 500 for code in first)


def test_bad_fault_settings_are_400(sim: SimHandle) -> None:
    for body in ({"5xx": 2}, {"wobble": 0.1}, {"hang": 0.7, "empty": 0.7}, {"fail_next": -1}):
        assert http.post(f"{sim.base_url}/sim/faults", json=body).status_code == 400
    assert http.get(f"{sim.base_url}/sim/faults").json()["rates"] == NO_FAULTS


# ---- stats ----


def test_stats_count_tasks_and_reset_zeroes_them(sim: SimHandle) -> None:
    chat(sim, **_CAPTION_BODY)
    chat(sim, messages=[scenes.user(_TABLE)])
    chat(sim, model="nope", messages=[scenes.user("x")])
    stats = sim.stats()
    assert stats["received"] == 3 and stats["completed"] == 2 and stats["rejected"] == 1
    assert stats["tasks"] == {"frame_caption": 1, "incident_frame": 1}
    assert stats["max_in_flight"] == 1 and stats["in_flight"] == 0
    sim.reset()
    zeroed = sim.stats()
    assert zeroed["received"] == 0 and zeroed["tasks"] == {} and zeroed["max_in_flight"] == 0


# ---- clients, config and the separate process ----


def test_openai_sdk_talks_to_it(sim: SimHandle) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=sim.url, api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "From which frame?\n" + _TABLE}],
        n=2,
        temperature=0,
        response_format=scenes.json_schema("incident_frame", scenes.INCIDENT_FRAME_SCHEMA),
        extra_body={"top_k": 20, "repetition_penalty": 1.0, "chat_template_kwargs": {"enable_thinking": True}},
    )
    assert [json.loads(c.message.content or "") for c in completion.choices] == [{"frame": 21}] * 2
    assert (completion.choices[0].message.model_extra or {})["reasoning_content"].startswith("simulated")


def test_config_parses_faults_and_models() -> None:
    assert parse_faults("5xx=0.1, hang=0.05") == {"5xx": 0.1, "hang": 0.05}
    for bad in ("5xx=2", "boom=0.1", "5xx", "5xx=0.6,empty=0.6"):
        with pytest.raises(ValueError):
            parse_faults(bad)
    assert SimConfig(model="a").models == ["a"]
    assert SimConfig(faults="empty=0.5").faults == {"empty": 0.5}
    with pytest.raises(ValueError):
        SimConfig(capacity=0)


def test_start_sim_process_serves_until_terminated(tmp_path: Path) -> None:
    port = free_port()
    process = start_sim_process(port, model=["a", "b"], capacity=4, log_path=tmp_path / "sim.log")
    try:
        models = http.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["a", "b"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) is not None
    assert "SIMULATED" in (tmp_path / "sim.log").read_text()


def test_answers_do_not_depend_on_where_the_results_folder_is() -> None:
    """A path in a body is cut to its last three parts before seeding; base64 image data is left as it is."""
    from coool.sim.server import location_free

    def table(root: str) -> str:
        return f'{{"text":"| 11 | {root}/frames/1/stacked/000011.png |\\n","url":"file://{root}/frames/2/raw/000007.png"}}'

    assert location_free(table("/tmp/a/results")) == location_free(table("/home/u/run-2/x.y/results"))
    assert location_free(table("/tmp/a/results")) == '{"text":"| 11 | 1/stacked/000011.png |\\n","url":"file://2/raw/000007.png"}'
    image = '"url":"data:image/png;base64,iVBO/RW0K+Ggo/ANSUhEUg/AAAB/CAY"'
    assert location_free(image) == image
