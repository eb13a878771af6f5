"""Stage 5: one caption, reason and start frame from several submissions (Qwen3-Next, role ``ensembler``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from coool import schema as cols
from coool.files import combined_hash, json_sha256, read_json
from coool.frames import load_manifest
from coool.llm import ChatClient, count_usage, user_message
from coool.params import EnsembleParams
from coool.parsing import clean_text, coerce_int, parse_json_lenient
from coool.prompts import Prompt, stage_prompt
from coool.stage import Stage, sample_record
from coool.submission import is_english
from coool.voting import most_common_frame
from coool.workspace import cached_output, write_output

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run

_LEADING_NUMBER = re.compile(r"^\s*\d+\s*[.):\-]?\s+")
_ORIGINAL_LEADING_NUMBER = re.compile(r"^\s*\d+\s+")
_TAG = "<{0}>(.*?)</{0}>"
_ORIGINAL_TAG = r"<{0}>\s*(.*?)\s*</{0}>"
_NON_ASCII = re.compile(r"[^\x00-\x7F]")

# The file names the original gave the six submissions it ensembled. It read them with a sorted
# glob, so the model saw them in the sorted order of these names (v4 before v3 before v5);
# coool's recipes name them differently, and ``input_order`` sorts by the original's names.
ORIGINAL_INPUT_FILES: dict[str, str] = {
    "exp001+exp002": "exp001_and_exp002_n_sample4_step_merged.csv",
    "exp004+exp005": "exp004_and_exp005_n_sample4.csv",
    "v5": "exp005_n_sample4_6_5_8.csv",
    "v3": "exp005_n_sample4_6_5_10.csv",
    "v4": "exp005_n_sample4_12_11_6.csv",
    "v3-prompt2": "run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2.csv",
}


def input_order(names: list[str] | Mapping[str, Any]) -> list[str]:
    """The inputs in the order the ensembler sees them: sorted by the original's file name.

    A name the original never had (a user's own submission) sorts by itself,
    as the original's glob would sort a file of that name.
    """
    return sorted(names, key=lambda name: ORIGINAL_INPUT_FILES.get(name, name))


def normalize_text(text: object, *, broad: bool = False) -> str:
    """An input text as the ensembler is shown it.

    The original's normalisation: a missing text is blank; strip; drop a
    leading number followed by white space ("3 cars..." loses its "3");
    ``ego-car`` -> ``ego car`` and ``ego-vehicle`` -> ``ego vehicle``,
    exactly as written; fold white space. ``<``/``>`` become ``(``/``)`` so no
    input can open or close a tag. ``broad`` (switch ``broad_normalise``):
    a leading number with punctuation ("1. ", "2) ") goes too, and
    ``ego-car`` is rewritten in any letter case.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        text = ""
    text = str(text)
    if broad:
        text = _LEADING_NUMBER.sub("", text)
        text = re.sub(r"ego-car", "ego car", text, flags=re.IGNORECASE)
    else:
        text = _ORIGINAL_LEADING_NUMBER.sub("", text.strip())
        text = text.replace("ego-car", "ego car").replace("ego-vehicle", "ego vehicle")
    text = text.replace("<", "(").replace(">", ")")
    return " ".join(text.split()) if broad else re.sub(r"\s+", " ", text)


@dataclass(frozen=True)
class Candidate:
    source: str
    frame: int
    caption: str
    reason: str


def candidates_for(
    video: int, inputs: Mapping[str, pd.DataFrame], *, broad: bool = False
) -> tuple[list[Candidate], list[str]]:
    """The (frame, caption, reason) of each input for ``video``, matched by id, in ``input_order``.

    Returns the candidates and the names of the inputs that lack the video
    (skipped, and recorded by the caller).
    """
    found, missing = [], []
    for name in input_order(inputs):
        frame = inputs[name]
        # Positions, not a filtered copy of the frame: this runs per video and per
        # input, so copying whole 661-row frames made stage 5 quadratic.
        hits = np.flatnonzero(frame[cols.VIDEO].to_numpy().astype(int) == int(video))
        if not len(hits):
            missing.append(name)
            continue
        i = hits[0]
        found.append(
            Candidate(
                name,
                int(frame[cols.START_FRAME].iat[i]),
                normalize_text(frame[cols.CAPTION].iat[i], broad=broad),
                normalize_text(frame[cols.REASON].iat[i], broad=broad),
            )
        )
    return found, missing


def candidates_text(candidates: list[Candidate], *, original: bool = False) -> str:
    """The candidates block of the prompt: the original's numbered layout, or coool's "Report i"."""
    if original:
        return "\n".join(
            f"{i}) frame={c.frame}\n   before: {c.caption}\n   reason: {c.reason}" for i, c in enumerate(candidates, start=1)
        )
    blocks = []
    for i, c in enumerate(candidates, start=1):
        blocks.append(f"Report {i}: frame: {c.frame}\n  caption: {c.caption}\n  reason: {c.reason}")
    return "\n".join(blocks)


def parse_tags(content: str) -> dict[str, Any]:
    """The original's reading of a tag answer: each tag's stripped text (blank when absent),
    the frame the first integer inside its tag (None when there is none)."""

    def tag(name: str) -> str:
        match = re.search(_ORIGINAL_TAG.format(name), content or "", flags=re.S | re.I)
        return match.group(1).strip() if match else ""

    number = re.search(r"-?\d+", tag("incident_start_frame"))
    return {
        "caption_before": tag("caption_before"),
        "reason": tag("reason"),
        "incident_start_frame": int(number.group()) if number else None,
    }


def parse_answer(content: str) -> dict[str, Any] | None:
    """caption_before / reason / incident_start_frame from JSON, or from the spec's tags."""
    obj = parse_json_lenient(content)
    if obj is not None and ("caption_before" in obj or "reason" in obj):
        return {
            "caption_before": clean_text(str(obj.get("caption_before") or "")),
            "reason": clean_text(str(obj.get("reason") or "")),
            "incident_start_frame": obj.get("incident_start_frame"),
        }
    tags = {}
    for name in ("caption_before", "reason", "incident_start_frame"):
        match = re.search(_TAG.format(name), content, flags=re.S)
        tags[name] = clean_text(match.group(1)) if match else None
    if tags["caption_before"] is None and tags["reason"] is None:
        return None
    return {
        "caption_before": tags["caption_before"] or "",
        "reason": tags["reason"] or "",
        "incident_start_frame": tags["incident_start_frame"],
    }


def _usable(answer: dict[str, Any] | None) -> bool:
    # The spec asks again when a text has non-ASCII characters.
    return bool(
        answer
        and answer["caption_before"]
        and answer["reason"]
        and answer["caption_before"].isascii()
        and answer["reason"].isascii()
    )


def has_non_ascii(answer: dict[str, Any]) -> bool:
    """The original's test for a row to ask again: a caption or reason with a character outside ASCII."""
    return any(_NON_ASCII.search(str(answer.get(key) or "").strip()) for key in ("caption_before", "reason"))


@dataclass
class EnsembleResult:
    video: int
    row: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    missing_inputs: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "video": self.video,
            "row": self.row,
            "candidates": [c.__dict__ for c in self.candidates],
            "missing_inputs": self.missing_inputs,
            "notes": self.notes,
            "samples": self.samples,
        }


