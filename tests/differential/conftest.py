"""Fixtures of the differential test (helpers: tests/support/differential_world.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from differential_world import CLIPS, FRAMES, GLM, GPT_OSS, QWEN_NEXT, QWEN_VL, STAGE_FOLDERS, World, lay_out_original_frames

from coool.sim.testing import running_sim_server
from coool.synthetic import make_dataset


@pytest.fixture(scope="session")
def world(original_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("differential")
    data = root / "data"
    truths = make_dataset(data, CLIPS, frames=FRAMES, seed=3)
    original = root / "original"
    for folder in STAGE_FOLDERS:
        shutil.copytree(original_dir / folder, original / folder, ignore=shutil.ignore_patterns("results", "logs", "output"))
    lay_out_original_frames(original, data / "videos", data / "heatmaps", [t.video_id for t in truths])
    models = [GLM, GPT_OSS, QWEN_VL, QWEN_NEXT]
    # file:// images (the original's) are read under root; the log keeps every request of a stage.
    with running_sim_server(model=models, allowed_local_media_path=root, request_log=5000, max_n=16) as sim:
        yield World(root, original, root / "coool", data / "videos", data / "heatmaps", truths, sim)
