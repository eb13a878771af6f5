"""Recipes: the two shipped ones, broken ones with clear errors, stages and phases."""

from __future__ import annotations

from pathlib import Path

import pytest

from coool.recipe import RECIPES_DIR, Phase, RecipeError, Stage, load_recipe, phases, waves

EIGHT = ["exp001", "exp002", "exp004", "exp005", "v3", "v3-prompt2", "v4", "v5"]


def test_both_recipes_load_by_name_and_by_path() -> None:
    # coool/recipes (package data) holds faithful's second-place-plus too since #13 moved the recipes there.
    assert sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) == ["quick", "second-place", "second-place-plus"]
    for name in ("quick", "second-place", "second-place-plus"):
        assert load_recipe(name) == load_recipe(RECIPES_DIR / f"{name}.yaml")


def test_second_place_is_the_spec_method() -> None:
    r = load_recipe("second-place")
    assert r.name == "second-place" and r.caption.every == 10
    assert r.describe == EIGHT
    assert {n: (m.primary, m.fallback) for n, m in r.merges.items()} == {
        "exp001+exp002": ("exp001", "exp002"),
        "exp004+exp005": ("exp004", "exp005"),
        "ens2": ("v4", "exp004+exp005"),
    }
    cp = r.count_pass
    assert (cp.input, cp.config, cp.threshold, cp.clip, cp.name) == ("ens2", "v6-counts", 10, 20, "ens2-counts")
    e = r.ensemble
    assert e.base == "ens2-counts" and e.inputs == ["exp001+exp002", "exp004+exp005", "v5", "v3", "v4", "v3-prompt2"]
    assert (e.temperature, e.top_p, e.top_k, e.seed) == (0.7, 0.8, 20, 42)
    assert r.final == "ensemble"
    assert r.submissions() == [*EIGHT, "exp001+exp002", "exp004+exp005", "ens2", "ens2-counts", "ensemble"]
    assert r.describe_sources("ens2-counts") == {"v4", "exp004", "exp005"}
    assert r.describe_sources("ensemble") == set(EIGHT)


def test_second_place_phases() -> None:
    plan = phases(load_recipe("second-place").stages())
    assert [p.role for p in plan] == ["captioner", "detector", "captioner", "describer", "ensembler"]
    assert [[s.name for s in p.stages] for p in plan] == [
        ["caption", "describe:exp001"],
        ["detect"],
        ["describe:exp002"],
        ["describe:exp004", "describe:exp005", "describe:v3", "describe:v3-prompt2", "describe:v4", "describe:v5", "count-pass"],
        ["ensemble"],
    ]
    by_name = {s.name: s for p in plan for s in p.stages}
    assert by_name["caption"] == Stage("caption", "caption", "captioner", ())
    assert by_name["describe:exp001"].deps == ("caption",)  # caption-trigger: no detector needed
    assert by_name["describe:exp002"] == Stage("describe:exp002", "describe", "captioner", ("caption", "detect"), "exp002")
    assert by_name["count-pass"] == Stage(
        "count-pass", "count-pass", "describer", ("describe:exp004", "describe:exp005", "describe:v4", "detect"), "v6-counts"
    )
    assert set(by_name["ensemble"].deps) == {f"describe:{c}" for c in EIGHT} | {"count-pass"}
    assert [p.roles for p in plan] == [["captioner"], ["detector"], ["captioner"], ["describer"], ["ensembler"]]


def test_every_phase_only_needs_what_came_before() -> None:
    done: set[str] = set()
    for phase in phases(load_recipe("second-place").stages()):
        names = {s.name for s in phase.stages}
        for stage in phase.stages:
            assert set(stage.deps) <= done | names
        done |= names


def test_concurrent_is_one_phase() -> None:
    stages = load_recipe("second-place").stages()
    (only,) = phases(stages, concurrent=True)
    assert only.role is None and only.stages == stages
    assert only.roles == ["captioner", "describer", "detector", "ensembler"]


def test_quick() -> None:
    r = load_recipe("quick")
    assert (r.describe, r.merges, r.count_pass, r.ensemble, r.final) == (["v4"], {}, None, None, "v4")
    assert [(p.role, [s.name for s in p.stages]) for p in phases(r.stages())] == [
        ("captioner", ["caption"]), ("detector", ["detect"]), ("describer", ["describe:v4"]),
    ]


