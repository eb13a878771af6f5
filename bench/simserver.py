"""The SIMULATED model server for benchmarks, with its image analysis memoised.

``python -m bench.simserver [sim-server options]`` runs ``coool sim-server``
(the test double, no model inside) with one change: the simulation's own
per-image work (PNG decode plus colour rules, 20-65 ms of CPU per image) is
remembered by the image's content hash. In production that work belongs to
a GPU server on another machine; on a 2-core benchmark box it would compete
with the pipeline we are measuring. Every request is still received, parsed
and answered in full, the answers are unchanged, and everything on the
client side (reading, base64-encoding and sending each image) still happens.

The memo only helps content seen before: benchmark data sets repeat a pool
of distinct clips, and a warm-up run analyses the pool once. ``--memo-file
PATH`` keeps the memo across processes (loaded at start, merged back at exit).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pickle
import signal
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_MAX_ENTRIES = 200_000  # small facts objects, not images: a few tens of MB at most


class _Keyed(np.ndarray):
    """A decoded image (or a 1x1 stand-in for a known one) tagged with its content key."""

    key: bytes = b""
    url: str = ""
    allowed: Any = None


def _load(path: Path | None) -> dict[tuple[bytes, str], Any]:
    if path is None or not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)
        return data if isinstance(data, dict) else {}
    except Exception:  # a damaged memo is only a slower start
        return {}


def _save(path: Path, facts: dict[tuple[bytes, str], Any]) -> None:
    merged = {**_load(path), **facts}  # another process may have added entries meanwhile
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(merged, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def install(memo_file: Path | None = None) -> None:
    from coool.sim import answers, server

    decode: Callable[..., np.ndarray] = server.decode_image_url
    facts: OrderedDict[tuple[bytes, str], Any] = OrderedDict(_load(memo_file))
    known: set[bytes] = {key for key, _ in facts}
    if memo_file is not None:
        atexit.register(lambda: _save(memo_file, dict(facts)))
        # uvicorn re-raises SIGTERM after its graceful shutdown; exit normally then, so atexit runs.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def key_of(url: str) -> bytes | None:
        # data: URLs carry the bytes; file:// URLs could change on disk, so they are not memoised.
        return hashlib.blake2b(url.encode("ascii", "replace"), digest_size=16).digest() if url.startswith("data:") else None

    def memo_decode(url: str, allowed: Any) -> np.ndarray:
        key = key_of(url)
        if key is not None and key in known:
            stub = np.zeros((1, 1, 3), np.uint8).view(_Keyed)
        else:
            stub = decode(url, allowed).view(_Keyed)
        stub.key, stub.url, stub.allowed = key or b"", url, allowed
        return stub

    def memo(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        def wrapped(image: np.ndarray) -> Any:
            key = getattr(image, "key", b"")
            if not key:
                return fn(np.asarray(image))
            entry = (key, fn.__name__)
            if entry in facts:
                facts.move_to_end(entry)
                return facts[entry]
            pixels = np.asarray(image)
            if pixels.shape[:2] == (1, 1):  # a stand-in whose facts of this kind are not known yet
                pixels = np.asarray(decode(image.url, image.allowed))
            value = fn(pixels)
            facts[entry] = value
            known.add(key)
            if len(facts) > _MAX_ENTRIES:
                facts.popitem(last=False)
            return value

        wrapped.__name__ = fn.__name__
        return wrapped

    server.decode_image_url = memo_decode
    answers.analyse_frame = memo(answers.analyse_frame)
    answers.analyse_stacked = memo(answers.analyse_stacked)


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    memo_file = None
    if "--memo-file" in args:
        i = args.index("--memo-file")
        memo_file = Path(args[i + 1])
        del args[i : i + 2]
    install(memo_file)
    from coool.cli import app

    app(["sim-server", *args], prog_name="python -m bench.simserver")


if __name__ == "__main__":
    main()
