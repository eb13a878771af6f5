"""ChatClient against the simulated server (retries, bounds, n, replicas) and a recording transport."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import coool.llm
from coool.llm import (
    ChatClient,
    ImageFile,
    MediaPathError,
    ModelRequestError,
    image_url,
    is_transient,
    json_schema_format,
    split_n,
    split_reasoning,
    streamed_body,
    user_message,
)
from coool.settings import RoleSettings
from coool.sim.testing import SimHandle, free_port, running_sim_server, start_sim_process

HELLO = [user_message("Say hello.")]


# -- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "max_n", "sizes"),
    [(12, 5, [5, 5, 2]), (10, 5, [5, 5]), (3, 16, [3]), (16, 16, [16]), (17, 16, [16, 1]), (1, 1, [1]), (0, 4, [])],
)
def test_split_n(n: int, max_n: int, sizes: list[int]) -> None:
    assert split_n(n, max_n) == sizes


@pytest.mark.parametrize(
    ("content", "field", "answer", "reasoning"),
    [
        ('{"a": 1}', None, '{"a": 1}', None),
        ("<think>look left\nthen right</think>\n{\"a\": 1}", None, '{"a": 1}', "look left\nthen right"),
        ("no opening tag</think> answer ", None, "answer", "no opening tag"),
        ("<think>x</think>y", "from the field", "y", "from the field\nx"),
        ("<think>a</think>b</think> c", None, "c", "a</think>b"),  # the last </think> ends the reasoning
        ("  plain  ", "field only", "plain", "field only"),
        (None, None, "", None),
        ("<think></think>{}", None, "{}", None),
    ],
)
def test_split_reasoning(content: str | None, field: str | None, answer: str, reasoning: str | None) -> None:
    assert split_reasoning(content, field) == (answer, reasoning)


def request_for(url: str = "http://x/v1") -> httpx.Request:
    return httpx.Request("POST", url)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (openai.APIConnectionError(request=request_for()), True),
        (openai.APITimeoutError(request=request_for()), True),
        (TimeoutError(), True),
        (openai.RateLimitError("slow down", response=httpx.Response(429, request=request_for()), body=None), True),
        (openai.InternalServerError("boom", response=httpx.Response(503, request=request_for()), body=None), True),
        (openai.InternalServerError("boom", response=httpx.Response(500, request=request_for()), body=None), True),
        (openai.BadRequestError("bad", response=httpx.Response(400, request=request_for()), body=None), False),
        (openai.NotFoundError("no model", response=httpx.Response(404, request=request_for()), body=None), False),
        (ValueError("ours"), False),
    ],
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_user_message_puts_images_first() -> None:
    assert user_message("just text") == {"role": "user", "content": "just text"}
    message = user_message("describe", ["data:a", "data:b"])
    assert message["content"] == [
        {"type": "image_url", "image_url": {"url": "data:a"}},
        {"type": "image_url", "image_url": {"url": "data:b"}},
        {"type": "text", "text": "describe"},
    ]


# -- images ----------------------------------------------------------------------------------------


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "frames").mkdir(parents=True)
    (root / "frames" / "000001.png").write_bytes(b"\x89PNG fake bytes")
    (root / "frames" / "000011.jpg").write_bytes(b"\xff\xd8 fake jpeg")
    (tmp_path / "secret.png").write_bytes(b"outside")
    (root / "frames" / "escape.png").symlink_to(tmp_path / "secret.png")
    return root


def test_image_url_data(media: Path) -> None:
    url = image_url(media / "frames" / "000001.png")
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG fake bytes"
    assert image_url(media / "frames" / "000011.jpg").startswith("data:image/jpeg;base64,")


def test_image_url_file_inside_the_media_root(media: Path) -> None:
    url = image_url(media / "frames" / "000001.png", "file", media)
    assert url == (media / "frames" / "000001.png").resolve().as_uri()
    assert url.startswith("file:///")
    # A path that only passes through the root's parent on its way in is still inside.
    assert image_url(media / ".." / "media" / "frames" / "000001.png", "file", media) == url


@pytest.mark.parametrize(
    "where",
    ["secret.png", "media/../secret.png", "media/frames/escape.png"],
    ids=["sibling", "dot-dot", "symlink-out"],
)
def test_image_url_file_refused_outside_the_media_root(media: Path, where: str) -> None:
    with pytest.raises(MediaPathError, match="outside the allowed media root"):
        image_url(media.parent / where, "file", media)


def test_image_url_file_needs_a_media_root(media: Path) -> None:
    with pytest.raises(MediaPathError, match="need a media root"):
        image_url(media / "frames" / "000001.png", "file", None)


# -- against the simulated server ------------------------------------------------------------


async def test_answers_and_stats(sim: SimHandle, role) -> None:
    async with ChatClient("describer", role(sim)) as client:
        samples = await client.complete(HELLO, n=3, temperature=0.5)
    assert len(samples) == 3
    assert all(json.loads(s.content)["note"].startswith("coool simulation") for s in samples)
    assert all(s.finish_reason == "stop" for s in samples)
    stats = client.stats.as_dict()
    assert (stats["requests"], stats["retries"], stats["failures"], stats["samples"]) == (1, 0, 0, 3)
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert sim.stats()["received"] == 1


@pytest.mark.parametrize("status", [503, 500, 502, 429])
async def test_transient_failures_are_retried(sim: SimHandle, role, status: int) -> None:
    sim.set_faults(fail_next=2, status=status)
    async with ChatClient("describer", role(sim, max_attempts=3)) as client:
        samples = await client.complete(HELLO, n=2)
    assert len(samples) == 2
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (3, 2, 0)
    assert sum(client.stats.errors.values()) == 2
    server = sim.stats()
    assert (server["received"], server["completed"], server["faults"]["fail_next"]) == (3, 1, 2)


async def test_retries_give_up_after_max_attempts(sim: SimHandle, role) -> None:
    sim.set_faults(fail_next=10, status=503)
    async with ChatClient("describer", role(sim, max_attempts=3)) as client:
        with pytest.raises(ModelRequestError, match=r"describer \(sim-model\): HTTP 503"):
            await client.complete(HELLO)
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (3, 2, 1)
    assert sim.stats()["received"] == 3


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_client_error_is_not_retried(sim: SimHandle, role, status: int) -> None:
    sim.set_faults(fail_next=1, status=status)
    async with ChatClient("describer", role(sim, max_attempts=5)) as client:
        with pytest.raises(ModelRequestError, match=f"HTTP {status}"):
            await client.complete(HELLO)
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (1, 0, 1)
    assert sim.stats()["received"] == 1


async def test_an_unknown_model_is_not_retried(sim: SimHandle, role) -> None:
    async with ChatClient("describer", role(sim, model="no-such-model")) as client:
        with pytest.raises(ModelRequestError, match="HTTP 404"):
            await client.complete(HELLO)
    assert sim.stats()["received"] == 1


async def test_an_unreachable_server_is_retried_then_reported(role) -> None:
    settings = role(max_attempts=2, urls=[f"http://127.0.0.1:{free_port()}/v1"], timeout_s=5.0)
    async with ChatClient("ensembler", settings) as client:
        with pytest.raises(ModelRequestError, match="cannot reach"):
            await client.complete(HELLO)
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (2, 1, 1)


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimHandle]:
    """A simulated server taking 0.1 s per request, with room for many at once."""
    with running_sim_server(model=["sim-model"], latency_s=0.1, capacity=64) as handle:
        yield handle


@pytest.mark.parametrize("bound", [1, 3])
async def test_requests_in_flight_are_bounded_per_url(slow_sim: SimHandle, role, bound: int) -> None:
    slow_sim.reset()
    started = time.perf_counter()
    async with ChatClient("describer", role(slow_sim, max_concurrency=bound)) as client:
        results = await asyncio.gather(*(client.complete(HELLO) for _ in range(9)))
    elapsed = time.perf_counter() - started
    assert len(results) == 9
    stats = slow_sim.stats()
    assert stats["received"] == 9
    assert stats["max_in_flight"] <= bound  # never more
    assert stats["max_in_flight"] >= min(bound, 2)  # and the requests did overlap up to it
    assert elapsed >= (9 / bound) * 0.1 * 0.9


async def test_clients_of_one_url_share_its_bound(slow_sim: SimHandle, role) -> None:
    # The pipeline runs several stage flows at once, each with its own client of the same server.
    slow_sim.reset()
    limits: dict = {}  # a run's table of bounds (Run.open_clients gives its clients one)
    async with (
        ChatClient("describer", role(slow_sim, max_concurrency=2), url_limits=limits) as first,
        ChatClient("describer", role(slow_sim, max_concurrency=2), url_limits=limits) as second,
    ):
        await asyncio.gather(*(c.complete(HELLO) for c in (first, second) for _ in range(6)))
    stats = slow_sim.stats()
    assert stats["received"] == 12
    assert stats["max_in_flight"] == 2


async def test_n_is_split_into_requests_of_max_n(sim: SimHandle, role) -> None:
    async with ChatClient("detector", role(sim, max_n=5)) as client:
        samples = await client.complete(HELLO, n=12, seed=7)
    assert len(samples) == 12
    assert client.stats.requests == 3 and client.stats.samples == 12
    stats = sim.stats()
    assert (stats["received"], stats["choices"]) == (3, 12)


async def test_reasoning_comes_back_when_thinking_is_enabled(sim: SimHandle, role) -> None:
    async with ChatClient("captioner", role(sim)) as client:
        (thinking,) = await client.complete(HELLO, chat_template_kwargs={"enable_thinking": True})
        (plain,) = await client.complete(HELLO, chat_template_kwargs={"enable_thinking": False})
    assert thinking.reasoning is not None and thinking.reasoning.startswith("simulated reasoning")
    assert plain.reasoning is None
    assert "simulated reasoning" not in thinking.content


@pytest.fixture(scope="module")
def second_sim() -> Iterator[SimHandle]:
    with running_sim_server(model=["sim-model"]) as handle:
        yield handle


async def test_requests_spread_across_two_servers(sim: SimHandle, second_sim: SimHandle, role) -> None:
    second_sim.reset()
    async with ChatClient("describer", role(sim, second_sim)) as client:
        for _ in range(6):  # one at a time: nothing in flight, so turns alternate
            await client.complete(HELLO)
        assert (sim.stats()["received"], second_sim.stats()["received"]) == (3, 3)
        await asyncio.gather(*(client.complete(HELLO) for _ in range(20)))
    first, second = sim.stats()["received"], second_sim.stats()["received"]
    assert first + second == 26
    assert first >= 8 and second >= 8


async def test_a_failing_replica_is_retried_on_the_other(sim: SimHandle, second_sim: SimHandle, role) -> None:
    second_sim.reset()
    second_sim.set_faults(fail_next=1, status=503)
    try:
        async with ChatClient("describer", role(second_sim, sim)) as client:
            (sample,) = await client.complete(HELLO)
    finally:
        second_sim.set_faults(fail_next=0)
    assert sample.content
    assert client.stats.retries == 1
    assert (second_sim.stats()["received"], sim.stats()["received"]) == (1, 1)


async def test_vllm_extras_are_accepted_by_the_server(sim: SimHandle, role) -> None:
    async with ChatClient("ensembler", role(sim)) as client:
        await client.complete(
            HELLO, top_k=20, min_p=0.0, repetition_penalty=1.2, seed=42,
            chat_template_kwargs={"enable_thinking": False}, temperature=0.7, top_p=0.8, max_tokens=64,
        )
        assert sim.stats()["completed"] == 1
        # The server does read them: an out-of-range penalty is its 400, and a 400 is not retried.
        with pytest.raises(ModelRequestError, match="HTTP 400"):
            await client.complete(HELLO, repetition_penalty=2.5)
    stats = sim.stats()
    assert (stats["received"], stats["rejected"]) == (2, 1)


@pytest.fixture(scope="module")
def media_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimHandle, Path]]:
    root = tmp_path_factory.mktemp("served-media")
    with running_sim_server(model=["sim-model"], allowed_local_media_path=root) as handle:
        yield handle, root


async def test_file_urls_reach_a_server_that_allows_the_root(media_sim, stage1, role, tmp_path: Path) -> None:
    sim, root = media_sim
    frame = stage1.frames(0)[0][1]
    inside = root / "frame.png"
    inside.write_bytes(frame.read_bytes())
    async with ChatClient("captioner", role(sim, image_transport="file"), media_root=root) as client:
        url = client.image_url(inside)
        assert url == inside.resolve().as_uri()
        await client.complete([user_message("What is in the picture?", [url])])
        with pytest.raises(MediaPathError):
            client.image_url(frame)  # the stage-1 folder is not under this client's root
    # A client whose media root the server does not allow: the server refuses (400, not retried).
    outside = tmp_path / "frame.png"
    outside.write_bytes(frame.read_bytes())
    async with ChatClient("captioner", role(sim, image_transport="file"), media_root=tmp_path) as client:
        with pytest.raises(ModelRequestError, match="HTTP 400"):
            await client.complete([user_message("What?", [client.image_url(outside)])])
        assert client.stats.requests == 1


# -- what goes over the wire: a recording transport -----------------------------------------------


class Recorder:
    """Every request body the client sends; answers with scripted message fields."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.message: dict[str, Any] = {"content": '{"ok": true}'}

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        choices = [
            {"index": i, "message": {"role": "assistant", **self.message}, "finish_reason": "stop"}
            for i in range(body.get("n", 1))
        ]
        return httpx.Response(
            200,
            json={
                "id": "rec", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            },
        )


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    real = openai.AsyncOpenAI

    def recording_openai(**kwargs: Any) -> openai.AsyncOpenAI:
        # In place of the client's own (capped) HTTP client.
        return real(**{**kwargs, "http_client": httpx.AsyncClient(transport=httpx.MockTransport(rec.handle))})

    monkeypatch.setattr(coool.llm, "AsyncOpenAI", recording_openai)
    return rec


