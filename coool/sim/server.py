"""The SIMULATED model server: an OpenAI-compatible HTTP API with no model inside.

A test double for vLLM's chat-completions server. Answers are scripted and
deterministic (``coool.sim.answers``); latency, a batch capacity and faults
are simulated on request. Every response carries ``X-Coool-Simulated: true``
and /v1/models says ``owned_by: coool-simulation``, so nothing it returns can
be mistaken for model output.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coool.sim.answers import GENERIC, TASKS, Answer, ChatInput, answer_request, recognise_task
from coool.sim.config import FAULT_MODES, SimConfig, check_rates
from coool.sim.faults import FAIL_NEXT, FaultState
from coool.sim.images import MediaError, decode_image_url
from coool.sim.protocol import ChatRequest, RequestError, error_body, parse_request
from coool.sim.tokens import apply_stop, estimate_tokens, limit_tokens, prompt_tokens

log = logging.getLogger("coool.sim")

OWNED_BY = "coool-simulation"
SIM_HEADER = "X-Coool-Simulated"
_REASONING_LEVEL = re.compile(r"reasoning:\s*(low|medium|high)", re.IGNORECASE)
_HANG_POLL_S = 0.1
_ABSOLUTE_FORM = re.compile(r"^https?://[^/]+(/.*)?$")


class ProxyForm:
    """Pure ASGI middleware: a request addressed as to an HTTP proxy ("POST http://host:port/v1/...")
    is served as its path, so a client whose server URL is written into its code can be pointed
    at the simulation through ``HTTP_PROXY``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (match := _ABSOLUTE_FORM.match(scope.get("path", ""))):
            path = match.group(1) or "/"
            raw = scope.get("raw_path") or b""
            raw_match = _ABSOLUTE_FORM.match(raw.decode("latin-1")) if raw else None
            scope = {**scope, "path": path, "raw_path": (raw_match.group(1) or "/").encode("latin-1") if raw_match else path.encode()}
        await self.app(scope, receive, send)


class SimulatedHeader:
    """Pure ASGI middleware: marks every response, errors included, as simulated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (SIM_HEADER.lower().encode(), b"true")]
            await send(message)

        await self.app(scope, receive, marked)


@dataclass
class Stats:
    received: int = 0
    completed: int = 0
    rejected: int = 0  # 4xx for a bad request
    abandoned: int = 0  # the client left during a hang
    choices: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0  # inside the chat handler, queued or processing
    max_in_flight: int = 0
    processing: int = 0  # holding a capacity slot
    max_processing: int = 0
    scripted: int = 0  # requests answered from /sim/script
    active: Counter[str] = field(default_factory=Counter)  # per task title: arrived, not yet answered
    # The usage the answers reported (sums over responses): what a client's token count must match.
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "received": self.received,
            "completed": self.completed,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "choices": self.choices,
            "tasks": dict(self.tasks),
            "active": {task: k for task, k in self.active.items() if k > 0},
            "scripted": self.scripted,
            "faults": {mode: self.faults.get(mode, 0) for mode in (*FAULT_MODES, FAIL_NEXT)},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "processing": self.processing,
            "max_processing": self.max_processing,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    def reset(self) -> None:
        # The gauges describe requests still running, so they survive a reset.
        live, busy, active = self.in_flight, self.processing, self.active
        self.__init__()  # type: ignore[misc]
        self.in_flight = self.max_in_flight = live
        self.processing = self.max_processing = busy
        self.active = active


@dataclass(frozen=True)
class LoggedRequest:
    """One chat request as it arrived: its JSON body (images included) and the task recognised."""

    seq: int  # arrival order, from 0 since the last reset
    body: Any
    task: str | None  # None when the request was refused before it was recognised

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "task": self.task, "body": self.body}


@dataclass
class Script:
    """Scripted answers for the next ``requests`` requests of one task title."""

    contents: list[str]  # choice i gets contents[i % len(contents)]
    requests: int


class SimState:
    """Everything one app instance mutates. Single event loop: no locks needed."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.faults = FaultState(config.faults, seed=config.seed, hang_s=config.hang_s)
        self.created = int(time.time())
        self.latency_s = config.latency_s
        self.task_latency_s = dict(config.task_latency_s)
        self.scripts: dict[str, deque[Script]] = {}
        # Every chat request received (the most recent config.request_log), for tests that
        # compare what two clients sent.
        self.requests: deque[LoggedRequest] = deque(maxlen=config.request_log)
        self.logged = 0
        # How often each unseeded request body was seen (by digest): see ``_prepare``.
        self.repeats: Counter[str] = Counter()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def slots(self) -> asyncio.Semaphore:
        # Created on first use in the running loop (a test client may bring a new loop).
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.config.capacity)
            self._slots_loop = loop
        return self._slots

    def take_script(self, task: str) -> list[str] | None:
        """The scripted contents for this request of ``task``, if a script is pending."""
        queue = self.scripts.get(task)
        if not queue:
            return None
        script = queue[0]
        script.requests -= 1
        if script.requests <= 0:
            queue.popleft()
        return script.contents

    def latency_for(self, task: str) -> float:
        return self.task_latency_s.get(task, self.latency_s)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status)


