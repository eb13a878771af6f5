"""Stage 2: caption every k-th stacked frame of a video (GLM-4.5V, role ``captioner``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as cols
from coool.files import atomic_write_json, atomic_write_text, combined_hash
from coool.frames import FrameManifest, load_manifest
from coool.llm import ChatClient, ModelRequestError, count_usage
from coool.params import CaptionParams
from coool.parsing import coerce_caption, parse_json_lenient
from coool.prompts import Prompt, stage_prompt
from coool.stage import Stage, StageError, sample_record
from coool.workspace import CaptionFiles, cached_output

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run

TABLE_COLUMNS: tuple[str, ...] = ("frame", "image", *cols.CAPTION_FIELDS)


@dataclass
class CaptionResult:
    video: int
    table: pd.DataFrame
    raw: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Frames whose answer could not be used (unparsable or failed request)."""
        return sum(1 for r in self.raw if not r.get("parsed"))


def caption_content(prompt_text: str, frame: int, image: Any) -> list[dict[str, Any]]:
    """The original's user message content: the prompt, then a "Frame N" text part before the frame's image."""
    return [
        {"type": "text", "text": prompt_text},
        {"type": "text", "text": f"Frame {frame}"},
        {"type": "image_url", "image_url": {"url": image}},
    ]


def parse_caption_answer(content: str | None) -> dict[str, Any] | None:
    """The original's parse: the whole text as JSON, else the span from the first ``{`` to the last ``}``.

    None unless the result is a JSON object.
    """
    if not isinstance(content, str):
        return None
    candidates = [content]
    start, end = content.find("{"), content.rfind("}")
    if start != -1 and end > start:
        candidates.append(content[start : end + 1])
    for text in candidates:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def raw_caption_row(obj: dict[str, Any]) -> dict[str, Any]:
    """The 11 fields as the model wrote them, a missing one blank (the original's caption CSV)."""
    return {field: obj.get(field, "") for field in cols.CAPTION_FIELDS}


async def caption_frame(client: ChatClient, prompt: Prompt, frame: int, image: Path, params: CaptionParams) -> dict[str, Any]:
    """One request for one stacked frame; the raw record, with the parsed row if any."""
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": caption_content(prompt.render(), frame, client.image_url(image))})
    response_format = client.response_format(prompt.title, prompt.schema or {}) if params.json_schema else None
    try:
        (sample,) = await client.complete(
            messages,
            n=1,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            response_format=response_format,
            chat_template_kwargs={"enable_thinking": params.thinking},
        )
    except ModelRequestError as exc:
        return {"frame": frame, "image": str(image), "parsed": False, "error": str(exc)}
    record = sample_record(sample, frame=frame, image=str(image))
    if params.clean_captions:
        obj = parse_json_lenient(sample.content)
        fields = coerce_caption(obj) if obj is not None else None
    else:
        obj = parse_caption_answer(sample.content)
        fields = raw_caption_row(obj) if obj is not None else None
    # Rows whose JSON can't be parsed are dropped (both ways).
    record["parsed"] = fields is not None
    if fields is not None:
        record["row"] = {"frame": frame, "image": str(image), **fields}
    else:
        record["error"] = "answer is not a JSON object"
    return record


async def caption_video(
    client: ChatClient,
    video: int,
    frames: Sequence[tuple[int, Path]],
    prompt: Prompt,
    params: CaptionParams = CaptionParams(),
) -> CaptionResult:
    """The caption table of one video: a row per frame whose answer parsed.

    Requests go out together; the client bounds how many are in flight.
    Raises StageError when not one frame could be captioned.
    """
    records = await asyncio.gather(*(caption_frame(client, prompt, f, p, params) for f, p in frames))
    rows = [r["row"] for r in records if r.get("parsed")]
    if frames and not rows:
        reasons = sorted({r.get("error", "") for r in records})
        raise StageError(f"video {video}: no frame could be captioned ({'; '.join(reasons)[:500]})")
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values("frame").reset_index(drop=True)
    return CaptionResult(video=video, table=table, raw=list(records))


