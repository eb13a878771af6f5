"""Stage 2: caption every k-th stacked frame of a video (GLM-4.5V, role ``captioner``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coool import schema as S
from coool.files import atomic_write_json, atomic_write_text, combined_hash
from coool.frames import FrameManifest, load_manifest
from coool.llm import ChatClient, ModelRequestError, user_message
from coool.params import CaptionParams
from coool.parsing import coerce_caption, parse_json_lenient
from coool.prompts import Prompt
from coool.stage import StageError, sample_record
from coool.workspace import cached_output

TABLE_COLUMNS: tuple[str, ...] = ("frame", "image", *S.CAPTION_FIELDS)


@dataclass
class CaptionResult:
    video: int
    table: pd.DataFrame
    raw: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Frames whose answer could not be used (unparsable or failed request)."""
        return sum(1 for r in self.raw if not r.get("parsed"))


async def caption_frame(client: ChatClient, prompt: Prompt, frame: int, image: Path, params: CaptionParams) -> dict[str, Any]:
    """One request for one stacked frame; the raw record, with the parsed row if any."""
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append(user_message(prompt.render(), [client.image_url(image)]))
    try:
        (sample,) = await client.complete(
            messages,
            n=1,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            response_format=client.response_format(prompt.title, prompt.schema or {}),
            chat_template_kwargs={"enable_thinking": params.thinking},
        )
    except ModelRequestError as exc:
        return {"frame": frame, "image": str(image), "parsed": False, "error": str(exc)}
    record = sample_record(sample, frame=frame, image=str(image))
    obj = parse_json_lenient(sample.content)
    # The spec drops rows whose JSON can't be parsed.
    record["parsed"] = obj is not None
    if obj is not None:
        record["row"] = {"frame": frame, "image": str(image), **coerce_caption(obj)}
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


def table_path(out_dir: Path, video: int) -> Path:
    return Path(out_dir) / f"{video}.csv"


def save_captions(result: CaptionResult, out_dir: Path) -> Path:
    """``<out>/<video>.csv`` and ``<out>/<video>.raw.jsonl``, atomically."""
    out_dir = Path(out_dir)
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.raw)
    atomic_write_text(out_dir / f"{result.video}.raw.jsonl", raw)
    return atomic_write_text(table_path(out_dir, result.video), result.table.to_csv(index=False))


def load_captions(path: Path) -> pd.DataFrame:
    """A saved caption table, with integer columns typed."""
    table = pd.read_csv(path, keep_default_na=False, dtype={"image": str})
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise StageError(f"{path}: not a caption table (missing {missing})")
    for column in ("frame", S.CAP_DETECTION, S.CAP_EGO, *S.CAPTION_COUNT_FIELDS):
        table[column] = pd.to_numeric(table[column], errors="coerce").fillna(0).astype(int)
    return table.sort_values("frame").reset_index(drop=True)


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
    out_dir: Path,
    prompt: Prompt,
    params: CaptionParams = CaptionParams(),
) -> dict[str, Any]:
    """Stage 2 for one video, resumable: skipped when its saved output has the same key.

    ``frames_dir`` is the video's stage-1 folder (manifest + stacked images).
    Writes ``<out>/<video>.csv``, ``.raw.jsonl`` and, last, ``<video>.json``
    (the key and a summary), so a crash never leaves a half-done video
    looking finished.
    """
    manifest = load_manifest(frames_dir)
    if manifest is None:
        raise StageError(f"video {video}: no frames manifest in {frames_dir} (run stage 1 first)")
    key = caption_key(manifest, params, prompt, client.identity)
    meta_path = Path(out_dir) / f"{video}.json"
    if (done := cached_output(meta_path, key)) is not None and table_path(out_dir, video).exists():
        return {**done, "cached": True}
    result = await caption_video(client, video, sorted(manifest.paths(frames_dir).items()), prompt, params)
    save_captions(result, out_dir)
    meta = {"video": video, "key": key, "rows": len(result.table), "dropped": result.dropped, "model": client.model}
    atomic_write_json(meta_path, meta)
    return {**meta, "cached": False}
