"""Stage 4: describe the incident from a window of frames (Qwen3-VL or GLM-4.5V).

The frames are the raw video frames, or (``frames: stacked``, the "add heatmap"
configuration v4-heatmap) the gaze heatmap stacked above each.

Three prompts per video (counts, texts, reconcile), each answered with
``n`` samples that are cleaned and voted (PIPELINE.md, stage 4). By default
everything is the original's (request layout, cleaning, vote, re-asks, the
final start frame; ``tests/coool/test_goldens_describe.py`` checks it against
the original's own code); coool's improvements are the switches of
``DescribeConfig`` (README, "Faithful vs plus: describe").
"""

from __future__ import annotations

import asyncio
import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as cols
from coool.captions import load_captions
from coool.files import combined_hash, read_json
from coool.frames import FrameManifest, extract_raw_frames, extract_stacked_frames, load_manifest
from coool.llm import ChatClient, ImageFile, ModelRequestError, count_usage, user_message
from coool.params import DescribeConfig
from coool.parsing import (
    MAX_COUNT,
    canonical_label,
    canonical_severity,
    clean_sample,
    clean_text,
    coerce_answer,
    parse_answer,
    parse_json_lenient,
)
from coool.prompts import Prompt, load_prompt, load_snippet
from coool.stage import Stage, StageError, sample_record
from coool.submission import is_english
from coool.voting import consistent, empty_fields, vote_original, vote_samples
from coool.windows import caption_trigger_window, detected_frame_window, window_index_to_frame
from coool.workspace import cached_output, write_output

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run

PASS_FIELDS: dict[str, tuple[str, ...]] = {
    "counts": cols.ANSWER_FIELDS[:9],
    "texts": (cols.START_FRAME, cols.CAPTION, cols.REASON),
    "reconcile": cols.ANSWER_FIELDS,
}


# Every switch off: the original's behaviour (final_row's default).
_FAITHFUL = DescribeConfig(name="faithful", window="detected-frame", pre=0, post=0)

# The reconcile request appends the two earlier results as one JSON object under these keys.
RECONCILE_COUNTS_KEY = "First prediction (Counts JSON)"
RECONCILE_TEXTS_KEY = "Second prediction (Texts JSON)"
# The paragraph that opens every prompt of a configuration with ``frames: stacked``.
STACKED_FRAMES = "stacked_frames"
# The snippet the v6 count pass inserts; the faithful prompts hold two placeholders for it
# (a paragraph of its own, and the end of a line).
IGNORE_IMAGE_TEXT = "ignore_image_text"


@dataclass(frozen=True)
class DescribePromptSet:
    """The three prompts of a configuration, plus the snippets the configuration inserts."""

    counts: Prompt
    texts: Prompt
    reconcile: Prompt
    extra: str = ""
    snippets: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, config: DescribeConfig, override_dir: str | Path | None = None) -> DescribePromptSet:
        variant = "plus" if config.plus_prompts else None
        snippets = tuple((name, load_snippet(name, override_dir, variant=variant)) for name in config.extra)
        # Stacked frames: the prompts first say what the two halves of each image are.
        lead = load_snippet(STACKED_FRAMES, override_dir, variant=variant).strip() if config.frames == "stacked" else ""

        def prompt(name: str) -> Prompt:
            loaded = load_prompt(name, override_dir, variant=variant)
            return replace(loaded, text=f"{lead}\n\n{loaded.text}") if lead else loaded

        return cls(
            counts=prompt(config.prompts.counts),
            texts=prompt(config.prompts.texts),
            reconcile=prompt(config.prompts.reconcile),
            extra="\n".join(text for _, text in snippets),
            snippets=snippets,
        )

    def values(self, window_size: int) -> dict[str, object]:
        """Placeholder values every describe prompt may use.

        ``$extra``: the snippets, one per line (plus prompts put it last).
        ``${name}`` / ``${name}_inline`` for each known snippet: the snippet as
        a paragraph of its own (followed by a blank line) / at the end of a
        line (after a space), or empty when the configuration does not use it.
        """
        used = dict(self.snippets)
        out: dict[str, object] = {"n_frames": window_size, "last_index": window_size - 1, "extra": self.extra}
        for name in (IGNORE_IMAGE_TEXT, *used):
            text = used.get(name, "").strip()
            out[name] = f"{text}\n\n" if text else ""
            out[f"{name}_inline"] = f" {text}" if text else ""
        return out

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
        return caption_trigger_window(captions, config.pre, config.post, lenient=config.lenient_trigger)
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
        return int(self.row[cols.START_FRAME])

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


