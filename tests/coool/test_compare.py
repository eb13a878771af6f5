"""Comparing submissions without a truth file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from references import REFERENCE_DIR

from coool import schema as cols
from coool import textmetrics
from coool.compare import COMPARED_COLUMNS, compare_command, compare_submissions
from coool.submission import load_submission, read_submission, write_submission

REFERENCE = REFERENCE_DIR
FILE_A = REFERENCE / "exp004_and_exp005_n_sample4_0.11560.csv"
FILE_B = REFERENCE / "exp005_n_sample4_6_5_10_0.11500.csv"


@pytest.fixture(autouse=True)
def _no_spice_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(textmetrics.SPICE_ENV, raising=False)


def row(video: int, **changes: object) -> dict[str, object]:
    base = cols.fallback_row(video)
    base[cols.CAPTION] = f"Ego-car drives on road number {video} past parked cars."
    base.update(changes)
    return base


def test_two_real_files_agree_as_pandas_says() -> None:
    a, b = load_submission(FILE_A), load_submission(FILE_B)
    got = compare_submissions({"a": a, "b": b}, meteor=False)
    (pair,) = got.pairs
    # The same numbers straight from pandas, joined on the video id.
    both = a.merge(b, on=cols.VIDEO, suffixes=("_a", "_b"))
    assert pair.n_common == len(both) == 661
    for column in COMPARED_COLUMNS:
        expected = float((both[f"{column}_a"] == both[f"{column}_b"]).mean())
        assert pair.agreement[column] == pytest.approx(expected), column
    expected_diff = float((both[f"{cols.START_FRAME}_a"] - both[f"{cols.START_FRAME}_b"]).abs().mean())
    assert pair.start_frame_mean_abs_diff == pytest.approx(expected_diff)
    # Two different runs: they really differ somewhere, and agree often.
    assert 0 < pair.agreement[cols.DETECTION] < 1 and pair.start_frame_mean_abs_diff > 0
    # Text consensus of a against b is a scored against b as the reference.
    caption_a = next(t for t in got.texts if t.name == "a" and t.column == cols.CAPTION)
    direct = textmetrics.evaluate_texts(
        {int(v): [t] for v, t in zip(b[cols.VIDEO], b[cols.CAPTION])},
        {int(v): t for v, t in zip(a[cols.VIDEO], a[cols.CAPTION])},
        [textmetrics.CIDER_D, textmetrics.BLEU_4, textmetrics.ROUGE_L],
    )
    for metric in (textmetrics.CIDER_D, textmetrics.BLEU_4, textmetrics.ROUGE_L):
        assert caption_a.scores.scores[metric] == pytest.approx(direct.scores[metric])
    assert caption_a.scores.scores[textmetrics.METEOR] is None and "skipped" in caption_a.scores.unavailable[textmetrics.METEOR]


def test_real_file_against_itself_agrees_everywhere() -> None:
    a = read_submission(FILE_A)  # strings, as read: compare types them itself
    got = compare_submissions({"first": a, "again": a})
    (pair,) = got.pairs
    assert pair.agreement == {c: 1.0 for c in COMPARED_COLUMNS}
    assert pair.start_frame_mean_abs_diff == 0.0
    assert len(got.texts) == 4
    for item in got.texts:
        assert item.scores.n == 661
        assert item.scores.scores[textmetrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)
        assert item.scores.scores[textmetrics.ROUGE_L] == pytest.approx(1.0)
        assert item.scores.scores[textmetrics.METEOR] == pytest.approx(1.0)
        assert item.scores.scores[textmetrics.SPICE] is None


def test_partial_overlap_and_three_files() -> None:
    a = pd.DataFrame([row(0), row(1), row(2)], columns=list(cols.COLUMNS))
    b = pd.DataFrame([row(1), row(2, **{cols.START_FRAME: 31}), row(3)], columns=list(cols.COLUMNS))
    c = pd.DataFrame([row(5)], columns=list(cols.COLUMNS))
    got = compare_submissions({"a": a, "b": b, "c": c}, meteor=False)
    ab, ac, bc = got.pairs
    assert (ab.a, ab.b, ab.n_common) == ("a", "b", 2)
    assert ab.agreement[cols.START_FRAME] == 0.5 and ab.start_frame_mean_abs_diff == pytest.approx(15.0)
    assert ab.agreement[cols.CAPTION] == 1.0
    assert ac.n_common == 0 and ac.agreement[cols.DETECTION] is None and ac.start_frame_mean_abs_diff is None
    # c shares no video: nothing to score its texts against.
    caption_c = next(t for t in got.texts if t.name == "c" and t.column == cols.CAPTION)
    assert caption_c.scores.n == 0 and caption_c.scores.scores[textmetrics.ROUGE_L] is None
    # a's videos 1 and 2 have references (b's), video 0 has none and is left out.
    caption_a = next(t for t in got.texts if t.name == "a" and t.column == cols.CAPTION)
    assert caption_a.scores.n == 2 and caption_a.scores.scores[textmetrics.ROUGE_L] == pytest.approx(1.0)


def test_needs_two() -> None:
    with pytest.raises(ValueError, match="at least two"):
        compare_submissions({"a": pd.DataFrame([row(0)], columns=list(cols.COLUMNS))})


def test_command_json_and_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "one.csv"
    b = tmp_path / "two.csv"
    write_submission([row(0), row(1)], a)
    write_submission([row(0), row(1, **{cols.DETECTION: 0, cols.LABEL: cols.HAZARD_LABELS[0]})], b)
    assert compare_command([a, b], as_json=True, meteor=False) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["names"] == ["one", "two"]
    assert out["pairs"][0]["agreement"][cols.DETECTION] == 0.5
    assert compare_command([a, b], meteor=False) == 0
    text = capsys.readouterr().out
    assert "one" in text and "Agreement" in text and "1-2" in text


def test_command_invalid_file_exits_1_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.csv"
    write_submission([row(0)], good)
    broken = tmp_path / "broken.csv"
    broken.write_text("video,Label\n0,x\n")
    assert compare_command([good, broken]) == 1
    assert "broken.csv" in capsys.readouterr().err
    assert compare_command([good, tmp_path / "absent.csv"]) == 1
    assert "absent.csv" in capsys.readouterr().err
    assert compare_command([good]) == 1
    assert "at least two" in capsys.readouterr().err


@pytest.mark.slow
def test_all_eight_reference_files_compare_with_every_metric() -> None:
    # How long it takes is a benchmark's business, not a test's (a loaded machine is no bug).
    paths = sorted(REFERENCE.glob("*.csv"))
    assert len(paths) == 8
    got = compare_submissions({p.stem: load_submission(p) for p in paths})
    assert len(got.pairs) == 28 and len(got.texts) == 16
    assert all(t.scores.scores[textmetrics.METEOR] is not None for t in got.texts)
