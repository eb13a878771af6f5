"""Fixtures for the studio tests: a synthetic data set and a results dir with two submissions."""

from __future__ import annotations

from pathlib import Path

import pytest
from studio_support import N_VIDEOS, StudioDirs, build_results

from coool.synthetic import make_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic clips (MPEG-4 Part 2 like the originals), shared read-only."""
    root = tmp_path_factory.mktemp("studio-data")
    make_dataset(root, n=N_VIDEOS, frames=90)
    return root


@pytest.fixture
def dirs(dataset: Path, tmp_path: Path) -> StudioDirs:
    return build_results(dataset, tmp_path / "results")