def describe_message(text: str, images: Sequence[str | ImageFile], *, images_first: bool = False) -> dict[str, Any]:
    """The describe request's user message: the text, then the images (earliest first), as the
    original sends it; ``images_first`` puts the images before the text."""
    if images_first:
        return user_message(text, images)
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts.extend({"type": "image_url", "image_url": {"url": url}} for url in images)
    return {"role": "user", "content": parts}


def _blank(config: DescribeConfig) -> str | None:
    # What an unusable text becomes: absent (None) under blank_as_absent, else the original's "".
    return None if config.blank_as_absent else ""


def clean_answer(content: str, fields: Sequence[str], config: DescribeConfig) -> dict[str, Any] | None:
    """One sample's answer restricted to a pass's fields, cleaned for voting; None when it does
    not vote (only under ``drop_unparsable``).

    Faithful: ``parsing.parse_answer`` then ``parsing.clean_sample`` (every field
    present; missing numbers 0, missing texts ""). The switches change it as
    their descriptions say.
    """
    parsed = parse_json_lenient(content) if config.lenient_parsing else parse_answer(content)
    if parsed is None and config.drop_unparsable:
        return None
    parsed = parsed or {}
    if config.lenient_parsing:
        coerced = coerce_answer(parsed)
        out = {f: coerced.get(f) for f in fields}
        if not config.blank_as_absent:
            # The original's fill: a missing number 0, a missing text "".
            out = {f: (v if v is not None else ("" if f in _TEXT_FIELDS else 0)) for f, v in out.items()}
    else:
        out = clean_sample(parsed, tuple(fields), absent_as_none=config.blank_as_absent)
    if config.canonical_values:
        for column, canonical in ((cols.SEVERITY, canonical_severity), (cols.LABEL, canonical_label)):
            if column in out and out[column] is not None:
                out[column] = canonical(out[column]) or _blank(config)
    if config.english_reask:
        for column in cols.TEXT_COLUMNS:
            if isinstance(out.get(column), str) and not is_english(out[column]):
                out[column] = _blank(config)
    return out


_TEXT_FIELDS = frozenset((cols.SEVERITY, cols.LABEL, *cols.TEXT_COLUMNS))


def vote(answers: Sequence[Mapping[str, Any]], fields: Sequence[str], config: DescribeConfig) -> dict[str, Any]:
    """The pass's voted fields: the original's vote, or coool's under ``blank_as_absent``."""
    if config.blank_as_absent:
        voted = vote_samples(answers, canonical=config.canonical_values) if answers else {}
        return {f: voted.get(f) for f in fields}
    return {f: v for f, v in vote_original(answers).items() if f in fields}