async def ensemble_video(
    client: ChatClient,
    prompt: Prompt,
    video: int,
    base_row: Mapping[str, Any],
    inputs: Mapping[str, pd.DataFrame],
    params: EnsembleParams = EnsembleParams(),
) -> EnsembleResult:
    """The base row with start frame, caption and reason from the ensembler.

    A frame that is missing or not one of the inputs' frames becomes the
    most common input frame (tie: smallest). As the original: an answer
    with a non-ASCII caption or reason is asked again with the same request
    (``english_retries`` times, once by default) and the new answer replaces
    it. With ``strict_english``, an empty, unparsable or non-ASCII answer is
    asked again with a new seed each time, and if none is usable the base
    row's texts stay (noted). Guards (the original would write an invalid
    row): a caption or reason that is blank or still not English keeps the
    base row's text (noted); texts are made one line (``clean_text``).
    """
    candidates, missing = candidates_for(video, inputs, broad=params.broad_normalise)
    row = {c: base_row[c] for c in cols.COLUMNS}
    result = EnsembleResult(video=video, row=row, candidates=candidates, missing_inputs=missing)
    if missing:
        result.notes.append(f"inputs without this video (skipped): {', '.join(missing)}")
    if not candidates:
        result.notes.append("no input has this video: the base row is kept")
        return result
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    block = candidates_text(candidates, original=not params.plus_prompts)
    messages.append(user_message(prompt.render(candidates=block)))
    answer: dict[str, Any] | None = None
    for attempt in range(params.english_retries + 1):
        (sample,) = await client.complete(
            messages,
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            max_tokens=params.max_tokens,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            # The original asks again with the same seed; strict_english changes it each time.
            seed=params.seed + attempt if params.strict_english else params.seed,
            response_format=client.response_format(prompt.title, prompt.schema or {}) if params.json_schema else None,
        )
        # coool's prompt and schema ask for JSON (tags still accepted); the original's prompt for tags only.
        answer = parse_answer(sample.content) if params.json_schema or params.plus_prompts else parse_tags(sample.content)
        result.samples.append(sample_record(sample, attempt=attempt, answer=answer))
        if params.strict_english:
            if _usable(answer):
                break
            result.notes.append(f"attempt {attempt + 1}: texts empty, unparsable or not ASCII")
        elif answer is not None and has_non_ascii(answer):
            result.notes.append(f"attempt {attempt + 1}: a text is not ASCII")
        else:
            break
    frames = [c.frame for c in candidates]
    frame = coerce_int(answer["incident_start_frame"]) if answer and answer["incident_start_frame"] is not None else None
    if frame not in frames:
        fallback = most_common_frame(frames)
        result.notes.append(f"frame {frame} is not an input frame: the most common input frame {fallback} is used")
        frame = fallback
    row[cols.START_FRAME] = frame
    if params.strict_english:
        if _usable(answer):
            assert answer is not None
            row[cols.CAPTION] = answer["caption_before"]
            row[cols.REASON] = answer["reason"]
        else:
            result.notes.append("no usable texts: the base row's caption and reason are kept")
        return result
    # Guards where the original would write an invalid row (a blank or non-English text): the
    # base row's text stays. Every text is made one line (control characters dropped).
    for column, key in ((cols.CAPTION, "caption_before"), (cols.REASON, "reason")):
        text = clean_text(str((answer or {}).get(key) or ""))
        if not text:
            result.notes.append(f"no {key} in the answer: the base row's text is kept")
        elif not is_english(text):
            result.notes.append(f"{key} is still not English: the base row's text is kept")
        else:
            row[column] = text
    return result


