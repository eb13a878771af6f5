"""Tests for coool.voting: PIPELINE.md Stage 3 "Decision", Stage 4 voting."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coool import schema as cols
from coool.parsing import coerce_answer
from coool.voting import (
    consistent,
    decide_incident_frame,
    empty_fields,
    majority,
    median_count,
    most_common_frame,
    vote_samples,
    vote_start_index,
)

SEV0, SEV1, SEV2, SEV3, SEV4, SEV5, SEV6 = cols.SEVERITIES

# ------------------------------------------------------------ majority & medians


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3, 1, 3, 1, 2], 1),  # tie 3/1 -> smallest
        ([2, 2, 1], 2),
        (["b", "a", "b"], "b"),
        (["b", "a"], "a"),
        ([-1, 0, 1], -1),
        ([None, None, 5], 5),
        ([None, None], None),
        ([], None),
    ],
)
def test_majority(values: list, expected: object) -> None:
    assert majority(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2], 2),  # 1.5 -> 2
        ([2, 3], 2),  # 2.5 -> 2: halves to even
        ([3, 4], 4),  # 3.5 -> 4
        ([0, 0, 5], 0),
        ([1, 2, 3, 10], 2),  # 2.5 -> 2
        ([7], 7),
        ([], 0),
    ],
)
def test_median_count(values: list[int], expected: int) -> None:
    assert median_count(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([-1, -1, 3], 3),
        ([-1, -1, -1], -1),
        ([2, 5, 5, 2, -1, -1, -1], 2),  # -1 ignored although most common; tie 2/5 -> 2
        ([None, -1], -1),
        ([None], 0),
        ([], 0),
    ],
)
def test_vote_start_index(values: list[int | None], expected: int) -> None:
    assert vote_start_index(values) == expected


# ------------------------------------------------------------ stage 3 decision


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([120, 120, 80, -1], 120),
        ([5, 9], 5),  # tie -> smallest
        ([7], 7),
        # majority -1; sorted [-1,-1,50,60], upper median index 2 -> 50
        ([50, -1, 60, -1], 50),
        # tie -1/40 -> -1 wins (smallest); sorted [-1,-1,40,40,60,70][3] -> 40
        ([70, 40, -1, 60, 40, -1], 40),
        # majority -1 and upper median -1 -> frame 1
        ([-1, 60, -1, 50, -1], 1),
        ([-1], 1),
    ],
)
def test_decide_incident_frame(frames: list[int], expected: int) -> None:
    assert decide_incident_frame(frames) == expected


def test_decide_incident_frame_empty_is_none() -> None:
    assert decide_incident_frame([]) is None


def test_most_common_frame() -> None:
    assert most_common_frame([10, 20, 20, 10, 5]) == 10
    assert most_common_frame([30, 1, 30]) == 30
    with pytest.raises(ValueError):
        most_common_frame([])


# ------------------------------------------------------------ re-ask


def test_empty_fields() -> None:
    voted = {cols.DETECTION: 0, cols.SEVERITY: "", cols.LABEL: None, cols.CAPTION: "  \n", cols.REASON: "x", cols.EGO: 0}
    fields = [cols.DETECTION, cols.SEVERITY, cols.LABEL, cols.CAPTION, cols.REASON, cols.EGO, cols.N_ANIMALS]
    assert empty_fields(voted, fields) == [cols.SEVERITY, cols.LABEL, cols.CAPTION, cols.N_ANIMALS]


# ------------------------------------------------------------ vote_samples


def answer(start, det, sev, ego, label, counts, caption, reason) -> dict:
    return dict(zip(cols.ANSWER_FIELDS, (start, det, sev, ego, label, *counts, caption, reason)))


def test_vote_samples_hand_checked() -> None:
    samples = [
        answer(3, 1, SEV1, 1, "ego-car hits a vehicle", (0, 0, 0, 1), "c1", "r1"),
        answer(4, 1, "3", 1, "ego-car hits a pedestrian", (0, 0, 1, 2), "c2", "r2"),
        answer(-1, 0, SEV0, 0, "pedestrian on the road", (0, 0, 1, 0), "c3", "r3"),
        # agrees on all four, but its texts are empty: skipped
        answer(3, 1, SEV1, 1, "ego-car hits a vehicle", (0, 0, 0, 3), "", ""),
    ]
    assert vote_samples(samples) == answer(
        3,  # [3,4,3] after dropping -1
        1,
        SEV1,  # SEV1 x2, SEV3 x1, SEV0 x1
        1,
        "ego-car hits a vehicle",
        (0, 0, 0, 2),  # pedestrians median 0.5 -> 0, vehicles median 1.5 -> 2
        "c1",
        "r1",
    )


def test_vote_samples_texts_from_best_agreeing_sample() -> None:
    samples = [
        answer(1, 0, SEV0, 0, "animal on the road", (0, 1, 0, 0), "c1", "r1"),  # agrees 1/4 (sev)
        answer(2, 1, SEV6, 0, "car hits barrier", (0, 0, 0, 1), "c2", "r2"),  # agrees 4/4
        answer(2, 1, SEV6, 0, "car hits barrier", (0, 0, 0, 1), "c3", "r3"),  # 4/4, later
    ]
    voted = vote_samples(samples)
    assert (voted[cols.CAPTION], voted[cols.REASON]) == ("c2", "r2")


def test_vote_samples_categorical_ties_then_texts() -> None:
    samples = [
        answer(1, 1, SEV1, 1, "ego-car hits a vehicle", (0, 0, 0, 1), "c1", "r1"),
        answer(1, 0, SEV0, 0, "vehicle overtakes", (0, 0, 0, 1), "c2", "r2"),
    ]
    # detection tie 0/1 -> 0, ego tie -> 0, severity tie -> SEV0, label tie -> "ego-car ..." (sorts first)
    voted = vote_samples(samples)
    assert voted[cols.DETECTION] == 0 and voted[cols.SEVERITY] == SEV0 and voted[cols.EGO] == 0
    assert voted[cols.LABEL] == "ego-car hits a vehicle"
    # sample 1 agrees on label only (1), sample 2 on detection, severity, ego (3)
    assert voted[cols.CAPTION] == "c2"


def test_vote_samples_all_texts_empty() -> None:
    samples = [
        answer(0, 1, SEV6, 0, "car flipped over", (0, 0, 0, 1), "", ""),
        answer(0, 1, SEV6, 0, "car flipped over", (0, 0, 0, 1), "  ", None),
    ]
    voted = vote_samples(samples)
    assert voted[cols.CAPTION] == "" and voted[cols.REASON] == ""
    assert empty_fields(voted, cols.TEXT_COLUMNS) == [cols.CAPTION, cols.REASON]


def test_vote_samples_prefers_sample_with_both_texts() -> None:
    samples = [
        answer(0, 1, SEV6, 0, "car flipped over", (0, 0, 0, 1), "only caption", ""),
        answer(0, 0, SEV0, 0, "unknown", (0, 0, 0, 1), "c2", "r2"),
        answer(0, 1, SEV6, 0, "car flipped over", (0, 0, 0, 1), "c3", ""),
    ]
    voted = vote_samples(samples)
    assert (voted[cols.CAPTION], voted[cols.REASON]) == ("c2", "r2")


def test_vote_samples_canonicalises_and_drops_unmappable() -> None:
    samples = [
        {cols.SEVERITY: "3", cols.LABEL: "fog"},
        {cols.SEVERITY: SEV3, cols.LABEL: "Ego car hits a pedestrian"},
        {cols.SEVERITY: SEV1, cols.LABEL: "mist"},
        {cols.SEVERITY: "banana", cols.LABEL: "haze"},
    ]
    voted = vote_samples(samples)
    assert voted[cols.SEVERITY] == SEV3
    assert voted[cols.LABEL] == "ego-car hits a pedestrian"  # the only mappable label


def test_vote_samples_absent_fields_are_none() -> None:
    # A texts-prompt sample: start index and texts only.
    samples = [coerce_answer({cols.START_FRAME: -1, cols.CAPTION: "c", cols.REASON: "r"}) for _ in range(2)]
    voted = vote_samples(samples)
    assert voted[cols.START_FRAME] == -1
    assert (voted[cols.CAPTION], voted[cols.REASON]) == ("c", "r")
    others = [f for f in cols.ANSWER_FIELDS if f not in (cols.START_FRAME, *cols.TEXT_COLUMNS)]
    assert all(voted[f] is None for f in others)
    assert vote_samples([]) == {field: None for field in cols.ANSWER_FIELDS}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
field_values = {
    cols.DETECTION: st.sampled_from([-1, 0, 1, 2, "1", None]),
    cols.SEVERITY: st.sampled_from([*cols.SEVERITIES, "3", "unknown", "", None]),
    cols.EGO: st.sampled_from([0, 1, "1", 5, None]),
    cols.LABEL: st.sampled_from([*cols.LABELS, "fog", "Vehicle Overtakes", "", None]),
}
raw_answers = st.fixed_dictionaries(
    {},
    optional={field: field_values.get(field, json_values) for field in cols.ANSWER_FIELDS},
)


@settings(max_examples=150, deadline=None)
@given(st.lists(raw_answers, max_size=6))
def test_vote_samples_always_allowed(raw: list[dict]) -> None:
    samples = [coerce_answer(obj) for obj in raw]
    voted = vote_samples(samples)
    assert list(voted) == list(cols.ANSWER_FIELDS)
    assert voted[cols.DETECTION] in (None, *cols.DETECTION_VALUES)
    assert voted[cols.EGO] in (None, *cols.EGO_VALUES)
    assert voted[cols.SEVERITY] in (None, *cols.SEVERITIES)
    assert voted[cols.LABEL] in (None, *cols.LABELS)
    for field in cols.COUNT_COLUMNS:
        assert voted[field] is None or (isinstance(voted[field], int) and voted[field] >= 0)
    starts = {s[cols.START_FRAME] for s in samples if s[cols.START_FRAME] is not None}
    assert voted[cols.START_FRAME] is None if not starts else voted[cols.START_FRAME] in starts
    for field in cols.TEXT_COLUMNS:
        assert voted[field] is None or any(voted[field] == s[field] for s in samples)


# ------------------------------------------------------------ consistent


def test_consistent_no_incident() -> None:
    row = answer(-1, -1, SEV3, 1, "ego-car hits a pedestrian", (1, 2, 3, 4), "c", "r")
    before = copy.deepcopy(row)
    assert consistent(row) == answer(-1, -1, SEV0, 0, "unknown", (0, 0, 0, 0), "c", "r")
    assert row == before  # input untouched


def test_consistent_keeps_start_index_and_texts() -> None:
    row = answer(5, -1, SEV0, 0, "unknown", (0, 0, 0, 0), "c", "r")
    assert consistent(row) == row


def test_consistent_hazard() -> None:
    row = answer(2, 0, SEV4, 1, "vehicle drives into another vehicle", (0, 0, 1, 2), "c", "r")
    assert consistent(row) == answer(2, 0, SEV0, 1, "unknown", (0, 0, 1, 2), "c", "r")
    kept = answer(2, 0, None, 0, "pedestrian on the road", (0, 0, 1, 0), "c", "r")
    assert consistent(kept) == answer(2, 0, SEV0, 0, "pedestrian on the road", (0, 0, 1, 0), "c", "r")
    assert consistent(answer(2, 0, SEV0, 0, None, (0, 0, 0, 0), "c", "r"))[cols.LABEL] == "unknown"


@pytest.mark.parametrize(("ego", "severity"), [(1, SEV1), (0, SEV6), (None, SEV6)])
def test_consistent_accident_without_crash(ego: int | None, severity: str) -> None:
    row = answer(0, 1, SEV0, ego, "car hits barrier", (0, 0, 0, 1), "c", "r")
    assert consistent(row)[cols.SEVERITY] == severity
    row[cols.SEVERITY] = None
    assert consistent(row)[cols.SEVERITY] == severity


def test_consistent_accident_kept_and_label_filled() -> None:
    row = answer(0, 1, SEV2, 1, None, (0, 0, 0, 1), "c", "r")
    out = consistent(row)
    assert out[cols.SEVERITY] == SEV2  # a valid crash severity is left as is
    assert out[cols.LABEL] == "unknown"
    # ego/severity mismatch is not the guard's business (documented)
    assert consistent(answer(0, 1, SEV1, 0, "car hits barrier", (0,) * 4, "c", "r"))[cols.SEVERITY] == SEV1


def test_consistent_unknown_detection_untouched() -> None:
    row = answer(0, None, SEV0, None, None, (1, 1, 1, 1), "c", "r")
    assert consistent(row) == row


def rule_violations(row: dict) -> list[str]:
    problems = []
    detection = row[cols.DETECTION]
    if detection == -1:
        if row[cols.SEVERITY] != SEV0 or row[cols.EGO] != 0 or row[cols.LABEL] != "unknown":
            problems.append("-1 categorical")
        if any(row[f] != 0 for f in cols.COUNT_COLUMNS):
            problems.append("-1 counts")
    elif detection == 0:
        if row[cols.SEVERITY] != SEV0 or row[cols.LABEL] not in cols.HAZARD_LABELS:
            problems.append("0")
    elif detection == 1:
        if row[cols.SEVERITY] in (None, SEV0) or row[cols.LABEL] is None:
            problems.append("1")
    return problems


voted_rows = st.fixed_dictionaries(
    {
        cols.START_FRAME: st.integers(-1, 20),
        cols.DETECTION: st.sampled_from(cols.DETECTION_VALUES),
        cols.SEVERITY: st.sampled_from([*cols.SEVERITIES, None]),
        cols.EGO: st.sampled_from([*cols.EGO_VALUES, None]),
        cols.LABEL: st.sampled_from([*cols.LABELS, None]),
        **{f: st.integers(0, 30) for f in cols.COUNT_COLUMNS},
        cols.CAPTION: st.text(max_size=5),
        cols.REASON: st.text(max_size=5),
    }
)


@settings(max_examples=300, deadline=None)
@given(voted_rows)
def test_consistent_always_satisfies_rules(row: dict) -> None:
    out = consistent(row)
    assert rule_violations(out) == []
    assert consistent(out) == out  # idempotent
    assert out[cols.DETECTION] == row[cols.DETECTION] and out[cols.START_FRAME] == row[cols.START_FRAME]
    assert (out[cols.CAPTION], out[cols.REASON]) == (row[cols.CAPTION], row[cols.REASON])
    if not rule_violations(row):
        assert out == row  # a consistent row passes through unchanged


# ------------------------------------------------------------ vote_original (faithful)


def test_vote_original_hand_checked() -> None:
    from coool.voting import vote_original

    base = {cols.START_FRAME: -1, cols.DETECTION: 1, cols.SEVERITY: "", cols.EGO: 1, cols.LABEL: "unknown",
            cols.N_BICYCLISTS: 0, cols.N_ANIMALS: 0, cols.N_PEDESTRIANS: 0, cols.N_VEHICLES: 1,
            cols.CAPTION: "", cols.REASON: "first"}
    samples = [
        base,
        {**base, cols.START_FRAME: 4, cols.SEVERITY: "1. Ego-car collided but did not stop", cols.N_VEHICLES: 2,
         cols.CAPTION: "A car.", cols.REASON: "second"},
        {**base, cols.START_FRAME: 4, cols.N_VEHICLES: 4, cols.DETECTION: 0},
        {**base, cols.SEVERITY: "1. Ego-car collided but did not stop", cols.N_VEHICLES: 5},
    ]
    voted = vote_original(samples)
    assert voted[cols.SEVERITY] == ""  # a 2-2 tie: the blank sorts first
    assert voted[cols.N_VEHICLES] == 3  # median of 1, 2, 4, 5
    assert voted[cols.START_FRAME] == 4  # majority ignoring -1
    assert (voted[cols.CAPTION], voted[cols.REASON]) == ("", "first")  # the first best-agreeing sample, blank or not
    assert list(voted)[:5] == [cols.DETECTION, cols.EGO, cols.SEVERITY, cols.LABEL, cols.N_BICYCLISTS]
    assert vote_original([]) == {}
    assert vote_original([{cols.START_FRAME: -1}, {cols.START_FRAME: -1}]) == {cols.START_FRAME: -1}
