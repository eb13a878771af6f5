"""Per-video intermediate outputs of the pipeline: what exists, and the frames they point at."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coool.workspace import Workspace


@dataclass(frozen=True)
class Link:
    title: str
    rel: str  # results-relative path
    kind: str  # "table" or "json"


@dataclass
class Lane:
    """One row of the timeline: a start frame and, optionally, the window of frames shown."""

    label: str
    start: int | None
    window: list[int] = field(default_factory=list)
    kind: str = "submission"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _frames(value: Any) -> list[int]:
    if not isinstance(value, list):
        return []
    return [int(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _frame(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def describe_window(ws: Workspace, config: str, video: int) -> tuple[list[int], int | None] | None:
    """(window frames, final start frame) of describe/<config>/<video>.json; None if absent/unreadable."""
    data = _read_json(ws.describe_path(config, video))
    if not isinstance(data, dict):
        return None
    return _frames(data.get("window")), _frame(data.get("frame"))


def detected_frame(ws: Workspace, video: int) -> int | None:
    data = _read_json(ws.detect_path(video))
    return _frame(data.get("frame")) if isinstance(data, dict) else None


def links(ws: Workspace, video: int) -> list[Link]:
    """Every intermediate file of one video that exists, in pipeline order."""
    wanted = [
        ("frames manifest", ws.manifest_path(video), "json"),
        ("captions (stage 2)", ws.captions_path(video), "table"),
        ("raw caption answers", ws.captions_raw_path(video), "json"),
        ("detect votes (stage 3)", ws.detect_path(video), "json"),
    ]
    # The count pass's re-descriptions are a describe configuration's folder (v6-counts).
    wanted += [(f"describe {c} (stage 4)", ws.describe_path(c, video), "json") for c in ws.describe_configs()]
    wanted += [("ensemble (stage 5)", ws.ensemble_path(video), "json")]
    return [Link(t, p.relative_to(ws.root).as_posix(), kind) for t, p, kind in wanted if p.is_file()]


def submission_config(rel_key: str) -> str | None:
    """'describe/<config>/submission.csv' -> '<config>' (whose window JSONs explain its frames)."""
    parts = rel_key.split("/")
    if len(parts) == 3 and parts[0] == "describe" and parts[2] == "submission.csv":
        return parts[1]
    return None