async def test_extras_and_sampling_go_in_the_body(recorder: Recorder, role) -> None:
    schema = {"title": "t", "type": "object"}
    async with ChatClient("ensembler", role(urls=["http://rec/v1"], model="m")) as client:
        await client.complete(
            HELLO, n=1, temperature=0.7, top_p=0.8, max_tokens=4096, seed=42, top_k=20, min_p=0.0,
            repetition_penalty=1.3, chat_template_kwargs={"enable_thinking": True},
            response_format=client.response_format("ensemble", schema),
        )
        await client.complete(HELLO)
    full, bare = recorder.bodies
    assert full == {
        "model": "m", "messages": HELLO, "n": 1, "temperature": 0.7, "top_p": 0.8, "max_tokens": 4096, "seed": 42,
        "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.3, "chat_template_kwargs": {"enable_thinking": True},
        "response_format": {"type": "json_schema", "json_schema": {"name": "ensemble", "schema": schema, "strict": True}},
    }
    assert bare == {"model": "m", "messages": HELLO, "n": 1}  # nothing unasked is sent


async def test_presence_and_frequency_penalties_go_in_the_body(recorder: Recorder, role) -> None:
    # The original ensemble sends both (at 0.0); a value of 0.0 is still sent, as asked.
    async with ChatClient("ensembler", role(urls=["http://rec/v1"], model="m")) as client:
        await client.complete(HELLO, presence_penalty=0.0, frequency_penalty=0.5)
    (body,) = recorder.bodies
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.0, 0.5)