def save_captions(result: CaptionResult, files: CaptionFiles) -> Path:
    """The table and the raw answers (``files.table``, ``files.raw``), atomically; returns the table's path."""
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.raw)
    atomic_write_text(files.raw, raw)
    return atomic_write_text(files.table, result.table.to_csv(index=False))


def load_captions(path: Path, *, coerce: bool = True) -> pd.DataFrame:
    """A saved caption table, sorted by frame.

    ``coerce``: the integer columns typed (a blank or non-numeric cell reads
    0). Without it every cell but ``frame`` stays the text saved, as the
    original's later stages read its caption CSV (the caption-trigger
    window needs to see a blank detection as blank).
    """
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise StageError(f"{path}: not a caption table (missing {missing})")
    numeric = ("frame", cols.CAP_DETECTION, cols.CAP_EGO, *cols.CAPTION_COUNT_FIELDS) if coerce else ("frame",)
    for column in numeric:
        table[column] = pd.to_numeric(table[column], errors="coerce").fillna(0).astype(int)
    return table.sort_values("frame", kind="stable").reset_index(drop=True)


def caption_key(manifest: FrameManifest, params: CaptionParams, prompt: Prompt, model: str) -> str:
    """What determines a video's captions: its frames, the parameters, the prompt, the model."""
    return combined_hash(
        [manifest.video_sha256, manifest.heatmap_sha256, str(manifest.every), manifest.image_format,
         params.model_dump_json(), prompt.sha256, model]
    )


async def caption_unit(
    client: ChatClient,
    video: int,
    frames_dir: Path,
    files: CaptionFiles,
    prompt: Prompt,
    params: CaptionParams = CaptionParams(),
    key: str | None = None,
) -> dict[str, Any]:
    """Stage 2 for one video, resumable: skipped when its saved output has the same key.

    ``frames_dir`` is the video's stage-1 folder (manifest + stacked images).
    Writes ``files`` (coool.workspace.caption_files): the table, the raw
    answers and, last, the meta JSON (the key and a summary), so a crash
    never leaves a half-done video looking finished.
    """
    manifest = load_manifest(frames_dir)
    if manifest is None:
        raise StageError(f"video {video}: no frames manifest in {frames_dir} (run stage 1 first)")
    # A run passes its stage's key (coool.run.Run.stage_key): the one the cache uses too.
    key = key or caption_key(manifest, params, prompt, client.identity)
    if (done := cached_output(files.meta, key)) is not None and files.table.exists():
        return {**done, "cached": True}
    with count_usage() as usage:
        result = await caption_video(client, video, sorted(manifest.paths(frames_dir).items()), prompt, params)
    save_captions(result, files)
    meta = {
        "video": video, "key": key, "rows": len(result.table), "dropped": result.dropped, "model": client.model,
        "usage": usage.as_dict(),
    }
    atomic_write_json(files.meta, meta)
    return {**meta, "cached": False}


class CaptionStage:
    """Stage 2 as a stage kind (coool.stage.StageKind): one per run, role ``captioner``."""

    kind = "caption"

    def plan(self, recipe: Recipe) -> list[Stage]:
        return [Stage("caption", self.kind, "captioner", ())]

    def prompts(self, recipe: Recipe, stage: Stage) -> Prompt:
        return stage_prompt(recipe.caption, recipe.prompts_dir)

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        manifest = load_manifest(run.ws.frames_dir(video))
        if manifest is None:
            return None
        return caption_key(manifest, run.recipe.caption, run.prompt(stage), run.identity(stage))

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        return run.ws.captions_path(video)

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        return self.output(run, stage, video).exists()

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        return await caption_unit(
            run.client(stage.role), video, run.ws.frames_dir(video), run.ws.captions_files(video), run.prompt(stage), run.recipe.caption,
            key,
        )


CAPTION = CaptionStage()
