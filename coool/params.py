"""Stage parameters: the spec's values as defaults, every one overridable.

Recipes (coool/recipes/*.yaml) and the CLI build these models; the
stage functions take them. Each model's JSON form is part of the cache key
of the work it parameterises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from coool.improvements import switch
from coool.settings import ROLES

CONFIGS_FILE = Path(__file__).parent / "configs" / "describe.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptionParams(_Strict):
    every: int = Field(10, ge=1)
    temperature: float = 0.01
    max_tokens: int = 8192
    thinking: bool = True
    prompt: str = "caption"
    # -- coool's improvements (coool/improvements.py), off in second-place --
    json_schema: bool = switch(
        "caption requests carry the caption JSON schema as response_format (json_object where the server "
        "enforces no schemas); the original sends no response format",
        "every answer parses and every field holds an allowed value, so no frame is lost to a malformed answer",
    )
    plus_prompts: bool = switch(
        "coool's caption prompt (coool/prompts/plus/caption.md): counts of the participants of a collision or "
        "hazard only, digits, a gaze of 'none' when the marks overlap nothing",
        "the detector and the caption-trigger window read counts of involved participants, as the submission "
        "counts them, instead of everything visible",
    )
    clean_captions: bool = switch(
        "caption answers parsed leniently (code fences, first balanced object, curly quotes) and coerced before "
        "they are stored (counts >= 0, detection in -1/0/1, canonical severity and label); the original keeps "
        "the values as the model wrote them and drops only answers whose JSON does not load",
        "the detector and the windows read clean numbers and canonical strings",
    )


class DetectParams(_Strict):
    samples: int = Field(12, ge=1)
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 512
    video_attempts: int = Field(30, ge=1, description="whole-video retries when no sample parses")
    retry_delay_s: float = Field(3.0, ge=0)
    top_k: int = 0  # the original's command-line default (0: off)
    repetition_penalty: float = 1.0
    prompt: str = "detect"
    # -- coool's improvements (coool/improvements.py), off in second-place --
    json_schema: bool = switch(
        "detection requests carry the {\"frame\": integer} JSON schema as response_format; the original sends none",
        "every sample parses, so no sample is lost and whole-video retries are rare",
    )
    plus_prompts: bool = switch(
        "coool's detector prompt (coool/prompts/plus/detect.md): single frames can be wrong, the start is where the "
        "event is under way rather than the impact, -1 when nothing happens",
        "fewer answers that pick an isolated misread frame or the frame of impact",
    )
    batched_samples: bool = switch(
        "the samples asked in one request with n = samples (split by the role's max_n); the original sends one "
        "request per sample",
        "the server shares the prompt's prefill between samples: 12 times less prompt processing",
    )
    compact_table: bool = switch(
        "the caption table shown to the detector without the image path column, cells escaped, no padding; the "
        "original shows pandas' markdown rendering of its caption CSV, path included",
        "fewer prompt tokens, and the path (a file name) says nothing about the scene",
    )


class DescribePrompts(_Strict):
    counts: str = "describe_counts"
    texts: str = "describe_texts"
    reconcile: str = "describe_reconcile"


class DescribeConfig(_Strict):
    name: str
    role: str = "describer"
    window: Literal["caption-trigger", "detected-frame"]
    pre: int = Field(ge=0)
    post: int = Field(ge=0)
    step: int = Field(1, ge=1)
    prompts: DescribePrompts = Field(default_factory=DescribePrompts)
    extra: tuple[str, ...] = Field((), description="snippets appended to every describe prompt")
    # What the describer is shown for each window frame. "stacked": the gaze heatmap frame above the
    # video frame, as captioning sees it (the original's unpublished "add heatmap" run; v4-heatmap);
    # the prompts then start with the stacked_frames snippet, which says what the two halves are.
    frames: Literal["raw", "stacked"] = Field(
        "raw", description="raw video frames (the original's describe runs) or stacked frames, heatmap on top"
    )
    n: int = Field(4, ge=1)
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1  # off
    repetition_penalty: float = 1.0
    max_tokens: int = 8192
    reask_tries: int = Field(5, ge=0)
    reask_penalty_step: float = 0.1
    reask_penalty_cap: float = 1.5
    # coool's improvements over the original describe stage: off = the original's behaviour.
    plus_prompts: bool = switch(
        "coool's describe prompts (coool/prompts/plus/): extra rules (start index -1 under detection -1, "
        "'several vehicles hit the ego-car: 5', stricter style, hazard labels from coool's list)",
        "tighter answers that need fewer re-asks and fewer fixes afterwards",
    )
    json_schema: bool = switch(
        "describe requests carry the prompt's JSON schema (response_format json_schema) instead of json_object",
        "the server's structured outputs make every sample parse and hold only allowed values",
    )
    images_first: bool = switch(
        "the images come before the text in the describe request (the original sends the text first)",
        "the question right after the frames it is about; common practice for Qwen-VL and GLM-V",
    )
    lenient_parsing: bool = switch(
        "samples parsed leniently (the text after a closing think tag, a fence anywhere, later objects, "
        "json-repair) "
        "and keys matched ignoring case and punctuation; numbers like '2.7' rounded",
        "a sample with a small format slip still votes",
    )
    drop_unparsable: bool = switch(
        "a sample that does not parse does not vote (the original cleans it to zeros and blanks, which vote)",
        "a broken sample is not evidence of 'no incident'",
    )
    blank_as_absent: bool = switch(
        "a missing, null or blank field is absent and does not vote; the texts come from a sample that has both",
        "a blank cannot win a tie and a missing count is not a vote for 0",
    )
    canonical_values: bool = switch(
        "severity and label mapped to the allowed values before voting ('3' -> '3. Ego-car collided ...'; "
        "a close label spelling), an unmappable one counting as blank",
        "spelling variants vote together and the vote only yields allowed values",
    )
    english_reask: bool = switch(
        "a caption or reason in another script counts as blank, so it is asked again",
        "the challenge scores English text; a non-English sentence would score 0",
    )
    merge_reasks: bool = switch(
        "a re-ask (one sample each) fills only the still-blank fields and keeps the vote; the reconcile pass "
        "gets no full-n re-asks (the original replaces the pass's result with the single answer)",
        "one re-ask cannot undo a good vote on the other fields",
    )
    consistency_rules: bool = switch(
        "the final row obeys the reconcile rules (detection -1: no crash, ego 0, unknown, counts 0; "
        "detection 0: no crash, hazard label; detection 1: a crash severity)",
        "the original only asks the model to obey them; a row that breaks them scores worse",
    )
    clamp_start_index: bool = switch(
        "a start index below -1 is clamped to the window's first frame (the original counts it from the "
        "window's end, Python style)",
        "-2 is a malformed answer, not 'the second-to-last frame'",
    )
    clean_texts: bool = switch(
        "captions and reasons made one line (control characters dropped, runs of white space one space)",
        "a model's line breaks or invisible characters do not reach the submission's one-sentence fields",
    )

    # -- caption-trigger window switch (owned with coool/windows.py; kept apart for merges) --
    lenient_trigger: bool = switch(
        "caption-trigger window: a missing or non-numeric Incident_Detection reads 0 (and so triggers), numbers "
        "are read as answers are (leading integer, floats rounded, negative counts 0), and a Hazard_Clues of "
        "'none.' or '\"n/a\"' is no clue (punctuation stripped); the original never triggers on a missing or "
        "non-numeric detection, truncates numbers, and treats only ''/none/null/na/n/a/node as no clue",
        "a row the captioner left half-filled still counts, and 'None.' is not mistaken for a clue",
    )

    @model_validator(mode="after")
    def _known_role(self) -> DescribeConfig:
        if self.role not in ROLES:
            raise ValueError(f"describe config {self.name!r}: unknown role {self.role!r} (roles: {', '.join(ROLES)})")
        return self

    @property
    def size(self) -> int:
        return self.pre + self.post + 1


class CountPassParams(_Strict):
    config: str = "v6-counts"
    threshold: int = Field(10, ge=0, description="re-describe rows with any count above this")
    clip: int = Field(20, ge=0, description="then clip animals, pedestrians, vehicles to this")


class EnsembleParams(_Strict):
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    max_tokens: int = 4096
    seed: int = 42
    english_retries: int = Field(1, ge=0, description="re-asks when a text has non-ASCII characters")
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    prompt: str = "ensemble"
    # -- coool's improvements (coool/improvements.py), off in second-place --
    json_schema: bool = switch(
        "ensemble requests carry a JSON schema (caption_before, reason, incident_start_frame) as response_format "
        "and the answer is read as JSON; the original asks for XML-like tags and sends no response format",
        "the answer always parses",
    )
    plus_prompts: bool = switch(
        "coool's ensemble prompt (coool/prompts/plus/ensemble.md): reports grouped by the event of their reason, "
        "caption and reason rules, a JSON answer",
        "a shorter prompt written for a JSON answer",
    )
    broad_normalise: bool = switch(
        "input texts normalised more broadly: a leading number with punctuation ('1. ', '2) ') dropped and "
        "'ego-car' rewritten in any letter case; the original drops only a number followed by a space and "
        "rewrites 'ego-car' and 'ego-vehicle' as written",
        "list numbering and capitalised 'Ego-car' do not reach the ensembler",
    )
    strict_english: bool = switch(
        "an answer whose texts are empty, unparsable or not ASCII is asked again up to english_retries times with a "
        "new seed each time, and the base row's texts stay if none is usable; the original asks a non-ASCII row "
        "again once with the same request and takes that answer",
        "the same seed tends to give the same answer, and a non-English text would reach the submission",
    )


def load_describe_configs(path: str | Path | None = None, extra: dict | None = None) -> dict[str, DescribeConfig]:
    """The named describe configurations (built-in file, then ``extra`` on top)."""
    raw = yaml.safe_load(Path(path or CONFIGS_FILE).read_text(encoding="utf-8")) or {}
    raw.update(extra or {})
    configs = {}
    for name, body in raw.items():
        try:
            configs[name] = DescribeConfig(name=name, **(body or {}))
        except Exception as exc:
            raise ValueError(f"describe config {name!r} in {path or CONFIGS_FILE}: {exc}") from exc
    return configs
