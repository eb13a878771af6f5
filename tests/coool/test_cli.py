"""The ``coool`` command from a real shell (subprocess) and, for the quick checks, typer's CliRunner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from coool import schema as cols
from coool.cli import app
from coool.detect import read_detections
from coool.frames import load_manifest
from coool.servers import wait_until_healthy
from coool.sim.testing import SIM_SERVER_COMMAND, free_port
from coool.submission import load_submission, merge, read_submission, submission_text, validate

COOOL = Path(sys.executable).parent / "coool"
runner = CliRunner()
ROLE_PREFIX = {"captioner": "COOOL_CAPTIONER", "detector": "COOOL_DETECTOR", "describer": "COOOL_DESCRIBER",
               "ensembler": "COOOL_ENSEMBLER"}


def shell(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``coool ARGS`` in a child process, with no COOOL_* variables but ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COOOL_")}
    clean.update(env or {})
    clean["COLUMNS"] = "200"  # keep rich from wrapping the lines the tests read
    return subprocess.run([str(COOOL), *map(str, args)], capture_output=True, text=True, env=clean, cwd=cwd, timeout=120)


def test_the_entry_point_is_installed() -> None:
    assert COOOL.is_file()
    done = shell("--help")
    assert done.returncode == 0
    for command in ("validate", "merge", "frames", "caption", "detect", "describe", "count-pass", "ensemble", "synth"):
        assert command in done.stdout


# -- validate -----------------------------------------------------------------------------------------


def test_validate_a_valid_file(ref) -> None:
    done = shell("validate", ref.base)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{ref.base}: valid (0 warning(s))"


def test_validate_labels_outside_the_19(ref) -> None:
    done = shell("validate", ref.exp001_002)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "warning: row 209, 'Label': not one of the 19 labels: 'vehicle hits barrier'",
        "warning: row 249, 'Label': not one of the 19 labels: 'vehicle hits a pedestrian'",
        "warning: row 492, 'Label': not one of the 19 labels: 'car hits pedestrian'",
        f"{ref.exp001_002}: valid (3 warning(s))",
    ]
    strict = shell("validate", "--strict", ref.exp001_002)
    assert strict.returncode == 1
    assert "error: row 209, 'Label'" in strict.stderr and "INVALID (3 error(s), 0 warning(s))" in strict.stderr


def test_validate_an_invalid_file(tmp_path: Path) -> None:
    lines = submission_text([cols.fallback_row(0), cols.fallback_row(1)]).splitlines()
    lines.insert(2, lines[2].replace("1,1,-1,", "1,1,2,", 1))  # row 2: detection 2; row 3 repeats video 1
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = shell("validate", path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: row 2, 'Incident Detection': must be one of 1, 0, -1, got '2'",
        "error: row 3, 'video': video 1 appears again (first at row 2)",
        f"{path}: INVALID (2 error(s), 0 warning(s))",
    ]
    assert done.stdout == ""


def test_validate_an_unreadable_file(tmp_path: Path) -> None:
    done = shell("validate", tmp_path / "missing.csv")
    assert done.returncode == 1 and "missing.csv: no such file" in done.stderr
    header = tmp_path / "header.csv"
    header.write_text("video,frame\n1,2\n", encoding="utf-8")
    done = shell("validate", header)
    assert done.returncode == 1 and "error: file: header must be exactly" in done.stderr


# -- merge -------------------------------------------------------------------------------------------------


def test_merge_from_the_shell(ref, tmp_path: Path) -> None:
    out = tmp_path / "ens2.csv"
    done = shell("merge", ref.v4, ref.exp004_005, "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{out}: 661 rows, 82 taken from {ref.exp004_005.name}"
    merged = load_submission(out)
    expected, _ = merge(load_submission(ref.v4), load_submission(ref.exp004_005))
    assert merged.equals(expected)
    base = load_submission(ref.base)
    differing = sorted(v for v in range(661) if merged.loc[v].to_dict() != base.loc[v].to_dict())
    assert differing == [313]
    # Written by the library: every text field quoted.
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith('0,431,0,"0. No Crash",0,"vehicle overtakes",')


def test_merge_refuses_an_invalid_input(ref, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(ref.v4.read_text(encoding="utf-8").replace('\n5,73,', '\n5x,73,', 1), encoding="utf-8")
    assert '\n5x,73,' in bad.read_text(encoding="utf-8")
    done = shell("merge", bad, ref.exp004_005, "-o", tmp_path / "out.csv")
    assert done.returncode == 1
    assert "row 6, 'video'" in done.stderr
    assert not (tmp_path / "out.csv").exists()


# -- frames and the model stages against a simulated server ----------------------------------------------------


@dataclass
class Chain:
    """One run of frames -> caption -> detect -> describe -> ensemble from the shell."""

    root: Path
    steps: dict[str, subprocess.CompletedProcess[str]]
    requests: dict[str, int]

    @property
    def frames(self) -> Path:
        return self.root / "frames"


def _sim_env(sim_server) -> dict[str, str]:
    env = {}
    for prefix in ROLE_PREFIX.values():
        env.update({f"{prefix}__URLS": sim_server.url, f"{prefix}__MODEL": "sim-model", f"{prefix}__BACKOFF_S": "0"})
    return env


@pytest.fixture(scope="module")
def chain(sim_server, synthetic_data, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    root = tmp_path_factory.mktemp("cli-chain")
    env = _sim_env(sim_server)
    steps, requests = {}, {}

    def step(name: str, *args: object, in_process: bool = False) -> None:
        sim_server.reset()
        if in_process:  # typer's runner: no interpreter start-up (used for the reruns only)
            result = runner.invoke(app, [str(a) for a in args], env=env)
            steps[name] = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
        else:
            steps[name] = shell(*args, env=env, cwd=root)
        requests[name] = sim_server.stats()["received"]

    step("frames", "frames", synthetic_data.videos, synthetic_data.heatmaps, root / "frames")
    step("caption", "caption", root / "frames", root / "captions")
    step("caption again", "caption", root / "frames", root / "captions", in_process=True)
    step("detect", "detect", root / "captions", root / "detect.csv")
    step("describe v4", "describe", "--config", "v4", "--frames", root / "frames", "--detections", root / "detect.csv",
         "-o", root / "v4.csv")
    step("describe exp004", "describe", "--config", "exp004", "--frames", root / "frames", "--captions",
         root / "captions", "-o", root / "exp004.csv")
    step("ensemble", "ensemble", root / "v4.csv", root / "exp004.csv", "--base", root / "v4.csv", "-o",
         root / "ensemble.csv")
    step("count-pass", "count-pass", root / "v4.csv", "--frames", root / "frames", "--detections",
         root / "detect.csv", "-o", root / "counted.csv", in_process=True)
    return Chain(root, steps, requests)


def test_frames_from_the_shell(chain: Chain, synthetic_data) -> None:
    done = chain.steps["frames"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 videos done, 0 problems" in done.stdout
    assert chain.requests["frames"] == 0
    for truth in synthetic_data.truths:
        manifest = load_manifest(chain.frames / str(truth.video_id))
        assert manifest is not None and [f.frame for f in manifest.frames] == list(range(1, 120, 10))
        assert all(p.is_file() for p in manifest.paths(chain.frames / str(truth.video_id)).values())


def test_frames_with_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "heatmaps").mkdir()
    done = shell("frames", tmp_path / "videos", tmp_path / "heatmaps", tmp_path / "out")
    assert done.returncode == 2 and "error" in done.stdout


def test_a_stage_command_waits_for_its_folder_and_stops_on_ctrl_c(chain: Chain, sim_server, tmp_path: Path) -> None:
    """#15.5 for the stage commands: the output folder is held as a results folder is. A second
    command on a held folder waits (saying whose it is); Ctrl-C then ends it with one line, exit 130."""
    from coool.runlock import LOCK_NAME, results_lock

    out = tmp_path / "captions"
    out.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COOOL_")}
    env = {**clean, **_sim_env(sim_server), "COLUMNS": "200"}
    log = tmp_path / "stderr.log"
    with results_lock(out, command="a test holding the folder"):
        with open(log, "wb") as err:
            waiting = subprocess.Popen([str(COOOL), "caption", str(chain.frames), str(out)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while "a test holding the folder" not in log.read_text(errors="replace"):
                assert waiting.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
            assert not [p for p in out.iterdir() if not p.name.startswith(LOCK_NAME)]  # nothing written while it waits
            waiting.send_signal(signal.SIGINT)
            assert waiting.wait(timeout=30) == 130
        finally:
            if waiting.poll() is None:
                waiting.kill()
    said = log.read_text(errors="replace")
    assert f"interrupted: caption; finished videos are kept in {out}" in said
    assert "Traceback" not in said and "never awaited" not in said
    # Released: the same command runs through.
    sim_server.reset()
    done = shell("caption", chain.frames, out, env=_sim_env(sim_server))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.csv")) == ["0.csv", "1.csv", "2.csv"]
    assert not (out / LOCK_NAME).exists()


def test_caption_from_the_shell(chain: Chain, synthetic_data) -> None:
    done = chain.steps["caption"]
    assert done.returncode == 0, done.stderr
    assert "caption: 3 done (0 from cache), 0 failed" in done.stderr
    assert chain.requests["caption"] == 36
    for truth in synthetic_data.truths:
        table = pd.read_csv(chain.root / "captions" / f"{truth.video_id}.csv")
        flagged = table.loc[table[cols.CAP_DETECTION] != -1, "frame"]
        assert flagged.min() >= truth.event_frame and flagged.min() - truth.event_frame < 10
    again = chain.steps["caption again"]
    assert again.returncode == 0 and "caption: 3 done (3 from cache), 0 failed" in again.stderr
    assert chain.requests["caption again"] == 0


def test_detect_from_the_shell(chain: Chain, synthetic_data) -> None:
    done = chain.steps["detect"]
    assert done.returncode == 0, done.stderr
    assert chain.requests["detect"] == 3 * 12  # as the original: one request per sample (issue 14)
    detections = read_detections(chain.root / "detect.csv")
    for truth in synthetic_data.truths:
        assert truth.event_frame <= detections[truth.video_id] <= truth.event_frame + 10
    assert sorted(p.name for p in (chain.root / "detect").iterdir()) == ["0.json", "1.json", "2.json"]


@pytest.mark.parametrize("config", ["v4", "exp004"])
def test_describe_from_the_shell(chain: Chain, synthetic_data, config: str) -> None:
    done = chain.steps[f"describe {config}"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{chain.root / f'{config}.csv'}: 3 rows (0 fallback)"
    assert chain.requests[f"describe {config}"] >= 9  # three passes per video, plus any re-asks
    assert validate(read_submission(chain.root / f"{config}.csv"), expected_videos=[0, 1, 2], strict=True) == []
    rows = load_submission(chain.root / f"{config}.csv")
    for truth in synthetic_data.truths:
        assert abs(rows.loc[truth.video_id, cols.START_FRAME] - truth.event_frame) <= 10
    assert sorted(p.name for p in (chain.root / "describe" / config).glob("*.json")) == ["0.json", "1.json", "2.json"]


def test_ensemble_from_the_shell(chain: Chain) -> None:
    done = chain.steps["ensemble"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{chain.root / 'ensemble.csv'}: 3 rows (0 kept from the base)"
    assert chain.requests["ensemble"] == 3
    out, base = load_submission(chain.root / "ensemble.csv"), load_submission(chain.root / "v4.csv")
    inputs = [base, load_submission(chain.root / "exp004.csv")]
    kept = [c for c in cols.COLUMNS if c not in (cols.START_FRAME, cols.CAPTION, cols.REASON)]
    assert out[kept].equals(base[kept])
    for v in range(3):
        assert out.loc[v, cols.START_FRAME] in {int(f.loc[v, cols.START_FRAME]) for f in inputs}


def test_ensemble_inputs_with_the_same_file_name_stay_apart(chain: Chain, sim_server, tmp_path: Path) -> None:
    for folder, source in (("a", "v4.csv"), ("b", "exp004.csv")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "submission.csv").write_bytes((chain.root / source).read_bytes())
    env = {"COOOL_ENSEMBLER__URLS": sim_server.url, "COOOL_ENSEMBLER__MODEL": "sim-model"}
    result = runner.invoke(app, ["ensemble", str(tmp_path / "a" / "submission.csv"), str(tmp_path / "b" / "submission.csv"),
                                 "--base", str(chain.root / "v4.csv"), "-o", str(tmp_path / "e.csv")], env=env)
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "ensemble" / "0.json").read_text())
    assert [c["source"] for c in saved["candidates"]] == [
        str(tmp_path / "a" / "submission.csv"), str(tmp_path / "b" / "submission.csv"),
    ]


def test_count_pass_with_nothing_to_do(chain: Chain) -> None:
    done = chain.steps["count-pass"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{chain.root / 'counted.csv'}: 0 row(s) re-described (none)"
    assert chain.requests["count-pass"] == 0
    assert load_submission(chain.root / "counted.csv").equals(load_submission(chain.root / "v4.csv"))


# -- quick ones in process ---------------------------------------------------------------------------------



def test_count_pass_on_the_real_ens2_when_redescription_fails(ref, tmp_path: Path) -> None:
    ens2 = tmp_path / "ens2.csv"
    merged, _ = merge(load_submission(ref.v4), load_submission(ref.exp004_005))
    ens2.write_text(submission_text(merged.to_dict("records")), encoding="utf-8")
    (tmp_path / "detect.csv").write_text("video,frame\n44,139\n313,81\n538,9\n", encoding="utf-8")
    result = runner.invoke(app, ["count-pass", str(ens2), "--frames", str(tmp_path / "no-frames"), "--detections",
                                 str(tmp_path / "detect.csv"), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 1  # the three re-descriptions failed (no frames) ...
    assert "3 row(s) re-described (44, 313, 538)" in result.stdout
    out = load_submission(tmp_path / "out.csv")  # ... and the counts are clipped anyway
    assert out.loc[313].to_dict() == merged.loc[313].to_dict() | {cols.N_ANIMALS: 20}
    assert out.drop(index=313).equals(merged.drop(index=313))


def test_describe_with_an_unknown_configuration(tmp_path: Path) -> None:
    (tmp_path / "frames" / "0").mkdir(parents=True)
    (tmp_path / "frames" / "0" / "manifest.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["describe", "--config", "v9", "--frames", str(tmp_path / "frames"), "-o",
                                 str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "unknown describe configuration 'v9'" in result.stderr


def test_describe_needs_the_input_of_its_window(tmp_path: Path) -> None:
    (tmp_path / "frames" / "0").mkdir(parents=True)
    (tmp_path / "frames" / "0" / "manifest.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["describe", "--config", "v4", "--frames", str(tmp_path / "frames"), "-o",
                                 str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "give --detections" in result.stderr
    result = runner.invoke(app, ["describe", "--config", "exp001", "--frames", str(tmp_path / "frames"), "-o",
                                 str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "give --captions" in result.stderr


def test_stages_need_their_inputs(tmp_path: Path) -> None:
    # Names that are not ids are not inputs (and no crash: "²".isdigit() is True, int("²") raises).
    (tmp_path / "²").mkdir()
    (tmp_path / "²" / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "².csv").write_text("frame\n1\n", encoding="utf-8")
    result = runner.invoke(app, ["caption", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 2 and "run `coool frames` first" in result.stderr
    result = runner.invoke(app, ["detect", str(tmp_path), str(tmp_path / "d.csv")])
    assert result.exit_code == 2 and "no <id>.csv caption tables" in result.stderr


# -- frames: the stage-1 body that lives in the CLI --------------------------------------------------------


def frames_command(videos_dir: Path, heatmaps_dir: Path, out_dir: Path, every: int = 10) -> int:
    """``coool frames`` in process: its exit code; its output goes to stdout (capsys)."""
    result = runner.invoke(app, ["frames", str(videos_dir), str(heatmaps_dir), str(out_dir), "--every", str(every)])
    print(result.output)
    return result.exit_code


def test_frames_reports_bad_files_and_does_the_rest(tmp_path, messy_inputs, capsys) -> None:
    """``coool frames`` on a messy folder: every usable video done, every bad file named with its problem."""
    videos, heatmaps = messy_inputs
    assert frames_command(videos, heatmaps, tmp_path / "frames", every=30) == 1
    manifests = {int(p.parent.name): load_manifest(p.parent) for p in (tmp_path / "frames").glob("*/manifest.json")}
    assert sorted(manifests) == [0, 1, 8]
    assert all([f.frame for f in m.frames] == [1, 31, 61, 91] for m in manifests.values())
    problems = [line.removeprefix("problem: ") for line in capsys.readouterr().out.splitlines() if line.startswith("problem: ")]

    def named(path: Path) -> str:
        return " | ".join(line for line in problems if line.startswith(f"{path}: "))

    assert "cannot be opened" in named(videos / "2.mp4")
    assert "empty" in named(videos / "3.mp4")
    assert "no heatmap" in named(videos / "4.mp4")
    assert "cannot be opened" in named(heatmaps / "5.mp4")  # the heatmap is named, not the video
    assert all(named(videos / name) for name in ("clip.mp4", "7.mp4", "007.MP4"))
    assert len(problems) == 7
    assert not (tmp_path / "frames" / "2").exists()


def test_frames_command_exit_codes(tmp_path, synthetic_data, messy_inputs, capsys) -> None:
    assert frames_command(synthetic_data.videos, synthetic_data.heatmaps, tmp_path / "a", 40) == 0
    videos, heatmaps = messy_inputs
    assert frames_command(videos, heatmaps, tmp_path / "b", 40) == 1
    out = capsys.readouterr().out
    assert "clip.mp4" in out and "3 videos done" in out
    assert frames_command(tmp_path / "nothing", heatmaps, tmp_path / "c") == 2
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "1.mp4").write_bytes(b"")
    assert frames_command(only_bad, heatmaps, tmp_path / "d") == 2


# -- model servers: coool server start|stop, coool sim-server ---------------------------------------------------


def test_server_start_refuses_an_unknown_role() -> None:
    done = shell("server", "start", "painter")
    assert done.returncode == 2
    assert "unknown role 'painter'" in done.stderr and "captioner" in done.stderr and "Traceback" not in done.stderr


def test_server_start_keeps_a_healthy_server(sim_server) -> None:
    done = shell("server", "start", "captioner", env={"COOOL_CAPTIONER__URLS": sim_server.url, "COOOL_CAPTIONER__MODEL": "sim-model"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"captioner: up at {sim_server.url} (already running)"


def test_server_stop_without_its_container_is_one_clear_line() -> None:
    done = shell("server", "stop", "detector")  # no docker here, or no coool-detector container
    assert done.returncode == 1
    assert done.stderr.startswith("error: detector: cannot stop container coool-detector:")
    assert "Traceback" not in done.stderr


def test_server_command_prints_the_launch_of_servers_yaml() -> None:
    """``coool server command ROLE``: the process backend's ``vllm serve`` line, per launch variant."""
    original = runner.invoke(app, ["server", "command", "describer"])
    plus = runner.invoke(app, ["server", "command", "describer", "--launch", "plus"])
    assert original.exit_code == 0 and plus.exit_code == 0, original.output + plus.output
    assert " serve " in original.output and original.output != plus.output
    assert "--reasoning-parser" in plus.output and "--reasoning-parser" not in original.output
    wrong = runner.invoke(app, ["server", "command", "describer", "--launch", "fast"])
    assert wrong.exit_code == 2 and "unknown launch 'fast'" in wrong.output


