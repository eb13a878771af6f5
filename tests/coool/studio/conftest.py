"""Fixtures for the studio tests: a synthetic data set and a results dir with two submissions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from coool import schema as S
from coool.files import atomic_write_json, atomic_write_text
from coool.submission import write_submission
from coool.synthetic import load_truth, make_dataset

N_VIDEOS = 3
FINAL = "submission.csv"  # results-relative keys of the two submissions
DESCRIBED = "describe/v4/submission.csv"


@dataclass(frozen=True)
class StudioDirs:
    data: Path
    videos: Path
    results: Path

    @property
    def truth(self) -> Path:
        return self.data / "truth.csv"


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic clips (MPEG-4 Part 2 like the originals), shared read-only."""
    root = tmp_path_factory.mktemp("studio-data")
    make_dataset(root, n=N_VIDEOS, frames=90)
    return root


def caption(side: str, video: int) -> str:
    return f"Submission {side} sees a quiet road before incident {video}."


def reason(side: str, video: int) -> str:
    return f"Submission {side} says the ego-car hits a red barrier in video {video}."


def build_results(data: Path, results: Path) -> StudioDirs:
    """A results dir as the pipeline lays it out: run.json, two submissions, some intermediates."""
    rows = [t.row() for t in load_truth(data)]
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / "run.json", {"videos_dir": str(data / "videos"), "recipe": "test"})
    for side, rel, shift in (("one", FINAL, 0), ("two", DESCRIBED, 6)):
        subs = []
        for row in rows:
            video = int(row[S.VIDEO])
            subs.append({**row, S.START_FRAME: int(row[S.START_FRAME]) + shift, S.CAPTION: caption(side, video), S.REASON: reason(side, video)})
        write_submission(subs, results / rel)
    for video in range(N_VIDEOS):
        atomic_write_json(results / "describe" / "v4" / f"{video}.json", {
            "video": video, "config": "v4", "window": [10, 16, 22, 28, 34, 40], "frame": 22,
            "passes": {"texts": {"samples": [{"content": "x" * 500, "parsed": True}]}},
        })  # fmt: skip
    atomic_write_json(results / "detect" / "0.json", {"video": 0, "frame": 31, "votes": [31, 31, 41, -1], "samples": []})
    atomic_write_text(results / "captions" / "0.csv", "frame,image,Scene_Description\n1,frames/0/stacked/000001.png,A grey road.\n")
    return StudioDirs(data=data, videos=data / "videos", results=results)


@pytest.fixture
def dirs(dataset: Path, tmp_path: Path) -> StudioDirs:
    return build_results(dataset, tmp_path / "results")


def csrf_from(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert match, "page has no CSRF meta tag"
    return match.group(1)


def read_json(path: Path) -> object:
    return json.loads(path.read_text())
