"""Scoring a submission against a truth file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from statistics import mean

import pandas as pd
import pytest
from references import REFERENCE_DIR

from coool import schema as cols
from coool import textmetrics
from coool.score import ACCURACY_COLUMNS, score_command, score_submission
from coool.submission import SubmissionError, load_submission, write_submission

REFERENCE = REFERENCE_DIR
REAL = REFERENCE / "exp004_and_exp005_n_sample4_0.11560.csv"


@pytest.fixture(autouse=True)
def _no_spice_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(textmetrics.SPICE_ENV, raising=False)


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(cols.COLUMNS))


def row(video: int, **changes: object) -> dict[str, object]:
    base = cols.fallback_row(video)
    base.update({cols.DETECTION: 1, cols.SEVERITY: cols.SEVERITIES[1], cols.EGO: 1, cols.LABEL: cols.LABELS[0], cols.START_FRAME: 10})
    base[cols.CAPTION] = f"Ego-car drives on road number {video} past parked cars."
    base[cols.REASON] = f"A truck cuts in at junction {video} and the ego-car brakes hard."
    base.update(changes)
    return base


def identical_cider_d(texts: list[str]) -> float:
    """CIDEr-D of a corpus scored against itself, from the definition.

    With c = s, <min(g, g), g> = |g|^2, so each order n contributes cosine 1
    when g^n is non-zero, i.e. when the text has an n-gram missing from at
    least one other text (idf > 0), and 0 otherwise.
    """
    grams = []
    for text in texts:
        words = textmetrics.tokenize(text).split()
        grams.append([{tuple(words[i : i + n]) for i in range(len(words) - n + 1)} for n in range(1, 5)])
    df = Counter(g for per_text in grams for order in per_text for g in order)
    return mean(10 * sum(any(df[g] < len(texts) for g in order) for order in per_text) / 4 for per_text in grams)


# --- hand-computed cases ---------------------------------------------------------


def test_window_error_by_hand() -> None:
    truth = frame([row(0, **{cols.START_FRAME: 10}), row(1, **{cols.START_FRAME: 50}), row(2, **{cols.START_FRAME: 100})])
    guess = frame([row(0, **{cols.START_FRAME: 12}), row(1, **{cols.START_FRAME: 50}), row(2, **{cols.START_FRAME: 90})])
    # |12 - 10| + |50 - 50| + |90 - 100| = 2 + 0 + 10 -> 12 / 3
    assert score_submission(guess, truth, metrics=[textmetrics.BLEU_4]).incident_window == pytest.approx(4.0)


def test_accuracies_by_hand() -> None:
    truth = frame([row(0), row(1), row(2), row(3)])
    guess = frame(
        [
            row(0, **{cols.DETECTION: 0, cols.N_VEHICLES: 2}),
            row(1, **{cols.DETECTION: -1, cols.SEVERITY: cols.NO_CRASH, cols.N_VEHICLES: 3}),
            row(2, **{cols.LABEL: cols.UNKNOWN_LABEL, cols.N_VEHICLES: 4}),
            row(3, **{cols.EGO: 0}),
        ]
    )
    got = score_submission(guess, truth, metrics=[textmetrics.BLEU_4])
    assert got.accuracy == {
        cols.DETECTION: 0.5,  # rows 0, 1 wrong
        cols.SEVERITY: 0.75,  # row 1 wrong
        cols.EGO: 0.75,  # row 3 wrong
        cols.LABEL: 0.75,  # row 2 wrong
        cols.N_BICYCLISTS: 1.0,
        cols.N_ANIMALS: 1.0,
        cols.N_PEDESTRIANS: 1.0,
        cols.N_VEHICLES: 0.25,  # truth 0 everywhere; only row 3 says 0
    }
    assert got.leaderboard()["Incident Recognition"] == 0.75
    assert got.n_matched == 4 and got.missing_ids == [] and got.extra_ids == []


def test_missing_truth_id_counts_as_wrong() -> None:
    # Video 3 is a no-incident video; the submission's fallback row would
    # have matched it, but an absent row is wrong all the same.
    truth = frame([row(0), row(1), row(2), cols.fallback_row(3)])
    guess = frame([row(0), row(1), row(2), row(9)])
    got = score_submission(guess, truth, metrics=[textmetrics.ROUGE_L])
    assert got.missing_ids == [3] and got.extra_ids == [9]
    assert got.n_truth == 4 and got.n_matched == 3
    assert set(got.accuracy.values()) == {0.75}
    assert got.incident_window == pytest.approx(1 / 4)  # truth frame 1 against "no frame" (0)
    for column in cols.TEXT_COLUMNS:
        assert got.text[column].scores[textmetrics.ROUGE_L] == pytest.approx(0.75)  # 3 identical, 1 empty


def test_invalid_frames_raise() -> None:
    bad = frame([row(0, **{cols.DETECTION: 5})])
    with pytest.raises(SubmissionError, match="submission"):
        score_submission(bad, frame([row(0)]), metrics=[textmetrics.BLEU_4])
    with pytest.raises(SubmissionError, match="truth"):
        score_submission(frame([row(0)]), bad, metrics=[textmetrics.BLEU_4])


# --- real data -----------------------------------------------------------------------


def test_real_file_against_itself_is_perfect() -> None:
    real = load_submission(REAL)
    got = score_submission(real, real)
    assert got.n_truth == got.n_matched == 661
    assert got.incident_window == 0.0
    assert got.accuracy == {c: 1.0 for c in ACCURACY_COLUMNS}
    for column in cols.TEXT_COLUMNS:
        scores = got.text[column].scores
        assert scores[textmetrics.BLEU_4] == pytest.approx(1.0, abs=1e-6)  # smoothing constants only
        assert scores[textmetrics.ROUGE_L] == pytest.approx(1.0)
        assert scores[textmetrics.METEOR] == pytest.approx(1.0)
        # Not 10: texts whose every n-gram of some order occurs in every
        # text get 0 for that order. The exact value from the definition:
        assert scores[textmetrics.CIDER_D] == pytest.approx(identical_cider_d(list(real[column])), rel=1e-9)
        assert 9.0 < scores[textmetrics.CIDER_D] <= 10.0
        assert scores[textmetrics.SPICE] is None and "not supplied" in got.text[column].unavailable[textmetrics.SPICE]


def test_real_file_against_a_perturbed_copy() -> None:
    real = load_submission(REAL)
    guess = real.copy()
    guess.loc[:9, cols.START_FRAME] += 7  # 10 rows off by 7 frames
    guess.loc[:99, cols.DETECTION] = guess.loc[:99, cols.DETECTION].map({1: 0, 0: -1, -1: 1})  # 100 rows changed
    got = score_submission(guess.sample(frac=1, random_state=0), real, metrics=[textmetrics.BLEU_4])  # order is irrelevant
    assert got.incident_window == pytest.approx(7 * 10 / 661)
    assert got.accuracy[cols.DETECTION] == pytest.approx(561 / 661)
    assert got.accuracy[cols.LABEL] == 1.0


# --- the command ----------------------------------------------------------------------


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    write_submission(rows, path)
    return path


def test_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _write(tmp_path / "truth.csv", [row(0), row(1), row(2, **{cols.START_FRAME: 40})])
    guess = _write(tmp_path / "guess.csv", [row(0), row(1, **{cols.LABEL: cols.LABELS[3]}), row(2)])
    assert score_command(guess, truth, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["incident_window"] == pytest.approx(10.0)  # |10 - 40| / 3
    assert out["accuracy"][cols.LABEL] == pytest.approx(2 / 3)
    assert out["text"][cols.CAPTION]["scores"][textmetrics.SPICE] is None
    assert out["text"][cols.CAPTION]["scores"][textmetrics.ROUGE_L] == pytest.approx(1.0)


def test_command_prints_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _write(tmp_path / "truth.csv", [row(0), row(1)])
    assert score_command(truth, truth) == 0
    out = capsys.readouterr().out
    assert "Incident Recognition" in out and "Incident Window" in out and "SPICE unavailable" in out


def test_command_invalid_file_exits_1_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "good.csv", [row(0)])
    broken = tmp_path / "broken.csv"
    broken.write_text("video,Label\n0,x\n")
    assert score_command(broken, good) == 1
    assert "broken.csv" in capsys.readouterr().err
    assert score_command(good, broken) == 1
    err = capsys.readouterr().err
    assert "truth" in err and "broken.csv" in err
    assert score_command(tmp_path / "absent.csv", good) == 1
    assert "absent.csv" in capsys.readouterr().err
