"""The score page's data: coool.score against a truth CSV, else coool.compare's agreement.

METEOR and SPICE start Java (10-20 s), so results are computed by one
background worker and cached per (files on disk, metric set); the page
shows "computing" and refreshes itself until the result is there.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from coool import schema as cols
from coool.compare import SHORT, compare_submissions
from coool.score import score_submission
from coool.studio.catalog import SubmissionRef
from coool.submission import SubmissionError, load_submission
from coool.textmetrics import CIDER_D, METEOR, METRICS, SPICE

QUICK_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in (METEOR, SPICE))  # pure Python, instant


# A CIDEr-D of 0.0 on synthetic data reads as a bug; it is the metric's IDF.
CIDER_ZERO_WHY = (
    "CIDEr-D 0.0: CIDEr-D weighs each n-gram by its IDF over the videos' references, so an n-gram that every "
    "reference contains is worth nothing. With one text repeated for every video (the demo's synthetic truth), "
    "or all texts identical, every n-gram is shared and the score is 0 however well the texts match."
)


@dataclass
class Why:
    """A cell with a reason printed next to it."""

    value: Any
    why: str


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Any]]]  # (row label, cells)


def _explain_zero_cider(table: Table, view: ScoreView) -> None:
    """Mark each CIDEr-D cell that is exactly 0 and say why once under the table."""
    if CIDER_D not in table.columns:
        return
    at = table.columns.index(CIDER_D)
    marked = False
    for _, cells in table.rows:
        if isinstance(cells[at], float | int) and cells[at] == 0:
            cells[at] = Why(cells[at], CIDER_ZERO_WHY)
            marked = True
    if marked:
        view.messages.append(CIDER_ZERO_WHY)


@dataclass
class ScoreView:
    mode: str  # "score", "compare" or "none"
    tables: list[Table] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _cell(value: Any) -> Any:
    if value is None:
        return "n/a"
    return round(value, 4) if isinstance(value, float) else value


def _load(refs: list[SubmissionRef], view: ScoreView) -> list[tuple[SubmissionRef, pd.DataFrame]]:
    loaded = []
    for ref in refs:
        try:
            loaded.append((ref, load_submission(ref.path)))
        except SubmissionError as exc:
            view.messages.append(f"{ref.label}: skipped, not valid ({str(exc).splitlines()[0]})")
    return loaded


def compute(refs: list[SubmissionRef], truth: Path | None, full: bool) -> ScoreView:
    """Scores against the truth when there is one, else pairwise agreement."""
    if truth is not None:
        return _scores(refs, truth, full)
    view = ScoreView("compare", messages=["no truth CSV (--truth, <results>/truth.csv or the data root's truth.csv): agreement between submissions instead"])
    return _agreement(refs, view, full)


def _scores(refs: list[SubmissionRef], truth: Path, full: bool) -> ScoreView:
    view = ScoreView("score", messages=[f"scored against {truth}"])
    try:
        truth_df = load_submission(truth)
    except SubmissionError as exc:
        return ScoreView("none", messages=[f"the truth file is not usable: {str(exc).splitlines()[0]}"])
    metrics = METRICS if full else QUICK_METRICS
    fields: list[tuple[str, dict[str, Any]]] = []
    texts: list[tuple[str, list[Any]]] = []
    reasons: dict[str, str] = {}
    for ref, frame in _load(refs, view):
        try:
            score = score_submission(frame, truth_df, metrics=metrics)
        except Exception as exc:  # one broken file must not take the page down; say what broke
            view.messages.append(f"{ref.label}: scoring failed: {type(exc).__name__}: {exc}")
            continue
        flat = score.leaderboard()
        fields.append((ref.label, {k: v for k, v in flat.items() if not k.startswith(cols.TEXT_COLUMNS)}))
        for column, scores in score.text.items():
            texts.append((f"{ref.label} · {SHORT.get(column, column)}", [_cell(scores.scores.get(m)) for m in metrics]))
            reasons.update(scores.unavailable)
        if score.missing_ids:
            view.messages.append(f"{ref.label}: {len(score.missing_ids)} truth video(s) missing, scored as wrong")
    if fields:
        columns = list(fields[0][1])
        view.tables.append(Table("Per-column scores (Incident Window: mean |start frame error|, lower is better; others: accuracy)",
                                 columns, [(label, [_cell(v.get(c)) for c in columns]) for label, v in fields]))  # fmt: skip
        view.tables.append(Table("Caption metrics against the truth texts", list(metrics), texts))
        _explain_zero_cider(view.tables[-1], view)
    view.messages += [f"{m} unavailable: {why}" for m, why in reasons.items()]
    return view


def _agreement(refs: list[SubmissionRef], view: ScoreView, full: bool) -> ScoreView:
    loaded = _load(refs, view)
    if len(loaded) < 2:
        view.mode = "none"
        view.messages.append("agreement needs at least two valid submissions")
        return view
    try:
        comparison = compare_submissions({ref.label: frame for ref, frame in loaded}, meteor=full)
    except Exception as exc:  # see _scores
        return ScoreView("none", messages=[*view.messages, f"comparison failed: {type(exc).__name__}: {exc}"])
    columns = [c for c in cols.ANSWER_FIELDS]
    view.tables.append(Table(
        "Agreement per pair (fraction of common videos where the column is equal; Δstart = mean |start frame difference|)",
        ["videos", "Δstart", *(SHORT.get(c, c) for c in columns)],
        [(f"{p.a} vs {p.b}", [p.n_common, _cell(p.start_frame_mean_abs_diff), *(_cell(p.agreement.get(c)) for c in columns)])
         for p in comparison.pairs],
    ))  # fmt: skip
    metrics = list(comparison.texts[0].scores.scores) if comparison.texts else []
    reasons: dict[str, str] = {}
    rows = []
    for item in comparison.texts:
        rows.append((f"{item.name} · {SHORT.get(item.column, item.column)}", [_cell(item.scores.scores.get(m)) for m in metrics]))
        reasons.update(item.scores.unavailable)
    view.tables.append(Table("Text consensus: each submission's texts scored against the others'", metrics, rows))
    _explain_zero_cider(view.tables[-1], view)
    view.messages += [f"{m} unavailable: {why}" for m, why in reasons.items()]
    return view


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
        return (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(path), 0, 0)


class Scorer:
    """Computes score views off the request thread, one at a time, and remembers them."""

    def __init__(self, keep: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-score")
        self._jobs: dict[tuple[Any, ...], Future[ScoreView]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def view(self, refs: list[SubmissionRef], truth: Path | None, full: bool, wait_s: float = 2.0) -> ScoreView | None:
        """The view, or None while it is still being computed (ask again later)."""
        key = (full, _stamp(truth) if truth else None, tuple((r.key, _stamp(r.path)) for r in refs))
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = self._pool.submit(compute, refs, truth, full)
                self._jobs[key] = job
                while len(self._jobs) > self._keep:  # forget the oldest results
                    self._jobs.pop(next(iter(self._jobs)))
        try:
            return job.result(timeout=wait_s)
        except FutureTimeout:
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
