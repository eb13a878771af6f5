"""Hand-drawn test pictures for the simulated server (numpy + cv2, no files needed)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

from coool import schema as cols

W, H = 320, 240
GREY = (110, 110, 110)
RED = (0, 0, 255)
DARK = (30, 30, 30)
BLUE = (200, 60, 30)


def road(red_radius: int = 0, vehicles: int = 1, red_x: int = W // 2) -> np.ndarray:
    """A grey road frame; ``vehicles`` dark boxes; a red disc of ``red_radius`` when > 0."""
    img = np.full((H, W, 3), GREY, np.uint8)
    for k in range(vehicles):
        x = 20 + 70 * k
        cv2.rectangle(img, (x, 60), (x + 40, 90), DARK if k % 2 == 0 else BLUE, -1)
    if red_radius:
        cv2.circle(img, (red_x, 170), red_radius, RED, -1)
    return img


def heatmap(gaze_x: int | None) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    if gaze_x is not None:
        cv2.circle(img, (gaze_x, H // 2), 18, (255, 255, 255), -1)
    return img


def stacked(red_radius: int = 0, vehicles: int = 1, gaze_x: int | None = W // 2) -> np.ndarray:
    """Heatmap ABOVE the dashcam frame, as stage 1 stacks them."""
    return np.vstack([heatmap(gaze_x), road(red_radius, vehicles)])


def data_url(image: np.ndarray, ext: str = ".png") -> str:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    mime = "image/png" if ext == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode()}"


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def user(text: str, urls: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    return {"role": "user", "content": [*(image_part(u) for u in urls), {"type": "text", "text": text}]}


def json_schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# ---- realistic schemas, like the lead's prompts will send ----

_INT = {"type": "integer"}
_COUNT = {"type": "integer", "minimum": 0}

FRAME_CAPTION_SCHEMA: dict[str, Any] = {
    "title": "frame_caption",
    "type": "object",
    "properties": {
        cols.SCENE: {"type": "string", "minLength": 1},
        cols.HAZARD_CLUES: {"type": "string"},
        cols.GAZE: {"type": "string"},
        **{f: _COUNT for f in cols.CAPTION_COUNT_FIELDS},
        cols.CAP_DETECTION: {"type": "integer", "enum": list(cols.DETECTION_VALUES)},
        cols.CAP_SEVERITY: {"type": "string", "enum": list(cols.CAPTION_SEVERITIES)},
        cols.CAP_EGO: {"type": "integer", "enum": list(cols.EGO_VALUES)},
        cols.CAP_LABEL: {"type": "string", "enum": list(cols.LABELS)},
    },
    "required": list(cols.CAPTION_FIELDS),
    "additionalProperties": False,
}

INCIDENT_FRAME_SCHEMA: dict[str, Any] = {
    "title": "incident_frame",
    "type": "object",
    "properties": {"frame": {"type": "integer", "minimum": -1}},
    "required": ["frame"],
    "additionalProperties": False,
}

_DESCRIBE_PROPS: dict[str, Any] = {
    cols.START_FRAME: {"type": "integer", "minimum": -1},
    cols.DETECTION: {"type": "integer", "enum": list(cols.DETECTION_VALUES)},
    cols.SEVERITY: {"type": "string", "enum": list(cols.SEVERITIES)},
    cols.EGO: {"type": "integer", "enum": list(cols.EGO_VALUES)},
    cols.LABEL: {"type": "string", "enum": list(cols.LABELS)},
    **{c: _COUNT for c in cols.COUNT_COLUMNS},
    cols.CAPTION: {"type": "string", "minLength": 10},
    cols.REASON: {"type": "string", "minLength": 10},
}


def describe_schema(title: str, fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {f: _DESCRIBE_PROPS[f] for f in fields},
        "required": list(fields),
        "additionalProperties": False,
    }


COUNTS_FIELDS = tuple(f for f in cols.ANSWER_FIELDS if f not in cols.TEXT_COLUMNS)
TEXTS_FIELDS = (cols.START_FRAME, cols.CAPTION, cols.REASON)
DESCRIBE_COUNTS_SCHEMA = describe_schema("describe_counts", COUNTS_FIELDS)
DESCRIBE_TEXTS_SCHEMA = describe_schema("describe_texts", TEXTS_FIELDS)
DESCRIBE_RECONCILE_SCHEMA = describe_schema("describe_reconcile", cols.ANSWER_FIELDS)

ENSEMBLE_SCHEMA: dict[str, Any] = {
    "title": "ensemble",
    "type": "object",
    "properties": {
        "caption_before": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
        "incident_start_frame": {"type": "integer", "minimum": 1},
    },
    "required": ["caption_before", "reason", "incident_start_frame"],
    "additionalProperties": False,
}


def caption_table(rows: list[tuple[int, int]]) -> str:
    """A stage-2 style markdown table of (frame, Incident_Detection) rows."""
    lines = [
        f"| frame | image | {cols.SCENE} | {cols.CAP_DETECTION} | {cols.CAP_LABEL} |",
        "|---|---|---|---|---|",
    ]
    for frame, det in rows:
        lines.append(f"| {frame} | /x/{frame:06d}.png | a road | {det} | unknown |")
    return "\n".join(lines)