def create_app(config: SimConfig | None = None) -> FastAPI:
    """The simulated server as an ASGI app (serve it with uvicorn)."""
    config = config or SimConfig()
    state = SimState(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.warning(
            "coool SIMULATED model server (a test double, no model inside) serving %s; "
            "capacity %d, latency %.3fs + %.4fs/token, faults %s",
            ", ".join(config.models),
            config.capacity,
            config.latency_s,
            config.per_token_latency_s,
            config.faults or "none",
        )
        yield

    app = FastAPI(
        title="coool simulated model server",
        description="A simulation of vLLM's OpenAI-compatible API with no model inside.",
        lifespan=lifespan,
    )
    app.add_middleware(SimulatedHeader)
    app.add_middleware(ProxyForm)
    app.state.sim = state

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if config.api_key and not _authorized(request, config.api_key):
            return _error(401, "Unauthorized")
        data = [
            {"id": name, "object": "model", "created": state.created, "owned_by": OWNED_BY, "root": name, "parent": None}
            for name in config.models
        ]
        return {"object": "list", "data": data}

    @app.get("/sim/stats")
    async def stats() -> dict[str, Any]:
        return state.stats.as_dict()

    @app.post("/sim/reset")
    async def reset() -> dict[str, Any]:
        state.stats.reset()
        state.faults.restart()  # and the fault sequence, so a test can replay it
        state.scripts.clear()
        _clear_log(state)
        state.repeats.clear()
        return state.stats.as_dict()

    @app.get("/sim/requests")
    async def get_requests() -> dict[str, Any]:
        """The chat requests received since the last reset (or clear), oldest first."""
        return {"simulated": True, "requests": [r.as_dict() for r in state.requests]}

    @app.delete("/sim/requests")
    async def clear_requests() -> dict[str, Any]:
        _clear_log(state)
        return {"simulated": True, "requests": []}

    @app.get("/sim/script")
    async def get_scripts() -> dict[str, Any]:
        return _scripts_view(state)

    @app.post("/sim/script")
    async def add_script(request: Request) -> Response:
        """The next ``requests`` requests of ``task`` answer ``content`` (or ``contents``, one per choice)."""
        try:
            body = await request.json()
            task, script = _parse_script(body)
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad script: {exc}")
        state.scripts.setdefault(task, deque()).append(script)
        return JSONResponse(_scripts_view(state))

    @app.delete("/sim/script")
    async def clear_scripts() -> dict[str, Any]:
        state.scripts.clear()
        return _scripts_view(state)

    @app.get("/sim/latency")
    async def get_latency() -> dict[str, Any]:
        return {"latency_s": state.latency_s, "tasks": dict(state.task_latency_s)}

    @app.post("/sim/latency")
    async def set_latency(request: Request) -> Response:
        """``{"latency_s": 0.2, "tasks": {"describe_counts": 1.0, "frame_caption": null}}`` (null: use latency_s)."""
        try:
            body = await request.json()
            if not isinstance(body, dict) or set(body) - {"latency_s", "tasks"}:
                raise ValueError("expected an object with latency_s and/or tasks")
            latency = float(body.get("latency_s", state.latency_s))
            tasks = dict(state.task_latency_s)
            for task, value in (body.get("tasks") or {}).items():
                if value is None:
                    tasks.pop(task, None)
                else:
                    tasks[str(task)] = float(value)
            if latency < 0 or any(v < 0 for v in tasks.values()):
                raise ValueError("latencies must be >= 0")
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad latency settings: {exc}")
        state.latency_s, state.task_latency_s = latency, tasks
        return JSONResponse({"latency_s": state.latency_s, "tasks": dict(state.task_latency_s)})

    @app.get("/sim/faults")
    async def get_faults() -> dict[str, Any]:
        return _faults_view(state.faults)

    @app.post("/sim/faults")
    async def set_faults(request: Request) -> Response:
        try:
            body = await request.json()
            _apply_fault_settings(state.faults, body)
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad fault settings: {exc}")
        return JSONResponse(_faults_view(state.faults))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _chat(state, request)

    return app


def _clear_log(state: SimState) -> None:
    state.requests.clear()
    state.logged = 0


def _log_request(state: SimState, body: Any, task: str | None) -> None:
    if state.config.request_log:
        state.requests.append(LoggedRequest(state.logged, body, task))
    state.logged += 1


def _parse_script(body: Any) -> tuple[str, Script]:
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    unknown = set(body) - {"task", "content", "contents", "requests"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    task = body.get("task")
    if task not in (*TASKS, GENERIC):
        raise ValueError(f"task must be one of {', '.join((*TASKS, GENERIC))}, got {task!r}")
    if ("content" in body) == ("contents" in body):
        raise ValueError("give exactly one of content (every choice) or contents (one per choice)")
    raw = body["contents"] if "contents" in body else [body["content"]]
    if not isinstance(raw, list) or not raw:
        raise ValueError("contents must be a non-empty list")
    # A non-string content is sent as its JSON text (what a model answering JSON would write).
    contents = [c if isinstance(c, str) else json.dumps(c, ensure_ascii=False) for c in raw]
    requests = int(body.get("requests", 1))
    if requests < 1:
        raise ValueError("requests must be >= 1")
    return task, Script(contents, requests)


def _scripts_view(state: SimState) -> dict[str, Any]:
    return {
        "pending": {
            task: [{"contents": s.contents, "requests": s.requests} for s in queue]
            for task, queue in state.scripts.items()
            if queue
        }
    }


def _authorized(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())


def _faults_view(faults: FaultState) -> dict[str, Any]:
    return {
        "rates": {mode: faults.rates.get(mode, 0.0) for mode in FAULT_MODES},
        "fail_next": faults.fail_next,
        "status": faults.fail_status,
        "hang_s": faults.hang_s,
    }


def _apply_fault_settings(faults: FaultState, body: Any) -> None:
    """Rates (merged into the current ones), fail_next + status, hang_s; all checked before any is set."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    body = dict(body)
    rates = dict(faults.rates)
    rates.update(body.pop("rates", None) or {})
    rates.update({mode: body.pop(mode) for mode in FAULT_MODES if mode in body})
    fail_next = int(body.pop("fail_next", faults.fail_next))
    status = int(body.pop("status", faults.fail_status))
    hang_s = float(body.pop("hang_s", faults.hang_s))
    if body:
        raise ValueError(f"unknown keys {sorted(body)}")
    if fail_next < 0 or not 100 <= status <= 599 or hang_s < 0:
        raise ValueError("fail_next must be >= 0, status an HTTP status, hang_s >= 0")
    faults.rates = check_rates({mode: float(rate) for mode, rate in rates.items()})
    faults.fail_next, faults.fail_status, faults.hang_s = fail_next, status, hang_s


async def _chat(state: SimState, request: Request) -> Response:
    stats = state.stats
    stats.received += 1
    fault = state.faults.draw()  # one draw per arrival, used or not: keeps the sequence by arrival order
    if state.config.api_key and not _authorized(request, state.config.api_key):
        stats.rejected += 1
        return _error(401, "Unauthorized")  # vLLM's answer without the right --api-key bearer
    forced = state.faults.take_forced()
    if forced is not None:
        stats.faults[FAIL_NEXT] += 1
        return _error(forced, f"simulated failure (fail_next): status {forced}")
    try:
        req, chat_input = await _prepare(state, request)
    except RequestError as exc:
        stats.rejected += 1
        return _error(exc.status, exc.message)
    if fault == "5xx":
        stats.faults[fault] += 1
        status = state.faults.server_error_status()
        return _error(status, f"simulated server error {status}")

    task = recognise_task(chat_input.schema, chat_input.schema_name, chat_input.text)
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    stats.active[task] += 1
    try:
        if fault == "hang":
            # Hangs outside the capacity slots: one stuck request must not stall the others.
            stats.faults[fault] += 1
            if not await _hang(request, state.faults.hang_s):
                stats.abandoned += 1
                return Response(status_code=499)  # nobody is listening any more
        async with state.slots():
            stats.processing += 1
            stats.max_processing = max(stats.max_processing, stats.processing)
            try:
                # Taken when the answer is made, so a request lost to a fault leaves the script for its retry.
                body = await _complete(state, req, chat_input, fault, state.take_script(task))
            finally:
                stats.processing -= 1
    finally:
        stats.in_flight -= 1
        stats.active[task] -= 1
    stats.completed += 1
    return JSONResponse(body)


# An absolute path in a prompt (the original's detector shows its caption CSV, image paths
# included), or a file:// URL: where the results folder lives. The pattern starts with the
# "/" itself, so the scan jumps from slash to slash (a describe body holds megabytes of
# base64); the lookbehinds then say whether that slash starts a path.
_ABSOLUTE_PATH = re.compile(r"/(?:(?<=[\s|\"'(]/)|(?<=file:///))[\w.+-]+(?:/[\w.+-]+)*")


def location_free(text: str) -> str:
    """``text`` with every absolute path cut to its last three parts (``1/stacked/000011.png``).

    The answers are seeded by the request body; a model answers from what the paths show
    (video, frame), not from where the folder is. Cut, the same run in two results folders
    gets the same answers, so tests can compare them.
    """
    return _ABSOLUTE_PATH.sub(lambda m: "/".join(m.group(0).rsplit("/", 3)[-3:]), text)


async def _prepare(state: SimState, request: Request) -> tuple[ChatRequest, ChatInput]:
    """Parse and check the request; every 4xx is decided here, before any fault applies."""
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from exc
    try:
        req, chat_input = await _checked(state, raw)
    except RequestError:
        _log_request(state, raw, None)
        raise
    _log_request(state, raw, recognise_task(chat_input.schema, chat_input.schema_name, chat_input.text))
    return req, chat_input


async def _checked(state: SimState, raw: Any) -> tuple[ChatRequest, ChatInput]:
    req = parse_request(raw)
    if req.model not in state.config.models:
        raise RequestError(404, f"The model `{req.model}` does not exist.")
    if req.stream:
        raise RequestError(400, "the simulated server does not stream; send stream=false")
    if req.n > state.config.max_n:
        raise RequestError(400, f"n={req.n} is larger than this server's limit of {state.config.max_n}")
    schema, schema_name = req.schema_and_name()
    urls = [url for message in req.messages for url in message.image_urls()]
    try:
        images = await asyncio.to_thread(
            lambda: tuple(decode_image_url(url, state.config.allowed_local_media_path) for url in urls)
        )
    except MediaError as exc:
        raise RequestError(400, str(exc)) from exc
    system_text = "\n".join(m.text() for m in req.messages if m.role in ("system", "developer"))
    kwargs = req.chat_template_kwargs or {}
    canonical = location_free(json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    # Near-greedy sampling (the captioner's 0.01) gives the same answer every time, whatever else
    # was asked before: only a sampling temperature makes a repeated body answer afresh.
    if "seed" not in raw and float(raw.get("temperature", 1.0) or 0.0) >= 0.1:
        # A sampling server answers a request without a seed afresh each time (the original's
        # detector sends its 12 samples as 12 identical n=1 requests): the k-th identical body
        # gets other choices. The first one answers as before; the answers stay a function of
        # the body and how often it came.
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        repeat = state.repeats[digest]
        state.repeats[digest] += 1
        if repeat:
            canonical += f"\x00repeat {repeat}"
    chat_input = ChatInput(
        text="\n".join(m.text() for m in req.messages),
        user_text="\n".join(m.text() for m in req.messages if m.role == "user"),
        images=images,
        schema=schema,
        schema_name=schema_name,
        json_mode=req.json_mode(),
        temperature=1.0 if req.temperature is None else req.temperature,
        reasoning=bool(
            kwargs.get("enable_thinking") or kwargs.get("thinking") or req.reasoning_effort
        ) or bool(_REASONING_LEVEL.search(system_text)),
        canonical=canonical,
    )
    return req, chat_input


async def _hang(request: Request, seconds: float) -> bool:
    """Sleep ``seconds`` like a stuck server; False as soon as the client has gone."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(_HANG_POLL_S, left))
        if await request.is_disconnected():
            return False
    return True


async def _complete(
    state: SimState, req: ChatRequest, chat_input: ChatInput, fault: str | None, scripted: list[str] | None = None
) -> dict[str, Any]:
    """The chat.completion body; holds the caller's capacity slot for the simulated latency.

    ``scripted``: contents set through /sim/script; they replace the answers and
    no content fault (malformed, empty, non-English) applies to them.
    """
    if scripted is not None:
        task = recognise_task(chat_input.schema, chat_input.schema_name, chat_input.text)
        answers = [Answer(scripted[i % len(scripted)], None) for i in range(req.n)]
        fault = None
        state.stats.scripted += 1
    else:
        task, answers = await asyncio.to_thread(answer_request, chat_input, req.n, fault == "nonenglish")
    if fault in ("malformed", "empty", "nonenglish"):
        state.stats.faults[fault] += 1
    choices, tokens = [], []
    for index, answer in enumerate(answers):
        choice, used = _choice(index, answer, req, state, fault)
        choices.append(choice)
        tokens.append(used)
    # The n choices of one request decode together, like a batch: time follows the longest.
    delay = state.latency_for(task) + state.config.per_token_latency_s * max(tokens, default=0)
    if delay > 0:
        await asyncio.sleep(delay)
    state.stats.tasks[task] += 1
    state.stats.choices += len(choices)
    texts = [m.text() for m in req.messages]
    prompt = prompt_tokens(texts, len(chat_input.images))
    state.stats.prompt_tokens += prompt
    state.stats.completion_tokens += sum(tokens)
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": sum(tokens), "total_tokens": prompt + sum(tokens)},
        "system_fingerprint": OWNED_BY,
    }


def _choice(index: int, answer: Answer, req: ChatRequest, state: SimState, fault: str | None) -> tuple[dict[str, Any], int]:
    content, reasoning = answer.content, answer.reasoning
    if fault == "malformed":
        content = state.faults.break_json(content)
    elif fault == "empty":
        content = ""
    content, stop_word = apply_stop(content, req.stop_list(), bool(req.include_stop_str_in_output))
    content, reasoning, cut = limit_tokens(content, reasoning, req.token_limit())
    choice = {
        "index": index,
        "message": {"role": "assistant", "content": content, "reasoning_content": reasoning, "tool_calls": []},
        "logprobs": None,
        "finish_reason": "length" if cut else "stop",
        "stop_reason": stop_word,
    }
    return choice, estimate_tokens(content) + estimate_tokens(reasoning)