def _answer_text(content: str, n: int) -> str:
    """The text a sample's answer is read from. The original drops what precedes the first
    ``</think>`` of a one-sample answer only (its n-sample requests keep it); the client has
    already split the reasoning off at the last one, so this only matters for several."""
    if n == 1 and "</think>" in (content or ""):
        return content.split("</think>", 1)[1]
    return content


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
    context: str | None = None,
) -> PassResult:
    """One prompt: n samples, cleaned and voted; a pass with a blank voted field is asked again.

    Faithful (the original's stage 4): the reconcile pass first repeats the
    whole n-sample request (voting again) up to ``reask_tries`` times, then
    every pass asks one sample at a time; each try raises the repetition
    penalty by 0.1 (capped at 1.5), its answer replaces the pass's result,
    and the tries stop once no field is blank. ``context`` (the reconcile
    pass's earlier results) follows the prompt after a blank line. Under
    ``merge_reasks`` a single answer only fills the blank fields.
    """
    fields = PASS_FIELDS[name]
    text = prompt.render(**values)
    if context is not None:
        text = f"{text}\n\n{context}"
    messages = [describe_message(text, images, images_first=config.images_first)]
    if config.json_schema and prompt.schema:
        response_format = client.response_format(prompt.title, prompt.schema)
    else:
        response_format = {"type": "json_object"}
    common = dict(
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        response_format=response_format,
    )
    result = PassResult(prompt=prompt.name)

    async def sampled(n: int, penalty: float) -> list[dict[str, Any]]:
        samples = await client.complete(messages, n=n, repetition_penalty=penalty, **common)
        answers = []
        for sample in samples:
            cleaned = clean_answer(_answer_text(sample.content, n), fields, config)
            result.samples.append(sample_record(sample, parsed=cleaned is not None))
            if cleaned is not None:
                answers.append(cleaned)
        return answers

    voted = vote(await sampled(config.n, config.repetition_penalty), fields, config)
    # The original repeats the whole n-sample reconcile request first (only when n > 1).
    full_tries = reask_penalties(config) if name == "reconcile" and config.n > 1 and not config.merge_reasks else []
    single_tries = reask_penalties(config)
    for n, schedule in ((config.n, full_tries), (1, single_tries)):
        for penalty in schedule:
            missing = empty_fields(voted, fields)
            if not missing:
                break
            try:
                samples = await client.complete(messages, n=n, repetition_penalty=penalty, **common)
            except ModelRequestError as exc:
                # Guard (the original would stop the video): the vote stands with its gap,
                # which final_row fills.
                result.reasks.append({"n": n, "repetition_penalty": penalty, "missing": missing, "error": str(exc)})
                result.voted = voted
                return result
            # A missing single choice reads as an empty answer, as in the original.
            contents = [_answer_text(s.content, n) for s in samples] or ([""] if n == 1 else [])
            answers = [a for a in (clean_answer(c, fields, config) for c in contents) if a is not None]
            record: dict[str, Any] = {"n": n, "repetition_penalty": penalty, "missing": missing}
            if n == 1 and samples:
                record.update(sample_record(samples[0]))
            elif n > 1:
                record["samples"] = [sample_record(s) for s in samples]
            if config.merge_reasks:
                fresh = answers[0] if answers else {}
                filled = [f for f in missing if not empty_fields(fresh, [f])]
                voted.update({f: fresh[f] for f in filled})
                record["filled"] = filled
            elif n > 1:
                voted = vote(answers, fields, config)
            elif answers:
                voted = dict(answers[0])  # the single answer replaces the pass's result
            result.reasks.append(record)
    result.voted = voted
    return result


def _allowed(field: str, value: Any, config: DescribeConfig) -> Any:
    """``value`` as a valid value of ``field`` in a submission row, else None (as if no pass gave it).

    Guard: the faithful vote can hold values a submission cannot (a blank or
    misspelt severity, a blank or non-English text); only such values are
    replaced (``final_row``). A misspelt severity or label is read as the
    allowed value it names when there is one.
    """
    if value is None:
        return None
    if field == cols.SEVERITY:
        return canonical_severity(str(value))
    if field == cols.LABEL:
        return canonical_label(str(value))
    if field in cols.TEXT_COLUMNS:
        text = clean_text(str(value)) if config.clean_texts else str(value).strip()
        return text if text and is_english(text) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    number = int(value)
    if field == cols.DETECTION:
        return number if number in cols.DETECTION_VALUES else None
    if field == cols.EGO:
        return number if number in cols.EGO_VALUES else None
    if field in cols.COUNT_COLUMNS:
        return min(number, MAX_COUNT) if number >= 0 else None  # guard: 64-bit readers
    return number


