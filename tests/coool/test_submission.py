"""Submission CSVs: reading, validation (real and broken files), writing, merging."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import coool.files
from coool import schema as cols
from coool.submission import (
    Problem,
    SubmissionError,
    is_english,
    load_submission,
    merge,
    merge_row,
    nothing_found,
    read_submission,
    submission_text,
    validate,
    write_submission,
)

# Label warnings of the two reference files that have labels outside the 19:
# data row -> label (hand-checked in the CSVs; the row is the video id + 1).
EXP001_002_ODD_LABELS = {209: "vehicle hits barrier", 249: "vehicle hits a pedestrian", 492: "car hits pedestrian"}
V3_PROMPT2_ODD_LABELS = {41: "fog"} | {
    row: "debris on the road" for row in (154, 206, 221, 292, 311, 320, 339, 358, 416, 483, 501, 555, 621)
} | {114: "debris on road"}


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


# -- the real reference submissions ------------------------------------------------------


def test_all_eight_reference_submissions_are_valid(ref) -> None:
    for path in ref.all:
        frame = read_submission(path)
        assert list(frame.columns) == list(cols.COLUMNS), path.name
        assert len(frame) == 661, path.name
        assert errors(validate(frame, expected_videos=range(661))) == [], path.name


@pytest.mark.parametrize(
    ("name", "odd"),
    [("exp001_002", EXP001_002_ODD_LABELS), ("v3_prompt2", V3_PROMPT2_ODD_LABELS)],
)
def test_labels_outside_the_19_are_warnings_unless_strict(ref, name: str, odd: dict[int, str]) -> None:
    frame = read_submission(getattr(ref, name))
    problems = validate(frame)
    assert {p.row: p.level for p in problems} == {row: "warning" for row in odd}
    assert all(p.column == cols.LABEL for p in problems)
    for p in problems:
        assert repr(odd[p.row]) in p.message
    strict = validate(frame, strict=True)
    assert [(p.row, p.level) for p in strict] == [(row, "error") for row in sorted(odd)]


def test_other_reference_submissions_have_no_warnings(ref) -> None:
    for path in (ref.exp004_005, ref.v5, ref.v3, ref.v4, ref.base, ref.final):
        assert validate(read_submission(path), strict=True) == [], path.name


def test_load_submission_types_and_sorts(ref, tmp_path: Path) -> None:
    lines = ref.base.read_text(encoding="utf-8").splitlines()
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], lines[3], lines[1], lines[2]]) + "\n", encoding="utf-8")
    frame = load_submission(shuffled)
    assert frame[cols.VIDEO].tolist() == [0, 1, 2]
    for column in (cols.VIDEO, cols.START_FRAME, cols.DETECTION, cols.EGO, *cols.COUNT_COLUMNS):
        assert pd.api.types.is_integer_dtype(frame[column]), column
    # Row of video 1 of the base file, as hand-read from the CSV.
    row = frame.iloc[1].to_dict()
    assert row[cols.START_FRAME] == 1 and row[cols.DETECTION] == 0 and row[cols.N_PEDESTRIANS] == 2
    assert row[cols.LABEL] == "pedestrian on the road"


def test_load_submission_raises_with_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(submission_text([cols.fallback_row(0)]).replace("\n0,1,-1", "\n0,0,-1"), encoding="utf-8")
    with pytest.raises(SubmissionError, match=r"row 1, 'Incident window start frame'"):
        load_submission(path)


@pytest.mark.parametrize(
    "content",
    [None, b"", b"\xff\xfe\x00garbage\x81\x82", b'video,"unclosed\n1,2\n'],
    ids=["missing", "empty", "not-utf8", "unclosed-quote"],
)
def test_unreadable_files_raise_submission_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SubmissionError, match="x.csv"):
        read_submission(path)


# -- broken copies: every rule, reported with its row ----------------------------------------


@pytest.fixture
def rows(ref) -> list[dict[str, str]]:
    """The first four data rows of the base submission, as strings (valid)."""
    with ref.base.open(newline="", encoding="utf-8") as fh:
        return [row for _, row in zip(range(4), csv.DictReader(fh))]


def write_rows(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    header = header or list(cols.COLUMNS)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row[c] for c in header])
    return path


def test_the_unbroken_copy_is_valid(rows, tmp_path: Path) -> None:
    frame = read_submission(write_rows(tmp_path / "ok.csv", rows))
    assert validate(frame, expected_videos=[0, 1, 2, 3], strict=True) == []


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (3, cols.VIDEO, "0", "video 0 appears again (first at row 1)"),
        (2, cols.VIDEO, "3a", "non-negative integer, got '3a'"),
        (2, cols.VIDEO, "1.0", "non-negative integer, got '1.0'"),
        (2, cols.VIDEO, "-1", "non-negative integer, got '-1'"),
        (2, cols.VIDEO, "--5", "non-negative integer, got '--5'"),
        (2, cols.VIDEO, "²", "non-negative integer"),
        (2, cols.VIDEO, "٣", "non-negative integer"),
        (4, cols.START_FRAME, "0", "integer >= 1 (frames are 1-based), got '0'"),
        (4, cols.START_FRAME, "12.5", "integer >= 1"),
        (1, cols.DETECTION, "2", "one of 1, 0, -1, got '2'"),
        (1, cols.DETECTION, "", "one of 1, 0, -1, got ''"),
        (2, cols.SEVERITY, "7. Everything exploded", "not an allowed severity"),
        (2, cols.SEVERITY, "0. no crash", "not an allowed severity"),
        (3, cols.EGO, "2", "must be 0 or 1, got '2'"),
        (1, cols.N_BICYCLISTS, "-1", "non-negative integer, got '-1'"),
        (2, cols.N_ANIMALS, "-3", "non-negative integer"),
        (3, cols.N_PEDESTRIANS, "two", "non-negative integer, got 'two'"),
        (4, cols.N_VEHICLES, "1.5", "non-negative integer"),
        (1, cols.CAPTION, "", "empty text"),
        (2, cols.REASON, "   ", "empty text"),
        (3, cols.CAPTION, "自车在车道内行驶，前方道路上出现红色障碍物。", "non-English characters"),
        (4, cols.REASON, "Автомобиль резко тормозит перед пешеходом.", "non-English characters"),
    ],
)
def test_each_broken_rule_is_reported_with_its_row(
    rows, tmp_path: Path, row: int, column: str, value: str, message: str
) -> None:
    rows[row - 1][column] = value
    problems = validate(read_submission(write_rows(tmp_path / "broken.csv", rows)))
    assert len(problems) == 1, [str(p) for p in problems]
    (problem,) = problems
    assert (problem.row, problem.column, problem.level) == (row, column, "error")
    assert message in problem.message
    assert str(problem).startswith(f"error: row {row}, {column!r}: ")


def test_a_label_outside_the_19_is_a_warning(rows, tmp_path: Path) -> None:
    rows[1][cols.LABEL] = "debris on the road"
    frame = read_submission(write_rows(tmp_path / "label.csv", rows))
    assert [(p.row, p.column, p.level) for p in validate(frame)] == [(2, cols.LABEL, "warning")]
    assert [(p.row, p.level) for p in validate(frame, strict=True)] == [(2, "error")]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([c if c != cols.LABEL else "label" for c in cols.COLUMNS], "missing ['Label']; unexpected ['label']"),
        ([c for c in cols.COLUMNS if c != cols.EGO], "missing ['Ego-car involved']"),
        ([*cols.COLUMNS, "Notes"], "unexpected ['Notes']"),
        ([*cols.COLUMNS[:10], cols.REASON, cols.CAPTION], "columns out of order"),
        ([cols.START_FRAME, cols.VIDEO, *cols.COLUMNS[2:]], "columns out of order"),
    ],
    ids=["renamed", "missing", "extra", "texts-swapped", "first-two-swapped"],
)
def test_a_wrong_header_is_one_file_level_error(rows, tmp_path: Path, header: list[str], message: str) -> None:
    for row in rows:
        row["label"] = row[cols.LABEL]
        row["Notes"] = "x"
    problems = validate(read_submission(write_rows(tmp_path / "header.csv", rows, header)))
    assert len(problems) == 1
    assert (problems[0].row, problems[0].level) == (None, "error")
    assert message in problems[0].message
    assert str(problems[0]).startswith("error: file: header must be exactly")


def test_every_problem_of_a_file_is_reported(rows, tmp_path: Path) -> None:
    rows[0][cols.DETECTION] = "5"
    rows[1][cols.EGO] = "-1"
    rows[1][cols.CAPTION] = ""
    rows[3][cols.VIDEO] = rows[2][cols.VIDEO]
    problems = validate(read_submission(write_rows(tmp_path / "many.csv", rows)))
    assert {(p.row, p.column) for p in problems} == {(1, cols.DETECTION), (2, cols.EGO), (2, cols.CAPTION), (4, cols.VIDEO)}


def test_expected_videos_missing_and_extra(rows, tmp_path: Path) -> None:
    frame = read_submission(write_rows(tmp_path / "ids.csv", rows))
    problems = validate(frame, expected_videos=[0, 1, 2, 5, 6])
    assert [(p.row, p.column, p.message) for p in problems] == [
        (None, cols.VIDEO, "missing videos: 5, 6"),
        (None, cols.VIDEO, "videos not in the input: 3"),
    ]


def test_no_rows_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(",".join(cols.COLUMNS) + "\n", encoding="utf-8")
    assert [p.message for p in validate(read_submission(path))] == ["no rows"]


def test_is_english() -> None:
    assert is_english("Ego-car brakes at the café’s crosswalk — 2 pedestrians, naïve “quotes”.")
    assert not is_english("Ego-car 在车道内行驶")
    assert not is_english("Пешеход")
    assert is_english("")


# -- writing -----------------------------------------------------------------------------------


def row(video: int, **changes: object) -> dict[str, object]:
    out = cols.fallback_row(video)
    out.update(changes)
    return out


def test_submission_text_quotes_every_text_field_and_sorts() -> None:
    text = submission_text(
        [
            row(12, **{cols.REASON: 'A car says "stop", then turns left.', cols.N_VEHICLES: 1}),
            row(3),
        ]
    )
    assert text.splitlines() == [
        ",".join(cols.COLUMNS),
        '3,1,-1,"0. No Crash",0,"unknown",0,0,0,0,'
        '"Ego-car drives along the road with no visible hazard ahead.",'
        '"unknown hazard: no incident is visible in the video."',
        '12,1,-1,"0. No Crash",0,"unknown",0,0,0,1,'
        '"Ego-car drives along the road with no visible hazard ahead.",'
        '"A car says ""stop"", then turns left."',
    ]


def test_write_submission_round_trips(tmp_path: Path) -> None:
    rows_in = [
        row(2, **{cols.START_FRAME: 55, cols.DETECTION: 1, cols.SEVERITY: cols.SEVERITIES[3], cols.EGO: 1,
                  cols.LABEL: "ego-car hits a pedestrian", cols.N_PEDESTRIANS: 1,
                  cols.CAPTION: "Ego-car, slow, approaches a crosswalk.", cols.REASON: "A pedestrian, \"small\", steps out."}),
        row(0),
        row(1, **{cols.N_ANIMALS: 1_000_000_000}),
    ]
    path = write_submission(rows_in, tmp_path / "out" / "submission.csv", expected_videos=[0, 1, 2])
    assert path == tmp_path / "out" / "submission.csv"
    back = load_submission(path, strict=True)
    assert back.to_dict("records") == sorted(rows_in, key=lambda r: r[cols.VIDEO])


def test_write_submission_accepts_a_dataframe(ref, tmp_path: Path) -> None:
    frame = load_submission(ref.v4)
    path = write_submission(frame, tmp_path / "v4.csv", expected_videos=range(661))
    assert load_submission(path).equals(frame)


@pytest.mark.parametrize(
    ("bad", "kwargs", "message"),
    [
        (row(1, **{cols.DETECTION: 3}), {}, "row 2, 'Incident Detection'"),
        (row(1, **{cols.CAPTION: "  "}), {}, "empty text"),
        (row(1, **{cols.REASON: "红色障碍物"}), {}, "non-English"),
        (row(1, **{cols.LABEL: "debris on the road"}), {}, "not one of the 19 labels"),
        (row(0), {}, "video 0 appears again"),
        (row(1), {"expected_videos": [0, 1, 2]}, "missing videos: 2"),
    ],
    ids=["detection", "empty-text", "chinese", "label-strict", "duplicate", "missing-video"],
)
def test_write_submission_refuses_invalid_rows_and_writes_nothing(
    tmp_path: Path, bad: dict[str, object], kwargs: dict, message: str
) -> None:
    fresh = tmp_path / "fresh.csv"
    with pytest.raises(SubmissionError, match="refusing to write an invalid submission") as info:
        write_submission([row(0), bad], fresh, **kwargs)
    assert message in str(info.value)
    assert not fresh.exists()
    existing = tmp_path / "existing.csv"
    existing.write_text("old content\n", encoding="utf-8")
    with pytest.raises(SubmissionError):
        write_submission([row(0), bad], existing, **kwargs)
    assert existing.read_text(encoding="utf-8") == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.csv"]


@pytest.mark.parametrize("value", [12.7, None, "abc", float("nan"), "1,2"], ids=str)
def test_a_non_integer_number_is_refused_not_truncated(tmp_path: Path, value: object) -> None:
    with pytest.raises(SubmissionError, match=r"row 1, 'Incident window start frame': must be an integer >= 1"):
        write_submission([row(0, **{cols.START_FRAME: value})], tmp_path / "s.csv")
    with pytest.raises(SubmissionError, match=r"row 2, 'video': video id must be a non-negative integer"):
        write_submission([row(0), row(1) | {cols.VIDEO: value}], tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("value", [np.int64(40), 40.0, np.float64(40.0), " 40", "40"], ids=repr)
def test_integral_values_of_any_type_are_written_as_integers(tmp_path: Path, value: object) -> None:
    path = write_submission([row(0, **{cols.START_FRAME: value, cols.N_VEHICLES: value})], tmp_path / "s.csv")
    assert path.read_text(encoding="utf-8").splitlines()[1].startswith("0,40,-1,")
    assert load_submission(path).loc[0, cols.N_VEHICLES] == 40


def test_write_submission_non_strict_allows_odd_labels(tmp_path: Path) -> None:
    path = write_submission([row(0, **{cols.LABEL: "fog"})], tmp_path / "s.csv", strict=False)
    assert load_submission(path)[cols.LABEL].tolist() == ["fog"]


def test_write_submission_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_submission([row(0)], tmp_path / "s.csv")
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk went away during the rename")

    monkeypatch.setattr(coool.files.os, "replace", crash)
    with pytest.raises(OSError, match="disk went away"):
        write_submission([row(0), row(1)], path)
    assert path.read_bytes() == before  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # and no temp file left behind
    monkeypatch.undo()
    write_submission([row(0), row(1)], path)
    assert load_submission(path)[cols.VIDEO].tolist() == [0, 1]


# -- merging -------------------------------------------------------------------------------------


FOUND = row(0, **{cols.START_FRAME: 40, cols.DETECTION: 1})
NOTHING = row(0)
FRAME_ONLY = row(0, **{cols.START_FRAME: 40})  # start frame says something, detection -1
DETECTION_ONLY = row(0, **{cols.DETECTION: 0})  # start frame 1, detection says hazard


@pytest.mark.parametrize(
    ("primary", "fallback", "expected"),
    [
        (NOTHING, FOUND, "fallback"),
        (NOTHING, FRAME_ONLY, "fallback"),
        (NOTHING, DETECTION_ONLY, "fallback"),
        (NOTHING, NOTHING, "primary"),
        (FOUND, NOTHING, "primary"),
        (FOUND, FRAME_ONLY, "primary"),
        (FRAME_ONLY, FOUND, "primary"),
        (DETECTION_ONLY, FOUND, "primary"),
        (None, FOUND, "fallback"),
        (FOUND, None, "primary"),
    ],
)
def test_merge_row(primary, fallback, expected: str) -> None:
    chosen = merge_row(primary, fallback)
    assert chosen is (primary if expected == "primary" else fallback)


def test_nothing_found() -> None:
    assert nothing_found(NOTHING) and nothing_found({cols.START_FRAME: "1", cols.DETECTION: "-1"})
    assert not nothing_found(FRAME_ONLY) and not nothing_found(DETECTION_ONLY)


def test_merge_v4_with_exp004_005_reproduces_ens2_but_the_count_pass_video(ref) -> None:
    v4, fallback, base = load_submission(ref.v4), load_submission(ref.exp004_005), load_submission(ref.base)
    merged, taken = merge(v4, fallback)
    assert merged[cols.VIDEO].tolist() == list(range(661))
    differing = {}
    for got, want in zip(merged.to_dict("records"), base.to_dict("records")):
        columns = {c for c in cols.COLUMNS if got[c] != want[c]}
        if columns:
            differing[got[cols.VIDEO]] = columns
    # Only video 313 (100 geese) differs: the count pass re-described it and clipped the count to 20.
    assert differing == {313: {cols.N_ANIMALS, cols.CAPTION, cols.REASON}}
    assert merged.loc[313, cols.N_ANIMALS] == 100 and base.loc[313, cols.N_ANIMALS] == 20
    # The ids taken from the fallback are exactly those where v4 found nothing and the fallback did.
    v4_rows, fb_rows = v4.to_dict("records"), fallback.to_dict("records")
    assert taken == [v for v in range(661) if nothing_found(v4_rows[v]) and not nothing_found(fb_rows[v])]
    assert len(taken) == 82
    for v in taken:
        assert merged.iloc[v].to_dict() == fb_rows[v]


def test_merge_matches_rows_by_id_whatever_their_order(ref) -> None:
    v4, fallback = load_submission(ref.v4), load_submission(ref.exp004_005)
    expected, taken = merge(v4, fallback)
    shuffled_fallback = fallback.sample(frac=1, random_state=7).reset_index(drop=True)
    assert shuffled_fallback[cols.VIDEO].tolist() != list(range(661))
    shuffled_primary = v4.sample(frac=1, random_state=3).reset_index(drop=True)
    for primary, fb in ((v4, shuffled_fallback), (shuffled_primary, shuffled_fallback), (shuffled_primary, fallback)):
        merged, taken_again = merge(primary, fb)
        assert merged.equals(expected)
        assert sorted(taken_again) == taken


def test_merge_with_rows_missing_on_either_side() -> None:
    primary = pd.DataFrame([row(0), row(1), FOUND | {cols.VIDEO: 2}], columns=list(cols.COLUMNS))
    fallback = pd.DataFrame([FOUND | {cols.VIDEO: 1}, FOUND | {cols.VIDEO: 9}], columns=list(cols.COLUMNS))
    merged, taken = merge(primary, fallback)
    assert taken == [1]
    assert merged[cols.VIDEO].tolist() == [0, 1, 2]  # video 9, only in the fallback, is not added
    assert merged.loc[0].to_dict() == row(0)
    assert merged.loc[1, cols.START_FRAME] == 40


def test_the_schema_constants_are_the_spec_ones() -> None:
    assert len(cols.COLUMNS) == 12 and len(set(cols.COLUMNS)) == 12
    assert ",".join(cols.COLUMNS) == (
        "video,Incident window start frame,Incident Detection,Crash Severity,Ego-car involved,Label,"
        "Number of Bicyclists/Scooters,Number of animals involved,Number of pedestrians involved,"
        "Number of vehicles involved (excluding ego-car),Caption Before Incident,Reason of Incident"
    )
    assert len(cols.LABELS) == 19 and len(set(cols.LABELS)) == 19 and cols.LABELS[-1] == "unknown"
    assert [s.split(".")[0] for s in cols.SEVERITIES] == ["0", "1", "2", "3", "4", "5", "6"]
    assert set(cols.HAZARD_LABELS) <= set(cols.LABELS)
    assert cols.DETECTION_VALUES == (1, 0, -1) and cols.EGO_VALUES == (0, 1)
    assert cols.ANSWER_FIELDS == cols.COLUMNS[1:]


def test_the_fallback_row_is_valid_and_says_nothing_found() -> None:
    fallback = cols.fallback_row(42)
    assert fallback[cols.VIDEO] == 42 and nothing_found(fallback)
    frame = pd.read_csv(io.StringIO(submission_text([fallback])), dtype=str, keep_default_na=False)
    assert validate(frame, expected_videos=[42], strict=True) == []
