"""One async client for every OpenAI-compatible model server (vLLM).

What it adds over the bare SDK, and why:

- retries with exponential backoff (tenacity) on what is transient: lost
  connections, timeouts, 429 and 5xx; a 4xx is our fault and is raised;
- a bound on requests in flight per URL, so a 2-core client never floods a
  server and several replicas of a role share the load;
- ``n`` samples per call, split into requests of at most ``max_n``;
- the reasoning split from the answer (``reasoning_content`` / ``reasoning``
  fields, or the text before ``</think>``);
- vLLM's sampling extras (top_k, min_p, repetition_penalty, chat_template_kwargs)
  passed through ``extra_body``;
- images as base64 data URLs or ``file://`` URLs restricted to a media root;
  a data URL is made while the request body is sent, one image at a time, so a
  request waiting for its answer holds none of its images;
- ``timeout_s`` as a deadline for the whole attempt (the SDK's timeouts are per
  read: a server that drips a byte a second would never time out);
- a cap on the size of a response, enforced while it is read: a larger one is
  an unusable answer (empty samples), as the stages treat an unparsable one.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import mimetypes
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2  # the openai SDK's HTTP client: its transports and types
import openai
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.chat import ChatCompletion
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from coool.settings import RoleSettings

log = logging.getLogger(__name__)


class MediaPathError(ValueError):
    """A ``file://`` image outside the allowed media root."""


class ModelRequestError(RuntimeError):
    """A request that failed for good (retries exhausted or a 4xx)."""


class ResponseTooLarge(openai.OpenAIError):
    """A response body larger than the role's ``max_response_bytes`` (cut off while read).

    An OpenAIError, so the SDK passes it on as it is instead of making it a
    (retried) connection error.
    """


class _CappedBody(httpx2.AsyncByteStream):
    """A response body that raises ResponseTooLarge once more than ``limit`` bytes came."""

    def __init__(self, stream: httpx2.AsyncByteStream, limit: int, url: httpx2.URL) -> None:
        self._stream = stream
        self._limit = limit
        self._url = url

    async def __aiter__(self) -> Any:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"the response from {self._url} is larger than {self._limit} bytes (max_response_bytes)")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def capped_http_client(timeout_s: float, max_bytes: int) -> httpx2.AsyncClient:
    """The SDK's default HTTP client (its pool, proxies from the environment) with every
    response body capped at ``max_bytes`` as it is read."""

    async def uncompressed(request: httpx2.Request) -> None:
        request.headers["Accept-Encoding"] = "identity"  # so the bytes counted are the bytes kept

    async def capped(response: httpx2.Response) -> None:
        # Called before the body is read: a declared size is refused at once, the rest is counted.
        url = response.request.url
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"the response from {url} declares {declared} bytes, more than {max_bytes} (max_response_bytes)")
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedBody(response.stream, max_bytes, url)

    return DefaultAsyncHttpxClient(timeout=timeout_s, event_hooks={"request": [uncompressed], "response": [capped]})


@dataclass(frozen=True)
class Sample:
    """One choice of a chat completion."""

    content: str
    reasoning: str | None = None
    finish_reason: str | None = None


