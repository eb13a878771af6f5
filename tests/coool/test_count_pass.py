"""The count sanity pass (v6): which rows need it, clipping, and the real ens2 file."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from coool import schema as cols
from coool.count_pass import CLIPPED, apply_count_pass, clip_counts, needs_count_pass, videos_needing_count_pass
from coool.submission import load_submission, merge, submission_text, validate


def row(video: int, **counts: int) -> dict[str, object]:
    out = cols.fallback_row(video)
    out.update({cols.DETECTION: 0, cols.START_FRAME: 30, cols.LABEL: "animal on the road"})
    names = {"bikes": cols.N_BICYCLISTS, "animals": cols.N_ANIMALS, "people": cols.N_PEDESTRIANS, "cars": cols.N_VEHICLES}
    out.update({names[k]: v for k, v in counts.items()})
    return out


@pytest.mark.parametrize(
    ("counts", "threshold", "expected"),
    [
        ({}, 10, False),
        ({"animals": 10}, 10, False),  # "exceeds": 10 is not above 10
        ({"animals": 11}, 10, True),
        ({"cars": 11}, 10, True),
        ({"people": 50}, 10, True),
        ({"bikes": 11}, 10, True),  # any count triggers, bicyclists included
        ({"cars": 3}, 2, True),
        ({"cars": 3}, 3, False),
    ],
)
def test_needs_count_pass(counts: dict[str, int], threshold: int, expected: bool) -> None:
    assert needs_count_pass(row(0, **counts), threshold) is expected


def test_clip_counts_clips_three_counts_not_bicyclists() -> None:
    assert CLIPPED == (cols.N_ANIMALS, cols.N_PEDESTRIANS, cols.N_VEHICLES)
    original = row(5, bikes=30, animals=100, people=21, cars=20)
    clipped = clip_counts(original, 20)
    assert [clipped[c] for c in cols.COUNT_COLUMNS] == [30, 20, 20, 20]
    assert original[cols.N_ANIMALS] == 100  # a copy: the input is untouched
    assert {k: v for k, v in clipped.items() if k not in cols.COUNT_COLUMNS} == {
        k: v for k, v in original.items() if k not in cols.COUNT_COLUMNS
    }


@pytest.fixture(scope="module")
def ens2(ref) -> pd.DataFrame:
    """merge(v4, exp004+exp005): ens2 before the count pass."""
    merged, _ = merge(load_submission(ref.v4), load_submission(ref.exp004_005))
    return merged


def test_videos_needing_count_pass_on_the_real_ens2(ens2: pd.DataFrame) -> None:
    # Hand-checked: 44 has 20 animals, 313 has 100 (geese), 538 has 12; no other count exceeds 10.
    assert videos_needing_count_pass(ens2) == [44, 313, 538]
    assert [ens2.loc[v, cols.N_ANIMALS] for v in (44, 313, 538)] == [20, 100, 12]
    assert videos_needing_count_pass(ens2, threshold=20) == [313]
    assert videos_needing_count_pass(ens2, threshold=100) == []


def test_apply_count_pass_without_redescription_clips_the_geese(ens2: pd.DataFrame, ref) -> None:
    out = apply_count_pass(ens2, {}, threshold=10, clip=20)
    assert out[cols.VIDEO].tolist() == list(range(661))
    expected_313 = ens2.loc[313].to_dict() | {cols.N_ANIMALS: 20}
    assert out.loc[313].to_dict() == expected_313
    unchanged = [v for v in range(661) if v != 313]
    assert out.loc[unchanged].reset_index(drop=True).equals(ens2.loc[unchanged].reset_index(drop=True))
    # Against the reference base: only 313's texts differ (the reference re-described that video).
    base = load_submission(ref.base)
    diffs = {
        (int(a[cols.VIDEO]), c)
        for a, b in zip(out.to_dict("records"), base.to_dict("records"))
        for c in cols.COLUMNS
        if a[c] != b[c]
    }
    assert diffs == {(313, cols.CAPTION), (313, cols.REASON)}
    written = pd.read_csv(io.StringIO(submission_text(out.to_dict("records"))), dtype=str, keep_default_na=False)
    assert validate(written, strict=True) == []


def test_apply_count_pass_with_redescription(ens2: pd.DataFrame, ref) -> None:
    base = load_submission(ref.base)
    redescribed = {313: base.loc[313].to_dict() | {cols.N_ANIMALS: 35, cols.N_PEDESTRIANS: 4}}
    redescribed[7] = base.loc[7].to_dict() | {cols.CAPTION: "must not be used"}  # row 7 needs no pass
    out = apply_count_pass(ens2, redescribed, threshold=10, clip=20)
    assert out.loc[313].to_dict() == base.loc[313].to_dict() | {cols.N_PEDESTRIANS: 4}  # 35 animals -> 20
    assert out.loc[7].to_dict() == ens2.loc[7].to_dict()
    # With the re-description the reference made, the result is the reference base exactly.
    assert apply_count_pass(ens2, {313: base.loc[313].to_dict()}).equals(base)


def test_apply_count_pass_types_the_video_of_a_redescription() -> None:
    frame = pd.DataFrame([row(0), row(1, cars=40)], columns=list(cols.COLUMNS))
    redescribed = {1: row(1, cars=25) | {cols.VIDEO: "1"}}
    out = apply_count_pass(frame, redescribed)
    assert out.loc[1, cols.VIDEO] == 1 and out.loc[1, cols.N_VEHICLES] == 20
    assert out.loc[0].to_dict() == row(0)
