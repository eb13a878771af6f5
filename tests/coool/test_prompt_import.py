"""``coool prompts import``: the authors' prompts from a checkout of the original, as a prompts folder."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coool.cli import app
from coool.prompt_import import SOURCES, PromptImportError, import_prompts, read_prompts
from coool.prompts import load_prompt

# What each stage fills in, per imported prompt (the describe prompts take the reconcile context only).
VALUES = {
    "detect": {"table": "| frame | path |"},
    "ensemble": {"candidates": "1) frame=5\n   before: a road\n   reason: a car stops"},
    **{f"describe_reconcile{v}": {"reconcile_context": '{"a": 1}'} for v in ("", "_v2", "_v6")},
}


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
    for describe in ("glm45v_multi_image_infer_vllm_sc", "glm45v_multi_image_infer_vllm_sc_prompt_v2",
                     "multi_image_infer_vllm_sc_animal_count_retry"):
        files[f"004_description/src/{describe}.py"] = f'''
            PROMPT_COUNT: str = """Count ({describe})."""
            PROMPT_TEXT: str = """Describe."""
            PROMPT_RECONCILE: str = """
            Reconcile.
            """
        '''
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")
    return root


def test_a_fake_checkout_is_read_without_running_it(tmp_path: Path) -> None:
    prompts = read_prompts(fake_checkout(tmp_path / "original"))
    assert set(prompts) == {s.name for s in SOURCES}
    assert prompts["caption"] == 'Caption this frame as {"Label": "..."} and mind $$5 signs.\n'
    assert prompts["detect"] == 'JSON: {"frame": int}\n\nFind the frame.\n\n$table\n'
    assert prompts["detect.system"] == "Reasoning: high\n"
    assert prompts["ensemble"] == "Pairs:\n$candidates\nUse 'ego-car', at most 30 words, {literal braces}.\n"
    assert prompts["ensemble.system"] == "English only.\n"
    assert prompts["describe_counts_v2"] == "Count (glm45v_multi_image_infer_vllm_sc_prompt_v2).\n"
    assert prompts["describe_reconcile"] == "Reconcile.\n\n\n$reconcile_context\n"  # not stripped: as the original joins it


def test_written_prompts_load_and_render(tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    written = import_prompts(fake_checkout(tmp_path / "original"), out)
    assert sorted(p.name for p in written) == sorted(f"{s.name}.md" for s in SOURCES)
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
    assert f"{out}: {len(SOURCES)} prompt files" in result.output
    assert (out / "ensemble.md").is_file()
    bad = runner.invoke(app, ["prompts", "import", str(tmp_path / "nowhere"), "-o", str(out)])
    assert bad.exit_code == 2 and "not a folder" in bad.output and "Traceback" not in bad.output


@pytest.mark.reference
def test_the_reference_copy(original_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    import_prompts(original_dir, out)
    for source in SOURCES:
        path = out / f"{source.name}.md"
        text = path.read_text(encoding="utf-8")
        assert len(text) > 10, source.name
        # Only coool's placeholders are left, and every $ of the authors' text is escaped.
        placeholders = set(re.findall(r"(?<!\$)\$([A-Za-z_]\w*)", text.replace("$$", "")))
        assert placeholders <= {"table", "candidates", "reconcile_context"}, (source.name, placeholders)
        if source.name.endswith(".system"):
            continue
        rendered = load_prompt(source.name, out).render(**VALUES.get(source.name, {}))
        assert "{pairs_block}" not in rendered and "{canonical_ego}" not in rendered
    caption = load_prompt("caption", out).render()
    assert "ULTRATHINK" in caption and '"Incident_Detection": <integer>' in caption
    detect = load_prompt("detect", out).render(table="| frame |")
    assert detect.startswith('Return ONLY valid JSON. Schema: {"frame": int}\n\n') and detect.endswith(":\n\n| frame |")
    ensemble = load_prompt("ensemble", out).render(**VALUES["ensemble"])
    assert "'ego-car'" in ensemble and "≤ 30 words" in ensemble and "1) frame=5" in ensemble
    assert load_prompt("ensemble", out).system == "You must answer in English."
    assert load_prompt("detect", out).system == "Reasoning: high"
    assert "ignore all text inside the image" in load_prompt("describe_counts_v6", out).render()
