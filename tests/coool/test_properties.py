"""Property tests (hypothesis) that complete the ones beside the stages' tests:
submission writing/validation round trips, the window index guard, the voting
rules' invariants, lenient parsing and the text and count guards, and the
describe stage's final row under any voted values.
"""

from __future__ import annotations

import io
import json
import random
import string
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coool import schema as cols
from coool.describe import PassResult, final_row
from coool.parsing import MAX_COUNT, clean_text, coerce_answer, coerce_int, parse_json_lenient
from coool.submission import SubmissionError, load_submission, submission_text, validate, write_submission
from coool.voting import (
    consistent,
    decide_incident_frame,
    majority,
    median_count,
    vote_samples,
    vote_start_index,
)
from coool.windows import window_index_to_frame

INT64_MAX = 2**63 - 1
TMP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- strategies ---------------------------------------------------------------------------------------------

# English one-sentence-ish texts: ASCII letters, digits, punctuation (quotes and commas too: CSV
# quoting must survive them), Latin accented letters, curly quotes and dashes.
_TEXT_CHARS = string.ascii_letters + string.digits + " .,;:'\"!?()-/&%$#@*+=[]{}<>|~^`_\\" + "éèüñçÅ’“”–—"
english_texts = st.text(alphabet=_TEXT_CHARS, min_size=1, max_size=80).filter(lambda t: t.strip() != "")
counts = st.integers(0, INT64_MAX) | st.integers(0, 30)


@st.composite
def valid_rows(draw: st.DrawFn, video: int) -> dict[str, object]:
    return {
        cols.VIDEO: video,
        cols.START_FRAME: draw(st.integers(1, INT64_MAX) | st.integers(1, 2000)),
        cols.DETECTION: draw(st.sampled_from(cols.DETECTION_VALUES)),
        cols.SEVERITY: draw(st.sampled_from(cols.SEVERITIES)),
        cols.EGO: draw(st.sampled_from(cols.EGO_VALUES)),
        cols.LABEL: draw(st.sampled_from(cols.LABELS)),
        **{c: draw(counts) for c in cols.COUNT_COLUMNS},
        cols.CAPTION: draw(english_texts),
        cols.REASON: draw(english_texts),
    }


@st.composite
def submissions(draw: st.DrawFn) -> list[dict[str, object]]:
    ids = draw(st.lists(st.integers(0, 10**9) | st.integers(0, 700), min_size=1, max_size=12, unique=True))
    return [draw(valid_rows(v)) for v in ids]


# -- submission round trips --------------------------------------------------------------------------------


@TMP
@given(rows=submissions(), seed=st.integers(0, 2**32 - 1))
def test_any_valid_rows_written_then_read_validate_and_equal_the_input(rows, seed, tmp_path: Path) -> None:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    path = write_submission(shuffled, tmp_path / "s.csv", expected_videos=[r[cols.VIDEO] for r in rows])
    # What was written validates (strictly, against the expected ids) ...
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert [p for p in validate(frame, expected_videos=[r[cols.VIDEO] for r in rows], strict=True)] == []
    # ... reads back equal to the input, rows sorted by video ...
    back = load_submission(path, strict=True)
    assert back.to_dict("records") == sorted(rows, key=lambda r: r[cols.VIDEO])
    # ... and the text does not depend on the order the rows came in.
    assert path.read_text(encoding="utf-8") == submission_text(rows)
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    assert header == ",".join(cols.COLUMNS) and len(lines) == len(rows)


_BREAKERS = {
    cols.VIDEO: ["-1", "1.5", "x", 2**64],
    cols.START_FRAME: [0, -3, "1.0", "", 2**63],
    cols.DETECTION: [2, -2, "yes"],
    cols.SEVERITY: ["7. Worse", "", "no crash"],
    cols.EGO: [2, -1, "true"],
    cols.LABEL: ["alien invasion", ""],
    cols.N_BICYCLISTS: [-1, "many", 2**63],
    cols.N_ANIMALS: [-5, 1.5],
    cols.N_PEDESTRIANS: ["", -1],
    cols.N_VEHICLES: ["2 cars", 10**30],
    cols.CAPTION: ["", "   ", "自车在车道内行驶。"],
    cols.REASON: ["", "Эго-автомобиль"],
}