@dataclass
class RequestStats:
    """What a client did; stage summaries report these."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "failures": self.failures,
            "samples": self.samples,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "errors": dict(self.errors),
        }


@dataclass
class Usage:
    """The tokens of the responses one piece of work received, as the server reported them.

    ``cached_prompt_tokens`` is None until a response reports it
    (``usage.prompt_tokens_details.cached_tokens``: vLLM only sends it when its
    prefix cache details are enabled); ``responses`` counts the answers whose
    usage was added (a response without ``usage`` counts in ``unreported``).
    """

    responses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None
    unreported: int = 0

    def add_response(self, usage: Any) -> None:
        """Add one response's ``usage`` (the SDK's CompletionUsage, or None)."""
        if usage is None:
            self.unreported += 1
            return
        self.responses += 1
        self.prompt_tokens += usage.prompt_tokens or 0
        self.completion_tokens += usage.completion_tokens or 0
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        if cached is not None:
            self.cached_prompt_tokens = (self.cached_prompt_tokens or 0) + int(cached)

    def add(self, other: Usage | dict[str, Any]) -> None:
        """Add another Usage (or its ``as_dict``): sums for a stage or a run."""
        data = other.as_dict() if isinstance(other, Usage) else other
        self.responses += int(data.get("responses") or 0)
        self.prompt_tokens += int(data.get("prompt_tokens") or 0)
        self.completion_tokens += int(data.get("completion_tokens") or 0)
        self.unreported += int(data.get("unreported") or 0)
        if data.get("cached_prompt_tokens") is not None:
            self.cached_prompt_tokens = (self.cached_prompt_tokens or 0) + int(data["cached_prompt_tokens"])

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "responses": self.responses,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "unreported": self.unreported,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        usage = cls()
        if data:
            usage.add(data)
        return usage


# The Usage of the (stage, video) unit running in this context: a unit's requests run in
# tasks it starts (they inherit the context), while a role's client serves many units at once.
_UNIT_USAGE: ContextVar[Usage | None] = ContextVar("coool_unit_usage", default=None)


@contextmanager
def count_usage() -> Iterator[Usage]:
    """A Usage that every response received inside the block (by any ChatClient) is added to."""
    usage = Usage()
    token = _UNIT_USAGE.set(usage)
    try:
        yield usage
    finally:
        _UNIT_USAGE.reset(token)


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """Answer text and reasoning; a text before ``</think>`` is reasoning."""
    text = content or ""
    if "</think>" in text:
        before, _, after = text.rpartition("</think>")
        before = before.replace("<think>", "", 1).strip()
        reasoning = "\n".join(r for r in (reasoning, before) if r) or None
        text = after
    return text.strip(), reasoning


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the server may answer next time."""
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, TimeoutError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


def image_url(
    path: str | Path,
    transport: Literal["data", "file"] = "data",
    media_root: str | Path | None = None,
) -> str:
    """The URL for an image part: a base64 data URL or a ``file://`` URL.

    ``file://`` URLs are only made for files under ``media_root``: the
    server reads them from its own disk and must never be pointed elsewhere.
    """
    path = Path(path).resolve()
    if transport == "file":
        if media_root is None:
            raise MediaPathError(f"{path}: file:// images need a media root (set COOOL_DATA_ROOT)")
        root = Path(media_root).resolve()
        if not path.is_relative_to(root):
            raise MediaPathError(f"{path}: outside the allowed media root {root}")
        return path.as_uri()
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


@dataclass(frozen=True)
class ImageFile:
    """An image part whose base64 data URL is made only while its request is sent.

    A stage queues far more requests than the client lets in flight (every
    frame of up to ``video_concurrency`` videos), and a request in flight
    mostly waits for its answer: holding paths instead of ~110 KB data URLs
    (24 of them in a describe request) keeps memory from following either
    (``streamed_body``).
    """

    path: Path


# Stands for an ImageFile in a body's JSON; random, so no message text can contain it.
_IMAGE_MARK = f"coool-image-{secrets.token_hex(16)}"


def streamed_body(body: dict[str, Any]) -> AsyncIterator[bytes] | None:
    """``body`` as JSON bytes made as they are sent, each ImageFile's data URL read and encoded
    in its turn; None when the body has no ImageFile part (it is sent whole, as usual).

    A describe request carries 24 frames: as whole JSON they would be held twice (the data
    URLs and the encoded body) for as long as the request waits for its answer, and the
    peak memory of a run would follow the requests in flight (bench figure 5b).
    """
    images: list[Path] = []

    def marked(value: Any) -> str:
        if isinstance(value, ImageFile):
            images.append(value.path)
            return _IMAGE_MARK
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    text = json.dumps(body, default=marked)
    if not images:
        return None
    for path in images:  # a missing file is our error, raised now (not a connection error mid-send, retried)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
    # json.dumps visits values in the order it writes them: the i-th mark is images[i].
    pieces = text.split(f'"{_IMAGE_MARK}"')
    if len(pieces) != len(images) + 1:
        raise AssertionError("an image mark in the body is not an image")  # pragma: no cover

    async def chunks() -> AsyncIterator[bytes]:
        for piece, path in zip(pieces, images):
            yield piece.encode("ascii")
            yield json.dumps(image_url(path, "data")).encode("ascii")
        yield pieces[-1].encode("ascii")

    return chunks()


