"""Stage 4: describe the incident from a window of raw frames (Qwen3-VL or GLM-4.5V).

Three prompts per video (counts, texts, reconcile), each answered with
``n`` samples that are cleaned and voted (PIPELINE.md, stage 4).
"""

from __future__ import annotations

import asyncio
import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as S
from coool.captions import load_captions
from coool.files import atomic_write_json, combined_hash, read_json
from coool.llm import ChatClient, ImageFile, ModelRequestError, user_message
from coool.params import DescribeConfig
from coool.parsing import MAX_COUNT, canonical_label, canonical_severity, clean_text, coerce_answer, parse_json_lenient
from coool.prompts import Prompt, load_prompt, load_snippet
from coool.stage import Stage, StageError, sample_record
from coool.submission import is_english
from coool.video import extract_raw_frames, load_manifest
from coool.voting import consistent, empty_fields, vote_samples
from coool.windows import caption_trigger_window, detected_frame_window, window_index_to_frame
from coool.workspace import cached_output

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run

PASS_FIELDS: dict[str, tuple[str, ...]] = {
    "counts": S.ANSWER_FIELDS[:9],
    "texts": (S.START_FRAME, S.CAPTION, S.REASON),
    "reconcile": S.ANSWER_FIELDS,
}


@dataclass(frozen=True)
class DescribePromptSet:
    """The three prompts of a configuration, plus the snippets appended to each."""

    counts: Prompt
    texts: Prompt
    reconcile: Prompt
    extra: str = ""

    @classmethod
    def load(cls, config: DescribeConfig, override_dir: str | Path | None = None) -> DescribePromptSet:
        return cls(
            counts=load_prompt(config.prompts.counts, override_dir),
            texts=load_prompt(config.prompts.texts, override_dir),
            reconcile=load_prompt(config.prompts.reconcile, override_dir),
            extra="\n".join(load_snippet(name, override_dir) for name in config.extra),
        )

    @property
    def sha256(self) -> str:
        return combined_hash([self.counts.sha256, self.texts.sha256, self.reconcile.sha256, self.extra])


def select_window(
    config: DescribeConfig,
    *,
    frame_count: int,
    captions: pd.DataFrame | None = None,
    detected_frame: int | None = None,
) -> list[int]:
    """The frames shown to the describer, by the configuration's window kind."""
    if config.window == "caption-trigger":
        if captions is None or captions.empty:
            raise ValueError(f"{config.name}: the caption-trigger window needs the video's caption table")
        return caption_trigger_window(captions, config.pre, config.post)
    if detected_frame is None:
        raise ValueError(f"{config.name}: the detected-frame window needs the stage-3 frame")
    return detected_frame_window(detected_frame, 1, frame_count, config.pre, config.post, config.step)


@dataclass
class PassResult:
    prompt: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    voted: dict[str, Any] = field(default_factory=dict)
    reasks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DescribeResult:
    video: int
    config: str
    window: list[int]
    row: dict[str, Any]
    passes: dict[str, PassResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def frame(self) -> int:
        return int(self.row[S.START_FRAME])

    def as_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "config": self.config,
            "window": self.window,
            "frame": self.frame,
            "row": self.row,
            "notes": self.notes,
            "passes": {
                name: {"prompt": p.prompt, "voted": p.voted, "reasks": p.reasks, "samples": p.samples}
                for name, p in self.passes.items()
            },
        }


def _clean(answer: Mapping[str, Any] | None, fields: Sequence[str]) -> dict[str, Any]:
    """A coerced answer restricted to a pass's fields; non-English texts count as empty.

    Severity and label are canonicalised here (a value outside the allowed
    ones counts as empty), so a re-ask can only fill a field with an
    allowed value (voting canonicalises too, but re-asked values skip it).
    """
    coerced = coerce_answer(answer or {})
    out = {f: coerced.get(f) for f in fields}
    for column in S.TEXT_COLUMNS:
        if column in out and isinstance(out[column], str) and not is_english(out[column]):
            out[column] = None
    for column, canonical in ((S.SEVERITY, canonical_severity), (S.LABEL, canonical_label)):
        if column in out:
            out[column] = canonical(out[column])
    return out


def reask_penalties(config: DescribeConfig) -> list[float]:
    """The re-ask schedule of a configuration: +step per try, capped, ``reask_tries`` tries."""
    return [
        round(min(config.repetition_penalty + config.reask_penalty_step * k, config.reask_penalty_cap), 10)
        for k in range(1, config.reask_tries + 1)
    ]


