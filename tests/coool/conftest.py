"""Fixtures shared by the tests of stages 2-5 and the tools around them.

- ``reference_dir`` / ``ref``: the eight real submissions of the method
  (``tests/data/reference_submissions``, kept in the repository);
- ``sim_server`` / ``sim``: one simulated model server for the session, its
  stats and faults reset for every test that asks for ``sim``;
- ``role``: RoleSettings pointing at a simulated server (no backoff);
- ``stage1``: the stage-1 frames of the synthetic clips, made once;
- ``sim_captions``: the stage-2 tables of the synthetic clips, captioned
  once by the simulated server;
- ``scripted_client``: a stand-in for ChatClient whose answers are scripted
  and whose requests are recorded;
- ``messy_inputs``: input folders with good videos beside every kind of bad input.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import pytest_asyncio
from references import REFERENCE_DIR

from coool.captions import caption_video
from coool.frames import FrameManifest, extract_caption_frames
from coool.llm import ChatClient, Sample, json_schema_format
from coool.prompts import load_prompt
from coool.settings import RoleSettings
from coool.sim.testing import SimHandle, running_sim_server

SIM_MODEL = "sim-model"


# -- the real reference submissions ------------------------------------------------


@dataclass(frozen=True)
class References:
    """The eight real submissions, by the names PIPELINE.md gives them."""

    root: Path

    @property
    def exp001_002(self) -> Path:
        return self.root / "exp001_and_exp002_n_sample4_step_merged_0.10830.csv"

    @property
    def exp004_005(self) -> Path:
        return self.root / "exp004_and_exp005_n_sample4_0.11560.csv"

    @property
    def v5(self) -> Path:
        return self.root / "exp005_n_sample4_6_5_8_0.10910.csv"

    @property
    def v3(self) -> Path:
        return self.root / "exp005_n_sample4_6_5_10_0.11500.csv"

    @property
    def v4(self) -> Path:
        return self.root / "exp005_n_sample4_12_11_6_0.11540.csv"

    @property
    def v3_prompt2(self) -> Path:
        return self.root / "run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2_0.10630.csv"

    @property
    def base(self) -> Path:
        """ens2 after the count pass: the ensemble's base."""
        return self.root / "20250927_ens2_clip20_bk.csv"

    @property
    def final(self) -> Path:
        return self.root / "20250929_ens003_word30_submit_ensemble.csv"

    @property
    def ensemble_inputs(self) -> list[Path]:
        """The six ensemble inputs, in the spec's order."""
        return [self.exp001_002, self.exp004_005, self.v5, self.v3, self.v4, self.v3_prompt2]

    @property
    def all(self) -> list[Path]:
        return [*self.ensemble_inputs, self.base, self.final]


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"the reference submissions are missing: expected them in {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def ref(reference_dir: Path) -> References:
    refs = References(reference_dir)
    missing = [p.name for p in refs.all if not p.is_file()]
    if missing:
        pytest.fail(f"reference submissions missing from {reference_dir}: {missing}")
    return refs


# -- environment ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_coool_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test alone, never from the caller's COOOL_* variables."""
    for name in list(os.environ):
        if name.startswith("COOOL_"):
            monkeypatch.delenv(name)


# -- the simulated model server ------------------------------------------------------


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimHandle]:
    with running_sim_server(model=[SIM_MODEL], max_n=16) as handle:
        yield handle


@pytest.fixture
def sim(sim_server: SimHandle) -> Iterator[SimHandle]:
    """The session's simulated server with no pending faults and zeroed stats."""
    sim_server.set_faults(fail_next=0, status=503)
    sim_server.reset()
    yield sim_server
    sim_server.set_faults(fail_next=0, status=503)


@pytest.fixture
def role() -> Callable[..., RoleSettings]:
    """``role(sim, **overrides)``: RoleSettings for a simulated server, retrying without delay."""

    def make(*servers: SimHandle, **overrides: Any) -> RoleSettings:
        values: dict[str, Any] = {
            "model": SIM_MODEL,
            "urls": [s.url for s in servers],
            "backoff_s": 0.0,
            "max_attempts": 3,
            "timeout_s": 30.0,
        }
        values.update(overrides)
        return RoleSettings(**values)

    return make


# -- synthetic clips through stages 1 and 2 -----------------------------------------------


@dataclass(frozen=True)
class Stage1:
    """Stage-1 output of the synthetic clips: ``<root>/<id>/`` per video. Read-only."""

    root: Path
    manifests: dict[int, FrameManifest]

    def dir(self, video: int) -> Path:
        return self.root / str(video)

    def frames(self, video: int) -> list[tuple[int, Path]]:
        return sorted(self.manifests[video].paths(self.dir(video)).items())

    def copy(self, video: int, dest: Path) -> Path:
        """A writable copy of one video's folder (describe writes raw frames into it)."""
        target = dest / str(video)
        shutil.copytree(self.dir(video), target)
        return target