@TMP
@given(rows=submissions(), data=st.data())
def test_any_broken_field_is_refused_and_nothing_is_written(rows, data, tmp_path: Path) -> None:
    target = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(sorted(_BREAKERS)))
    rows[target] = {**rows[target], column: data.draw(st.sampled_from(_BREAKERS[column]))}
    path = tmp_path / "out" / "s.csv"
    with pytest.raises(SubmissionError, match="refusing to write an invalid submission"):
        write_submission(rows, path)
    assert not path.parent.exists() or list(path.parent.iterdir()) == []


@TMP
@given(rows=submissions())
def test_missing_or_extra_videos_are_refused(rows, tmp_path: Path) -> None:
    ids = [r[cols.VIDEO] for r in rows]
    with pytest.raises(SubmissionError, match="missing videos"):
        write_submission(rows, tmp_path / "a.csv", expected_videos=ids + [max(ids) + 1])
    if len(rows) > 1:
        with pytest.raises(SubmissionError, match="videos not in the input"):
            write_submission(rows, tmp_path / "b.csv", expected_videos=ids[1:])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_validate_never_raises_on_any_cell(cell: str) -> None:
    for column in cols.COLUMNS:
        row = {c: str(v) for c, v in cols.fallback_row(0).items()} | {column: cell}
        validate(pd.DataFrame([row], columns=list(cols.COLUMNS)), strict=True)


# -- windows -------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=30, unique=True), st.integers(-10**40, 10**40) | st.integers(-3, 40))
def test_window_index_to_frame_always_gives_a_shown_frame(frames: list[int], index: int) -> None:
    window = sorted(frames)
    frame, clamped = window_index_to_frame(window, index)
    if index == -1:
        assert (frame, clamped) == (1, False)
    else:
        assert frame in window
        assert clamped == (not 0 <= index < len(window))
        if not clamped:
            assert frame == window[index]


# -- voting --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 5) | st.none(), max_size=15))
def test_majority_is_the_smallest_most_common_value(values: list[int | None]) -> None:
    present = [v for v in values if v is not None]
    voted = majority(values)
    if not present:
        assert voted is None
        return
    top = max(present.count(v) for v in present)
    assert present.count(voted) == top
    assert voted == min(v for v in present if present.count(v) == top)
    assert majority(list(reversed(values))) == voted  # order does not matter


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, MAX_COUNT), max_size=12))
def test_median_count_lies_between_the_samples(values: list[int]) -> None:
    voted = median_count(values)
    assert voted == 0 if not values else min(values) <= voted <= max(values)
    assert median_count(sorted(values)) == voted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1, 30) | st.none(), max_size=12))
def test_vote_start_index_is_a_sampled_index(values: list[int | None]) -> None:
    voted = vote_start_index(values)
    present = [v for v in values if v is not None]
    if not present:
        assert voted == 0
    elif all(v == -1 for v in present):
        assert voted == -1
    else:
        assert voted in present and voted != -1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1, 500), max_size=12))
def test_decide_incident_frame_is_a_sampled_frame_or_frame_1(frames: list[int]) -> None:
    decided = decide_incident_frame(frames)
    if not frames:
        assert decided is None
    else:
        assert decided == 1 or decided in frames
        assert decided != -1


field_values = {
    cols.START_FRAME: st.integers(-50, 50) | st.integers() | st.text(max_size=5),
    cols.DETECTION: st.integers(-3, 3) | st.text(max_size=3),
    cols.SEVERITY: st.sampled_from([*cols.SEVERITIES, "3", "no crash", "9. x", ""]) | st.text(max_size=10),
    cols.EGO: st.integers(-2, 3) | st.booleans(),
    cols.LABEL: st.sampled_from([*cols.LABELS, "Vehicle Overtakes", "kaiju"]) | st.text(max_size=10),
    cols.CAPTION: st.text(max_size=30),
    cols.REASON: st.text(max_size=30),
}
raw_answers = st.fixed_dictionaries(
    {}, optional={f: field_values.get(f, st.integers() | st.floats() | st.text(max_size=12)) for f in cols.ANSWER_FIELDS}
)


