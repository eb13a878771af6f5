"""Turning result files into something readable: tables, JSON trees, timeline coordinates."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment

TIMELINE_WIDTH = 1000  # SVG user units; the SVG stretches to the page width
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LONG_TEXT = 400  # strings longer than this start folded


def xpos(frame: int | None, frames: int) -> float:
    """x of a 1-based frame on the timeline (clamped to the bar)."""
    if frame is None or frames <= 1:
        return 0.0
    return round(min(max(frame - 1, 0), frames - 1) / (frames - 1) * TIMELINE_WIDTH, 2)


def register_filters(env: Environment) -> None:
    env.globals["xpos"] = xpos
    env.globals["TIMELINE_WIDTH"] = TIMELINE_WIDTH
    env.globals["LONG_TEXT"] = LONG_TEXT


def read_table(path: Path, limit: int = 5000) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (at most ``limit`` rows: a browser page, not a data dump)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [row for _, row in zip(range(limit), reader)]
    return header, rows


def image_link(cell: str, results_dir: Path) -> str | None:
    """A results-relative path for a cell that names an image file under the results dir."""
    if not cell.lower().endswith(IMAGE_SUFFIXES):
        return None
    path = Path(cell)
    candidates = [path] if path.is_absolute() else [results_dir / path]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except OSError:
            continue
        if resolved.is_relative_to(results_dir) and resolved.is_file():
            return resolved.relative_to(results_dir).as_posix()
    return None


def load_json_any(path: Path) -> Any:
    """A JSON file, or a JSON-lines file as a list (bad lines kept as text, flagged)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"unparsable line": n, "text": line})
        return out
    return json.loads(text)


def int_tallies(data: Any) -> dict[str, list[tuple[int, int]]]:
    """For each top-level list of integers (detect votes, windows): value -> count, most common first."""
    if not isinstance(data, dict):
        return {}
    out = {}
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            out[key] = sorted(Counter(value).items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def scalars(data: Any) -> list[tuple[str, Any]]:
    """Top-level scalar fields: the summary shown above a JSON tree."""
    if not isinstance(data, dict):
        return []
    return [(k, v) for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None]