def test_a_caption_trigger_recipe_needs_no_detector(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ndescribe: [exp004]\nfinal: exp004\n")
    assert [s.name for s in load_recipe(path).stages()] == ["caption", "describe:exp004"]


def test_phases_with_unmet_dependencies() -> None:
    with pytest.raises(RecipeError, match=r"unmet dependencies: \['b'\]"):
        phases([Stage("a", "caption", "captioner", ()), Stage("b", "detect", "detector", ("nowhere",))])


def test_phases_come_back_to_a_role() -> None:
    stages = [
        Stage("a", "caption", "x", ()), Stage("b", "detect", "y", ("a",)), Stage("c", "describe", "x", ("b",)),
        Stage("d", "describe", "x", ("a",)),
    ]
    assert [(p.role, [s.name for s in p.stages]) for p in phases(stages)] == [("x", ["a", "d"]), ("y", ["b"]), ("x", ["c"])]
    assert isinstance(phases(stages)[0], Phase)


# -- broken recipes ----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "name: t\ndescribe: [v4, exp005]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\ndescribe: [v4, v9]\nfinal: v4\n", r"describe: unknown configuration\(s\) \['v9'\]"),
        (GOOD + "merges:\n  m: {primary: v4, fallback: exp004}\nfinal: m\n",
         r"merges.m.fallback: 'exp004' is not a submission defined before it"),
        (GOOD + "merges:\n  m: {primary: later, fallback: v4}\n  later: {primary: v4, fallback: exp005}\nfinal: m\n",
         r"merges.m.primary: 'later' is not a submission defined before it"),
        (GOOD + "final: ensemble\n", r"final: 'ensemble' is not a submission defined before it"),
        (GOOD + "count_pass: {input: v4, config: v7}\nfinal: v4\n", r"count_pass.config: unknown configuration 'v7'"),
        (GOOD + "ensemble: {base: v4, inputs: [v4, v5]}\nfinal: ensemble\n", r"ensemble.inputs: 'v5'"),
        (GOOD + "ensemble: {base: v4, inputs: []}\nfinal: ensemble\n", r"ensemble.inputs: List should have at least 1"),
        (GOOD + "merges:\n  v4: {primary: v4, fallback: exp005}\nfinal: v4\n", r"submission names must be unique"),
        (GOOD + "final: v4\ncolour: red\n", r"colour: Extra inputs are not permitted"),
        (GOOD + "final: v4\ndetect: {samples: 12, sample: 3}\n", r"detect.sample: Extra inputs are not permitted"),
        (GOOD + "final: v4\ndescribe_configs:\n  v4: {window: sideways, pre: 1, post: 1}\n", r"describe config 'v4'"),
        ("describe: [v4]\nfinal: v4\n", r"name: Field required"),
        ("name: t\ndescribe: []\nfinal: v4\n", r"describe: List should have at least 1 item"),
        ("name: t\ndescribe: [v4\nfinal: v4\n", r"not valid YAML"),
        ("name: t\n  describe: v4\n", r"not valid YAML"),
        ("- v4\n- v5\n", r"a recipe is a mapping of settings, got list"),
        ("", r"a recipe is a mapping of settings, got NoneType"),
        ("1: x\nname: t\ndescribe: [v4]\nfinal: v4\n", r"invalid recipe"),
    ],
    ids=[
        "unknown-config", "merge-undefined", "merge-defined-later", "final-undefined", "countpass-config",
        "ensemble-input", "ensemble-no-inputs", "duplicate-name", "unknown-key", "unknown-nested-key",
        "bad-describe-config", "no-name", "no-describe", "bad-yaml", "bad-indent", "a-list", "empty", "non-string-key",
    ],
)
def test_a_broken_recipe_names_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"nope: no such recipe \(nor .*recipes/nope.yaml\)"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_custom_configurations_and_a_prompts_folder(tmp_path: Path) -> None:
    (tmp_path / "my-prompts").mkdir()
    path = write(
        tmp_path,
        "name: custom\n"
        "prompts_dir: my-prompts\n"
        "describe: [wide]\n"
        "describe_configs:\n"
        "  wide: {window: detected-frame, pre: 20, post: 20, step: 3}\n"
        "final: wide\n",
    )
    r = load_recipe(path)
    assert r.prompts_dir == (tmp_path / "my-prompts").resolve()
    assert r.configs["wide"].size == 41 and r.configs["v4"].pre == 12
    assert [s.name for s in r.stages()] == ["caption", "detect", "describe:wide"]


def test_waves_follow_dependencies() -> None:
    recipe = load_recipe("second-place")
    describer = [p for p in phases(recipe.stages()) if p.role == "describer"][0]
    levels = [[s.name for s in wave] for wave in waves(describer.stages)]
    assert levels[-1] == ["count-pass"]
    assert "describe:v4" in levels[0]
    names = {s.name for s in describer.stages}
    seen: set[str] = set()
    for level in waves(describer.stages):  # every stage after the stages of this phase it needs
        for stage in level:
            assert set(stage.deps) & names <= seen, stage.name
        seen |= {s.name for s in level}
    assert seen == names


# -- second-place-plus (issue #14): second-place with every improvement -----------------------------------

# Recipes move to coool/recipes/ on another branch; until then this one is loaded by path.
PLUS_RECIPE = Path(__file__).resolve().parents[2] / "coool" / "recipes" / "second-place-plus.yaml"


def test_second_place_plus_is_second_place_with_every_improvement() -> None:
    from coool.improvements import catalogue

    faithful, plus = load_recipe("second-place"), load_recipe(str(PLUS_RECIPE))
    assert plus.name == "second-place-plus" and plus.improvements == "all"
    assert faithful.improvements == []
    described = {i.name for i in catalogue() if i.stage == "describe"}
    for name in faithful.describe:
        off, on = faithful.configs[name], plus.configs[name]
        assert [s for s in described if getattr(off, s)] == []
        assert sorted(s for s in described if getattr(on, s)) == sorted(described)
        # Nothing but the switches differs.
        assert off.model_copy(update={s: True for s in described}) == on
    shape = ("describe", "merges", "count_pass", "final")
    assert [getattr(faithful, f) for f in shape] == [getattr(plus, f) for f in shape]
    # Stages 2, 3 and 5: every switch on, nothing else different.
    for stage, field in (("caption", "caption"), ("detect", "detect"), ("ensemble", "ensemble")):
        switches = {i.name for i in catalogue() if i.stage == stage}
        off, on = getattr(faithful, field), getattr(plus, field)
        assert switches and not any(getattr(off, s) for s in switches) and all(getattr(on, s) for s in switches)
        assert off.model_copy(update={s: True for s in switches}) == on
    # The stages no switch changes are the same stages (same names, same parameters): shared in the cache.
    assert [s.name for s in faithful.stages()] == [s.name for s in plus.stages()]