async def run_pass(
    client: ChatClient,
    name: str,
    prompt: Prompt,
    images: Sequence[str | ImageFile],
    config: DescribeConfig,
    values: Mapping[str, object],
) -> PassResult:
    """One prompt: n samples, cleaned and voted; empty voted fields re-asked.

    The re-ask sends one sample at a time with the repetition penalty raised
    by 0.1 per try (at most ``reask_tries``, capped at 1.5) until the empty
    fields are filled. Improvement: an answer in another script counts as
    empty, so it is re-asked instead of reaching the submission.
    """
    fields = PASS_FIELDS[name]
    messages = [user_message(prompt.render(**values), images)]
    response_format = client.response_format(prompt.title, prompt.schema or {})
    common = dict(
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        response_format=response_format,
    )
    result = PassResult(prompt=prompt.name)
    samples = await client.complete(messages, n=config.n, repetition_penalty=config.repetition_penalty, **common)
    answers = []
    for sample in samples:
        parsed = parse_json_lenient(sample.content)
        result.samples.append(sample_record(sample, parsed=parsed is not None))
        if parsed is not None:
            answers.append(_clean(parsed, fields))
    voted = {f: v for f, v in vote_samples(answers).items() if f in fields} if answers else {f: None for f in fields}
    for penalty in reask_penalties(config):
        missing = empty_fields(voted, fields)
        if not missing:
            break
        try:
            (sample,) = await client.complete(messages, n=1, repetition_penalty=penalty, **common)
        except ModelRequestError as exc:
            # The vote already stands; a failed re-ask only leaves the gap,
            # which final_row fills from the other passes.
            result.reasks.append({"repetition_penalty": penalty, "missing": missing, "error": str(exc)})
            break
        parsed = parse_json_lenient(sample.content)
        filled = []
        if parsed is not None:
            fresh = _clean(parsed, fields)
            for f in missing:
                if not empty_fields(fresh, [f]):
                    voted[f] = fresh[f]
                    filled.append(f)
        result.reasks.append({**sample_record(sample), "repetition_penalty": penalty, "missing": missing, "filled": filled})
    result.voted = voted
    return result


def _allowed(field: str, value: Any) -> Any:
    """``value`` as a valid value of ``field`` in a submission row, else None (as if no pass gave it).

    Voted values are allowed already; this guards ``final_row`` against any
    that are not (a value that reached ``voted`` some other way).
    """
    if value is None:
        return None
    if field == S.SEVERITY:
        return canonical_severity(str(value))
    if field == S.LABEL:
        return canonical_label(str(value))
    if field in S.TEXT_COLUMNS:
        text = clean_text(str(value))
        return text if text and is_english(text) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    number = int(value)
    if field == S.DETECTION:
        return number if number in S.DETECTION_VALUES else None
    if field == S.EGO:
        return number if number in S.EGO_VALUES else None
    if field in S.COUNT_COLUMNS:
        return min(number, MAX_COUNT) if number >= 0 else None  # the cap coerce_answer applies
    return number  # the start index: window_index_to_frame guards its range


def final_row(
    video: int,
    window: Sequence[int],
    passes: Mapping[str, PassResult],
    notes: list[str],
) -> dict[str, Any]:
    """The submission row: the reconcile vote, gaps filled from the other passes, rules enforced.

    Never invalid: a field no pass could give gets the no-incident value and
    a note says so.
    """
    row: dict[str, Any] = {}
    order = ("reconcile", "texts", "counts")
    for f in S.ANSWER_FIELDS:
        value = None
        for name in order:
            candidate = _allowed(f, passes[name].voted.get(f)) if name in passes else None
            if candidate is not None:
                value = candidate
                break
        row[f] = value
    defaults = S.fallback_row(video)
    if row[S.DETECTION] is None:
        notes.append("no pass gave Incident Detection: treated as no incident (-1)")
        row[S.DETECTION] = -1
    for f in (S.EGO, *S.COUNT_COLUMNS):
        if row[f] is None:
            row[f] = 0
    for f in S.TEXT_COLUMNS:
        if row[f] is None:
            notes.append(f"no usable {f!r}: the fallback sentence was used")
            row[f] = defaults[f]
    row = consistent(row)
    if row[S.SEVERITY] is None:
        row[S.SEVERITY] = S.NO_CRASH
    if row[S.LABEL] is None:
        row[S.LABEL] = S.UNKNOWN_LABEL
    index = row[S.START_FRAME] if row[S.START_FRAME] is not None else -1
    frame, clamped = window_index_to_frame(list(window), int(index))
    if clamped:
        notes.append(f"start index {index} is outside the {len(window)}-frame window: clamped")
    row[S.START_FRAME] = frame
    row[S.VIDEO] = int(video)
    return {c: row[c] for c in S.COLUMNS}


async def describe_video(
    client: ChatClient,
    config: DescribeConfig,
    prompts: DescribePromptSet,
    video: int,
    window: Sequence[int],
    images: Mapping[int, Path],
) -> DescribeResult:
    """Counts and texts passes (together), then reconcile, then the final row."""
    urls = [client.image_url(images[f]) for f in window]
    values = {"n_frames": len(window), "last_index": len(window) - 1, "extra": prompts.extra}
    counts, texts = await asyncio.gather(
        run_pass(client, "counts", prompts.counts, urls, config, values),
        run_pass(client, "texts", prompts.texts, urls, config, values),
    )
    reconcile = await run_pass(
        client,
        "reconcile",
        prompts.reconcile,
        urls,
        config,
        {
            **values,
            "counts_json": json.dumps(counts.voted, ensure_ascii=False, indent=1),
            "texts_json": json.dumps(texts.voted, ensure_ascii=False, indent=1),
        },
    )
    passes = {"counts": counts, "texts": texts, "reconcile": reconcile}
    notes: list[str] = []
    row = final_row(video, window, passes, notes)
    return DescribeResult(video=video, config=config.name, window=list(window), row=row, passes=passes, notes=notes)


