"""The differential test's world (tests/differential): synthetic clips, the original's folders, one simulated server.

The ORIGINAL scripts (a copy of the reference checkout's stage folders, so their
relative paths and result folders work without touching the checkout) and coool's
stages run against the same SIMULATED model server (a test double, no model
inside) on the same synthetic clips; the server's request log holds what each sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from coool.decode import read_frames
from coool.frames import stack, write_images
from coool.sim.testing import SimHandle
from coool.synthetic import ClipTruth

# The served model names the original's scripts send (their defaults and run_*.sh):
# coool's roles are given the same names, so the bodies compare whole.
GLM = "/data/models/zai-org/GLM-4.5V"
GPT_OSS = "/data/models/openai/gpt-oss-120b"
QWEN_VL = "/data/models/Qwen/Qwen3-VL-235B-A22B-Thinking"
QWEN_NEXT = "/data/models/Qwen/Qwen3-Next-80B-A3B-Instruct"

# The original's stage folders the test copies (scripts and sources only).
STAGE_FOLDERS = ("002_frame_captioning", "003_frame_detection", "004_description", "005_ensemble")
FRAMES = 90  # per clip: every window of the configurations fits, v3-prompt2's step must shrink
CLIPS = 2


@dataclass(frozen=True)
class World:
    root: Path
    original: Path  # the copied stage folders, plus 001_video2frames laid out as its README says
    coool: Path  # coool's workspace for the same clips
    videos: Path
    heatmaps: Path
    truths: list[ClipTruth]
    sim: SimHandle

    @property
    def ids(self) -> list[int]:
        return [t.video_id for t in self.truths]

    def env(self) -> dict[str, str]:
        """The environment of an original script: this venv's python first on PATH, and the
        simulated server as the HTTP proxy (the scripts write localhost:8000 / :22002 into their code)."""
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["HTTP_PROXY"] = env["http_proxy"] = self.sim.base_url
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPATH", None)  # the original imports nothing of coool's
        return env

    def run_original(self, folder: str, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one of the original's commands from its stage folder; fails the test with its output."""
        done = subprocess.run(
            argv, cwd=self.original / folder, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            pytest.fail(f"original {' '.join(argv)} in {folder} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done


def lay_out_original_frames(world_root: Path, videos: Path, heatmaps: Path, ids: list[int]) -> Path:
    """001_video2frames as the original's stage 1 leaves it (its README): every frame of each video
    as ``gdrive_png/videos/<id>/<frame:06d>.png`` and of the stacked video (heatmap on top) as
    ``mp4_vstack_png/<id>/<frame:06d>.png``. Made with coool's decoder and stacker, so each image is
    pixel-equal to the one coool's stage 1 makes for that frame (the original re-encodes a stacked
    MP4 first; its pixels would differ slightly, its frames not)."""
    stage1 = world_root / "001_video2frames"
    for vid in ids:
        numbers = range(1, FRAMES + 1)
        raw = dict(read_frames(videos / f"{vid}.mp4", numbers))
        heat = dict(read_frames(heatmaps / f"{vid}.mp4", numbers))
        write_images(((stage1 / "gdrive_png" / "videos" / str(vid) / f"{n:06d}.png", raw[n]) for n in numbers), "png")
        write_images(
            ((stage1 / "mp4_vstack_png" / str(vid) / f"{n:06d}.png", stack(heat[n], raw[n])) for n in numbers), "png"
        )
    return stage1
