"""Helpers for the studio tests: a results dir with two submissions, CSRF scraping, raw ASGI requests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coool import schema as cols
from coool.files import atomic_write_json, atomic_write_text
from coool.submission import write_submission
from coool.synthetic import load_truth

N_VIDEOS = 3
FINAL = "submission.csv"  # results-relative keys of the two submissions
DESCRIBED = "describe/v4/submission.csv"


@dataclass(frozen=True)
class StudioDirs:
    data: Path
    videos: Path
    results: Path

    @property
    def truth(self) -> Path:
        return self.data / "truth.csv"


def caption(side: str, video: int) -> str:
    return f"Submission {side} sees a quiet road before incident {video}."


def reason(side: str, video: int) -> str:
    return f"Submission {side} says the ego-car hits a red barrier in video {video}."


Texts = Callable[[str, int], tuple[str, str]]  # (side, video) -> (caption, reason)


def build_results(data: Path, results: Path, texts: Texts | None = None) -> StudioDirs:
    """A results dir as the pipeline lays it out: run.json, two submissions, some intermediates."""
    texts = texts or (lambda side, video: (caption(side, video), reason(side, video)))
    rows = [t.row() for t in load_truth(data)]
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / "run.json", {"videos_dir": str(data / "videos"), "recipe": "test"})
    for side, rel, shift in (("one", FINAL, 0), ("two", DESCRIBED, 6)):
        subs = []
        for row in rows:
            video = int(row[cols.VIDEO])
            text_caption, text_reason = texts(side, video)
            subs.append({**row, cols.START_FRAME: int(row[cols.START_FRAME]) + shift, cols.CAPTION: text_caption, cols.REASON: text_reason})
        write_submission(subs, results / rel)
    for video in range(N_VIDEOS):
        atomic_write_json(results / "describe" / "v4" / f"{video}.json", {
            "video": video, "config": "v4", "window": [10, 16, 22, 28, 34, 40], "frame": 22,
            "passes": {"texts": {"samples": [{"content": "x" * 500, "parsed": True}]}},
        })  # fmt: skip
    atomic_write_json(results / "detect" / "0.json", {"video": 0, "frame": 31, "votes": [31, 31, 41, -1], "samples": []})
    atomic_write_text(results / "captions" / "0.csv", "frame,image,Scene_Description\n1,frames/0/stacked/000001.png,A grey road.\n")
    return StudioDirs(data=data, videos=data / "videos", results=results)


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert match, "page has no CSRF meta tag"
    return match.group(1)


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def raw_get(app: object, raw_path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET a raw path through the ASGI app exactly as uvicorn passes it (no client-side '..' folding)."""
    import asyncio
    from urllib.parse import unquote

    path, _, query = raw_path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": unquote(path), "raw_path": path.encode("latin-1"), "query_string": query.encode("latin-1"),
        "root_path": "", "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict] = []
    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client never disconnects; the app stops listening when done
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        import socket
        import threading
        import time

        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # bound before serving: no race for the port
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def raw_status(self, raw_path: str) -> int:
        """Status of a GET sent byte for byte (http.client does not fold '..')."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest("GET", raw_path, skip_accept_encoding=True)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()
