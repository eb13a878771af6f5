"""Reading, validating, writing and merging submission CSVs."""

from __future__ import annotations

import csv
import io
import numbers
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from coool import schema as cols
from coool.files import atomic_write_text

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run


class SubmissionError(ValueError):
    """A submission that can't be read or isn't valid."""


@dataclass(frozen=True)
class Problem:
    """One broken rule. ``row`` is the 1-based data row (None: the whole file)."""

    row: int | None
    column: str | None
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = "file" if self.row is None else f"row {self.row}"
        if self.column:
            where += f", {self.column!r}"
        return f"{self.level}: {where}: {self.message}"


def read_submission(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A submission as a DataFrame of strings, exactly as written (no coercion).

    Keeping strings lets ``validate`` report what the file really says; use
    ``typed`` for numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    try:
        # pandas merges a cut-off quoted field into the last cell, and shifts the
        # columns of a row with an extra cell: check the shape of every row first.
        shape = shape_problems(path.read_text(encoding="utf-8-sig"))
        if shape:
            shown = "\n  ".join(shape[:20])
            more = f"\n  ... and {len(shape) - 20} more" if len(shape) > 20 else ""
            raise SubmissionError(f"{path}: not a well-formed CSV:\n  {shown}{more}")
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not a readable CSV ({exc})") from exc


# A line no CSV cell holds: it comes back as a row of its own only if every quote was closed.
_END = "\x1e\x1fcoool-end-of-file"


def shape_problems(text: str) -> list[str]:
    """Rows whose cell count differs from the header's, and a quoted field never
    closed (a file cut short), as "row N has 13 cells, expected 12 (line L)".
    Rows are numbered as ``Problem`` numbers them: 1 is the first data row."""
    reader = csv.reader(io.StringIO(text + "\n" + _END + "\n"))
    problems: list[str] = []
    expected: int | None = None
    row = 0
    line = 1  # where the next record starts
    closed = False
    for record in reader:
        start, line = line, reader.line_num + 1
        if not record:  # a blank line: pandas skips it too
            continue
        if record == [_END]:
            closed = True
            break
        if _END in record[-1]:
            where = "the header" if expected is None else f"row {row + 1}"
            problems.append(f"{where}: a quoted field opened on line {start} or after is never closed "
                            "(the file may be cut short)")
            break
        if expected is None:
            expected = len(record)
            continue
        row += 1
        if len(record) != expected:
            problems.append(f"row {row} has {len(record)} cells, expected {expected} (line {start})")
    if not closed and not problems:
        problems.append("a quoted field is never closed (the file may be cut short)")
    return problems


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer columns as ints (the frame must be valid)."""
    out = frame.copy()
    for column in (cols.VIDEO, cols.START_FRAME, cols.DETECTION, cols.EGO, *cols.COUNT_COLUMNS):
        out[column] = out[column].astype(int)
    return out


def load_submission(path: str | os.PathLike[str], *, strict: bool = False) -> pd.DataFrame:
    """Read, validate (raise on errors) and type a submission; rows sorted by video."""
    frame = read_submission(path)
    errors = [p for p in validate(frame, strict=strict) if p.level == "error"]
    if errors:
        shown = "\n  ".join(str(p) for p in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise SubmissionError(f"{path}: {len(errors)} problem(s):\n  {shown}{more}")
    return typed(frame).sort_values(cols.VIDEO).reset_index(drop=True)


_INT = re.compile(r"-?[0-9]+")
_INT64 = (-(2**63), 2**63 - 1)


def _as_int(value: object) -> int | None:
    # ASCII digits only: str.isdigit() also accepts "²" (int() then raises)
    # and other scripts' digits, and lstrip("-") let "--5" through to int().
    # A number outside 64 bits is not an integer to pandas or most graders
    # (reading it back would overflow), so it is refused too.
    text = str(value).strip()
    if _INT.fullmatch(text) and len(text) <= 20:
        number = int(text)
        if _INT64[0] <= number <= _INT64[1]:
            return number
    return None


def is_english(text: str) -> bool:
    """No letters of a non-Latin script (curly quotes and dashes are fine).

    The captions are scored against English references: Chinese or Cyrillic
    letters mean the model drifted into another language.
    """
    return all(ch.isascii() or not ch.isalpha() or unicodedata.name(ch, "").startswith("LATIN") for ch in text)


def validate(
    frame: pd.DataFrame,
    *,
    expected_videos: Iterable[int] | None = None,
    strict: bool = False,
) -> list[Problem]:
    """Every problem of a submission (read with ``read_submission``).

    A label outside the 19 is a warning (the challenge accepted such files,
    and two of the reference submissions have some; it just scores as
    wrong); ``strict`` makes it an error, as the pipeline's own output must
    never contain one.
    """
    problems: list[Problem] = []
    header = list(frame.columns)
    if header != list(cols.COLUMNS):
        missing = [c for c in cols.COLUMNS if c not in header]
        extra = [c for c in header if c not in cols.COLUMNS]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not missing and not extra:
            detail.append("columns out of order")
        problems.append(Problem(None, None, f"header must be exactly {list(cols.COLUMNS)}: " + "; ".join(detail)))
        return problems
    if frame.empty:
        problems.append(Problem(None, None, "no rows"))

    seen: dict[int, int] = {}
    for i, row in enumerate(frame.to_dict("records"), start=1):
        def bad(column: str, message: str, level: Literal["error", "warning"] = "error", row_number: int = i) -> None:
            problems.append(Problem(row_number, column, message, level))

        video = _as_int(row[cols.VIDEO])
        if video is None or video < 0:
            bad(cols.VIDEO, f"video id must be a non-negative integer, got {row[cols.VIDEO]!r}")
        elif video in seen:
            bad(cols.VIDEO, f"video {video} appears again (first at row {seen[video]})")
        else:
            seen[video] = i

        start = _as_int(row[cols.START_FRAME])
        if start is None or start < 1:
            bad(cols.START_FRAME, f"must be an integer >= 1 (frames are 1-based), got {row[cols.START_FRAME]!r}")
        detection = _as_int(row[cols.DETECTION])
        if detection not in cols.DETECTION_VALUES:
            bad(cols.DETECTION, f"must be one of 1, 0, -1, got {row[cols.DETECTION]!r}")
        if row[cols.SEVERITY] not in cols.SEVERITIES:
            bad(cols.SEVERITY, f"not an allowed severity: {row[cols.SEVERITY]!r}")
        if _as_int(row[cols.EGO]) not in cols.EGO_VALUES:
            bad(cols.EGO, f"must be 0 or 1, got {row[cols.EGO]!r}")
        if row[cols.LABEL] not in cols.LABELS:
            bad(cols.LABEL, f"not one of the 19 labels: {row[cols.LABEL]!r}", "error" if strict else "warning")
        for column in cols.COUNT_COLUMNS:
            count = _as_int(row[column])
            if count is None or count < 0:
                bad(column, f"must be a non-negative integer, got {row[column]!r}")
        for column in cols.TEXT_COLUMNS:
            text = str(row[column]).strip()
            if not text:
                bad(column, "empty text")
            elif not is_english(text):
                bad(column, f"non-English characters in {text[:60]!r}")
            elif any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
                # A warning: quoted CSV holds line breaks fine, but the texts are meant as one
                # sentence (the pipeline's own texts are cleaned to one line).
                bad(column, f"control or invisible characters (a line break?) in {text[:60]!r}", "warning")

    if expected_videos is not None:
        expected = set(int(v) for v in expected_videos)
        missing_ids = sorted(expected - set(seen))
        extra_ids = sorted(set(seen) - expected)
        if missing_ids:
            problems.append(Problem(None, cols.VIDEO, f"missing videos: {_ids(missing_ids)}"))
        if extra_ids:
            problems.append(Problem(None, cols.VIDEO, f"videos not in the input: {_ids(extra_ids)}"))
    return problems


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")


def submission_text(rows: Iterable[Mapping[str, object]]) -> str:
    """CSV text: the exact header, rows sorted by video, every text field quoted."""
    ordered = sorted(rows, key=_video_order)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(cols.COLUMNS)
    text_columns = {cols.SEVERITY, cols.LABEL, *cols.TEXT_COLUMNS}
    for row in ordered:
        cells = []
        for column in cols.COLUMNS:
            value = row[column]
            if column in text_columns:
                cells.append('"' + str(value).replace('"', '""') + '"')
            else:
                cells.append(_int_cell(value))
        buffer.write(",".join(cells) + "\n")
    return buffer.getvalue()


def _video_order(row: Mapping[str, object]) -> tuple[int, int, str]:
    # A video id that is not an integer sorts last (validation then reports it).
    cell = _int_cell(row[cols.VIDEO])
    number = _as_int(cell)
    return (0, number, "") if number is not None else (1, 0, cell)


def _int_cell(value: object) -> str:
    """An integer column's cell. Integral values as digits; anything else as its
    quoted text, so that validation reports the row and column (int() would
    truncate 12.7 to 12 silently, and raise on None or NaN)."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return str(int(value))
    return '"' + str(value).replace('"', '""') + '"'


def write_submission(
    rows: Iterable[Mapping[str, object]] | pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    expected_videos: Iterable[int] | None = None,
    strict: bool = True,
) -> Path:
    """Validate, then write atomically. Raises SubmissionError, writing nothing, if invalid."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    text = submission_text(records)
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    errors = [p for p in validate(frame, expected_videos=expected_videos, strict=strict) if p.level == "error"]
    if errors:
        shown = "\n  ".join(str(p) for p in errors[:20])
        raise SubmissionError(f"{path}: refusing to write an invalid submission:\n  {shown}")
    return atomic_write_text(path, text)


def nothing_found(row: Mapping[str, object]) -> bool:
    """The merge rule's test: start frame 1 and detection -1."""
    return int(row[cols.START_FRAME]) == 1 and int(row[cols.DETECTION]) == -1  # type: ignore[call-overload]


def merge_row(
    primary: Mapping[str, object] | None, fallback: Mapping[str, object] | None
) -> Mapping[str, object] | None:
    """The spec's merge for one video: the fallback's whole row where the
    primary found nothing (start frame 1 and detection -1) and the fallback
    did. A missing row (None) gives way to the other."""
    if primary is None or fallback is None:
        return primary if fallback is None else fallback
    if nothing_found(primary) and not nothing_found(fallback):
        return fallback
    return primary


def merge(primary: pd.DataFrame, fallback: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """``merge_row`` over two submissions, rows matched by video id.

    Returns the merged submission (sorted by video) and the ids taken from
    the fallback. A video only in the fallback is not added.
    """
    fallback_rows = {int(r[cols.VIDEO]): r for r in typed(fallback).to_dict("records")}
    merged, taken = [], []
    for row in typed(primary).to_dict("records"):
        chosen = merge_row(row, fallback_rows.get(int(row[cols.VIDEO])))
        if chosen is not row:
            taken.append(int(row[cols.VIDEO]))
        merged.append(chosen)
    out = pd.DataFrame(merged, columns=list(cols.COLUMNS)).sort_values(cols.VIDEO).reset_index(drop=True)
    return out, taken


class MergeSubmission:
    """A recipe's ``merges``: ``merge_row`` of two earlier submissions, per video."""

    def names(self, recipe: Recipe) -> list[str]:
        return list(recipe.merges)

    def sources(self, recipe: Recipe, name: str) -> list[str]:
        spec = recipe.merges[name]
        return [spec.primary, spec.fallback]

    def row(self, run: Run, name: str, video: int) -> dict[str, Any] | None:
        spec = run.recipe.merges[name]
        merged = merge_row(run.row(spec.primary, video), run.row(spec.fallback, video))
        return dict(merged) if merged is not None else None

    def path(self, run: Run, name: str) -> Path:
        return run.ws.merge_csv(name)


MERGED = MergeSubmission()