@pytest.fixture(scope="session")
def stage1(synthetic_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Stage1:
    root = tmp_path_factory.mktemp("stage1")
    manifests = {
        t.video_id: extract_caption_frames(synthetic_data.video(t.video_id), synthetic_data.heatmap(t.video_id), root / str(t.video_id))
        for t in synthetic_data.truths
    }
    return Stage1(root, manifests)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sim_captions(stage1: Stage1, sim_server: SimHandle) -> dict[int, pd.DataFrame]:
    """Each synthetic clip's caption table, as the simulated captioner answers it."""
    settings = RoleSettings(model=SIM_MODEL, urls=[sim_server.url], backoff_s=0.0)
    prompt = load_prompt("caption")
    tables = {}
    async with ChatClient("captioner", settings) as client:
        for video in stage1.manifests:
            result = await caption_video(client, video, stage1.frames(video), prompt)
            tables[video] = result.table
    return tables


# -- a scripted stand-in for ChatClient -------------------------------------------------


class ScriptedClient:
    """Answers ``complete`` from a script and records every call.

    Each script item answers one call: a string (repeated for each of the
    ``n`` samples), a list of strings (exactly ``n`` of them), or an
    exception to raise. A call beyond the script fails the test. A
    ``responder`` answers each call from the call instead (same kinds of item).
    """

    model = "scripted-model"

    def __init__(
        self,
        script: list[Any] = (),  # type: ignore[assignment]
        *,
        structured: bool = True,
        responder: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.script = list(script)
        self.structured = structured
        # Answers every call from the call itself (for requests sent concurrently), instead of the script.
        self.responder = responder
        self.calls: list[dict[str, Any]] = []

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return json_schema_format(name, schema) if self.structured else {"type": "json_object"}

    def image_url(self, path: str | Path) -> str:
        return Path(path).resolve().as_uri()

    async def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[Sample]:
        call = {"messages": messages, **kwargs}
        self.calls.append(call)
        if self.responder is not None:
            item = self.responder(call)
        elif not self.script:
            raise AssertionError(f"unexpected request #{len(self.calls)} (the script is used up)")
        else:
            item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        n = kwargs.get("n", 1)
        contents = [item] * n if isinstance(item, str) else list(item)
        assert len(contents) == n, f"script item has {len(contents)} answers for n={n}"
        return [Sample(content=c) for c in contents]

    @staticmethod
    def image_urls(call: dict[str, Any]) -> list[str]:
        content = call["messages"][-1]["content"]
        if isinstance(content, str):
            return []
        return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]

    def user_text(self, call: int = -1) -> str:
        """The text part of the last user message of a recorded call."""
        content = self.calls[call]["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "\n".join(part["text"] for part in content if part["type"] == "text")


@pytest.fixture
def scripted_client() -> Callable[..., ScriptedClient]:
    return ScriptedClient


# -- input folders with bad files ----------------------------------------------------


@pytest.fixture
def messy_inputs(tmp_path, synthetic_data):
    """Good videos 0, 1 and 8 (.MOV) beside every kind of bad input."""
    videos, heatmaps = tmp_path / "videos", tmp_path / "heatmaps"
    videos.mkdir()
    heatmaps.mkdir()
    good = {0: "0.mp4", 1: "1.mp4", 8: "8.MOV"}
    for vid, name in good.items():
        shutil.copy(synthetic_data.video(vid % 3), videos / name)
        shutil.copy(synthetic_data.heatmap(vid % 3), heatmaps / f"{vid}.mp4")
    (videos / "2.mp4").write_bytes(b"\x00\x01not a video at all" * 500)  # corrupt
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "2.mp4")
    (videos / "3.mp4").write_bytes(b"")  # zero bytes
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "3.mp4")
    shutil.copy(synthetic_data.video(0), videos / "4.mp4")  # no heatmap
    shutil.copy(synthetic_data.video(0), videos / "5.mp4")
    (heatmaps / "5.mp4").write_bytes(b"garbage" * 100)  # undecodable heatmap
    shutil.copy(synthetic_data.video(0), videos / "clip.mp4")  # not an id
    shutil.copy(synthetic_data.video(0), videos / "7.mp4")  # duplicate ids
    shutil.copy(synthetic_data.video(0), videos / "007.MP4")
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "7.mp4")
    (videos / "notes.txt").write_text("ignored")
    (videos / ".DS_Store").write_bytes(b"x")
    return videos, heatmaps
