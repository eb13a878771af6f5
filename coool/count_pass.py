"""The count sanity pass (v6): re-describe rows with implausible counts.

The reference found one video with 100 geese counted (text printed in the
image read as a count). Rows whose any count exceeds a threshold are
described again with prompts told to ignore text in the images, then the
animal, pedestrian and vehicle counts are clipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from coool import schema as cols
from coool.describe import DESCRIBE, DESCRIBED
from coool.files import combined_hash, json_sha256
from coool.frames import load_manifest
from coool.stage import Stage

if TYPE_CHECKING:
    from coool.describe import DescribePromptSet
    from coool.recipe import Recipe
    from coool.run import Run

# The spec clips these three; bicyclists/scooters are left as described.
CLIPPED: tuple[str, ...] = (cols.N_ANIMALS, cols.N_PEDESTRIANS, cols.N_VEHICLES)


def needs_count_pass(row: Mapping[str, Any], threshold: int = 10) -> bool:
    return any(int(row[c]) > threshold for c in cols.COUNT_COLUMNS)


def videos_needing_count_pass(submission: pd.DataFrame, threshold: int = 10) -> list[int]:
    """Ids of the rows whose any count exceeds ``threshold``, in id order."""
    return sorted(int(r[cols.VIDEO]) for r in submission.to_dict("records") if needs_count_pass(r, threshold))


def clip_counts(row: Mapping[str, Any], clip: int = 20) -> dict[str, Any]:
    out = dict(row)
    for column in CLIPPED:
        out[column] = min(int(out[column]), clip)
    return out


def apply_count_pass(
    submission: pd.DataFrame,
    redescribed: Mapping[int, Mapping[str, Any]],
    threshold: int = 10,
    clip: int = 20,
) -> pd.DataFrame:
    """The submission with every row in need replaced by its re-description, clipped.

    A row in need whose re-description is missing (it failed) keeps its own
    values, clipped, so an implausible count never survives. Rows not in
    need are untouched.
    """
    rows = []
    for row in submission.to_dict("records"):
        if needs_count_pass(row, threshold):
            row = clip_counts(redescribed.get(int(row[cols.VIDEO]), row), clip)
            row[cols.VIDEO] = int(row[cols.VIDEO])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(cols.COLUMNS))


SKIPPED = "no count above the threshold"


class CountPassStage:
    """The count pass as a stage kind: re-describe (with its own configuration) the
    videos whose input row has a count above the threshold; the others are skipped."""

    kind = "count-pass"

    def plan(self, recipe: Recipe) -> list[Stage]:
        spec = recipe.count_pass
        if spec is None:
            return []
        deps = tuple(f"describe:{c}" for c in sorted(recipe.describe_sources(spec.input))) + ("detect",)
        return [Stage("count-pass", self.kind, recipe.configs[spec.config].role, deps, config=spec.config)]

    def prompts(self, recipe: Recipe, stage: Stage) -> DescribePromptSet:
        return DESCRIBE.prompts(recipe, stage)

    def _needed(self, run: Run, video: int) -> tuple[bool, dict[str, Any] | None]:
        spec = run.recipe.count_pass
        assert spec is not None
        row = run.row(spec.input, video)
        return row is not None and needs_count_pass(row, spec.threshold), row

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        if load_manifest(run.ws.frames_dir(video)) is None:
            return None
        needed, row = self._needed(run, video)
        if not needed:
            assert run.recipe.count_pass is not None
            # (the string is part of recorded keys: renaming it would redo finished work)
            return combined_hash(["countpass-skip", json_sha256(row), str(run.recipe.count_pass.threshold)])
        return DESCRIBE.key(run, stage, video)

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        return DESCRIBE.output(run, stage, video)

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        needed, _ = self._needed(run, video)
        return not needed or DESCRIBE.done(run, stage, video)

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        run.manifest(video)
        needed, _ = self._needed(run, video)
        if not needed:
            return {"video": video, "skipped": SKIPPED}
        return await DESCRIBE.run(run, stage, video, key)


class CountPassSubmission:
    """The count pass's submission: its input, rows in need re-described (when done) and clipped."""

    def names(self, recipe: Recipe) -> list[str]:
        return [recipe.count_pass.name] if recipe.count_pass else []

    def sources(self, recipe: Recipe, name: str) -> list[str]:
        assert recipe.count_pass is not None
        return [recipe.count_pass.input]

    def row(self, run: Run, name: str, video: int) -> dict[str, Any] | None:
        spec = run.recipe.count_pass
        assert spec is not None
        row = run.row(spec.input, video)
        if row is None or not needs_count_pass(row, spec.threshold):
            return row
        redone = DESCRIBED.row(run, spec.config, video)
        return clip_counts(redone if redone is not None else row, spec.clip)

    def path(self, run: Run, name: str) -> Path:
        return run.ws.count_pass_csv


COUNT_PASS = CountPassStage()
COUNT_PASSED = CountPassSubmission()
