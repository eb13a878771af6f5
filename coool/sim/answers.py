"""Scripted, deterministic answers of the simulated model server.

Nothing here is a model: each task has a handler that follows a few colour
rules measured on the request's images (see ``coool.sim.images``) or parses the
request's text, and proposes field values; ``coool.sim.fill`` then makes the
proposal valid against the request's JSON schema. The content of choice ``i``
depends only on the request body and ``i`` (a seed hashed from both), so the
same request always gets the same answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coool import schema as cols
from coool.sim.fill import fill_schema, inline_refs, is_valid
from coool.sim.images import FrameFacts, StackedFacts, analyse_frame, analyse_stacked, side_of

FRAME_CAPTION = "frame_caption"
INCIDENT_FRAME = "incident_frame"
DESCRIBE_COUNTS = "describe_counts"
DESCRIBE_TEXTS = "describe_texts"
DESCRIBE_RECONCILE = "describe_reconcile"
ENSEMBLE = "ensemble"
GENERIC = "generic"
TASKS: tuple[str, ...] = (
    FRAME_CAPTION,
    INCIDENT_FRAME,
    DESCRIBE_COUNTS,
    DESCRIBE_TEXTS,
    DESCRIBE_RECONCILE,
    ENSEMBLE,
)
DESCRIBE_TASKS: tuple[str, ...] = (DESCRIBE_COUNTS, DESCRIBE_TEXTS, DESCRIBE_RECONCILE)

# A frame "has" the obstacle above RED_PRESENT; a big one (close: a collision) above RED_LARGE.
RED_PRESENT = 0.003
RED_LARGE = 0.04
# With temperature > 0, this share of incident_frame samples answers a later row.
JITTER_RATE = 0.25

# The ensemble's answer keys (the lead's ensemble schema uses these names).
ENS_CAPTION, ENS_REASON, ENS_FRAME = "caption_before", "reason", "incident_start_frame"


def _label(text: str) -> str:
    # Checked lookup: a typo here fails at import instead of producing an invalid label.
    if text not in cols.LABELS:
        raise ValueError(f"{text!r} is not a 2COOOL label")
    return text


def _severity(code: int) -> str:
    return next(s for s in cols.SEVERITIES if s.startswith(f"{code}."))


BARRIER_LABEL = _label("ego-car hits barrier")
HIT_SEVERITY = _severity(1)
# Strings that come from the fixed vocabulary and so stay English under the non-English fault.
_VOCABULARY = frozenset(cols.SEVERITIES) | frozenset(cols.CAPTION_SEVERITIES) | frozenset(cols.LABELS)
NON_ENGLISH_TEXT = "自车在车道内行驶，前方道路上出现红色障碍物。"

# One English sentence each, 10-18 words, present tense: the describe prompts' style.
# "{cars}" is filled with "no other cars", "one car", "two cars"...
CAPTIONS = (
    "Ego-car drives in the middle lane of a straight road with {cars} in the side lanes.",
    "Ego-car travels at steady speed on a straight road with {cars} beside it.",
    "Ego-car moves forward in its lane on a straight road with {cars} nearby.",
    "Ego-car keeps its lane on a straight three-lane road with {cars} around it.",
)
REASONS: dict[int, tuple[str, ...]] = {
    1: (
        "A red obstacle appears in the ego lane and ego-car hits it.",
        "A red barrier appears in the ego-car lane ahead and ego-car hits it without stopping.",
        "Ego-car fails to avoid a red barrier in its lane and strikes it head-on.",
        "A red barrier blocks the ego lane, so ego-car crashes into it and keeps moving.",
    ),
    0: (
        "A red obstacle appears near the ego lane and ego-car passes it without contact.",
        "A red obstacle stands ahead in the lane and ego-car slows down to avoid it.",
        "Ego-car steers around a red obstacle in its lane and continues without a collision.",
    ),
    -1: (
        "unknown hazard: no incident is visible and ego-car keeps driving in its lane.",
        "Traffic stays normal ahead and ego-car continues along the road without any incident.",
    ),
}
ENSEMBLE_CAPTIONS = (
    "Ego-car drives in its lane on a straight road with traffic moving ahead.",
    "Ego-car travels along the road at steady speed before the event ahead.",
)
ENSEMBLE_REASONS = (
    "A hazard enters the ego lane and ego-car reacts to it as most candidates report.",
    "An obstacle appears ahead of ego-car and causes the incident the candidates agree on.",
)
_WHERE = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class ChatInput:
    """What the answer logic reads from one chat-completions request."""

    text: str  # every message's text, joined
    user_text: str
    images: tuple[np.ndarray, ...]
    schema: dict[str, Any] | None
    schema_name: str | None
    json_mode: bool  # response_format json_object or json_schema
    temperature: float
    reasoning: bool  # thinking enabled or a "Reasoning: <level>" system message
    canonical: str  # canonical JSON of the request body: the seed of every choice


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str | None


def choice_seed(canonical: str, index: int) -> int:
    """Seed of choice ``index``: a hash of the request body and the index, nothing else."""
    digest = hashlib.sha256(f"{canonical}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def normalise_title(title: str) -> str:
    """``FrameCaption`` / ``frame-caption`` / ``Frame Caption`` -> ``frame_caption``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", title.strip())
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")


