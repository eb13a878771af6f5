"""The score page's data: coool.score against a truth CSV, else coool.compare's agreement.

Both modules are written by others; this file is the one place that calls
them, and it degrades to a clearly marked message when they are missing.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from coool.submission import SubmissionError, load_submission
from coool.studio.catalog import SubmissionRef


@dataclass
class ScoreView:
    mode: str  # "score", "compare" or "none"
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, list[Any]]] = field(default_factory=list)  # (row label, cells)
    messages: list[str] = field(default_factory=list)


def _function(module: str, name: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def as_mapping(result: Any) -> dict[str, Any]:
    """A score result of any reasonable shape as {metric: value}."""
    if isinstance(result, pd.DataFrame):
        if len(result) == 1:
            return {str(k): v for k, v in result.iloc[0].items()}
        if result.shape[1] == 2:  # (metric, value) rows
            return {str(k): v for k, v in zip(result.iloc[:, 0], result.iloc[:, 1])}
        return {str(k): v for k, v in result.mean(numeric_only=True).items()}
    if isinstance(result, pd.Series):
        return {str(k): v for k, v in result.items()}
    if hasattr(result, "model_dump"):
        return dict(result.model_dump())
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, Mapping):
        return {str(k): v for k, v in result.items()}
    return {"score": result}


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, Mapping) or isinstance(value, (list, tuple)):
        return str(value)
    return value


def _table(per_row: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    columns: list[str] = []
    for _, values in per_row:
        columns += [c for c in values if c not in columns]
    return columns, [(label, [_cell(values.get(c, "")) for c in columns]) for label, values in per_row]


def _load(refs: list[SubmissionRef], view: ScoreView) -> list[tuple[SubmissionRef, pd.DataFrame]]:
    loaded = []
    for ref in refs:
        try:
            loaded.append((ref, load_submission(ref.path)))
        except SubmissionError as exc:
            view.messages.append(f"{ref.label}: skipped, not valid ({str(exc).splitlines()[0]})")
    return loaded


def score_view(refs: list[SubmissionRef], truth: Path | None) -> ScoreView:
    if truth is not None:
        score = _function("coool.score", "score_submission")
        if score is None:
            view = ScoreView("none", messages=[f"truth found at {truth}, but coool.score.score_submission is not available yet"])
        else:
            return _scores(refs, truth, score)
    else:
        view = ScoreView("none", messages=["no truth CSV (--truth, <results>/truth.csv or the data root's truth.csv): showing agreement"])
    return _agreement(refs, view)


def _scores(refs: list[SubmissionRef], truth: Path, score: Callable[..., Any]) -> ScoreView:
    view = ScoreView("score", messages=[f"scored against {truth}"])
    try:
        truth_df = load_submission(truth)
    except SubmissionError as exc:
        view.mode = "none"
        view.messages.append(f"the truth file is not readable: {exc}")
        return view
    per_row = []
    for ref, frame in _load(refs, view):
        try:
            per_row.append((ref.label, as_mapping(score(frame, truth_df))))
        except Exception as exc:  # a scorer bug must not take the page down; say what broke
            view.messages.append(f"{ref.label}: scoring failed: {type(exc).__name__}: {exc}")
    view.columns, view.rows = _table(per_row)
    return view


def _agreement(refs: list[SubmissionRef], view: ScoreView) -> ScoreView:
    # HOOK: coool.compare is being written concurrently; wire its table here once its API is known.
    compare = _function("coool.compare", "agreement_table")
    if compare is None:
        view.messages.append("coool.compare.agreement_table is not available yet: no agreement table")
        return view
    loaded = _load(refs, view)
    try:
        table = compare({ref.label: frame for ref, frame in loaded})
    except Exception as exc:  # see _scores
        view.messages.append(f"agreement failed: {type(exc).__name__}: {exc}")
        return view
    view.mode = "compare"
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    view.columns = [str(c) for c in frame.columns]
    view.rows = [(str(i), [_cell(v) for v in row]) for i, row in zip(frame.index, frame.itertuples(index=False))]
    return view
