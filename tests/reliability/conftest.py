"""Fixtures of the reliability tests: a clean COOOL_* environment, small synthetic datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from reliability_support import write_small_recipe

from coool.synthetic import make_dataset


@pytest.fixture(autouse=True)
def _no_coool_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test alone, never from the caller's COOOL_* variables."""
    for name in list(os.environ):
        if name.startswith("COOOL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def small_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_recipe(tmp_path_factory.mktemp("recipe"))


@pytest.fixture(scope="session")
def clips4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic clips (60 frames, 160x90): a data root with videos/ and heatmaps/. Read-only."""
    root = tmp_path_factory.mktemp("clips4")
    make_dataset(root, 4, frames=60, width=160, height=90, seed=1)
    return root


@pytest.fixture
def data_copy(clips4: Path, tmp_path: Path) -> Path:
    """A writable copy of the four clips, to add bad files to."""
    root = tmp_path / "data"
    shutil.copytree(clips4, root)
    return root
