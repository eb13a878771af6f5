"""Normalising and comparing logged request bodies (used by the differential test)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from coool.synthetic import read_stamp

_PATH_CELL = re.compile(r"^/\S+/(\d{6}\.(?:png|jpg))$")


def decode_image(url: str) -> np.ndarray:
    """The pixels behind an image part's URL (a base64 data URL or a file:// URL)."""
    if url.startswith("data:"):
        data = base64.b64decode(url.split(",", 1)[1])
    elif url.startswith("file://"):
        data = Path(unquote(urlparse(url).path)).read_bytes()
    else:
        raise ValueError(f"unexpected image URL {url[:60]!r}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image URL {url[:60]!r} does not decode")
    return image


def image_part(url: str) -> dict[str, Any]:
    """An image part as what it shows: the frame stamped in it, its shape, a digest of its pixels."""
    import hashlib

    image = decode_image(url)
    return {
        "frame": read_stamp(image),
        "shape": list(image.shape),
        "pixels": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16],
    }


def markdown_cells(text: str) -> str:
    """A text whose markdown table rows are rewritten cell by cell: cells stripped (pandas pads
    columns to the widest cell), dash runs of the separator shortened, and an image path cell
    reduced to its file name (the original's frames and coool's live in different folders)."""
    out = []
    for line in text.split("\n"):
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            cells = [re.sub(r"-+", "-", c) if set(c) <= set("-:") else _PATH_CELL.sub(r"\1", c) for c in cells]
            line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return "\n".join(out)


def normalise(body: dict[str, Any], *, prompt_text: bool = True) -> dict[str, Any]:
    """A request body with image parts replaced by what they show and tables by their cells
    (and an absent ``n`` as ``n: 1``, the API's default).

    ``prompt_text`` False: of a text part only the JSON object that ends it is kept (what a reconcile
    request appends); the instructions are not compared.
    """

    def text(value: str) -> str:
        value = markdown_cells(value)
        if prompt_text:
            return value
        brace = value.rfind("\n\n{")
        tail = value[brace:] if brace >= 0 else ""
        # Only the reconcile context (the original's two keys) that ends the text, not a prompt's example.
        try:
            context = json.loads(tail)
        except ValueError:
            context = None
        if not (isinstance(context, dict) and any(key.startswith("First prediction") for key in context)):
            tail = ""
        return "<prompt>" + tail

    def part(p: dict[str, Any]) -> dict[str, Any]:
        if p.get("type") == "image_url":
            return {"type": "image", **image_part(p["image_url"]["url"])}
        if p.get("type") == "text":
            return {**p, "text": text(p["text"])}
        return p

    out = dict(body)
    # Equivalent spellings: a body without n asks for one choice (the API's default).
    out.setdefault("n", 1)
    messages = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, list):
            m = {**m, "content": [part(p) for p in content]}
        elif isinstance(content, str):
            m = {**m, "content": text(content)}
        messages.append(m)
    out["messages"] = messages
    return out


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, one line per differing leaf (``path: original != coool``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append(f"{path}.{key}: absent != {json.dumps(b[key])[:200]}")
            elif key not in b:
                out.append(f"{path}.{key}: {json.dumps(a[key])[:200]} != absent")
            else:
                out += differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = [f"{path}: {len(a)} items != {len(b)} items"] if len(a) != len(b) else []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{path}[{i}]")
        return out
    if a != b:
        if isinstance(a, str) and isinstance(b, str):
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return [f"{path}: text differs at {i}: {a[max(0, i - 60):i + 80]!r} != {b[max(0, i - 60):i + 80]!r}"]
        return [f"{path}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"]
    return []


Equivalence = Callable[[dict[str, Any]], dict[str, Any]]


def compare_requests(
    original: list[dict[str, Any]],
    coool: list[dict[str, Any]],
    *,
    prompt_text: bool = True,
    equivalences: tuple[tuple[Equivalence, Equivalence], ...] = (),
) -> list[str]:
    """Every difference between two runs' requests, taken as multisets (coool sends some requests
    together that the original sends one after another); [] when they are the same requests.

    ``equivalences``: (original side, coool side) rewrites of a body, each pair a listed spelling
    difference with the same effect on the server (the caller says why)."""

    def prepared(body: dict[str, Any], side: int) -> dict[str, Any]:
        body = normalise(body, prompt_text=prompt_text)
        for pair in equivalences:
            body = pair[side](body)
        return body

    a = sorted((prepared(r["body"], 0) for r in original), key=_order)
    b = sorted((prepared(r["body"], 1) for r in coool), key=_order)
    if dump := os.environ.get("COOOL_DIFF_DUMP"):  # for a human reading a failure
        Path(dump).write_text(json.dumps({"original": a, "coool": b}, indent=1))
    out = [f"{len(a)} original requests != {len(b)} coool requests"] if len(a) != len(b) else []
    for i, (x, y) in enumerate(zip(a, b)):
        out += [f"request {i}{d}" for d in differences(x, y)]
    return out


def _order(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)