def recognise_task(schema: dict[str, Any] | None, schema_name: str | None, text: str) -> str:
    """The task, from the schema's title or name, else from keywords in the prompt."""
    for candidate in ((schema or {}).get("title"), schema_name):
        if isinstance(candidate, str) and normalise_title(candidate) in TASKS:
            return normalise_title(candidate)
    if parse_markdown_table(text):
        return INCIDENT_FRAME
    if ENS_FRAME in text or ENS_CAPTION in text:
        return ENSEMBLE
    if any(key in text for key in (cols.SCENE, cols.GAZE, cols.HAZARD_CLUES)):
        return FRAME_CAPTION
    has_texts = cols.CAPTION in text or cols.REASON in text
    has_counts = any(column in text for column in cols.COUNT_COLUMNS) or cols.SEVERITY in text
    if has_texts and has_counts:
        return DESCRIBE_RECONCILE
    if has_texts:
        return DESCRIBE_TEXTS
    if has_counts:
        return DESCRIBE_COUNTS
    return GENERIC


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Rows (keyed by lower-cased header) of the first table with frame and Incident_Detection columns."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        header = [cell.lower() for cell in _cells(line)]
        if "frame" not in header or cols.CAP_DETECTION.lower() not in header:
            continue
        rows = []
        for row_line in lines[i + 1 :]:
            if not row_line.startswith("|"):
                break
            cells = _cells(row_line)
            if all(set(cell) <= set("-: ") for cell in cells):
                continue  # the |---|---| separator
            rows.append(dict(zip(header, cells)))
        return rows
    return []


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _leading_int(text: str | None) -> int | None:
    match = re.match(r"\s*(-?\d+)", text or "")
    return int(match.group(1)) if match else None


def _count_phrase(k: int, noun: str) -> str:
    word = _NUMBER_WORDS[k] if k < len(_NUMBER_WORDS) else str(k)
    return f"{word} {noun}" + ("" if k == 1 else "s")


def _detection(fractions: Sequence[float]) -> int:
    peak = max(fractions, default=0.0)
    return 1 if peak > RED_LARGE else 0 if peak > RED_PRESENT else -1


# ---- task handlers: each returns (proposed fields, a one-line why) ----