def user_message(text: str, images: Sequence[str | ImageFile] = ()) -> dict[str, Any]:
    """A user message with image URLs (or ImageFile parts) first (earliest first), then the text."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def split_n(n: int, max_n: int) -> list[int]:
    """Sizes of the requests that together ask for ``n`` samples."""
    sizes = [max_n] * (n // max_n)
    if n % max_n:
        sizes.append(n % max_n)
    return sizes


# One in-flight bound per (URL, limit), shared by the clients given the same ``url_limits``:
# the pipeline flow runs several stage flows at once (eight describe configurations),
# each with its own client, and the bound is per server, not per client. A run owns
# its table (coool.run.Run.open_clients); nothing is kept between runs.
UrlLimits = dict[tuple[str, int], asyncio.Semaphore]


class ChatClient:
    """Chat completions for one model role, spread over its URLs.

    Create it inside the event loop that uses it (the per-URL semaphores
    belong to that loop). Not picklable on purpose: tasks that take a client
    must not be cached on it.
    """

    def __init__(
        self, role: str, settings: RoleSettings, *, media_root: str | Path | None = None, url_limits: UrlLimits | None = None
    ) -> None:
        self.role = role
        self.settings = settings
        self.media_root = Path(media_root) if media_root else None
        self.stats = RequestStats()
        key = settings.api_key.get_secret_value()
        self._clients = [
            AsyncOpenAI(
                base_url=url,
                api_key=key,
                max_retries=0,
                timeout=settings.timeout_s,
                http_client=capped_http_client(settings.timeout_s, settings.max_response_bytes),
            )
            for url in settings.urls
        ]
        limits = url_limits if url_limits is not None else {}
        self._limits = [
            limits.setdefault((url, settings.max_concurrency), asyncio.Semaphore(settings.max_concurrency))
            for url in settings.urls
        ]
        self._in_flight = [0 for _ in settings.urls]
        self._turn = itertools.count()

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def identity(self) -> str:
        """The model as cache keys record it (name, and revision when pinned)."""
        return self.settings.identity

    def image_url(self, path: str | Path) -> str | ImageFile:
        """The image part for ``user_message``: a ``file://`` URL (checked now) or, with
        base64 transport, an ImageFile whose data URL is made when the request is sent."""
        if self.settings.image_transport == "file":
            return image_url(path, "file", self.media_root)
        return ImageFile(Path(path))

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """json_schema when the role's server enforces schemas, else json_object."""
        if self.settings.structured_outputs:
            return json_schema_format(name, schema)
        return {"type": "json_object"}

    def _pick(self) -> int:
        # Least in flight, ties broken round-robin: replicas share the load.
        start = next(self._turn) % len(self._clients)
        order = [(start + i) % len(self._clients) for i in range(len(self._clients))]
        return min(order, key=lambda i: self._in_flight[i])

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
    ) -> list[Sample]:
        """``n`` samples for ``messages``; raises ModelRequestError when it can't."""
        extra: dict[str, Any] = {}
        for key, value in (
            ("top_k", top_k),
            ("min_p", min_p),
            ("repetition_penalty", repetition_penalty),
            ("chat_template_kwargs", chat_template_kwargs),
        ):
            if value is not None:
                extra[key] = value
        base: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        for key, value in (
            ("temperature", temperature),
            ("top_p", top_p),
            ("max_tokens", max_tokens),
            ("response_format", response_format),
            ("presence_penalty", presence_penalty),
            ("frequency_penalty", frequency_penalty),
        ):
            if value is not None:
                base[key] = value
        sizes = split_n(n, self.settings.max_n)
        calls = []
        offset = 0
        for size in sizes:
            kwargs = dict(base, n=size)
            if seed is not None:
                # vLLM seeds sample j of a request with seed + j: offset each
                # split request by the samples before it, or samples repeat.
                kwargs["seed"] = seed + offset
            offset += size
            calls.append(self._request(kwargs, extra))
        results = await asyncio.gather(*calls)
        return [s for batch in results for s in batch]

    async def _request(self, kwargs: dict[str, Any], extra: dict[str, Any]) -> list[Sample]:
        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            self.stats.errors[type(exc).__name__] += 1
            log.warning("%s: retrying after %s (attempt %d)", self.role, _describe(exc), state.attempt_number)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait_exponential(multiplier=self.settings.backoff_s, max=60),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(kwargs, extra)
        except Exception as exc:
            self.stats.failures += 1
            self.stats.errors[type(exc).__name__] += 1
            raise ModelRequestError(f"{self.role} ({self.settings.model}): {_describe(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, kwargs: dict[str, Any], extra: dict[str, Any]) -> list[Sample]:
        i = self._pick()
        self._in_flight[i] += 1
        try:
            async with self._limits[i]:
                self.stats.requests += 1
                # Images are encoded here, inside the in-flight bound, as the body is sent (one
                # at a time); the request then waits for its answer holding none of them.
                body = streamed_body({**kwargs, **extra})
                client = self._clients[i]
                # The deadline starts once the request may go (not while it queues for the bound).
                try:
                    async with asyncio.timeout(self.settings.timeout_s):
                        if body is None:
                            response = await client.chat.completions.create(**kwargs, extra_body=extra or None)
                        else:  # the SDK's own path for a body it does not build (same errors, same parsing)
                            response = await client.post("/chat/completions", cast_to=ChatCompletion, content=body)
                except TimeoutError as exc:
                    url = self._clients[i].base_url.join("chat/completions")
                    raise openai.APITimeoutError(request=httpx2.Request("POST", url)) from exc
        except (ResponseTooLarge, openai.APIConnectionError) as exc:
            # (An SDK that wraps what its HTTP client raises gives a connection error caused by it.)
            too_large = exc if isinstance(exc, ResponseTooLarge) else exc.__cause__
            if not isinstance(too_large, ResponseTooLarge):
                raise
            # An unusable answer, not a failed request: each stage does with empty
            # samples what it does with unparsable ones (drop, re-ask, fall back).
            self.stats.errors[type(too_large).__name__] += 1
            log.warning("%s: %s; its %d sample(s) count as unusable answers", self.role, too_large, kwargs["n"])
            return [Sample(content="", finish_reason="too_large") for _ in range(kwargs["n"])]
        finally:
            self._in_flight[i] -= 1
        usage = Usage()
        usage.add_response(response.usage)
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        self.stats.cached_prompt_tokens += usage.cached_prompt_tokens or 0
        if (unit := _UNIT_USAGE.get()) is not None:
            unit.add(usage)
        samples = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            message = choice.message
            extra_fields = message.model_extra or {}
            reasoning = extra_fields.get("reasoning_content") or extra_fields.get("reasoning")
            content, reasoning = split_reasoning(message.content, reasoning)
            samples.append(Sample(content=content, reasoning=reasoning, finish_reason=choice.finish_reason))
        self.stats.samples += len(samples)
        return samples

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} from {exc.request.url}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):  # a kind of connection error: say which
        return f"timed out: no whole answer from {exc.request.url} within timeout_s"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach {exc.request.url}: {exc.__cause__ or exc}"
    return f"{type(exc).__name__}: {exc}"