def test_server_images_rewrites_a_stale_dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``coool server images --check`` exits 1 naming a stale Dockerfile; without --check it rewrites it."""
    from coool import launch

    images = tmp_path / "images"
    for image in launch.image_names():
        (images / image).mkdir(parents=True)
        (images / image / "Dockerfile").write_text(
            f"FROM base\n{launch.dockerfile_block(image)}\nCMD serve\n", encoding="utf-8"
        )
    stale = images / launch.image_names()[0] / "Dockerfile"
    stale.write_text(stale.read_text(encoding="utf-8").replace("ENV ", "ENV OLD=1 ", 1), encoding="utf-8")
    monkeypatch.setattr(launch, "IMAGES_DIR", images)
    checked = runner.invoke(app, ["server", "images", "--check"])
    assert checked.exit_code == 1 and str(stale) in checked.output
    written = runner.invoke(app, ["server", "images"])
    assert written.exit_code == 0 and f"updated {stale}" in written.output
    assert runner.invoke(app, ["server", "images", "--check"]).exit_code == 0
    assert stale.read_text(encoding="utf-8").startswith("FROM base\n") and "OLD=1" not in stale.read_text(encoding="utf-8")


@pytest.mark.parametrize("command", [SIM_SERVER_COMMAND, (sys.executable, "-m", "coool.sim")], ids=["cli", "python-m"])
def test_sim_server_takes_every_option_of_the_simulated_server(tmp_path: Path, command: tuple[str, ...]) -> None:
    """``coool sim-server`` (and ``python -m coool.sim``, which delegates to it) with the options tests use."""
    port = free_port()
    args = [*command, "--port", str(port), "--model", "a", "--model", "b", "--max-n", "2", "--hang-s", "5",
            "--latency", "0", "--per-token-latency", "0", "--capacity", "4", "--faults", "5xx=0", "--seed", "3",
            "--allowed-local-media-path", str(tmp_path)]
    env = {**os.environ, "COOOL_SIM_API_KEY": "k-123"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", 30, alive=lambda: process.poll() is None)
        base = f"http://127.0.0.1:{port}/v1"
        assert httpx.get(f"{base}/models", timeout=10).status_code == 401  # the key came from the environment
        auth = {"Authorization": "Bearer k-123"}
        models = httpx.get(f"{base}/models", headers=auth, timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["a", "b"]
        body = {"model": "a", "n": 3, "messages": [{"role": "user", "content": "hi"}]}
        refused = httpx.post(f"{base}/chat/completions", json=body, headers=auth, timeout=10)
        assert refused.status_code == 400 and "limit of 2" in refused.text  # --max-n
    finally:
        process.terminate()
        process.wait(timeout=10)
