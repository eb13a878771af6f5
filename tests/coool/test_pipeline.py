"""The whole run without Prefect (run_plain) on synthetic clips against the simulated servers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from coool import schema as cols
from coool.detect import read_detections
from coool.files import atomic_write_json
from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.servers import ServerUnavailable
from coool.settings import ROLES, RoleSettings, Settings
from coool.sim.testing import free_port, running_sim_server
from coool.submission import load_submission, read_submission, validate


def settings_for(sim, results: Path, **role_overrides: RoleSettings) -> Settings:
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    roles.update(role_overrides)
    return Settings(results_dir=results, **roles)


def assert_valid(path: Path, videos: list[int]) -> pd.DataFrame:
    assert validate(read_submission(path), expected_videos=videos, strict=True) == []
    return load_submission(path)


def assert_near_events(frame: pd.DataFrame, truths) -> None:
    for truth in truths:
        start = int(frame.loc[frame[cols.VIDEO] == truth.video_id, cols.START_FRAME].iloc[0])
        assert abs(start - truth.event_frame) <= 10, (truth.video_id, start, truth.event_frame)


async def test_quick_recipe_end_to_end_and_resumed(sim, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    pipeline = Run(settings_for(sim, results), load_recipe("quick"))
    outcome = await run_plain(pipeline, synthetic_data.videos, synthetic_data.heatmaps, concurrent=False)
    assert (outcome["videos"], outcome["failures"]) == (3, 0)
    submission = assert_valid(results / "submission.csv", [0, 1, 2])
    assert_near_events(submission, synthetic_data.truths)
    assert (submission[cols.DETECTION] == 1).all() and (submission[cols.LABEL] == "ego-car hits barrier").all()
    assert outcome["written"]["final"] == results / "submission.csv"
    assert (results / "describe" / "v4" / "submission.csv").read_bytes() == (results / "submission.csv").read_bytes()
    detections = read_detections(results / "detect.csv")
    assert sorted(detections) == [0, 1, 2]
    for truth in synthetic_data.truths:
        assert truth.event_frame <= detections[truth.video_id] <= truth.event_frame + 10
    assert (results / "failures.csv").read_text(encoding="utf-8").strip() == "video,stage,error,path,level"
    stats = sim.stats()
    # The original detector sends one request per sample (issue 14): 12 per video.
    assert stats["tasks"]["frame_caption"] == 36 and stats["tasks"]["incident_frame"] == 3 * 12
    assert stats["rejected"] == 0

    # The keys the flows cache on are the keys the stage units recorded in their outputs.
    for stage in pipeline.recipe.stages():
        for video in (0, 1, 2):
            output = {"caption": pipeline.ws.root / "captions" / f"{video}.json", "detect": pipeline.ws.detect_path(video),
                      "describe": pipeline.ws.describe_path("v4", video)}[stage.kind]
            recorded = json.loads(output.read_text())["key"]
            assert pipeline.stage_key(stage, video) == recorded  # #13: one key, recorded and cached
            assert pipeline.has_output(stage, video)

    # A rerun finds every output in place: not one request.
    before = (results / "submission.csv").read_bytes()
    sim.reset()
    again = await run_plain(Run(settings_for(sim, results), load_recipe("quick")), synthetic_data.videos,
                            synthetic_data.heatmaps, concurrent=False)
    assert again["failures"] == 0
    assert sim.stats()["received"] == 0
    assert (results / "submission.csv").read_bytes() == before


@pytest.mark.slow
async def test_second_place_recipe_end_to_end(sim, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    recipe = load_recipe("second-place")
    outcome = await run_plain(Run(settings_for(sim, results), recipe), synthetic_data.videos,
                              synthetic_data.heatmaps, concurrent=False)
    assert (outcome["videos"], outcome["failures"]) == (3, 0)
    assert set(outcome["written"]) == set(recipe.submissions()) | {"final"}
    for name, path in outcome["written"].items():
        assert_valid(path, [0, 1, 2])
    final = assert_valid(results / "submission.csv", [0, 1, 2])
    assert_near_events(final, synthetic_data.truths)
    # The ensemble keeps the base's other columns (the count pass left these rows alone: counts are small).
    base = load_submission(outcome["written"]["ens2-counts"])
    kept = [c for c in cols.COLUMNS if c not in (cols.START_FRAME, cols.CAPTION, cols.REASON)]
    assert final[kept].equals(base[kept])
    assert not (results / "describe" / "v6-counts").exists()
    stats = sim.stats()
    assert stats["tasks"]["ensemble"] == 3 and stats["tasks"]["describe_reconcile"] == 8 * 3
    sim.reset()
    await run_plain(Run(settings_for(sim, results), recipe), synthetic_data.videos, synthetic_data.heatmaps)
    assert sim.stats()["received"] == 0


@pytest.fixture
def data_with_bad_inputs(synthetic_data, tmp_path: Path) -> Path:
    """The synthetic clips plus a corrupt video 3 and a video 4 without a heatmap."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_data.root, root)
    (root / "videos" / "3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (root / "heatmaps" / "3.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 nor is this")
    shutil.copy(root / "videos" / "0.mp4", root / "videos" / "4.mp4")
    return root


async def test_bad_inputs_and_a_failing_server_still_give_a_valid_submission(sim, data_with_bad_inputs: Path, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    with running_sim_server(model=["sim-model"], faults="5xx=1.0") as broken:  # healthy, but every answer is a 5xx
        failing = RoleSettings(model="sim-model", urls=[broken.url], max_attempts=1, timeout_s=5)
        pipeline = Run(settings_for(sim, results, describer=failing), load_recipe("quick"))
        outcome = await run_plain(pipeline, data_with_bad_inputs / "videos", data_with_bad_inputs / "heatmaps")
    submission = assert_valid(results / "submission.csv", [0, 1, 2, 3, 4])
    # Every row is the fallback: the describer never answered, and videos 3 and 4 never got that far.
    for v in range(5):
        assert submission.loc[v].to_dict() == cols.fallback_row(v)
    failures = pd.read_csv(results / "failures.csv")
    by_stage = failures.groupby("stage")["video"].apply(lambda s: sorted(int(v) for v in s)).to_dict()
    assert by_stage["describe:v4"] == [0, 1, 2]
    assert 3 in by_stage["frames"]
    assert 4 in by_stage["inputs"]
    assert outcome["failures"] == len(failures)
    assert "50" in " ".join(failures.loc[failures["stage"] == "describe:v4", "error"])
    # The stages that worked are kept: detection found the events.
    detections = read_detections(results / "detect.csv")
    for truth in synthetic_data.truths:
        assert truth.event_frame <= detections[truth.video_id] <= truth.event_frame + 10


async def test_a_server_down_at_the_start_fails_fast_naming_role_and_url(sim, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    port = free_port()
    down = RoleSettings(model="sim-model", urls=[f"http://127.0.0.1:{port}/v1"], server={"health_timeout_s": 1})
    pipeline = Run(settings_for(sim, results, describer=down), load_recipe("quick"))
    with pytest.raises(ServerUnavailable, match=rf"describer: .*127\.0\.0\.1:{port}"):
        await run_plain(pipeline, synthetic_data.videos, synthetic_data.heatmaps)
    assert not (results / "submission.csv").exists()


def test_rows_follow_the_merges_and_the_count_pass(sim, tmp_path: Path) -> None:
    pipeline = Run(settings_for(sim, tmp_path), load_recipe("second-place"))

    def described(config: str, video: int, **changes: object) -> dict[str, object]:
        row = cols.fallback_row(video) | changes
        atomic_write_json(pipeline.ws.describe_path(config, video), {"key": "k", "row": row})
        return row

    found = {cols.START_FRAME: 81, cols.DETECTION: 0, cols.LABEL: "animal on the road", cols.N_ANIMALS: 100}
    described("v4", 7)  # v4 found nothing
    described("exp004", 7)  # nor did exp004
    exp005 = described("exp005", 7, **found)
    assert pipeline.row("exp004+exp005", 7) == exp005
    assert pipeline.row("ens2", 7) == exp005
    assert pipeline.row("ens2-counts", 7) == exp005 | {cols.N_ANIMALS: 20}  # no re-description yet: clipped
    redone = described("v6-counts", 7, **(found | {cols.N_ANIMALS: 35, cols.CAPTION: "Geese stand by the road."}))
    assert pipeline.row("ens2-counts", 7) == redone | {cols.N_ANIMALS: 20}
    assert pipeline.row("ensemble", 7) == redone | {cols.N_ANIMALS: 20}  # no ensemble output: the base
    assert pipeline.row("v5", 7) is None and pipeline.row("exp001+exp002", 7) is None
    with pytest.raises(KeyError, match="defines no submission 'v9'"):
        pipeline.row("v9", 7)


def test_collect_inputs_records_odd_file_names(sim, synthetic_data, tmp_path: Path) -> None:
    videos, heatmaps = tmp_path / "videos", tmp_path / "heatmaps"
    videos.mkdir()
    heatmaps.mkdir()
    shutil.copy(synthetic_data.video(0), videos / "0.mp4")
    shutil.copy(synthetic_data.heatmap(0), heatmaps / "0.mp4")
    shutil.copy(synthetic_data.video(1), videos / "5.mp4")  # no heatmap
    for odd in ("².mp4", "٣.mp4", "clip.mp4"):  # "²".isdigit() and "٣".isdigit() are both True
        (videos / odd).write_bytes(b"not a video")
    pipeline = Run(settings_for(sim, tmp_path / "results"), load_recipe("quick"))
    pairs, ids = pipeline.collect_inputs(videos, heatmaps)
    assert [p.video_id for p in pairs] == [0] and ids == [0, 5]
    failed = sorted((f.video if f.video is not None else -1, Path(f.path).name) for f in pipeline.failures)
    assert failed == [(-1, "clip.mp4"), (-1, "².mp4"), (-1, "٣.mp4"), (5, "5.mp4")]
    assert all(f.stage == "inputs" for f in pipeline.failures)


def test_videos_with_frames_reads_only_id_folders(sim, tmp_path: Path) -> None:
    pipeline = Run(settings_for(sim, tmp_path), load_recipe("quick"))
    for name in ("0", "12", "²", "٣", "3.5", "abc"):
        (tmp_path / "frames" / name).mkdir(parents=True)
        (tmp_path / "frames" / name / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "frames" / "7").mkdir()  # no manifest: stage 1 did not finish
    assert pipeline.videos_with_frames() == [0, 12]


async def test_concurrent_mode_reports_every_stage_and_why_videos_were_skipped(sim, synthetic_data, tmp_path: Path) -> None:
    from coool.count_pass import SKIPPED

    run = Run(settings_for(sim, tmp_path), load_recipe("second-place"))
    outcome = await run_plain(run, synthetic_data.videos, synthetic_data.heatmaps, concurrent=True)
    stages = {r["stage"]: r for r in outcome["stages"]}
    # Stage 1 is a stage like the others, and concurrent mode reports one row per stage.
    assert list(stages) == ["frames"] + [s.name for s in run.recipe.stages()]
    for report in stages.values():
        assert report["done"] + report["skipped"] == 3 and report["failed"] == [], report
    counted = stages["count-pass"]
    assert counted["skipped"] > 0 and counted["skipped_why"] == {SKIPPED: counted["skipped"]}


async def test_second_place_plus_shares_the_stages_no_switch_changes(sim, synthetic_data, tmp_path: Path) -> None:
    """Issue #14: second-place-plus after second-place in the same results folder asks for no
    caption and no detection again; only the describe work (and what follows it) reruns."""
    results = tmp_path / "results"
    plus_recipe = Path(__file__).resolve().parents[2] / "coool" / "recipes" / "second-place-plus.yaml"
    await run_plain(Run(settings_for(sim, results), load_recipe("second-place")), synthetic_data.videos,
                    synthetic_data.heatmaps, concurrent=False)
    sim.reset()
    outcome = await run_plain(Run(settings_for(sim, results), load_recipe(str(plus_recipe))),
                              synthetic_data.videos, synthetic_data.heatmaps, concurrent=False)
    assert (outcome["videos"], outcome["failures"]) == (3, 0)
    from coool.improvements import catalogue

    tasks = sim.stats()["tasks"]
    switched = {item.stage for item in catalogue()}  # stages with a switch rerun, and those after them
    if "caption" not in switched:
        assert tasks.get("frame_caption", 0) == 0
        if "detect" not in switched:
            assert tasks.get("incident_frame", 0) == 0
    assert tasks["describe_reconcile"] == 8 * 3
    final = assert_valid(results / "submission.csv", [0, 1, 2])
    assert_near_events(final, synthetic_data.truths)
    # run.json says how the last run filed its outputs: the studio reads plus's folders by it.
    from coool.studio.config import read_run_json, results_workspace

    recorded = read_run_json(results)
    assert recorded["recipe"] == "second-place-plus" and recorded["videos_dir"] == str(synthetic_data.videos.resolve())
    assert recorded["variants"] == dict(Run(settings_for(sim, results), load_recipe(str(plus_recipe))).ws.variants)
    studio_ws = results_workspace(results, recorded)
    assert studio_ws.detect_path(0).exists() and studio_ws.describe_path("v4", 0).exists()