@settings(max_examples=150, deadline=None)
@given(st.lists(raw_answers, min_size=1, max_size=6), st.randoms())
def test_votes_of_categories_and_counts_do_not_depend_on_sample_order(raw: list[dict], rnd: random.Random) -> None:
    samples = [coerce_answer(a) for a in raw]
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = vote_samples(samples), vote_samples(shuffled)
    for f in (cols.DETECTION, cols.SEVERITY, cols.EGO, cols.LABEL, cols.START_FRAME, *cols.COUNT_COLUMNS):
        assert a[f] == b[f], f


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({
    cols.DETECTION: st.sampled_from([-1, 0, 1, None]),
    cols.SEVERITY: st.sampled_from([*cols.SEVERITIES, None]),
    cols.EGO: st.sampled_from([0, 1, None]),
    cols.LABEL: st.sampled_from([*cols.LABELS, None]),
    **{c: st.integers(0, 99) | st.none() for c in cols.COUNT_COLUMNS},
}))
def test_consistent_is_idempotent(row: dict) -> None:
    once = consistent(row)
    assert consistent(once) == once


# -- parsing, coercion, text guard ------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | \
    st.text(alphabet=string.printable.replace("`", ""), max_size=15).filter(lambda t: "</think>" not in t)
json_objects = st.dictionaries(st.text(alphabet=string.ascii_letters + " _", min_size=1, max_size=12),
                               st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) |
                                            st.dictionaries(st.text(string.ascii_letters, max_size=6), c, max_size=3),
                                            max_leaves=8),
                               min_size=1, max_size=6)
WRAPPERS = [
    "{}",
    "```json\n{}\n```",
    "Here is the answer:\n```\n{}\n```\nHope it helps.",
    "<think>The frame shows {{a car}} ... </think>\n{}",
    "Sure! {} That is all.",
]


@settings(max_examples=150, deadline=None)
@given(json_objects, st.sampled_from(WRAPPERS), st.booleans())
def test_lenient_parse_finds_the_object_whatever_wraps_it(obj: dict, wrapper: str, indent: bool) -> None:
    text = json.dumps(obj, indent=2 if indent else None, ensure_ascii=False)
    assert parse_json_lenient(wrapper.replace("{}", text, 1) if wrapper != "{}" else text) == obj


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
@example("Ego-car\r\n\tstops.\u202e\u200b\x00")
def test_clean_text_is_one_clean_line_and_idempotent(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert cleaned == cleaned.strip() and "  " not in cleaned
    assert not any(ch in cleaned for ch in "\n\r\t\x00\u202e\u200b")
    assert cleaned.split() == cleaned.split(" ") if cleaned else True


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(cols.COUNT_COLUMNS), st.integers() | st.floats() | st.text(max_size=50)))
def test_counts_are_integers_between_0_and_max_count(obj: dict) -> None:
    out = coerce_answer(obj)
    for column in cols.COUNT_COLUMNS:
        assert out[column] is None or (type(out[column]) is int and 0 <= out[column] <= MAX_COUNT)


@settings(max_examples=200, deadline=None)
@given(st.integers() | st.floats() | st.text(max_size=30) | st.none() | st.booleans() | st.lists(st.integers(), max_size=3))
def test_coerce_int_always_gives_an_int(value: object) -> None:
    assert type(coerce_int(value)) is int


# -- the describe stage's final row --------------------------------------------------------------------------


anything = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | \
    st.sampled_from([*cols.SEVERITIES, *cols.LABELS, -1, 0, 1]) | st.lists(st.integers(), max_size=2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 5000), min_size=1, max_size=24, unique=True),
    st.fixed_dictionaries({name: st.dictionaries(st.sampled_from(cols.ANSWER_FIELDS), anything)
                           for name in ("counts", "texts", "reconcile")}),
)
def test_final_row_is_strictly_valid_whatever_the_votes(window: list[int], voted: dict) -> None:
    passes = {name: PassResult(prompt=name, voted=values) for name, values in voted.items()}
    row = final_row(7, sorted(window), passes, [])
    frame = pd.read_csv(io.StringIO(submission_text([row])), dtype=str, keep_default_na=False)
    assert [p for p in validate(frame, strict=True) if p.level == "error"] == []
    assert row[cols.START_FRAME] == 1 or row[cols.START_FRAME] in window


@TMP
@given(rows=submissions(), breaks=st.lists(st.sampled_from(["\n", "\r\n", "\r", "\t"]), min_size=1, max_size=3))
def test_texts_with_line_breaks_round_trip_too(rows, breaks: list[str], tmp_path: Path) -> None:
    """Quoted CSV keeps a line break inside a text (validate only warns: texts are meant as one line)."""
    rows[0] = {**rows[0], cols.CAPTION: "Ego-car" + "".join(breaks) + "stops."}
    path = write_submission(rows, tmp_path / "s.csv")
    assert load_submission(path, strict=True).to_dict("records") == sorted(rows, key=lambda r: r[cols.VIDEO])
