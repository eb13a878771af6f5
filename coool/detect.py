"""Stage 3: the frame where the incident begins (gpt-oss-120b, role ``detector``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coool import schema as S
from coool.captions import load_captions
from coool.files import atomic_write_json, atomic_write_text, combined_hash, file_sha256, read_json, text_sha256
from coool.llm import ChatClient, user_message
from coool.params import DetectParams
from coool.parsing import parse_json_strict
from coool.prompts import Prompt
from coool.stage import StageError, sample_record
from coool.voting import decide_incident_frame
from coool.workspace import cached_output

# The table the detector reads: every caption field, not the image path.
MARKDOWN_COLUMNS: tuple[str, ...] = ("frame", *S.CAPTION_FIELDS)


def caption_markdown(table: pd.DataFrame) -> str:
    """The caption table as a markdown table (pipes and newlines in cells escaped)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "/").replace("\n", " ").strip()

    lines = ["| " + " | ".join(MARKDOWN_COLUMNS) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    for row in table.to_dict("records"):
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in MARKDOWN_COLUMNS) + " |")
    return "\n".join(lines)


def parse_frame(content: str) -> int | None:
    """The spec's strict parse: a JSON object whose ``frame`` is an integer."""
    obj = parse_json_strict(content)
    if obj is None:
        return None
    value = obj.get("frame")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


@dataclass
class DetectResult:
    video: int
    frame: int
    votes: list[int] = field(default_factory=list)
    attempts: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "frame": self.frame,
            "votes": self.votes,
            "attempts": self.attempts,
            "notes": self.notes,
            "samples": self.samples,
        }


async def detect_video(
    client: ChatClient,
    video: int,
    table: pd.DataFrame,
    prompt: Prompt,
    params: DetectParams = DetectParams(),
    *,
    last_frame: int | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> DetectResult:
    """Majority / upper-median / frame-1 decision over ``params.samples`` answers.

    When no sample parses, the whole video is asked again (up to
    ``video_attempts`` times, ``retry_delay_s`` apart). Improvement over the
    original: a decided frame outside the video is clamped into it (noted),
    and a video with no caption rows gets frame 1 without a request.
    """
    result = DetectResult(video=video, frame=1)
    if table.empty:
        result.notes.append("no caption rows: frame 1 without asking")
        return result
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append(user_message(prompt.render(table=caption_markdown(table))))
    for attempt in range(1, params.video_attempts + 1):
        result.attempts = attempt
        samples = await client.complete(
            messages,
            n=params.samples,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            response_format=client.response_format(prompt.title, prompt.schema or {}),
        )
        for sample in samples:
            frame = parse_frame(sample.content)
            result.samples.append(sample_record(sample, attempt=attempt, frame=frame))
            if frame is not None:
                result.votes.append(frame)
        if result.votes:
            break
        if attempt < params.video_attempts:
            await sleep(params.retry_delay_s)
    decided = decide_incident_frame(result.votes)
    if decided is None:
        result.notes.append(f"no sample parsed in {result.attempts} attempts: frame 1")
        decided = 1
    if decided < 1:
        result.notes.append(f"decided frame {decided} is before the video: clamped to 1")
        decided = 1
    if last_frame is not None and decided > last_frame:
        result.notes.append(f"decided frame {decided} is past the last frame {last_frame}: clamped")
        decided = last_frame
    result.frame = decided
    return result


def load_detection(path: Path) -> int:
    return int(read_json(path)["frame"])


def write_detections(frames: dict[int, int], path: Path) -> Path:
    """``video,frame`` sorted by video."""
    lines = ["video,frame"] + [f"{v},{frames[v]}" for v in sorted(frames)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_detections(path: Path) -> dict[int, int]:
    table = pd.read_csv(path)
    if list(table.columns) != ["video", "frame"]:
        raise ValueError(f"{path}: expected the header video,frame, got {','.join(table.columns)}")
    return {int(v): int(f) for v, f in zip(table["video"], table["frame"])}


def captions_content_sha256(captions_path: Path) -> str:
    """The caption table's content without its image column: the paths in it are absolute,
    and where the results folder lives must not change a key (a copied folder is cached)."""
    try:
        table = pd.read_csv(captions_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return file_sha256(captions_path)  # not a table: its bytes, and the unit reports it
    return text_sha256(table.drop(columns=["image"], errors="ignore").to_csv(index=False))


def detect_key(captions_path: Path, params: DetectParams, prompt: Prompt, model: str) -> str:
    return combined_hash([captions_content_sha256(captions_path), params.model_dump_json(), prompt.sha256, model])


async def detect_unit(
    client: ChatClient,
    video: int,
    captions_path: Path,
    out_dir: Path,
    prompt: Prompt,
    params: DetectParams = DetectParams(),
    *,
    last_frame: int | None = None,
) -> dict[str, Any]:
    """Stage 3 for one video, resumable (skipped when ``<out>/<video>.json`` has the same key)."""
    if not Path(captions_path).exists():
        raise StageError(f"video {video}: no caption table at {captions_path} (run stage 2 first)")
    key = detect_key(captions_path, params, prompt, client.identity)
    path = Path(out_dir) / f"{video}.json"
    if (done := cached_output(path, key)) is not None:
        return {"video": video, "frame": done["frame"], "cached": True}
    result = await detect_video(client, video, load_captions(captions_path), prompt, params, last_frame=last_frame)
    atomic_write_json(path, {"key": key, "model": client.model, **result.as_dict()})
    reasks = result.attempts - 1 if result.attempts > 1 else 0
    return {"video": video, "frame": result.frame, "cached": False, "notes": result.notes, "reasks": reasks}