def ensemble_key(base_row: Mapping[str, Any], candidates: list[Candidate], params: EnsembleParams, prompt: Prompt, model: str) -> str:
    return combined_hash(
        [json_sha256({k: str(v) for k, v in base_row.items()}), json_sha256([c.__dict__ for c in candidates]),
         params.model_dump_json(), prompt.sha256, model]
    )


async def ensemble_unit(
    client: ChatClient,
    video: int,
    base_row: Mapping[str, Any],
    inputs: Mapping[str, pd.DataFrame],
    out_path: Path,
    prompt: Prompt,
    params: EnsembleParams = EnsembleParams(),
    key: str | None = None,
) -> dict[str, Any]:
    """Stage 5 for one video, resumable (skipped when ``out_path``, its JSON, has the same key)."""
    candidates, _ = candidates_for(video, inputs, broad=params.broad_normalise)
    key = key or ensemble_key(base_row, candidates, params, prompt, client.identity)  # a run passes its stage key
    if (done := cached_output(out_path, key)) is not None:
        return {"video": video, "row": done["row"], "cached": True}
    with count_usage() as usage:
        result = await ensemble_video(client, prompt, video, base_row, inputs, params)
    write_output(out_path, key, client.model, usage.as_dict(), result.as_dict())
    reasks = max(len(result.samples) - 1, 0)
    return {
        "video": video, "row": result.row, "cached": False, "notes": result.notes, "reasks": reasks,
        "usage": usage.as_dict(),
    }


class EnsembleStage:
    """Stage 5 as a stage kind: after every submission it reads (role ``ensembler``)."""

    kind = "ensemble"

    def plan(self, recipe: Recipe) -> list[Stage]:
        spec = recipe.ensemble
        if spec is None:
            return []
        names = [spec.base, *spec.inputs]
        deps = {f"describe:{c}" for n in names for c in recipe.describe_sources(n)}
        if recipe.count_pass and recipe.count_pass.name in names:
            deps.add("count-pass")
        return [Stage("ensemble", self.kind, "ensembler", tuple(sorted(deps)))]

    def prompts(self, recipe: Recipe, stage: Stage) -> Prompt:
        assert recipe.ensemble is not None
        return stage_prompt(recipe.ensemble, recipe.prompts_dir)

    def _inputs(self, run: Run, video: int) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
        spec = run.recipe.ensemble
        assert spec is not None
        base = run.row(spec.base, video) or cols.fallback_row(video)
        inputs = {n: pd.DataFrame([r], columns=list(cols.COLUMNS)) for n in spec.inputs if (r := run.row(n, video))}
        return base, inputs

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        if load_manifest(run.ws.frames_dir(video)) is None:
            return None
        assert run.recipe.ensemble is not None
        base, inputs = self._inputs(run, video)
        candidates, _ = candidates_for(video, inputs, broad=run.recipe.ensemble.broad_normalise)
        return ensemble_key(base, candidates, run.recipe.ensemble, run.prompt(stage), run.identity(stage))

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        return run.ws.ensemble_path(video)

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        return self.output(run, stage, video).exists()

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        run.manifest(video)
        assert run.recipe.ensemble is not None
        base, inputs = self._inputs(run, video)
        return await ensemble_unit(
            run.client(stage.role), video, base, inputs, run.ws.ensemble_path(video), run.prompt(stage), run.recipe.ensemble,
            key,
        )


class EnsembleSubmission:
    """The ensemble's submission: its answer where it has one, else the base row."""

    def names(self, recipe: Recipe) -> list[str]:
        return [recipe.ensemble.name] if recipe.ensemble else []

    def sources(self, recipe: Recipe, name: str) -> list[str]:
        assert recipe.ensemble is not None
        return [recipe.ensemble.base, *recipe.ensemble.inputs]

    def row(self, run: Run, name: str, video: int) -> dict[str, Any] | None:
        assert run.recipe.ensemble is not None
        path = run.ws.ensemble_path(video)
        return dict(read_json(path)["row"]) if path.exists() else run.row(run.recipe.ensemble.base, video)

    def path(self, run: Run, name: str) -> Path:
        return run.ws.ensemble_submission


ENSEMBLE = EnsembleStage()
ENSEMBLED = EnsembleSubmission()
