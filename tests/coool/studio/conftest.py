"""Fixtures for the studio tests: a synthetic data set and a results dir with two submissions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tests import their helpers as a plain module (pytest runs with --import-mode=importlib).
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from coool.synthetic import make_dataset  # noqa: E402

from studio_support import N_VIDEOS, StudioDirs, build_results  # noqa: E402


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic clips (MPEG-4 Part 2 like the originals), shared read-only."""
    root = tmp_path_factory.mktemp("studio-data")
    make_dataset(root, n=N_VIDEOS, frames=90)
    return root


@pytest.fixture
def dirs(dataset: Path, tmp_path: Path) -> StudioDirs:
    return build_results(dataset, tmp_path / "results")
