"""``coool prompts import``: the authors' prompts from a checkout of the original, as a prompts folder."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coool.cli import app
from coool.prompt_import import (
    BASE_WITH_SNIPPET,
    SNIPPET,
    SOURCES,
    PromptImportError,
    import_prompts,
    read_prompts,
    with_snippet_placeholders,
)
from coool.prompts import load_prompt

# What each stage fills in, per imported prompt (describe: the count pass's snippet, here left out).
SNIPPET_VALUES = {"ignore_image_text": "", "ignore_image_text_inline": ""}
VALUES = {
    "detect": {"table": "| frame | path |"},
    "ensemble": {"candidates": "1) frame=5\n   before: a road\n   reason: a car stops"},
}
NAMES = {s.name for s in SOURCES} | {name for name, _ in BASE_WITH_SNIPPET} | {SNIPPET}


def fake_checkout(root: Path) -> Path:
    """A tiny stand-in for the original repository: every file, each prompt one line of ours."""
    files = {
        "002_frame_captioning/src/glm45v_image_frames_infer_perception_vllm_server.py": '''
            PROMPT_MIN = """
            Caption this frame as {"Label": "..."} and mind $5 signs.
            """.strip()
        ''',
        "003_frame_detection/src/gpt-oss-120b_infer_vllm_sc_from_frames_csv.py": '''
            SYSTEM = """Reasoning: high""".strip()
            PROMPT_BASE = f"""
            Find the frame.
            """.strip()

            def chat_json(user_prompt):
                schema_hint = 'JSON: {"frame": int}'
                return f"{schema_hint}\\n\\n{user_prompt}"
        ''',
        "005_ensemble/src/qwen3_next_infer_vllm_submit_ensemble_caption.py": '''
            CANONICAL_EGO = "ego-car"
            MAX_WORDS = 30
            SYS = "English only."
            PROMPT_PAIR_SINGLE = """
            Pairs:
            {pairs_block}
            Use '{canonical_ego}', at most {max_words} words, {{literal braces}}.
            """.strip()

            def build(pairs):
                return PROMPT_PAIR_SINGLE.format(pairs_block=pairs, canonical_ego=CANONICAL_EGO, max_words=MAX_WORDS)
        ''',
    }
    for describe, ignore, inline in (("glm45v_multi_image_infer_vllm_sc", "", ""),
                                     ("glm45v_multi_image_infer_vllm_sc_prompt_v2", "", ""),
                                     ("multi_image_infer_vllm_sc_animal_count_retry", "No text!\n\n", " No text!")):
        name = describe if "v2" in describe else "base"
        count = f"Count ({name}).\n\n{ignore}Think.\n- Animals: in the lane.{inline}\n- People: in the lane."
        text = f"Describe.\n\n{ignore}Think."
        files[f"004_description/src/{describe}.py"] = (
            f"PROMPT_COUNT: str = {count!r}.strip()\n"
            f"PROMPT_TEXT: str = {text!r}\n"
            'PROMPT_RECONCILE: str = """\nReconcile.\n"""\n'
        )
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")
    return root


def test_a_fake_checkout_is_read_without_running_it(tmp_path: Path) -> None:
    prompts = read_prompts(fake_checkout(tmp_path / "original"))
    assert set(prompts) == NAMES
    assert prompts["caption"] == 'Caption this frame as {"Label": "..."} and mind $$5 signs.\n'
    assert prompts["detect"] == 'JSON: {"frame": int}\n\nFind the frame.\n\n$table\n'
    assert prompts["detect.system"] == "Reasoning: high\n"
    assert prompts["ensemble"] == "Pairs:\n$candidates\nUse 'ego-car', at most 30 words, {literal braces}.\n"
    assert prompts["ensemble.system"] == "English only.\n"
    assert prompts["describe_counts_v2"].startswith("Count (glm45v_multi_image_infer_vllm_sc_prompt_v2).\n\nThink.")
    # The count pass's sentence becomes coool's placeholders in the base prompts, and a file of its own.
    assert prompts["describe_counts"] == (
        "Count (base).\n\n${ignore_image_text}Think.\n- Animals: in the lane.${ignore_image_text_inline}\n- People: in the lane.\n"
    )
    assert prompts["describe_texts"] == "Describe.\n\n${ignore_image_text}Think.\n"
    assert prompts["describe_reconcile"] == "Reconcile.\n"  # the describe stage appends the two results
    assert prompts[SNIPPET] == "No text!\n"


@pytest.mark.parametrize(
    ("base", "variant", "expected", "sentence"),
    [
        ("A.\n\nB.\n", "A.\n\nS.\n\nB.\n", "A.\n\n${ignore_image_text}B.\n", "S."),
        ("- a.\n- b.\n", "- a. S.\n- b.\n", "- a.${ignore_image_text_inline}\n- b.\n", "S."),
        ("A.\n", "A.\n", "A.\n", ""),
    ],
)
def test_with_snippet_placeholders(base: str, variant: str, expected: str, sentence: str) -> None:
    assert with_snippet_placeholders(base, variant, "x") == (expected, sentence)


@pytest.mark.parametrize(("base", "variant"), [("A.\n", "B.\n"), ("A.\n\nB.\n", "A.\n\nS.\n\nT.\n\nB.\n")])
def test_a_count_pass_prompt_that_differs_otherwise_is_refused(base: str, variant: str) -> None:
    with pytest.raises(PromptImportError, match="x: the count pass"):
        with_snippet_placeholders(base, variant, "x")


def test_written_prompts_load_and_render(tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    written = import_prompts(fake_checkout(tmp_path / "original"), out)
    assert sorted(p.name for p in written) == sorted(f"{name}.md" for name in NAMES)
    caption = load_prompt("caption", out)
    assert caption.render() == 'Caption this frame as {"Label": "..."} and mind $5 signs.'
    assert caption.schema == load_prompt("caption").schema  # schemas stay coool's (used by the json_schema switch)
    assert load_prompt("detect", out).system == "Reasoning: high"
    assert load_prompt("ensemble", out).render(**VALUES["ensemble"]).startswith("Pairs:\n1) frame=5")


def test_a_missing_file_or_prompt_is_named(tmp_path: Path) -> None:
    root = fake_checkout(tmp_path / "original")
    (root / "005_ensemble/src/qwen3_next_infer_vllm_submit_ensemble_caption.py").write_text("SYS = 'x'\n")
    with pytest.raises(PromptImportError, match=r"qwen3_next_infer_vllm_submit_ensemble_caption.py: no string PROMPT_PAIR_SINGLE"):
        read_prompts(root)
    (root / "005_ensemble/src/qwen3_next_infer_vllm_submit_ensemble_caption.py").unlink()
    with pytest.raises(PromptImportError, match=r"qwen3_next_infer_vllm_submit_ensemble_caption.py: missing"):
        read_prompts(root)
    with pytest.raises(PromptImportError, match="not a folder"):
        read_prompts(tmp_path / "nowhere")


def test_an_unknown_format_field_is_named(tmp_path: Path) -> None:
    root = fake_checkout(tmp_path / "original")
    path = root / "005_ensemble/src/qwen3_next_infer_vllm_submit_ensemble_caption.py"
    path.write_text(path.read_text().replace("at most {max_words}", "at most {max_words} {mood}"))
    with pytest.raises(PromptImportError, match=r"PROMPT_PAIR_SINGLE has the field \{mood\}"):
        read_prompts(root)


def test_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "prompts"
    result = runner.invoke(app, ["prompts", "import", str(fake_checkout(tmp_path / "original")), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out}: {len(NAMES)} prompt files" in result.output
    assert (out / "ensemble.md").is_file()
    bad = runner.invoke(app, ["prompts", "import", str(tmp_path / "nowhere"), "-o", str(out)])
    assert bad.exit_code == 2 and "not a folder" in bad.output and "Traceback" not in bad.output


@pytest.mark.reference
def test_the_reference_copy(original_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    import_prompts(original_dir, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.md" for name in NAMES)
    for name in sorted(NAMES):
        text = (out / f"{name}.md").read_text(encoding="utf-8")
        assert len(text) > 10, name
        # Only coool's placeholders are left, and every $ of the authors' text is escaped.
        placeholders = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text.replace("$$", "")))
        assert placeholders <= {"table", "candidates", *SNIPPET_VALUES}, (name, placeholders)
        if name.endswith(".system"):
            continue
        rendered = load_prompt(name, out).render(**VALUES.get(name, {}), **SNIPPET_VALUES)
        assert "{pairs_block}" not in rendered and "{canonical_ego}" not in rendered
    # With the snippet left out, the base prompts are the authors' base prompts; filled in, the count pass's.
    counts = load_prompt("describe_counts", out)
    assert "ignore all text" not in counts.render(**SNIPPET_VALUES)
    sentence = (out / f"{SNIPPET}.md").read_text(encoding="utf-8").strip()
    filled = counts.render(ignore_image_text=sentence + "\n\n", ignore_image_text_inline=" " + sentence)
    assert filled.count("Completely ignore all text inside the image") == 2
    caption = load_prompt("caption", out).render()
    assert "ULTRATHINK" in caption and '"Incident_Detection": <integer>' in caption
    detect = load_prompt("detect", out).render(table="| frame |")
    assert detect.startswith('Return ONLY valid JSON. Schema: {"frame": int}\n\n') and detect.endswith(":\n\n| frame |")
    ensemble = load_prompt("ensemble", out).render(**VALUES["ensemble"])
    assert "'ego-car'" in ensemble and "≤ 30 words" in ensemble and "1) frame=5" in ensemble
    assert load_prompt("ensemble", out).system == "You must answer in English."
    assert load_prompt("detect", out).system == "Reasoning: high"
    assert "Completely ignore all text inside the image" in sentence


@pytest.mark.reference
async def test_second_place_runs_with_the_authors_prompts(original_dir: Path, sim, synthetic_data, tmp_path: Path) -> None:
    """The imported folder as a recipe's prompts_dir: every stage's request is the authors' words, and the
    run ends in a valid submission (against the simulated server)."""
    from coool.recipe import load_recipe
    from coool.run import Run, run_plain
    from coool.settings import ROLES, RoleSettings, Settings
    from coool.submission import read_submission, validate

    prompts = tmp_path / "authors"
    import_prompts(original_dir, prompts)
    recipe = load_recipe("second-place").model_copy(update={"prompts_dir": prompts})
    roles = {r: RoleSettings(model="sim-model", urls=[sim.url], backoff_s=0.0, max_attempts=2) for r in ROLES}
    pipeline = Run(Settings(results_dir=tmp_path / "results", **roles), recipe)
    assert pipeline.prompts["caption"].source == prompts / "caption.md"
    assert pipeline.prompts["detect"].source == prompts / "detect.md" and pipeline.prompts["ensemble"].source == prompts / "ensemble.md"
    outcome = await run_plain(pipeline, synthetic_data.videos, synthetic_data.heatmaps, concurrent=False)
    assert (outcome["videos"], outcome["failures"]) == (3, 0)
    submission = read_submission(tmp_path / "results" / "submission.csv")
    assert validate(submission, expected_videos=[0, 1, 2], strict=True) == []
    tasks = sim.stats()["tasks"]
    assert tasks["frame_caption"] == 36 and tasks["incident_frame"] == 3 * 12 and tasks["ensemble"] >= 3
    assert tasks.get("generic", 0) == 0  # every request was recognised