def start_frame(window: Sequence[int], index: int, *, clamp_negative: bool = False) -> tuple[int, bool]:
    """The submission's start frame for the voted start index: (frame, whether a guard acted).

    Faithful: -1 gives frame 1; any other index picks the window's image the
    Python way (-2 is the second-to-last). Guard (the original crashes): an
    index beyond the window's ends is clamped to the nearest end. With
    ``clamp_negative`` (the ``clamp_start_index`` switch) every index below 0
    other than -1 gives the first frame.
    """
    if index == -1:
        return 1, False
    if not window:
        raise ValueError("no frames in the window")
    if index < 0 and not clamp_negative and index >= -len(window):
        return int(window[index]), False
    return window_index_to_frame(list(window), index)


def final_row(
    video: int,
    window: Sequence[int],
    passes: Mapping[str, PassResult],
    notes: list[str],
    config: DescribeConfig | None = None,
) -> dict[str, Any]:
    """The submission row: the reconcile pass's result (the original's row).

    Guard (the original would write an invalid row or crash): a field the
    reconcile result lacks or holds an invalid value for (a blank or
    unknown severity or label, a blank or non-English text) is taken from
    the texts pass, then the counts pass, else the no-incident value or the
    fallback sentence, with a note. ``consistency_rules`` then enforces the
    reconcile rules. ``config`` None: every switch off.
    """
    config = config or _FAITHFUL
    row: dict[str, Any] = {}
    order = ("reconcile", "texts", "counts")
    for f in cols.ANSWER_FIELDS:
        value = None
        for name in order:
            candidate = _allowed(f, passes[name].voted.get(f), config) if name in passes else None
            if candidate is not None:
                value = candidate
                break
        row[f] = value
    defaults = cols.fallback_row(video)
    if row[cols.DETECTION] is None:
        notes.append("no pass gave Incident Detection: treated as no incident (-1)")
        row[cols.DETECTION] = -1
    for f in (cols.EGO, *cols.COUNT_COLUMNS):
        if row[f] is None:
            row[f] = 0
    for f in cols.TEXT_COLUMNS:
        if row[f] is None:
            notes.append(f"no usable {f!r}: the fallback sentence was used")
            row[f] = defaults[f]
    if config.consistency_rules:
        row = consistent(row)
    if row[cols.SEVERITY] is None:
        notes.append("no usable 'Crash Severity': '0. No Crash' was used")
        row[cols.SEVERITY] = cols.NO_CRASH
    if row[cols.LABEL] is None:
        notes.append("no usable 'Label': 'unknown' was used")
        row[cols.LABEL] = cols.UNKNOWN_LABEL
    index = row[cols.START_FRAME] if row[cols.START_FRAME] is not None else -1
    frame, clamped = start_frame(list(window), int(index), clamp_negative=config.clamp_start_index)
    if clamped:
        notes.append(f"start index {index} is outside the {len(window)}-frame window: clamped")
    row[cols.START_FRAME] = frame
    row[cols.VIDEO] = int(video)
    return {c: row[c] for c in cols.COLUMNS}


def reconcile_context(counts: Mapping[str, Any], texts: Mapping[str, Any]) -> str:
    """The two earlier results as the original appends them to the reconcile prompt."""
    return json.dumps({RECONCILE_COUNTS_KEY: dict(counts), RECONCILE_TEXTS_KEY: dict(texts)}, ensure_ascii=False)


