"""coool's stages against REAL vLLM (CPU build, tiny random-weight models).

Random weights say nothing sensible; what these prove is that real vLLM
accepts every request a stage sends (json_schema structured outputs, n
samples, the sampling extras, images), and that parsing, voting and the
fallbacks turn whatever comes back into valid outputs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from references import REFERENCE_DIR

from coool import schema as cols
from coool.captions import TABLE_COLUMNS, caption_video
from coool.describe import DescribePromptSet, describe_video
from coool.detect import detect_video
from coool.ensemble import ensemble_video
from coool.frames import extract_caption_frames, extract_raw_frames
from coool.llm import ChatClient
from coool.params import CaptionParams, DetectParams, EnsembleParams, load_describe_configs
from coool.prompts import load_prompt
from coool.settings import RoleSettings
from coool.submission import load_submission, validate
from coool.synthetic import make_clip

pytestmark = pytest.mark.vllm

REFERENCES = REFERENCE_DIR
SIX_INPUTS = {
    "exp001+exp002": "exp001_and_exp002_n_sample4_step_merged_0.10830.csv",
    "exp004+exp005": "exp004_and_exp005_n_sample4_0.11560.csv",
    "v5": "exp005_n_sample4_6_5_8_0.10910.csv",
    "v3": "exp005_n_sample4_6_5_10_0.11500.csv",
    "v4": "exp005_n_sample4_12_11_6_0.11540.csv",
    "v3-prompt2": "run_Qwen3VL_multi_image_select_frames_from_gptoss_csv_infer_vllm_v3_prompt_v2_0.10630.csv",
}
BASE = "20250927_ens2_clip20_bk.csv"


def caption_table() -> pd.DataFrame:
    """A stage-2 table as the captioner would give it: quiet rows, then an event."""
    rows = []
    for i, frame in enumerate(range(1, 120, 10)):
        event = frame >= 61
        rows.append({
            "frame": frame, "image": f"/data/frames/0/stacked/{frame:06d}.png",
            cols.SCENE: "Ego-car drives on a straight road behind a car.",
            cols.HAZARD_CLUES: "red obstacle ahead in the ego lane" if event else "none",
            cols.GAZE: "the obstacle" if event else "the road ahead",
            cols.CAP_BICYCLISTS: 0, cols.CAP_ANIMALS: 0, cols.CAP_PEDESTRIANS: 0, cols.CAP_VEHICLES: 1,
            cols.CAP_DETECTION: 1 if frame >= 81 else (0 if event else -1),
            cols.CAP_SEVERITY: "1. Ego-car collided but did not stop" if frame >= 81 else cols.NO_CRASH,
            cols.CAP_EGO: 1 if event else 0,
            cols.CAP_LABEL: "ego-car hits barrier" if frame >= 81 else "unknown",
        })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


async def test_detector_stage(vllm_role_settings: RoleSettings) -> None:
    """Stage 3: 12 samples through json_schema; every answer parses; a frame is decided.

    The json_schema switch is on: a random-weight model writes JSON only under guided decoding.
    """
    params = DetectParams(json_schema=True)
    async with ChatClient("detector", vllm_role_settings) as client:
        result = await detect_video(client, 0, caption_table(), load_prompt("detect"), params, last_frame=120)
    assert client.stats.failures == 0
    assert len(result.samples) >= params.samples
    assert all(s["frame"] is not None for s in result.samples), [s["content"] for s in result.samples]
    assert 1 <= result.frame <= 120


async def test_ensembler_stage_on_real_rows(vllm_role_settings: RoleSettings) -> None:
    """Stage 5 on three videos of the real submissions: valid rows whose frame is an input frame."""
    inputs = {name: load_submission(REFERENCES / file) for name, file in SIX_INPUTS.items()}
    base = load_submission(REFERENCES / BASE)
    rows = []
    async with ChatClient("ensembler", vllm_role_settings) as client:
        for video in (0, 3, 313):
            base_row = base[base[cols.VIDEO] == video].iloc[0].to_dict()
            result = await ensemble_video(client, load_prompt("ensemble"), video, base_row, inputs, EnsembleParams())
            frames = {int(f[f[cols.VIDEO] == video][cols.START_FRAME].iloc[0]) for f in inputs.values()}
            assert result.row[cols.START_FRAME] in frames
            assert {c: result.row[c] for c in cols.COLUMNS if c not in (cols.START_FRAME, cols.CAPTION, cols.REASON)} == {
                c: base_row[c] for c in cols.COLUMNS if c not in (cols.START_FRAME, cols.CAPTION, cols.REASON)
            }
            rows.append(result.row)
    assert client.stats.failures == 0
    frame = pd.DataFrame(rows, columns=list(cols.COLUMNS)).astype(str)
    assert not [p for p in validate(frame, strict=True) if p.level == "error"]


async def test_image_stages(vllm_vl_role_settings: RoleSettings, vllm_media_root: Path) -> None:
    """Stages 2 and 4 with a vision-language model: stacked frames and a window of raw frames.

    json_schema on (as in second-place-plus): a random-weight model writes JSON only under guided decoding.
    """
    clip = vllm_media_root / "clip"
    truth = make_clip(clip / "0.mp4", clip / "h0.mp4", frames=40, event_frame=20)
    manifest = extract_caption_frames(clip / "0.mp4", clip / "h0.mp4", clip / "frames", every=10)
    config = load_describe_configs()["v5"].model_copy(update={"max_tokens": 1024, "json_schema": True})
    window = [10, 14, 18, 22, 26, 30]
    images = extract_raw_frames(clip / "0.mp4", window, clip / "frames")
    async with ChatClient("describer", vllm_vl_role_settings, media_root=vllm_media_root) as client:
        captions = await caption_video(
            client, 0, sorted(manifest.paths(clip / "frames").items()), load_prompt("caption"),
            CaptionParams(max_tokens=1024, json_schema=True),
        )
        described = await describe_video(client, config, DescribePromptSet.load(config), 0, window, images)
    assert truth.event_frame == 20
    assert client.stats.failures == 0
    assert len(captions.table) == len(manifest.frames)  # every answer parsed
    frame = pd.DataFrame([described.row], columns=list(cols.COLUMNS)).astype(str)
    assert not [p for p in validate(frame, strict=True) if p.level == "error"]
    assert described.row[cols.START_FRAME] == 1 or described.row[cols.START_FRAME] in window
