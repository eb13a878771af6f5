"""Responses that drip or never end.

- A server that answers 200 and then sends one byte a second: ``timeout_s`` is a
  deadline for the whole attempt, which is timed out and retried like any timeout.
- A response larger than ``max_response_bytes`` is cut off while it is read (the
  server sees the connection closed long before it sent everything), counted, and
  its samples are unusable answers: the describe stage re-asks and the video still
  gets a valid row.

The dripping and huge servers are this file's own (a socket server on 127.0.0.1
whose every response ends within DRIP_S); the describe test uses the SIMULATED
model server (a test double, no model inside).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coool import schema as cols
from coool.describe import DescribePromptSet, describe_unit
from coool.frames import extract_caption_frames
from coool.llm import ChatClient, ModelRequestError
from coool.params import load_describe_configs
from coool.settings import RoleSettings
from coool.sim.testing import running_sim_server
from coool.submission import submission_text, validate
from coool.workspace import video_json

VIDEO = 0
DETECTED = 30
DRIP_S = 20.0  # the longest any response of the dripping server lasts
HUGE_BYTES = 20 * 1024 * 1024
CAP = 1024 * 1024
DESCRIBE_CAP = 48 * 1024


@dataclass
class Served:
    """What the test server saw: request start times, bytes it managed to send per response."""

    starts: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


def _completion(content: str, n: int = 1) -> bytes:
    choices = [{"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"} for i in range(n)]
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}).encode()


def _read_request(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return {}
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return json.loads(body) if body else {}


@contextmanager
def raw_server(mode: str) -> Iterator[tuple[str, Served]]:
    """``drip``: 200, then a space a second (for at most DRIP_S). ``huge``: a 20 MB completion,
    no Content-Length. ``huge-declared``: the same with its Content-Length."""
    served = Served()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            request = _read_request(sock)
            served.starts.append(time.monotonic())
            sent = 0
            try:
                if mode == "drip":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                    ends = time.monotonic() + DRIP_S
                    while time.monotonic() < ends:
                        sock.sendall(b" ")
                        sent += 1
                        time.sleep(1.0)
                    return
                n = int(request.get("n", 1))
                body = _completion("x" * (HUGE_BYTES // n), n)
                length = f"Content-Length: {len(body)}\r\n" if mode == "huge-declared" else ""
                sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n".encode())
                for i in range(0, len(body), 65536):
                    sock.sendall(body[i : i + 65536])
                    sent += len(body[i : i + 65536])
            except OSError:  # the client gave up: what we sent so far is recorded
                pass
            finally:
                served.sent.append(sent)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", served
    finally:
        server.shutdown()
        server.server_close()


HELLO = [{"role": "user", "content": "Say hello."}]


def test_a_dripping_response_is_timed_out_whole_and_retried() -> None:
    with raw_server("drip") as (url, served):
        settings = RoleSettings(model="m", urls=[url], timeout_s=2.0, max_attempts=3, backoff_s=0.0)

        async def go() -> tuple[float, ChatClient, BaseException | None]:
            client = ChatClient("describer", settings)
            started = time.monotonic()
            error = None
            try:
                await client.complete(HELLO)
            except ModelRequestError as exc:
                error = exc
            finally:
                await client.close()
            return time.monotonic() - started, client, error

        seconds, client, error = asyncio.run(go())
    # Three attempts of 2 s each, not a wait for as long as the server drips (DRIP_S each).
    assert isinstance(error, ModelRequestError) and "timed out" in str(error).lower()
    assert len(served.starts) == 3
    assert seconds < 3 * 2.0 + 3.0, seconds
    assert client.stats.retries == 2 and client.stats.failures == 1
    assert client.stats.errors["APITimeoutError"] == 3
    assert all(sent <= 4 for sent in served.sent)  # each was abandoned after ~2 bytes


@pytest.mark.parametrize("mode", ["huge", "huge-declared"])
def test_a_huge_response_is_cut_off_while_read_and_is_an_unusable_answer(mode: str) -> None:
    with raw_server(mode) as (url, served):
        settings = RoleSettings(model="m", urls=[url], max_response_bytes=CAP, max_attempts=3, backoff_s=0.0)

        async def go() -> tuple[list[Any], ChatClient]:
            async with ChatClient("describer", settings) as client:
                return await client.complete(HELLO, n=4), client

        samples, client = asyncio.run(go())
        time.sleep(0.2)  # let the handler record what it sent
    assert [s.content for s in samples] == ["", "", "", ""]
    assert {s.finish_reason for s in samples} == {"too_large"}
    # One request, not retried: an unusable answer, not a transient error.
    assert len(served.starts) == 1 and client.stats.retries == 0 and client.stats.failures == 0
    assert client.stats.errors["ResponseTooLarge"] == 1
    # The client stopped reading near the cap: the server could not send the 20 MB
    # (socket buffers let a few MB through at most).
    assert served.sent[0] < HUGE_BYTES // 2, served.sent


def test_the_default_cap_is_far_above_the_largest_real_answer() -> None:
    # n=16 samples (max_n) of 8192 tokens (the largest max_tokens), at 32 bytes a token.
    assert RoleSettings().max_response_bytes >= 4 * 16 * 8192 * 32


def _answer(caption: str) -> dict[str, Any]:
    """A describe answer with all 11 fields (a plain accident) and the given caption."""
    return {
        cols.START_FRAME: 3, cols.DETECTION: 1, cols.SEVERITY: "1. Ego-car collided but did not stop", cols.EGO: 1,
        cols.LABEL: "ego-car hits barrier", cols.N_BICYCLISTS: 0, cols.N_ANIMALS: 0, cols.N_PEDESTRIANS: 0, cols.N_VEHICLES: 1,
        cols.CAPTION: caption, cols.REASON: "A red barrier blocks the lane and ego-car hits it.",
    }


def test_a_describe_pass_whose_answer_is_too_large_is_reasked_and_the_row_is_valid(
    clips4: Path, tmp_path: Path
) -> None:
    stage1 = tmp_path / "stage1" / str(VIDEO)
    extract_caption_frames(clips4 / "videos" / f"{VIDEO}.mp4", clips4 / "heatmaps" / f"{VIDEO}.mp4", stage1)
    config = load_describe_configs()["v4"]
    # A well-formed answer padded to 20 KB (within max_tokens, which the simulated server
    # enforces): parseable, but n of them exceed a 48 KiB cap; the usual answers are ~1 KB.
    padded = _answer("Ego-car drives on. " + "a" * 20_000)
    with running_sim_server(model=["sim-model"]) as sim:
        sim.script("describe_texts", padded, requests=1)
        settings = RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2,
                                max_response_bytes=DESCRIBE_CAP)

        async def go() -> dict[str, Any]:
            async with ChatClient("describer", settings) as client:
                await describe_unit(client, VIDEO, config, DescribePromptSet.load(config), stage1, video_json(tmp_path / "out", VIDEO),
                                    detected_frame=DETECTED)
                return client.stats.as_dict()

        stats = asyncio.run(go())
    assert config.n * 20_000 > DESCRIBE_CAP
    saved = json.loads((tmp_path / "out" / f"{VIDEO}.json").read_text())
    texts = saved["passes"]["texts"]
    assert stats["errors"].get("ResponseTooLarge", 0) >= 1
    # Every sample of the pass came back empty: nothing of the huge answers was kept.
    assert texts["samples"] and {(s["content"], s["finish_reason"]) for s in texts["samples"]} == {("", "too_large")}
    assert texts["reasks"], "the unusable pass was not re-asked"
    frame = pd.read_csv(io.StringIO(submission_text([saved["row"]])), dtype=str, keep_default_na=False)
    assert validate(frame, strict=True) == []