async def test_image_files_are_sent_as_data_urls_and_the_callers_messages_keep_paths(
    recorder: Recorder, role, media: Path
) -> None:
    frame = media / "frames" / "000001.png"
    async with ChatClient("describer", role(urls=["http://rec/v1"], model="m")) as client:
        part = client.image_url(frame)
        assert part == ImageFile(frame)  # nothing is read until the request is sent
        messages = [user_message("What?", [part, part])]
        await client.complete(messages)
    (body,) = recorder.bodies
    urls = [p["image_url"]["url"] for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    assert urls == [image_url(frame), image_url(frame)]
    assert messages[0]["content"][0]["image_url"]["url"] == ImageFile(frame)


async def test_a_streamed_body_is_the_whole_json_with_the_images_read_as_it_is_sent(media: Path) -> None:
    frame, jpeg = media / "frames" / "000001.png", media / "frames" / "000011.jpg"
    body = {"model": "m", "messages": [user_message('Say "what"?', [ImageFile(frame), ImageFile(jpeg), ImageFile(frame)])]}
    chunks = streamed_body(body)
    assert chunks is not None
    frame.write_bytes(b"changed before sending")  # nothing was read yet: what is sent is what is on disk then
    sent = json.loads(b"".join([c async for c in chunks]))
    urls = [p["image_url"]["url"] for p in sent["messages"][0]["content"] if p["type"] == "image_url"]
    assert urls == [image_url(frame), image_url(jpeg), image_url(frame)]
    assert sent["messages"][0]["content"][-1] == {"type": "text", "text": 'Say "what"?'}
    assert streamed_body({"model": "m", "messages": HELLO}) is None  # no image: sent whole, as before


async def test_a_missing_image_fails_the_request_without_retrying(recorder: Recorder, role, media: Path) -> None:
    async with ChatClient("describer", role(urls=["http://rec/v1"], model="m")) as client:
        with pytest.raises(ModelRequestError, match="not found"):
            await client.complete([user_message("What?", [client.image_url(media / "frames" / "gone.png")])])
        assert (client.stats.retries, recorder.bodies) == (0, [])


async def test_requests_waiting_for_answers_hold_none_of_their_images(stage1) -> None:
    # Eight describe-like requests (every stage-1 frame of a clip each) wait at once on a
    # slow simulated server in its own process, so only this client's memory is traced.
    frames = [path for _, path in stage1.frames(0)] * 4  # ~1.5 MB of data URLs a request
    encoded = sum(len(image_url(path)) for path in frames)  # one request's images as data URLs
    port = free_port()
    process = start_sim_process(port, latency=0.5, model=["sim-model"])
    try:
        settings = RoleSettings(model="sim-model", urls=[f"http://127.0.0.1:{port}/v1"], backoff_s=0.0)
        async with ChatClient("describer", settings) as client:
            messages = [user_message("What happens in these frames?", [client.image_url(p) for p in frames])]
            await client.complete(messages)  # first-use allocations of the SDK and the HTTP pool, untraced
            tracemalloc.start()
            try:
                answers = await asyncio.gather(*(client.complete(messages) for _ in range(8)))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        process.terminate()
        process.wait()
    assert len(answers) == 8 and all(a[0].content for a in answers)  # the server read every request whole
    # Whole JSON bodies held 2 x 8 x `encoded` bytes (data URLs and body) until the answers came.
    assert peak < 2 * encoded, (peak, encoded)


async def test_split_requests_seeds_follow_vllms_per_sample_seeds(recorder: Recorder, role) -> None:
    async with ChatClient("detector", role(urls=["http://rec/v1"], max_n=5)) as client:
        samples = await client.complete(HELLO, n=12, seed=7)
        await client.complete(HELLO, n=7)
    assert len(samples) == 12
    assert [(b["n"], b.get("seed")) for b in recorder.bodies] == [(5, 7), (5, 12), (2, 17), (5, None), (2, None)]


async def test_reasoning_fields_and_think_tags_are_split(recorder: Recorder, role) -> None:
    async with ChatClient("describer", role(urls=["http://rec/v1"])) as client:
        recorder.message = {"content": "<think>the red disc grows</think>\n{\"frame\": 41}"}
        (tagged,) = await client.complete(HELLO)
        recorder.message = {"content": '{"frame": 41}', "reasoning_content": "from the server"}
        (field,) = await client.complete(HELLO)
        recorder.message = {"content": '{"frame": 41}', "reasoning": "newer vLLM field"}
        (newer,) = await client.complete(HELLO)
        recorder.message = {"content": None}
        (empty,) = await client.complete(HELLO)
    assert (tagged.content, tagged.reasoning) == ('{"frame": 41}', "the red disc grows")
    assert (field.content, field.reasoning) == ('{"frame": 41}', "from the server")
    assert (newer.content, newer.reasoning) == ('{"frame": 41}', "newer vLLM field")
    assert (empty.content, empty.reasoning) == ("", None)
    assert client.stats.prompt_tokens == 20 and client.stats.completion_tokens == 28


async def test_response_format_follows_structured_outputs(role) -> None:
    schema = {"title": "x", "type": "object"}
    async with ChatClient("a", role(urls=["http://rec/v1"])) as on:
        assert on.response_format("x", schema) == json_schema_format("x", schema)
    async with ChatClient("b", role(urls=["http://rec/v1"], structured_outputs=False)) as off:
        assert off.response_format("x", schema) == {"type": "json_object"}
