"""What a new user meets in the studio: why CIDEr-D is 0.0, the truth on the
timeline, and one line (no traceback) for a results folder that isn't there."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from studio_support import FINAL, StudioDirs

from coool import schema as cols
from coool.studio import create_app
from coool.studio.scoring import CIDER_ZERO_WHY

REPO = Path(__file__).resolve().parents[3]
BASE = "http://127.0.0.1"


def score_html(c: TestClient) -> str:
    import time

    for _ in range(120):  # computed in the background
        html = c.get("/score").text
        if 'id="computing"' not in html:
            return html
        time.sleep(0.5)
    raise AssertionError("scores never finished")


def cider_cells(html: str) -> list[str]:
    """The CIDEr-D cell of every row of the caption-metrics table."""
    table = html[html.index("Caption metrics against the truth texts") :]
    table = table[: table.index("</table>")]
    header = re.findall(r'<th class="num">([^<]+)</th>', table)
    at = header.index("CIDEr-D")
    return [re.findall(r"<td[^>]*>.*?</td>", row)[at] for row in re.findall(r"<tr><th class=\"mono\">.*?</tr>", table)]


def distinct_truth(dirs: StudioDirs, tmp_path: Path) -> Path:
    """The synthetic truth with a different text per video, and FINAL's texts made equal to it."""
    with open(dirs.truth, newline="") as f:
        rows = list(csv.DictReader(f))
    places = ["a wet bridge", "a narrow alley at night", "a busy roundabout"]
    for row, place in zip(rows, places, strict=True):
        row[cols.CAPTION] = f"The ego-car drives over {place} behind a slow truck."
        row[cols.REASON] = f"A cyclist swerves out on {place} and the ego-car brakes hard."
    truth = tmp_path / "distinct-truth.csv"
    final = dirs.results / FINAL
    for path, data in ((truth, rows), (final, rows)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
            writer.writeheader()
            writer.writerows(data)
    return truth


def test_a_zero_cider_d_says_why_next_to_the_number(dirs: StudioDirs) -> None:
    # The synthetic truth repeats one caption and one reason for every video: IDF 0 for every n-gram.
    html = score_html(TestClient(create_app(dirs.results), base_url=BASE))
    cells = cider_cells(html)
    assert cells and all("cider-zero" in cell and ">0.0 " in cell for cell in cells), cells
    assert "n-grams in every reference weigh 0" in cells[0]
    assert CIDER_ZERO_WHY.split(":")[0] in html and "IDF" in html


def test_a_nonzero_cider_d_has_no_note(dirs: StudioDirs, tmp_path: Path) -> None:
    truth = distinct_truth(dirs, tmp_path)
    html = score_html(TestClient(create_app(dirs.results, truth=truth), base_url=BASE))
    cells = cider_cells(html)
    final_cells = [c for c in cells if "cider-zero" not in c]
    assert final_cells, cells  # FINAL now matches the truth word for word: CIDEr-D well above 0
    assert all(float(re.sub(r"<[^>]+>", "", c)) > 1 for c in final_cells)
    assert len(final_cells) == 2  # its caption and reason rows; the other submission still scores 0


def test_the_timeline_draws_the_truths_start_frame(dirs: StudioDirs) -> None:
    with open(dirs.truth, newline="") as f:
        truth_start = {int(r[cols.VIDEO]): int(r[cols.START_FRAME]) for r in csv.DictReader(f)}
    c = TestClient(create_app(dirs.results), base_url=BASE)  # truth.csv found at the data root
    for video, start in truth_start.items():
        html = c.get(f"/video/{video}").text
        lane = re.search(r'<svg class="lane truth".*?</svg>', html, re.S)
        assert lane, f"video {video}: no truth lane"
        assert f'aria-label="truth: start frame {start}"' in lane.group(0)
        assert f'class="start seek" data-frame="{start}"' in lane.group(0)
        assert "the truth&#39;s start frame" in html or "the truth's start frame" in html


def test_no_truth_lane_without_a_truth_file(dirs: StudioDirs) -> None:
    (dirs.results / "run.json").unlink()  # no data root, so no truth.csv
    page = TestClient(create_app(dirs.results), base_url=BASE).get("/video/0")
    assert page.status_code == 200 and 'class="lane submission"' in page.text
    assert 'class="lane truth"' not in page.text


def studio_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "coool.cli", "studio", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_studio_on_a_missing_folder_prints_one_line_and_exits_2(tmp_path: Path, dirs: StudioDirs) -> None:
    missing = tmp_path / "nonexistent"
    for args, named in (
        ([str(missing)], str(missing)),
        ([str(dirs.results), "--truth", str(tmp_path / "nope.csv")], "nope.csv"),
        ([str(dirs.results), "--videos", str(missing)], str(missing)),
    ):
        result = studio_cli(*args, "--port", "1")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], result.stderr
