"""CSV files that go out (the studio's votes export) and come in (``coool validate``).

- A submission file named like a spreadsheet formula cannot put a formula into the
  votes CSV (the one CSV the studio makes for a spreadsheet); the files it serves as
  they are (a run's submissions, with their -1 detections) stay byte for byte.
- ``coool validate`` reports a file cut inside a quoted field, and a row with a
  cell too many or too few by its cell count, never as shifted columns or "valid".
"""

from __future__ import annotations

import csv
import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from reliability_support import COOOL
from studio_support import FINAL, build_results, csrf_from

from coool import schema as cols
from coool.studio import create_app
from coool.submission import submission_text
from coool.synthetic import load_truth

BASE = "http://127.0.0.1"
EVIL = '=HYPERLINK("http:evil",1)x.csv'
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _sids(c: TestClient) -> dict[str, str]:
    page = c.get("/ab").text
    return {html.unescape(label): sid for sid, label in re.findall(r'<option value="([0-9a-f]+)"[^>]*>([^<]+)</option>', page)}


@pytest.mark.parametrize("name", [EVIL, "+1x.csv", "-2x.csv", "@SUM(A1)x.csv"])
def test_votes_csv_carries_no_spreadsheet_formula(clips4: Path, tmp_path: Path, name: str) -> None:
    dirs = build_results(clips4, tmp_path / "results")
    shutil.copy(dirs.results / FINAL, dirs.results / name)
    c = TestClient(create_app(dirs.results), base_url=BASE)
    ids = _sids(c)
    assert name in ids, f"the studio did not list {name!r}: {sorted(ids)}"
    token = csrf_from(c.get("/ab").text)
    r = c.post("/ab/start", data={"x": ids[FINAL], "y": ids[name], "csrf_token": token}, follow_redirects=False)
    session = int(r.headers["location"].split("/")[2])
    for video, choice in ((0, "A"), (1, "B"), (2, "tie")):
        token = csrf_from(c.get(f"/ab/{session}/video/{video}").text)
        vote = c.post(f"/ab/{session}/video/{video}/vote", data={"choice": choice, "csrf_token": token},
                      headers={"accept": "application/json"})
        assert vote.status_code == 200, vote.text

    rows = list(csv.reader(io.StringIO(c.get(f"/ab/{session}/votes.csv").text)))
    cells = [cell for row in rows for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_START)], rows
    # The name is still there, readable, with the apostrophe a spreadsheet shows as text.
    assert "'" + name in cells
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]


def test_files_served_as_they_are_keep_their_negative_numbers(clips4: Path, tmp_path: Path) -> None:
    """The run's own CSVs are data for the challenge and coool, not for a spreadsheet: untouched."""
    dirs = build_results(clips4, tmp_path / "results")
    rows = [{**t.row(), cols.DETECTION: -1, cols.START_FRAME: 1} for t in load_truth(clips4)]
    (dirs.results / "nothing.csv").write_text(submission_text(rows), encoding="utf-8")
    c = TestClient(create_app(dirs.results), base_url=BASE)
    served = c.get("/files/nothing.csv")
    assert served.status_code == 200
    assert served.content == (dirs.results / "nothing.csv").read_bytes()
    assert ",-1," in served.text


# -- coool validate --------------------------------------------------------------------------


def _submission(clips4: Path) -> str:
    return submission_text([t.row() for t in load_truth(clips4)])


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COOOL, "validate", str(path)], capture_output=True, text=True, timeout=120)


def test_validate_accepts_the_whole_file(clips4: Path, tmp_path: Path) -> None:
    path = tmp_path / "whole.csv"
    path.write_text(_submission(clips4), encoding="utf-8")
    done = _validate(path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_validate_reports_a_file_cut_inside_a_quoted_field(clips4: Path, tmp_path: Path) -> None:
    text = _submission(clips4)
    lines = text.splitlines(keepends=True)
    # Cut inside the third data row's last text field (a quoted field), as a copy cut short would be.
    third = lines[3]
    cut = "".join(lines[:3]) + third[: third.rindex(',"') + 2] + "The ego-car"
    path = tmp_path / "cut.csv"
    path.write_text(cut, encoding="utf-8")
    done = _validate(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "valid (" not in done.stdout
    assert "row 3: a quoted field" in done.stderr and "never closed" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("row", [1, 3])
def test_validate_reports_a_row_with_an_extra_cell_by_its_cell_count(clips4: Path, tmp_path: Path, row: int) -> None:
    lines = _submission(clips4).splitlines(keepends=True)
    lines[row] = lines[row].rstrip("\n") + ",7\n"
    path = tmp_path / "extra.csv"
    path.write_text("".join(lines), encoding="utf-8")
    done = _validate(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"row {row} has 13 cells, expected 12" in done.stderr
    # Not reported as errors of shifted columns.
    assert "'Incident window start frame'" not in done.stderr and "'video'" not in done.stderr


def test_validate_reports_a_row_with_a_missing_cell_by_its_cell_count(clips4: Path, tmp_path: Path) -> None:
    lines = _submission(clips4).splitlines(keepends=True)
    lines[2] = lines[2].rsplit(",", 1)[0] + "\n"
    path = tmp_path / "short.csv"
    path.write_text("".join(lines), encoding="utf-8")
    done = _validate(path)
    assert done.returncode == 1
    assert "row 2 has 11 cells, expected 12" in done.stderr
