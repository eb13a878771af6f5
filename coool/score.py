"""Score a submission against a ground-truth file, column by column.

The leaderboard's per-column scores, as far as they are public (see the
spec's "Task and data"): the Incident Window is a frame distance (here the
mean absolute error of the start frame, lower is better), the categorical
columns and the four counts are accuracies, and the two texts get caption
metrics. How the leaderboard combines them into one number is not public,
so no total is computed.

Rows are matched by video id. Only the truth's ids count: a truth id the
submission lacks is scored as wrong everywhere (and listed); submission
rows for other ids are ignored (and listed).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from coool import schema as cols
from coool.submission import SubmissionError, load_submission, typed, validate
from coool.textmetrics import METRICS, TextScores, evaluate_texts

ACCURACY_COLUMNS: tuple[str, ...] = (cols.DETECTION, cols.SEVERITY, cols.EGO, cols.LABEL, *cols.COUNT_COLUMNS)
# The leaderboard calls the Label column "Incident Recognition".
LEADERBOARD_NAMES: dict[str, str] = {cols.START_FRAME: "Incident Window", cols.LABEL: "Incident Recognition"}


def leaderboard_name(column: str) -> str:
    return LEADERBOARD_NAMES.get(column, column)


class Score(BaseModel):
    """Per-column scores of one submission against the truth."""

    n_truth: int
    n_matched: int
    missing_ids: list[int] = Field(description="truth ids absent from the submission, scored as wrong")
    extra_ids: list[int] = Field(description="submission ids not in the truth, ignored")
    incident_window: float = Field(description="mean absolute start-frame error, lower is better")
    accuracy: dict[str, float] = Field(description="column -> fraction of truth ids answered exactly")
    text: dict[str, TextScores] = Field(description="text column -> caption metrics")

    def leaderboard(self) -> dict[str, float | None]:
        """Every score under the leaderboard's names, flat (texts as '<column> <metric>')."""
        out: dict[str, float | None] = {leaderboard_name(cols.START_FRAME): self.incident_window}
        out.update({leaderboard_name(c): v for c, v in self.accuracy.items()})
        for column, scores in self.text.items():
            out.update({f"{column} {m}": v for m, v in scores.scores.items()})
        return out


def _checked(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    errors = [p for p in validate(frame) if p.level == "error"]
    if errors:
        raise SubmissionError(f"{what}: {len(errors)} problem(s), first: {errors[0]}")
    return typed(frame).set_index(cols.VIDEO)


def score_submission(
    submission: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    metrics: Sequence[str] = METRICS,
    spice_jar: str | os.PathLike[str] | None = None,
) -> Score:
    """Score ``submission`` against ``truth`` (both as read or loaded by coool.submission).

    A missing truth id is wrong for every accuracy, gets the empty text for
    the caption metrics, and adds the truth's start frame itself to the
    window error (the distance from "frame 0", i.e. no frame: always at
    least 1, so never counted as a hit, and no worse than guessing frame 1
    by more than one frame).
    """
    sub = _checked(submission, "submission")
    true = _checked(truth, "truth")
    ids = list(true.index)
    present = [i for i in ids if i in sub.index]
    missing = sorted(set(ids) - set(present))
    extra = sorted(set(sub.index) - set(ids))

    # Reindex puts NaN on missing ids: a NaN never equals a truth value.
    guess = sub.reindex(ids)
    window_error = (guess[cols.START_FRAME].fillna(0) - true[cols.START_FRAME]).abs()
    accuracy = {c: float((guess[c] == true[c]).mean()) for c in ACCURACY_COLUMNS}

    text = {
        column: evaluate_texts(
            {i: [str(true.at[i, column])] for i in ids},
            {i: str(sub.at[i, column]) for i in present},
            metrics,
            spice_jar=spice_jar,
        )
        for column in cols.TEXT_COLUMNS
    }
    return Score(
        n_truth=len(ids),
        n_matched=len(present),
        missing_ids=[int(i) for i in missing],
        extra_ids=[int(i) for i in extra],
        incident_window=float(window_error.mean()),
        accuracy=accuracy,
        text=text,
    )


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render_score(score: Score, console: Console, title: str = "Score") -> None:
    """The score as rich tables, with the unavailable metrics' reasons below."""
    table = Table(title=f"{title} ({score.n_matched}/{score.n_truth} truth videos answered)")
    table.add_column("column")
    table.add_column("score", justify="right")
    table.add_column("measure")
    table.add_row(leaderboard_name(cols.START_FRAME), f"{score.incident_window:.2f}", "mean |frame error|, lower is better")
    for column, value in score.accuracy.items():
        table.add_row(leaderboard_name(column), _fmt(value), "accuracy")
    console.print(table)

    metrics = list(next(iter(score.text.values())).scores) if score.text else []
    texts = Table(title="Caption metrics (higher is better)")
    texts.add_column("column")
    for metric in metrics:
        texts.add_column(metric, justify="right")
    for column, scores in score.text.items():
        texts.add_row(column, *(_fmt(scores.scores[m]) for m in metrics))
    console.print(texts)

    reasons = {m: why for scores in score.text.values() for m, why in scores.unavailable.items()}
    for metric, why in reasons.items():
        console.print(f"[yellow]{metric} unavailable:[/yellow] {why}", markup=True, highlight=False)
    if score.missing_ids:
        console.print(f"[red]missing truth videos (scored wrong):[/red] {_ids(score.missing_ids)}", highlight=False)
    if score.extra_ids:
        console.print(f"videos not in the truth (ignored): {_ids(score.extra_ids)}", highlight=False)


def score_command(
    submission_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    as_json: bool = False,
    spice_jar: str | os.PathLike[str] | None = None,
) -> int:
    """`coool score`: print the score (rich tables, or JSON) and return the exit code.

    1 when either file can't be read or isn't a valid submission; the
    message names the file.
    """
    errors = Console(stderr=True)
    frames = {}
    for what, path in (("submission", submission_path), ("truth", truth_path)):
        try:
            frames[what] = load_submission(path)
        except SubmissionError as exc:
            errors.print(f"[red]error:[/red] {what} file {exc}", highlight=False)
            return 1
        except OSError as exc:
            errors.print(f"[red]error:[/red] {what} file {path}: {exc}", highlight=False)
            return 1
    score = score_submission(frames["submission"], frames["truth"], spice_jar=spice_jar)
    if as_json:
        # Plain print: rich would wrap long lines and break the JSON.
        sys.stdout.write(json.dumps(score.model_dump(), indent=2) + "\n")
    else:
        render_score(score, Console(), title=f"{Path(submission_path).name} vs truth {Path(truth_path).name}")
    return 0
