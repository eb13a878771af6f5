"""Stage 4 (describe) equals the original on every golden case (issue #14, "Prove it").

The goldens in ``tests/data/goldens/describe_*.json`` are what the original
solution's own code returned (``tools/make_goldens.py``, run on a checkout
of it). These tests need only the JSON; the one marked ``reference``
regenerates the goldens from the original and checks they are the ones
committed.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coool import schema as cols
from coool.captions import TABLE_COLUMNS, load_captions
from coool.describe import PASS_FIELDS, DescribePromptSet, clean_answer, describe_video
from coool.llm import Sample
from coool.params import load_describe_configs
from coool.sim.answers import recognise_task
from coool.submission import is_english, submission_text, validate
from coool.voting import vote_original
from coool.windows import caption_trigger_window, detected_frame_window

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "tests" / "data" / "goldens"
FILES = ("describe_clean.json", "describe_vote.json", "describe_flow.json", "describe_windows.json")
V4 = load_describe_configs()["v4"]  # every switch off: the original's behaviour
PASSES = {"describe_counts": "counts", "describe_texts": "texts", "describe_reconcile": "reconcile"}


@cache
def golden(name: str) -> Any:
    return json.loads((GOLDENS / name).read_text(encoding="utf-8"))["cases"]


def _ids(cases: list[Any]) -> list[str]:
    return [str(i) for i in range(len(cases))]


# -- cleaning ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", golden("describe_clean.json"), ids=_ids(golden("describe_clean.json")))
def test_cleaning_equals_the_original(case: dict[str, Any]) -> None:
    fields = PASS_FIELDS[case["pass"]]
    cleaned = clean_answer(case["content"], fields, V4)
    if case.get("crash"):
        # Guard: JSON that is no object crashed the original; coool cleans it like an empty answer.
        assert cleaned == clean_answer("", fields, V4)
    else:
        assert list(cleaned.items()) == list(case["cleaned"].items())


def test_the_clean_goldens_cover_the_hard_cases() -> None:
    cases = golden("describe_clean.json")
    assert len(cases) >= 500
    assert sum(bool(c.get("crash")) for c in cases) >= 5
    assert sum(c.get("cleaned") == clean_answer("", PASS_FIELDS[c["pass"]], V4) for c in cases) >= 20  # unparsable
    assert sum(any(v == "" for v in (c.get("cleaned") or {}).values()) for c in cases) >= 50  # blanks


# -- voting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", golden("describe_vote.json"), ids=_ids(golden("describe_vote.json")))
def test_the_vote_equals_the_original(case: dict[str, Any]) -> None:
    voted = vote_original(case["samples"])
    assert [list(item) for item in voted.items()] == case["voted"]  # values and key order


# -- the whole describe flow: requests, re-asks, final row ---------------------------------------------------


class ScriptedByPass:
    """Answers each describe request from the golden's script of its pass; records the requests."""

    model = "golden"

    def __init__(self, script: dict[str, list[list[str]]]) -> None:
        self.script = {name: list(calls) for name, calls in script.items()}
        self.calls: list[dict[str, Any]] = []

    def image_url(self, path: str | Path) -> str:
        return Path(path).as_uri()

    def response_format(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the faithful describe stage never sends a schema")

    async def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> list[Sample]:
        content = messages[0]["content"]
        text = content[0]["text"]
        name = PASSES[recognise_task(None, None, text)]
        n = kwargs["n"]
        self.calls.append({
            "pass": name, "n": n, "temperature": kwargs["temperature"], "top_p": kwargs["top_p"],
            "top_k": kwargs["top_k"], "repetition_penalty": kwargs["repetition_penalty"],
            "max_tokens": kwargs["max_tokens"], "response_format": kwargs["response_format"],
            "parts": [part["type"] for part in content], "text": text,
        })
        queue = self.script[name]
        contents = queue.pop(0) if queue else [""] * n
        return [Sample(content=c) for c in contents]


_COMPARED = ("n", "temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "response_format", "parts")


def _per_pass(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [{k: c[k] for k in _COMPARED} for c in calls if c["pass"] == name]
            for name in ("counts", "texts", "reconcile")}


def _strictly_valid(row: dict[str, Any]) -> bool:
    frame = pd.read_csv(io.StringIO(submission_text([row])), dtype=str, keep_default_na=False)
    return validate(frame, strict=True) == []


def _field_valid(field: str, value: Any) -> bool:
    if field == cols.SEVERITY:
        return value in cols.SEVERITIES
    if field == cols.LABEL:
        return value in cols.LABELS
    if field in cols.TEXT_COLUMNS:
        return isinstance(value, str) and bool(value.strip()) and is_english(value)
    return True


@pytest.mark.parametrize("case", golden("describe_flow.json"), ids=_ids(golden("describe_flow.json")))
async def test_the_describe_flow_equals_the_original(case: dict[str, Any], tmp_path: Path) -> None:
    window = case["frames"]
    images = {f: tmp_path / f"{f:06d}.png" for f in window}
    client = ScriptedByPass(case["script"])
    prompts = DescribePromptSet.load(V4)
    result = await describe_video(client, V4, prompts, case["video"], window, images)  # type: ignore[arg-type]
    ours, theirs = _per_pass(client.calls), _per_pass(case["calls"])
    assert _strictly_valid(result.row), result.row
    if case["crash"]:
        # The original stopped there (a guard acts in coool): every request it made, coool made too.
        for name in theirs:
            assert ours[name][: len(theirs[name])] == theirs[name]
        return
    assert ours == theirs  # same requests: sampling, n, re-ask penalties, layout, response format
    reconcile_prefix = prompts.reconcile.render(**prompts.values(len(window))) + "\n\n"
    our_contexts = [c["text"].removeprefix(reconcile_prefix) for c in client.calls if c["pass"] == "reconcile"]
    assert our_contexts == [c["context"] for c in case["calls"] if c["pass"] == "reconcile"]
    original = case["row"]
    assert result.row[cols.VIDEO] == original["video"]
    if _strictly_valid({**{c: None for c in cols.COLUMNS}, **original}):
        assert result.row == {c: original[c] for c in cols.COLUMNS}
    else:
        # The original wrote an invalid row: only its invalid fields may differ (the guard).
        for field in cols.ANSWER_FIELDS:
            if _field_valid(field, original[field]):
                assert result.row[field] == original[field], field


def test_the_flow_goldens_cover_reasks_crashes_and_invalid_rows() -> None:
    cases = golden("describe_flow.json")
    assert len(cases) >= 100
    reconcile_full = [c for c in cases if sum(x["pass"] == "reconcile" and x["n"] == 4 for x in c["calls"]) > 1]
    single = [c for c in cases if any(x["n"] == 1 for x in c["calls"])]
    assert len(reconcile_full) >= 5 and len(single) >= 20
    assert sum(bool(c["crash"]) for c in cases) >= 5
    assert sum(c["row"] is not None and c["row"][cols.START_FRAME] == 1 for c in cases) >= 5


# -- frame selection -------------------------------------------------------------------------------------------


def _caption_table(rows: list[dict[str, Any]], tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "captions.csv"
    frame = pd.DataFrame([{c: row.get(c, "") for c in TABLE_COLUMNS} for row in rows], columns=list(TABLE_COLUMNS))
    frame.to_csv(path, index=False)
    return load_captions(path)


_CAPTION_CASES = golden("describe_windows.json")["caption_trigger"]
_ITEM4 = pytest.mark.xfail(
    reason="reading a missing detection or a 'node' hazard clue is issue #14 item 4 (the prompts branch)",
    strict=False,
)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=_ITEM4) if c["item4"] else c for c in _CAPTION_CASES],
    ids=_ids(_CAPTION_CASES),
)
def test_the_caption_trigger_window_equals_the_original(case: dict[str, Any], tmp_path: Path) -> None:
    table = _caption_table(case["rows"], tmp_path)
    assert caption_trigger_window(table, case["pre"], case["post"]) == case["frames"]


_DETECTED_CASES = golden("describe_windows.json")["detected_frame"]


@pytest.mark.parametrize("case", _DETECTED_CASES, ids=_ids(_DETECTED_CASES))
def test_the_detected_frame_window_equals_the_original(case: dict[str, Any]) -> None:
    frames = detected_frame_window(case["frame"], 1, case["frame_count"], case["pre"], case["post"], case["step"])
    assert frames == case["frames"]


# -- the goldens are the original's -----------------------------------------------------------------------------


@pytest.mark.reference
def test_the_goldens_are_what_the_original_returns(original_dir: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_goldens.py"), str(original_dir), "-o", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    for name in FILES:
        assert json.loads((tmp_path / name).read_text(encoding="utf-8")) == \
            json.loads((GOLDENS / name).read_text(encoding="utf-8")), name