def save_description(result: DescribeResult, out_dir: Path) -> Path:
    return atomic_write_json(Path(out_dir) / f"{result.video}.json", result.as_dict())


def describe_key(video_sha256: str, window: Sequence[int], config: DescribeConfig, prompts: DescribePromptSet, model: str) -> str:
    """What determines a description: the video, the window, the configuration, its prompts, the model."""
    return combined_hash([video_sha256, json.dumps(list(window)), config.model_dump_json(), prompts.sha256, model])


async def describe_unit(
    client: ChatClient,
    video: int,
    config: DescribeConfig,
    prompts: DescribePromptSet,
    frames_dir: Path,
    out_dir: Path,
    *,
    captions_path: Path | None = None,
    detected_frame: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Stage 4 for one (video, configuration), resumable.

    The window comes from the caption table or the detected frame; its raw
    frames are decoded on demand into ``frames_dir/raw``. Skipped when
    ``<out>/<video>.json`` was made with the same key.
    """
    manifest = load_manifest(frames_dir)
    if manifest is None:
        raise StageError(f"video {video}: no frames manifest in {frames_dir} (run stage 1 first)")
    captions = load_captions(captions_path) if captions_path is not None and Path(captions_path).exists() else None
    try:
        window = select_window(config, frame_count=manifest.video.frames, captions=captions, detected_frame=detected_frame)
    except ValueError as exc:
        raise StageError(f"video {video}: {exc}") from exc
    key = key or describe_key(manifest.video_sha256, window, config, prompts, client.identity)  # a run passes its stage key
    path = Path(out_dir) / f"{video}.json"
    if (done := cached_output(path, key)) is not None:
        return {"video": video, "frame": done["frame"], "window": done["window"], "cached": True}
    # Decoding is CPU work: keep it off the event loop that drives the requests.
    images = await asyncio.to_thread(extract_raw_frames, manifest.video.path, window, frames_dir)
    result = await describe_video(client, config, prompts, video, window, images)
    atomic_write_json(path, {"key": key, "model": client.model, **result.as_dict()})
    reasks = sum(len(p.reasks) for p in result.passes.values())
    return {"video": video, "frame": result.frame, "window": window, "cached": False, "notes": result.notes, "reasks": reasks}


def load_description_row(path: Path) -> dict[str, Any]:
    """The final row saved by ``describe_unit``."""
    return dict(read_json(path)["row"])


class DescribeStage:
    """Stage 4 as a stage kind: one stage per describe configuration of the recipe."""

    kind = "describe"

    def plan(self, recipe: Recipe) -> list[Stage]:
        out = []
        for name in recipe.describe:
            config = recipe.configs[name]
            deps = ("caption",) if config.window == "caption-trigger" else ("caption", "detect")
            out.append(Stage(f"describe:{name}", self.kind, config.role, deps, config=name))
        return out

    def prompts(self, recipe: Recipe, stage: Stage) -> DescribePromptSet:
        assert stage.config is not None
        return DescribePromptSet.load(recipe.configs[stage.config], recipe.prompts_dir)

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        assert stage.config is not None
        manifest = load_manifest(run.ws.frames_dir(video))
        if manifest is None:
            return None
        config = run.recipe.configs[stage.config]
        captions_path = run.ws.captions_path(video)
        captions = load_captions(captions_path) if captions_path.exists() else None
        try:
            window = select_window(
                config, frame_count=manifest.video.frames, captions=captions, detected_frame=run.detected_frame(video)
            )
        except ValueError:
            return None
        return describe_key(manifest.video_sha256, window, config, run.prompt(stage), run.identity(stage))

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        assert stage.config is not None
        return run.ws.describe_path(stage.config, video)

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        return self.output(run, stage, video).exists()

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        assert stage.config is not None
        run.manifest(video)  # a clear error when stage 1 did not give the video frames
        return await describe_unit(
            run.client(stage.role), video, run.recipe.configs[stage.config], run.prompt(stage), run.ws.frames_dir(video),
            run.ws.describe_dir(stage.config), captions_path=run.ws.captions_path(video),
            detected_frame=run.detected_frame(video), key=key,
        )


class DescribeSubmission:
    """Each describe configuration of a recipe is a submission of its own."""

    def names(self, recipe: Recipe) -> list[str]:
        return list(recipe.describe)

    def sources(self, recipe: Recipe, name: str) -> list[str]:
        return []

    def row(self, run: Run, name: str, video: int) -> dict[str, Any] | None:
        path = run.ws.describe_path(name, video)
        return load_description_row(path) if path.exists() else None

    def path(self, run: Run, name: str) -> Path:
        return run.ws.describe_submission(name)


DESCRIBE = DescribeStage()
DESCRIBED = DescribeSubmission()
