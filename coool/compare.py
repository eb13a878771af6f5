"""Compare submissions with each other, without a truth file.

How much do the ensemble's inputs differ? For every pair: the fraction of
their common videos on which each column is equal (and, for the start
frame, the mean absolute difference). For every submission: caption
metrics of its texts with the other submissions' texts of the same video
as references (a consensus score: high means it says what the others say).
"""

from __future__ import annotations

import itertools
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
from coool.submission import SubmissionError, load_submission, typed
from coool.textmetrics import METEOR, METRICS, TextScores, evaluate_texts

COMPARED_COLUMNS: tuple[str, ...] = cols.ANSWER_FIELDS
# Short table headers; the JSON keeps the real column names.
SHORT: dict[str, str] = {
    cols.START_FRAME: "start",
    cols.DETECTION: "detect",
    cols.SEVERITY: "severity",
    cols.EGO: "ego",
    cols.LABEL: "label",
    cols.N_BICYCLISTS: "#bicycl",
    cols.N_ANIMALS: "#animal",
    cols.N_PEDESTRIANS: "#pedest",
    cols.N_VEHICLES: "#vehicl",
    cols.CAPTION: "caption",
    cols.REASON: "reason",
}


class PairAgreement(BaseModel):
    a: str
    b: str
    n_common: int = Field(description="videos in both")
    agreement: dict[str, float | None] = Field(description="column -> fraction of common videos where equal")
    start_frame_mean_abs_diff: float | None


class TextConsensus(BaseModel):
    name: str
    column: str
    scores: TextScores = Field(description="this submission's texts against the others' as references")


class Comparison(BaseModel):
    names: list[str]
    pairs: list[PairAgreement]
    texts: list[TextConsensus]


def _pair(a: str, b: str, left: pd.DataFrame, right: pd.DataFrame) -> PairAgreement:
    common = left.index.intersection(right.index)
    l, r = left.loc[common], right.loc[common]
    empty = len(common) == 0
    return PairAgreement(
        a=a,
        b=b,
        n_common=len(common),
        agreement={c: None if empty else float((l[c] == r[c]).mean()) for c in COMPARED_COLUMNS},
        start_frame_mean_abs_diff=None if empty else float((l[cols.START_FRAME] - r[cols.START_FRAME]).abs().mean()),
    )


def compare_submissions(
    frames: dict[str, pd.DataFrame],
    *,
    meteor: bool = True,
    spice_jar: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Pairwise agreement and leave-one-out text consensus of two or more submissions.

    ``frames`` maps a display name to a valid submission (as read or
    loaded). ``meteor=False`` skips METEOR, the slowest metric (about 10 s
    for eight 661-row files plus ~8 s to start java once).
    """
    if len(frames) < 2:
        raise ValueError("need at least two submissions to compare")
    indexed = {name: typed(frame).set_index(cols.VIDEO) for name, frame in frames.items()}
    names = list(indexed)
    pairs = [_pair(a, b, indexed[a], indexed[b]) for a, b in itertools.combinations(names, 2)]

    metrics = [m for m in METRICS if meteor or m != METEOR]
    texts = []
    for name in names:
        others = [indexed[o] for o in names if o != name]
        own = indexed[name]
        for column in cols.TEXT_COLUMNS:
            # Videos some other submission also answered; its texts are the references.
            references = {
                int(i): [str(o.at[i, column]) for o in others if i in o.index] for i in own.index
            }
            references = {i: refs for i, refs in references.items() if refs}
            candidates = {i: str(own.at[i, column]) for i in references}
            scores = evaluate_texts(references, candidates, metrics, spice_jar=spice_jar)
            if not meteor:
                scores.scores[METEOR] = None
                scores.unavailable[METEOR] = "skipped (meteor=False)"
            texts.append(TextConsensus(name=name, column=column, scores=scores))
    return Comparison(names=names, pairs=pairs, texts=texts)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_comparison(comparison: Comparison, console: Console) -> None:
    """Rich tables: a legend of numbered submissions, agreement per pair, text consensus."""
    number = {name: i for i, name in enumerate(comparison.names, start=1)}
    legend = Table(title="Submissions")
    legend.add_column("#", justify="right")
    legend.add_column("name")
    for name, i in number.items():
        legend.add_row(str(i), name)
    console.print(legend)

    pairs = Table(title="Agreement per pair (fraction of common videos equal; Δstart = mean |start frame difference|)")
    pairs.add_column("pair")
    pairs.add_column("videos", justify="right")
    pairs.add_column("Δstart", justify="right")
    for column in COMPARED_COLUMNS:
        pairs.add_column(SHORT[column], justify="right")
    for pair in comparison.pairs:
        pairs.add_row(
            f"{number[pair.a]}-{number[pair.b]}",
            str(pair.n_common),
            _fmt(pair.start_frame_mean_abs_diff, 1),
            *(_fmt(pair.agreement[c], 2) for c in COMPARED_COLUMNS),
        )
    console.print(pairs)

    metrics = list(comparison.texts[0].scores.scores) if comparison.texts else []
    texts = Table(title="Text consensus: each submission's texts against the others' as references")
    texts.add_column("#", justify="right")
    texts.add_column("column")
    for metric in metrics:
        texts.add_column(metric, justify="right")
    reasons: dict[str, str] = {}
    for item in comparison.texts:
        texts.add_row(str(number[item.name]), SHORT[item.column], *(_fmt(item.scores.scores[m]) for m in metrics))
        reasons.update(item.scores.unavailable)
    console.print(texts)
    for metric, why in reasons.items():
        console.print(f"[yellow]{metric} unavailable:[/yellow] {why}", highlight=False)


def _names(paths: Sequence[Path]) -> list[str]:
    # File stems, unless two files share one: then the paths as given.
    stems = [p.stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def compare_command(
    paths: list[Path],
    as_json: bool = False,
    *,
    meteor: bool = True,
    spice_jar: str | os.PathLike[str] | None = None,
) -> int:
    """`coool compare A.csv B.csv ...`: print the comparison; 1 on unreadable/invalid input."""
    errors = Console(stderr=True)
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        errors.print("[red]error:[/red] compare needs at least two submission files", highlight=False)
        return 1
    names = _names(paths)
    if len(set(names)) != len(names):
        errors.print("[red]error:[/red] the same file is given twice", highlight=False)
        return 1
    frames = {}
    for name, path in zip(names, paths):
        try:
            frames[name] = load_submission(path)
        except SubmissionError as exc:
            errors.print(f"[red]error:[/red] {exc}", highlight=False)
            return 1
        except OSError as exc:
            errors.print(f"[red]error:[/red] {path}: {exc}", highlight=False)
            return 1
    comparison = compare_submissions(frames, meteor=meteor, spice_jar=spice_jar)
    if as_json:
        sys.stdout.write(json.dumps(comparison.model_dump(), indent=2) + "\n")
    else:
        render_comparison(comparison, Console())
    return 0
