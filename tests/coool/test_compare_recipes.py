"""Two recipes in one results folder, side by side, and `coool compare-recipes` (issue #14):
synthetic clips against the simulated model server (a test double, no model inside)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from studio_support import csrf_from

from coool.improvements import PLUS, catalogue, variant_of
from coool.params import DescribeConfig
from coool.recipe import load_recipe
from coool.recipe_compare import ab_url, check_pair
from coool.run import Run, run_plain
from coool.settings import ROLES, RoleSettings, Settings
from coool.studio import create_app
from coool.submission import read_submission, validate
from coool.workspace import Workspace

COOOL = Path(sys.executable).parent / "coool"
DESCRIBE_SWITCHES = sorted(i.name for i in catalogue() if i.stage == "describe")
# Switches that only describe declares (json_schema, plus_prompts are caption's and detect's too).
DESCRIBE_ONLY = sorted(set(DESCRIBE_SWITCHES) - {i.name for i in catalogue() if i.stage != "describe"})


def settings_for(sim, results: Path) -> Settings:
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    return Settings(results_dir=results, **roles)


async def run(sim, recipe, data, results: Path) -> tuple[dict, dict[str, int]]:
    """The recipe end to end (plain asyncio); its outcome and the requests it sent, by task."""
    sim.reset()
    outcome = await run_plain(Run(settings_for(sim, results), recipe), data.videos, data.heatmaps)
    stats = sim.stats()
    return outcome, {**stats["tasks"], "received": stats["received"]}


def describe_plus_recipe(tmp_path: Path) -> Path:
    """quick with describe-only switches: it shares quick's captions and detections."""
    path = tmp_path / "quick-describe-plus.yaml"
    switches = ", ".join(DESCRIBE_ONLY)
    path.write_text(f"name: quick-describe-plus\ncaption: {{every: 10}}\ndescribe: [v4]\nfinal: v4\n"
                    f"improvements: [{switches}]\n", encoding="utf-8")
    return path


# -- the layout ---------------------------------------------------------------------------------------


def test_faithful_paths_are_unchanged_and_plus_outputs_live_beside_them(tmp_path: Path) -> None:
    faithful = Run(Settings(results_dir=tmp_path), load_recipe("second-place")).ws
    plus = Run(Settings(results_dir=tmp_path), load_recipe("second-place-plus")).ws
    assert set(faithful.variants.values()) == {""}  # no variant at all: the plain layout
    assert faithful.describe_path("v4", 3) == tmp_path / "describe" / "v4" / "3.json"
    assert plus.describe_path("v4", 3) == tmp_path / "describe" / "v4+plus" / "3.json"
    assert plus.describe_path("v6-counts", 3) == tmp_path / "describe" / "v6-counts+plus" / "3.json"
    assert (plus.captions_path(3), plus.detect_path(3), plus.detections_csv) == (
        tmp_path / "captions+plus" / "3.csv", tmp_path / "detect+plus" / "3.json", tmp_path / "detect+plus.csv")
    assert (plus.merge_csv("ens2"), plus.count_pass_csv, plus.ensemble_path(3)) == (
        tmp_path / "merges" / "ens2+plus.csv", tmp_path / "count-pass+plus.csv", tmp_path / "ensemble+plus" / "3.json")
    # Shared: stage 1, and the last run's submission.csv; each recipe keeps its own final.
    assert (plus.frames_dir(3), plus.submission_csv) == (faithful.frames_dir(3), faithful.submission_csv)
    assert plus.recipe_submission("second-place-plus") == tmp_path / "submissions" / "second-place-plus.csv"
    assert plus.recipe_submission("../x y") == tmp_path / "submissions" / "_x_y.csv"
    # A name the studio listed ("v4+plus") is used as it is by a bare Workspace.
    assert Workspace(tmp_path).describe_path("v4+plus", 3) == plus.describe_path("v4", 3)


def test_a_variant_names_the_switches_that_are_on(tmp_path: Path) -> None:
    off: DescribeConfig = load_recipe("second-place").configs["v4"]
    assert variant_of(off) == ""
    every = off.model_copy(update=dict.fromkeys(DESCRIBE_SWITCHES, True))
    assert variant_of(every) == PLUS
    one = off.model_copy(update={DESCRIBE_SWITCHES[0]: True})
    two = off.model_copy(update={DESCRIBE_SWITCHES[1]: True})
    assert variant_of(one).startswith("sw-") and variant_of(one) != variant_of(two) != PLUS
    # A switched upstream stage moves what reads it: describe-only switches keep the captions.
    partial = load_recipe(str(describe_plus_recipe(tmp_path))).output_variants()
    assert (partial["caption"], partial["detect"]) == ("", "") and partial["describe:v4"].startswith("sw-")


def test_check_pair_and_the_ab_link(tmp_path: Path) -> None:
    check_pair(["second-place", "second-place-plus"])
    for bad in (["second-place"], ["a", "a"], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="compare-recipes"):
            check_pair(bad)
    url = ab_url(tmp_path, tmp_path / "submissions" / "a.csv", tmp_path / "submissions" / "b+c.csv", port=9000)
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:9000", "/ab/new")
    assert parse_qs(parts.query) == {"a": ["submissions/a.csv"], "b": ["submissions/b+c.csv"]}


