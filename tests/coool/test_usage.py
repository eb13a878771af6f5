"""Issue #16.1 and #12.5-6: every response's token usage recorded per (stage, video), summed per
stage and per run, shown with each role's model and revision; ``coool estimate`` on a finished run.

Against the simulated model server (a test double: its ``usage`` is an estimate it makes, and
its /sim/stats sums what it reported, so the counts can be checked exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types import CompletionUsage
from typer.testing import CliRunner

from coool.cli import app
from coool.estimate import estimate_run, usage_file
from coool.llm import Usage
from coool.recipe import load_recipe
from coool.run import Run, run_plain
from coool.settings import ROLES, RoleSettings, Settings
from coool.summary import run_summary_markdown

REVISION = "0123456789abcdef0123456789abcdef01234567"


def settings_for(sim, results: Path) -> Settings:
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    roles["captioner"] = RoleSettings(model="sim-model", revision=REVISION, urls=[sim.url], backoff_s=0.0, max_attempts=2)
    return Settings(results_dir=results, **roles)


def outputs_usage(run: Run, videos: list[int]) -> dict[str, Usage]:
    """Per stage, the usage its output files record."""
    totals = {}
    for stage in run.recipe.stages():
        total = Usage()
        for video in videos:
            path = run.kind(stage).output(run, stage, video)
            if path.exists():
                total.add(json.loads(usage_file(path).read_text())["usage"])
        totals[stage.name] = total
    return totals


def test_usage_reads_prompt_completion_and_cached_tokens() -> None:
    usage = Usage()
    usage.add_response(CompletionUsage(prompt_tokens=100, completion_tokens=7, total_tokens=107))
    assert usage.cached_prompt_tokens is None  # not reported: unknown, not zero
    usage.add_response(CompletionUsage.model_validate(
        {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53, "prompt_tokens_details": {"cached_tokens": 32}}
    ))
    usage.add_response(None)
    assert usage.as_dict() == {
        "responses": 2, "prompt_tokens": 150, "completion_tokens": 10, "cached_prompt_tokens": 32, "unreported": 1
    }
    again = Usage.from_dict(usage.as_dict())
    again.add(usage)
    assert (again.prompt_tokens, again.cached_prompt_tokens, again.unreported) == (300, 64, 2)


async def test_every_token_recorded_per_stage_video_and_summed(sim, synthetic_data, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = Run(settings_for(sim, results), load_recipe("second-place"))
    sim.reset()
    outcome = await run_plain(run, synthetic_data.videos, synthetic_data.heatmaps)
    assert outcome["failures"] == 0
    stats = sim.stats()
    recorded = outputs_usage(run, [0, 1, 2])

    # Every response's usage is in an output file: the sums are exactly what the server reported.
    total = Usage()
    for usage in recorded.values():
        total.add(usage)
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert (total.prompt_tokens, total.completion_tokens) == (stats["prompt_tokens"], stats["completion_tokens"])
    assert total.responses == stats["completed"]
    assert total.cached_prompt_tokens is None  # the simulated server reports no prefix cache

    # Each stage's report sums its videos' records; the run sums its stages.
    reports = {r["stage"]: r for r in outcome["stages"]}
    for stage, usage in recorded.items():
        assert Usage.from_dict(reports[stage]["tokens"]).as_dict() == usage.as_dict(), stage
        for video, unit in reports[stage]["units"].items():
            if unit["status"] == "done":
                assert unit["key"] == run.stage_key(next(s for s in run.recipe.stages() if s.name == stage), int(video))
    assert outcome["tokens"]["prompt_tokens"] == stats["prompt_tokens"]
    assert reports["count-pass"]["skipped_why"]  # why videos were skipped, in the report

    # The run summary: every stage (stage 1 too), tokens, each role's model and revision.
    markdown = run_summary_markdown(run, [0, 1, 2], outcome["stages"], outcome["seconds"])
    assert "| frames |" in markdown and "| count-pass |" in markdown
    assert f"| captioner | `sim-model` | {REVISION} |" in markdown
    assert "| detector | `sim-model` | not pinned" in markdown
    assert f"prompt {stats['prompt_tokens']:,}" in markdown

    # A rerun costs nothing: every stage comes from its outputs, no tokens this time.
    sim.reset()
    again = await run_plain(Run(settings_for(sim, results), load_recipe("second-place")), synthetic_data.videos,
                            synthetic_data.heatmaps)
    assert again["tokens"]["prompt_tokens"] == 0 and sim.stats()["prompt_tokens"] == 0

    # coool estimate: per-video means of the sample times the videos asked for.
    est = estimate_run(run, 661)
    by_stage = {s.stage: s for s in est.stages}
    caption = by_stage["caption"]
    assert caption.measured == 3 and caption.missing == 0
    assert caption.projected("prompt_tokens", 661)[0] == pytest.approx(recorded["caption"].prompt_tokens / 3 * 661)
    counted = by_stage["count-pass"]
    assert counted.counted == 3 and counted.without_work == reports["count-pass"]["skipped"]
    roles = est.by_role()
    projected = sum(t["prompt_tokens"] for t in roles.values())
    assert projected == pytest.approx(total.prompt_tokens / 3 * 661)

    # The command: a table, and JSON with the sample size, the spread and what it can't know.
    cli = CliRunner()
    shown = cli.invoke(app, ["estimate", str(results), "--videos", "661", "--recipe", "second-place", "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["sample_videos"] == 3 and data["videos"] == 661
    cap = next(s for s in data["stages"] if s["stage"] == "caption")
    low, high = cap["prompt_tokens"]["interval_95"]
    assert low <= cap["prompt_tokens"]["projected"] <= high and cap["prompt_tokens"]["stdev_per_video"] >= 0
    assert any("re-asks" in c for c in data["caveats"])
    table = cli.invoke(app, ["estimate", str(results), "--videos", "100", "--recipe", "second-place"])
    assert table.exit_code == 0 and "tokens per role" in table.output and "captioner" in table.output


def test_estimate_of_an_empty_folder_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["estimate", str(tmp_path), "--videos", "661"])
    assert result.exit_code == 2 and "no finished videos" in result.output
    missing = CliRunner().invoke(app, ["estimate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such results folder" in missing.output


def test_coool_run_prints_models_revisions_and_tokens(sim, synthetic_data, tmp_path: Path, monkeypatch) -> None:
    from roles import point_roles_at

    for key, value in point_roles_at(sim.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COOOL_CAPTIONER__REVISION", REVISION)
    sim.reset()
    result = CliRunner().invoke(
        app, ["run", "--data", str(synthetic_data.root), "--results", str(tmp_path), "--recipe", "quick", "--no-prefect"]
    )
    assert result.exit_code == 0, result.output
    stats = sim.stats()
    assert f"captioner: sim-model  revision {REVISION}" in result.output
    assert "detector: sim-model  revision not pinned" in result.output
    assert f"tokens (this run): prompt {stats['prompt_tokens']:,}, completion {stats['completion_tokens']:,}" in result.output
    assert "frames: 3 done" in result.output
    for stage in ("caption", "detect", "describe:v4"):
        assert f"{stage}: 3 done" in result.output and f"{stage}: " in result.output
    caption = next(line for line in result.output.splitlines() if line.startswith("caption: "))
    assert "requests, tokens: prompt " in caption