def frame_caption(facts: StackedFacts | None) -> tuple[dict[str, Any], str]:
    if facts is None:
        return _no_incident_caption("no image was sent"), "no image to look at"
    scene = facts.scene
    detection = _detection([scene.red_fraction])
    side = side_of(scene.red_span[0]) if scene.red_span else "centre"
    description = f"Ego-car drives on a straight road with {_count_phrase(scene.vehicles, 'other vehicle')} in view"
    if detection != -1:
        description += f" and a red obstacle {_WHERE[side]} of the ego lane"
    if facts.gaze_x is None:
        gaze = "no gaze mark is visible"
    elif facts.gaze_on_obstacle:
        gaze = f"the red obstacle {_WHERE[side_of(facts.gaze_x)]} of the road"
    else:
        gaze = f"the road {_WHERE[side_of(facts.gaze_x)]}"
    fields = {
        cols.SCENE: description + ".",
        cols.HAZARD_CLUES: "red obstacle ahead in the ego lane" if detection != -1 else "none",
        cols.GAZE: gaze,
        cols.CAP_BICYCLISTS: 0,
        cols.CAP_ANIMALS: 0,
        cols.CAP_PEDESTRIANS: 0,
        cols.CAP_VEHICLES: scene.vehicles,
        cols.CAP_DETECTION: detection,
        cols.CAP_SEVERITY: HIT_SEVERITY if detection == 1 else cols.NO_CRASH,
        cols.CAP_EGO: 1 if detection == 1 else 0,
        cols.CAP_LABEL: BARRIER_LABEL if detection == 1 else cols.UNKNOWN_LABEL,
    }
    why = (
        f"the dashcam half has {scene.red_fraction:.1%} saturated red pixels and "
        f"{scene.vehicles} dark or blue blobs, so Incident_Detection is {detection}"
    )
    return fields, why


def _no_incident_caption(description: str) -> dict[str, Any]:
    return {
        cols.SCENE: description,
        cols.HAZARD_CLUES: "none",
        cols.GAZE: "no gaze mark is visible",
        **{field: 0 for field in cols.CAPTION_COUNT_FIELDS},
        cols.CAP_DETECTION: -1,
        cols.CAP_SEVERITY: cols.NO_CRASH,
        cols.CAP_EGO: 0,
        cols.CAP_LABEL: cols.UNKNOWN_LABEL,
    }


def incident_frame(text: str, temperature: float, rng: random.Random) -> tuple[dict[str, Any], str]:
    rows = parse_markdown_table(text)
    detection_key = cols.CAP_DETECTION.lower()
    frames = [_leading_int(row.get("frame")) for row in rows]
    flagged = [
        pos
        for pos, row in enumerate(rows)
        if frames[pos] is not None and _leading_int(row.get(detection_key)) not in (None, -1)
    ]
    if not flagged:
        return {"frame": -1}, f"none of the {len(rows)} rows has Incident_Detection other than -1"
    pos = flagged[0]
    why = f"frame {frames[pos]} is the first row whose Incident_Detection is not -1"
    if temperature > 0 and rng.random() < JITTER_RATE:
        # Sampling noise, so that voting over samples has something to do.
        later = flagged[1] if len(flagged) > 1 else pos + 1
        if later < len(rows) and frames[later] is not None:
            pos = later
            why = f"frame {frames[pos]}: a later flagged row looks more severe (sampling jitter)"
    return {"frame": frames[pos]}, why


def describe(frames: Sequence[FrameFacts], index: int) -> tuple[dict[str, Any], str]:
    """All 11 describe fields, consistent with each other; the request's schema picks the subset."""
    present = [f.red_fraction > RED_PRESENT for f in frames]
    start = present.index(True) if any(present) else -1
    detection = _detection([f.red_fraction for f in frames])
    # The most vehicles seen in any frame: the growing obstacle may hide some later on.
    vehicles = max((f.vehicles for f in frames), default=0)
    fields: dict[str, Any] = {
        cols.START_FRAME: start,
        cols.DETECTION: detection,
        cols.SEVERITY: HIT_SEVERITY if detection == 1 else cols.NO_CRASH,
        cols.EGO: 1 if detection == 1 else 0,
        cols.LABEL: BARRIER_LABEL if detection == 1 else cols.UNKNOWN_LABEL,
        **{column: 0 for column in cols.COUNT_COLUMNS},
        # Detection -1 forces zero counts; otherwise the scene's vehicles count as involved,
        # which is what the synthetic clips' truth says.
        cols.N_VEHICLES: vehicles if detection != -1 else 0,
        cols.CAPTION: CAPTIONS[index % len(CAPTIONS)].format(cars=_cars(vehicles)),
        cols.REASON: REASONS[detection][index % len(REASONS[detection])],
    }
    why = f"the first of {len(frames)} images with a red obstacle is index {start}"
    return fields, why