# -- two recipes, one folder ----------------------------------------------------------------------------


async def test_a_recipe_with_describe_switches_reuses_captions_and_detections_and_both_rerun_free(
    sim, synthetic_data, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    quick, partial = load_recipe("quick"), load_recipe(str(describe_plus_recipe(tmp_path)))
    _, first = await run(sim, quick, synthetic_data, results)
    assert first["frame_caption"] > 0 and first["incident_frame"] > 0
    faithful_v4 = (results / "describe" / "v4" / "0.json").read_bytes()

    outcome, second = await run(sim, partial, synthetic_data, results)
    assert outcome["failures"] == 0
    # The shared stages send nothing; only the switched describe configuration asks again.
    assert second.get("frame_caption", 0) == 0 and second.get("incident_frame", 0) == 0
    assert second["received"] > 0
    assert (results / "describe" / "v4" / "0.json").read_bytes() == faithful_v4  # not overwritten
    assert (results / "describe" / f"v4+{partial.output_variants()['describe:v4']}" / "0.json").exists()
    assert sorted(p.name for p in (results / "submissions").iterdir()) == ["quick-describe-plus.csv", "quick.csv"]

    for recipe in (quick, partial):  # switching back and forth: all cached
        _, again = await run(sim, recipe, synthetic_data, results)
        assert again["received"] == 0, recipe.name
    assert (results / "submission.csv").read_bytes() == (results / "submissions" / "quick-describe-plus.csv").read_bytes()


def shell(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COOOL_")}
    clean.update(env, COLUMNS="250")
    return subprocess.run([str(COOOL), *map(str, args)], capture_output=True, text=True, env=clean, timeout=600)


@pytest.mark.slow  # two whole second-place runs (~2 min)
async def test_compare_recipes_runs_both_compares_them_and_the_studio_starts_their_ab(
    sim, synthetic_data, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    env = {}
    for role in ROLES:
        prefix = f"COOOL_{role.upper()}"
        env.update({f"{prefix}__URLS": sim.url, f"{prefix}__MODEL": "sim-model", f"{prefix}__BACKOFF_S": "0"})
    sim.reset()
    done = shell("compare-recipes", "--data", synthetic_data.root, "--results", results, "--no-prefect", "--no-meteor",
                 "--port", "8799", env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert sim.stats()["received"] > 0
    finals = {p.stem: p for p in (results / "submissions").glob("*.csv")}
    assert sorted(finals) == ["second-place", "second-place-plus"]
    for path in finals.values():
        assert validate(read_submission(path), expected_videos=[0, 1, 2], strict=True) == []
    # Both recipes' describe outputs live side by side.
    assert (results / "describe" / "v4" / "0.json").exists() and (results / "describe" / "v4+plus" / "0.json").exists()
    # `coool compare` of the pair: agreement per column and text metrics.
    assert "Agreement per pair" in done.stdout and "Text consensus" in done.stdout
    assert "second-place-plus" in done.stdout

    # Rerunning either recipe (or the command) afterwards sends no request.
    for name in ("second-place", "second-place-plus"):
        _, again = await run(sim, load_recipe(name), synthetic_data, results)
        assert again["received"] == 0, name
    sim.reset()
    rerun = shell("compare-recipes", "--data", synthetic_data.root, "--results", results, "--no-prefect",
                  "--no-meteor", "--port", "8799", env=env)
    assert rerun.returncode == 0 and sim.stats()["received"] == 0, rerun.stderr

    # The printed link opens the studio's A/B start form with the pair chosen; one POST starts it.
    url = re.search(r"http://127\.0\.0\.1:8799/ab/new\?\S+", done.stdout)
    assert url is not None, done.stdout
    assert f"coool studio {results.resolve()}" in done.stdout
    client = TestClient(create_app(results), base_url="http://127.0.0.1")
    page = client.get(url.group(0).removeprefix("http://127.0.0.1:8799"))
    assert page.status_code == 200, page.text
    chosen = re.findall(r'<option value="([0-9a-f]+)" selected>([^<]+)</option>', page.text)
    assert [label for _, label in chosen] == ["submissions/second-place.csv", "submissions/second-place-plus.csv"]
    started = client.post("/ab/start", data={"x": chosen[0][0], "y": chosen[1][0], "csrf_token": csrf_from(page.text)},
                          follow_redirects=False)
    assert started.status_code == 303 and re.fullmatch(r"/ab/\d+", started.headers["location"])
    video = client.get(started.headers["location"], follow_redirects=True)
    assert video.status_code == 200 and "/video/0" in str(video.url)
    assert client.get("/ab/new?a=submissions/nothing.csv&b=submissions/second-place.csv").status_code == 404


def test_compare_recipes_refuses_one_recipe_twice_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coool.cli import app

    result = CliRunner().invoke(app, ["compare-recipes", "quick", "quick", "--data", str(tmp_path), "--results",
                                      str(tmp_path / "results")])
    assert result.exit_code == 2
    assert "both recipes are named 'quick'" in result.output
    assert not (tmp_path / "results").exists()
