"""Stage 3: the frame where the incident begins (gpt-oss-120b, role ``detector``)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as cols
from coool.captions import load_captions
from coool.files import atomic_write_text, combined_hash, file_sha256, text_sha256
from coool.frames import load_manifest
from coool.llm import ChatClient, Sample, count_usage, user_message
from coool.params import DetectParams
from coool.parsing import parse_json_strict
from coool.prompts import Prompt, stage_prompt
from coool.stage import Stage, StageError, sample_record
from coool.voting import decide_incident_frame
from coool.workspace import cached_output, write_output

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run

# The table the detector reads: every caption field, not the image path.
MARKDOWN_COLUMNS: tuple[str, ...] = ("frame", *cols.CAPTION_FIELDS)


def caption_markdown(table: pd.DataFrame) -> str:
    """The caption table as a markdown table (pipes and newlines in cells escaped)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "/").replace("\n", " ").strip()

    lines = ["| " + " | ".join(MARKDOWN_COLUMNS) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    for row in table.to_dict("records"):
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in MARKDOWN_COLUMNS) + " |")
    return "\n".join(lines)


# The original's caption CSV columns, in its order: frame, the image path, then the fields.
ORIGINAL_COLUMNS: tuple[str, ...] = (
    "frame", "path", cols.SCENE, cols.HAZARD_CLUES, cols.GAZE, cols.CAP_DETECTION, cols.CAP_SEVERITY, cols.CAP_EGO, cols.CAP_LABEL,
    *cols.CAPTION_COUNT_FIELDS,
)


def original_markdown(table: pd.DataFrame) -> str:
    """The caption table as the original showed it: pandas' markdown of its caption CSV read back with
    ``pd.read_csv`` (so blanks are NaN and numbers typed as pandas types them).

    The table goes through CSV text as the saved file does; its ``image`` column is the original's ``path``.
    """
    reread = pd.read_csv(io.StringIO(table.to_csv(index=False))).rename(columns={"image": "path"})
    return reread[[c for c in ORIGINAL_COLUMNS if c in reread.columns]].to_markdown(index=False)


def parse_frame(content: str, *, original: bool = False) -> int | None:
    """The spec's strict parse: a JSON object whose ``frame`` is an integer.

    ``original``: as the original reads it, where ``true``/``false`` are
    integers too (Python's bool is an int): they vote as 1 and 0.
    """
    obj = parse_json_strict(content)
    if obj is None:
        return None
    value = obj.get("frame")
    if isinstance(value, bool):
        return int(value) if original else None
    if not isinstance(value, int):
        return None
    return value


@dataclass
class DetectResult:
    video: int
    frame: int
    votes: list[int] = field(default_factory=list)
    attempts: int = 0
    requests: int = 0  # sent (a batched request counts once)
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "frame": self.frame,
            "votes": self.votes,
            "attempts": self.attempts,
            "requests": self.requests,
            "notes": self.notes,
            "samples": self.samples,
        }


async def _samples(client: ChatClient, messages: list[dict[str, Any]], prompt: Prompt, params: DetectParams) -> list[Sample]:
    """``params.samples`` answers: one request per sample as the original, or one request (``batched_samples``)."""
    sampling: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "top_k": params.top_k,
        "repetition_penalty": params.repetition_penalty,
        "response_format": client.response_format(prompt.title, prompt.schema or {}) if params.json_schema else None,
    }
    if params.batched_samples:
        return await client.complete(messages, n=params.samples, **sampling)
    # Every request settles before a failure is raised: none is left running unaccounted.
    batches = await asyncio.gather(
        *(client.complete(messages, n=1, **sampling) for _ in range(params.samples)), return_exceptions=True
    )
    for batch in batches:
        if isinstance(batch, BaseException):
            raise batch
    return [sample for batch in batches if not isinstance(batch, BaseException) for sample in batch]


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

    The prompt shows ``table`` as the original did (``original_markdown``),
    or coool's compact rendering with ``compact_table``. When no sample
    parses, the whole video is asked again (up to ``video_attempts`` times, ``retry_delay_s`` apart).
    Guards where the original would write a frame outside the video or crash:
    a decided frame outside the video is clamped into it (noted), and a
    video with no caption rows gets frame 1 without a request.
    """
    result = DetectResult(video=video, frame=1)
    if table.empty:
        result.notes.append("no caption rows: frame 1 without asking")
        return result
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    markdown = caption_markdown(table) if params.compact_table else original_markdown(table)
    messages.append(user_message(prompt.render(table=markdown)))
    for attempt in range(1, params.video_attempts + 1):
        result.attempts = attempt
        result.requests += 1 if params.batched_samples else params.samples
        for sample in await _samples(client, messages, prompt, params):
            frame = parse_frame(sample.content, original=not params.json_schema)
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
    out_path: Path,
    prompt: Prompt,
    params: DetectParams = DetectParams(),
    *,
    last_frame: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Stage 3 for one video, resumable (skipped when ``out_path``, its JSON, has the same key)."""
    if not Path(captions_path).exists():
        raise StageError(f"video {video}: no caption table at {captions_path} (run stage 2 first)")
    key = key or detect_key(captions_path, params, prompt, client.identity)  # a run passes its stage key
    if (done := cached_output(out_path, key)) is not None:
        return {"video": video, "frame": done["frame"], "cached": True}
    # The original reads its caption CSV as text (pandas types it again for the markdown).
    table = load_captions(captions_path, coerce=params.compact_table)
    with count_usage() as usage:
        result = await detect_video(client, video, table, prompt, params, last_frame=last_frame)
    write_output(out_path, key, client.model, usage.as_dict(), result.as_dict())
    reasks = result.attempts - 1 if result.attempts > 1 else 0
    return {
        "video": video, "frame": result.frame, "cached": False, "notes": result.notes, "reasks": reasks,
        "usage": usage.as_dict(),
    }


class DetectStage:
    """Stage 3 as a stage kind: run when a describe configuration or the count pass needs the frame."""

    kind = "detect"

    def plan(self, recipe: Recipe) -> list[Stage]:
        configs = recipe.configs
        used = any(configs[c].window == "detected-frame" for c in recipe.describe) or recipe.count_pass is not None
        return [Stage("detect", self.kind, "detector", ("caption",))] if used else []

    def prompts(self, recipe: Recipe, stage: Stage) -> Prompt:
        return stage_prompt(recipe.detect, recipe.prompts_dir)

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        captions = run.ws.captions_path(video)
        if load_manifest(run.ws.frames_dir(video)) is None or not captions.exists():
            return None
        return detect_key(captions, run.recipe.detect, run.prompt(stage), run.identity(stage))

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        return run.ws.detect_path(video)

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        return self.output(run, stage, video).exists()

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        manifest = run.manifest(video)
        return await detect_unit(
            run.client(stage.role), video, run.ws.captions_path(video), run.ws.detect_path(video), run.prompt(stage),
            run.recipe.detect, last_frame=manifest.video.frames, key=key,
        )


DETECT = DetectStage()