def _cars(k: int) -> str:
    return "no other cars" if k == 0 else _count_phrase(k, "car")


def ensemble(user_text: str, index: int) -> tuple[dict[str, Any], str]:
    frames = [int(m) for m in re.findall(r"frame\W+(\d+)", user_text, flags=re.IGNORECASE)]
    if frames:
        counts = Counter(frames)
        top = max(counts.values())
        frame = min(f for f, c in counts.items() if c == top)
        why = f"frame {frame} is the most common of {len(frames)} candidate frames (ties: smallest)"
    else:
        frame, why = 1, "no candidate frame found, so frame 1"
    fields = {
        ENS_CAPTION: ENSEMBLE_CAPTIONS[index % len(ENSEMBLE_CAPTIONS)],
        ENS_REASON: ENSEMBLE_REASONS[index % len(ENSEMBLE_REASONS)],
        ENS_FRAME: frame,
    }
    return fields, why


def generic() -> tuple[dict[str, Any], str]:
    return {"answer": "none", "note": "coool simulation: no task recognised"}, "no task recognised"


# ---- assembling the answers ----


def answer_request(request: ChatInput, n: int, nonenglish: bool = False) -> tuple[str, list[Answer]]:
    """The recognised task and ``n`` answers; ``nonenglish`` swaps free text for another script."""
    task = recognise_task(request.schema, request.schema_name, request.text)
    schema = inline_refs(request.schema) if request.schema is not None else None
    propose = _handler(task, request)
    answers = []
    for index in range(n):
        rng = random.Random(choice_seed(request.canonical, index))
        fields, why = propose(index, rng)
        value: Any = fill_schema(schema, fields) if schema is not None else fields
        if nonenglish:
            value = to_nonenglish(value, schema)
        thinks = request.reasoning or task == INCIDENT_FRAME  # gpt-oss always reasons
        answers.append(Answer(render(task, value, request), f"simulated reasoning: {why}." if thinks else None))
    return task, answers


def _handler(task: str, request: ChatInput) -> Callable[[int, random.Random], tuple[dict[str, Any], str]]:
    # Images are analysed once per request, not once per choice.
    if task == FRAME_CAPTION:
        facts = analyse_stacked(request.images[0]) if request.images else None
        return lambda index, rng: frame_caption(facts)
    if task in DESCRIBE_TASKS:
        frames = [analyse_frame(image) for image in request.images]
        return lambda index, rng: describe(frames, index)
    if task == INCIDENT_FRAME:
        return lambda index, rng: incident_frame(request.text, request.temperature, rng)
    if task == ENSEMBLE:
        return lambda index, rng: ensemble(request.user_text, index)
    return lambda index, rng: generic()


def render(task: str, value: Any, request: ChatInput) -> str:
    """JSON text, or the ensemble's tags when the request asked for plain text."""
    if task == ENSEMBLE and not request.json_mode and isinstance(value, dict):
        return (
            f"<{ENS_CAPTION}>{value.get(ENS_CAPTION, '')}</{ENS_CAPTION}>\n"
            f"<{ENS_REASON}>{value.get(ENS_REASON, '')}</{ENS_REASON}>\n"
            f"<{ENS_FRAME}>{value.get(ENS_FRAME, 1)}</{ENS_FRAME}>"
        )
    return json.dumps(value, ensure_ascii=False)


def to_nonenglish(value: Any, schema: dict[str, Any] | None) -> Any:
    """Free-text strings replaced by Chinese; vocabulary and schema-constrained strings stay."""
    if isinstance(value, dict):
        properties = (schema or {}).get("properties") or {}
        return {key: to_nonenglish(item, properties.get(key)) for key, item in value.items()}
    if isinstance(value, list):
        items = (schema or {}).get("items")
        return [to_nonenglish(item, items if isinstance(items, dict) else None) for item in value]
    if isinstance(value, str) and value not in _VOCABULARY:
        if schema is None or is_valid(schema, NON_ENGLISH_TEXT):
            return NON_ENGLISH_TEXT
    return value