async def describe_video(
    client: ChatClient,
    config: DescribeConfig,
    prompts: DescribePromptSet,
    video: int,
    window: Sequence[int],
    images: Mapping[int, Path],
) -> DescribeResult:
    """Counts and texts passes (together), then reconcile, then the final row.

    The reconcile prompt gets the earlier results appended after a blank line
    (the original's layout), unless its text places them itself with
    ``$counts_json`` and ``$texts_json`` (coool's plus prompt does).
    """
    urls = [client.image_url(images[f]) for f in window]
    values = prompts.values(len(window))
    counts, texts = await asyncio.gather(
        run_pass(client, "counts", prompts.counts, urls, config, values),
        run_pass(client, "texts", prompts.texts, urls, config, values),
    )
    if "$counts_json" in prompts.reconcile.text or "${counts_json}" in prompts.reconcile.text:
        placed = {
            **values,
            "counts_json": json.dumps(counts.voted, ensure_ascii=False, indent=1),
            "texts_json": json.dumps(texts.voted, ensure_ascii=False, indent=1),
        }
        reconcile = await run_pass(client, "reconcile", prompts.reconcile, urls, config, placed)
    else:
        context = reconcile_context(counts.voted, texts.voted)
        reconcile = await run_pass(client, "reconcile", prompts.reconcile, urls, config, values, context)
    passes = {"counts": counts, "texts": texts, "reconcile": reconcile}
    notes: list[str] = []
    row = final_row(video, window, passes, notes, config)
    return DescribeResult(video=video, config=config.name, window=list(window), row=row, passes=passes, notes=notes)


def window_images(config: DescribeConfig, manifest: FrameManifest, window: Sequence[int], frames_dir: Path) -> dict[int, Path]:
    """The images the describer is shown, decoded on demand into ``frames_dir``: the raw video
    frames (``raw/``), or with ``frames: stacked`` the heatmap above each (``stacked-window/``)."""
    if config.frames == "stacked":
        return extract_stacked_frames(manifest.video.path, manifest.heatmap.path, window, frames_dir)
    return extract_raw_frames(manifest.video.path, window, frames_dir)


def describe_key(video_sha256: str, window: Sequence[int], config: DescribeConfig, prompts: DescribePromptSet, model: str) -> str:
    """What determines a description: the video, the window, the configuration, its prompts, the model."""
    return combined_hash([video_sha256, json.dumps(list(window)), config.model_dump_json(), prompts.sha256, model])


async def describe_unit(
    client: ChatClient,
    video: int,
    config: DescribeConfig,
    prompts: DescribePromptSet,
    frames_dir: Path,
    out_path: Path,
    *,
    captions_path: Path | None = None,
    detected_frame: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Stage 4 for one (video, configuration), resumable.

    The window comes from the caption table or the detected frame; its frames
    (raw, or stacked under ``frames: stacked``) are decoded on demand into
    ``frames_dir`` (``window_images``). Writes ``out_path``, its JSON;
    skipped when that was made with the same key.
    """
    manifest = load_manifest(frames_dir)
    if manifest is None:
        raise StageError(f"video {video}: no frames manifest in {frames_dir} (run stage 1 first)")
    captions = load_captions(captions_path, coerce=False) if captions_path is not None and Path(captions_path).exists() else None
    try:
        window = select_window(config, frame_count=manifest.video.frames, captions=captions, detected_frame=detected_frame)
    except ValueError as exc:
        raise StageError(f"video {video}: {exc}") from exc
    key = key or describe_key(manifest.video_sha256, window, config, prompts, client.identity)  # a run passes its stage key
    if (done := cached_output(out_path, key)) is not None:
        return {"video": video, "frame": done["frame"], "window": done["window"], "cached": True}
    # Decoding is CPU work: keep it off the event loop that drives the requests.
    images = await asyncio.to_thread(window_images, config, manifest, window, frames_dir)
    with count_usage() as usage:
        result = await describe_video(client, config, prompts, video, window, images)
    write_output(out_path, key, client.model, usage.as_dict(), result.as_dict())
    reasks = sum(len(p.reasks) for p in result.passes.values())
    return {
        "video": video, "frame": result.frame, "window": window, "cached": False, "notes": result.notes, "reasks": reasks,
        "usage": usage.as_dict(),
    }


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
        captions = load_captions(captions_path, coerce=False) if captions_path.exists() else None
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
            run.ws.describe_path(stage.config, video), captions_path=run.ws.captions_path(video),
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
