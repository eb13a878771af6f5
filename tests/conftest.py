"""Fixtures shared by every test package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from coool.synthetic import ClipTruth, make_dataset


@dataclass(frozen=True)
class SyntheticData:
    """A make_dataset folder: treat it as read-only (copy files to change them)."""

    root: Path
    videos: Path
    heatmaps: Path
    truths: list[ClipTruth]

    def video(self, video_id: int) -> Path:
        return self.videos / f"{video_id}.mp4"

    def heatmap(self, video_id: int) -> Path:
        return self.heatmaps / f"{video_id}.mp4"


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    """Three synthetic clips (120 frames, 320x180), each with a red obstacle event."""
    root = tmp_path_factory.mktemp("synthetic")
    truths = make_dataset(root, 3, frames=120, seed=0)
    return SyntheticData(root, root / "videos", root / "heatmaps", truths)
