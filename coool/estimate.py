"""``coool estimate``: a full run's tokens, projected from a finished run on a sample of videos.

Every stage output records the ``usage`` its responses reported (coool.llm.count_usage);
per stage, the sample's per-video mean times the number of videos is the projection,
with a 95% interval from the per-video spread (normal approximation of the mean).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coool.files import read_json
from coool.llm import Usage
from coool.run import Run

# What a sample can't tell, printed with every estimate.
CAVEATS = (
    "re-asks and retries vary from run to run (an unusable answer is asked again), so a stage's tokens do too",
    "caption tokens grow with video length (one request per 10th frame): a sample of short clips underestimates",
    "the count pass runs only for videos with a count above its threshold: its share in the sample may differ",
    "cached prompt tokens depend on what the server still holds (its prefix cache), not only on the requests",
    "failed videos and outputs written before tokens were recorded have no usage: they are left out of the means",
)

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")


@dataclass
class StageEstimate:
    """One stage: what the sample measured and what a run on ``videos`` videos would cost."""

    stage: str
    role: str
    model: str
    measured: int  # videos whose output records usage
    without_work: int  # videos the stage had nothing to do for (count pass skipped): 0 tokens, in the means
    missing: int  # videos with no usage recorded (failed, older output): not in the means
    per_video: dict[str, list[int]] = field(default_factory=dict)  # field -> one value per counted video

    @property
    def counted(self) -> int:
        return self.measured + self.without_work

    def mean(self, name: str) -> float:
        values = self.per_video.get(name) or []
        return statistics.fmean(values) if values else 0.0

    def stdev(self, name: str) -> float:
        values = self.per_video.get(name) or []
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def projected(self, name: str, videos: int) -> tuple[float, float]:
        """Total for ``videos`` videos and the half-width of its 95% interval (0 with one video measured)."""
        n = len(self.per_video.get(name) or [])
        if n == 0:
            return 0.0, 0.0
        return self.mean(name) * videos, 1.96 * self.stdev(name) / math.sqrt(n) * videos

    def as_dict(self, videos: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.stage, "role": self.role, "model": self.model, "measured": self.measured,
            "without_work": self.without_work, "missing": self.missing,
        }
        for name in TOKEN_FIELDS:
            if name not in self.per_video:
                continue
            total, half = self.projected(name, videos)
            out[name] = {
                "mean_per_video": round(self.mean(name), 1), "stdev_per_video": round(self.stdev(name), 1),
                "projected": round(total), "interval_95": [round(max(0.0, total - half)), round(total + half)],
            }
        return out


@dataclass
class Estimate:
    results: str
    recipe: str
    sample: int  # videos with stage-1 output in the results folder
    videos: int  # the run projected to
    stages: list[StageEstimate]

    def by_role(self) -> dict[str, dict[str, float]]:
        """Projected totals per role (the sum of its stages)."""
        roles: dict[str, dict[str, float]] = {}
        for s in self.stages:
            totals = roles.setdefault(s.role, {name: 0.0 for name in TOKEN_FIELDS})
            for name in TOKEN_FIELDS:
                totals[name] += s.projected(name, self.videos)[0]
        return roles

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": self.results, "recipe": self.recipe, "sample_videos": self.sample, "videos": self.videos,
            "stages": [s.as_dict(self.videos) for s in self.stages],
            "roles": {r: {k: round(v) for k, v in t.items()} for r, t in self.by_role().items()},
            "caveats": list(CAVEATS),
        }


def usage_file(output: Path) -> Path:
    """The JSON file that records an output's usage: the output itself, or the JSON beside a
    table (the caption stage's ``<video>.csv`` has its key, model and usage in ``<video>.json``)."""
    return output if output.suffix == ".json" else output.with_suffix(".json")


def recorded_usage(path: Any) -> tuple[dict[str, Any] | None, str]:
    """The ``usage`` and ``model`` an output file records (None: no usage recorded)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None, ""
    usage = data.get("usage") if isinstance(data, dict) else None
    return (usage if isinstance(usage, dict) else None), str(data.get("model") or "")


def estimate_run(run: Run, videos: int) -> Estimate:
    """Project the tokens of a ``videos``-video run of ``run``'s recipe from what its folder holds."""
    if videos < 1:
        raise ValueError(f"--videos must be at least 1, not {videos}")
    sample = run.videos_with_frames()
    if not sample:
        raise ValueError(f"{run.ws.root}: no finished videos (no frames/<id>/manifest.json): run the pipeline first")
    stages = []
    for stage in run.recipe.stages():
        kind = run.kind(stage)
        est = StageEstimate(stage.name, stage.role, run.settings.role(stage.role).model, 0, 0, 0)
        for video in sample:
            path = kind.output(run, stage, video)
            usage, model = recorded_usage(usage_file(path)) if path.exists() else (None, "")
            if usage is None:
                # No output, yet done: the stage had nothing to do for the video (count pass skipped).
                if not path.exists() and _done(run, stage, video):
                    est.without_work += 1
                    for name in ("prompt_tokens", "completion_tokens"):
                        est.per_video.setdefault(name, []).append(0)
                else:
                    est.missing += 1
                continue
            est.measured += 1
            est.model = model or est.model
            u = Usage.from_dict(usage)
            est.per_video.setdefault("prompt_tokens", []).append(u.prompt_tokens)
            est.per_video.setdefault("completion_tokens", []).append(u.completion_tokens)
            if u.cached_prompt_tokens is not None:
                est.per_video.setdefault("cached_prompt_tokens", []).append(u.cached_prompt_tokens)
        stages.append(est)
    return Estimate(str(run.ws.root), run.recipe.name, len(sample), videos, stages)


def _done(run: Run, stage: Any, video: int) -> bool:
    try:
        return run.has_output(stage, video)
    except Exception:  # inputs it reads are missing: not "nothing to do"
        return False

