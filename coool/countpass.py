"""The count sanity pass (v6): re-describe rows with implausible counts.

The reference found one video with 100 geese counted (text printed in the
image read as a count). Rows whose any count exceeds a threshold are
described again with prompts told to ignore text in the images, then the
animal, pedestrian and vehicle counts are clipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from coool import schema as S

# The spec clips these three; bicyclists/scooters are left as described.
CLIPPED: tuple[str, ...] = (S.N_ANIMALS, S.N_PEDESTRIANS, S.N_VEHICLES)


def needs_count_pass(row: Mapping[str, Any], threshold: int = 10) -> bool:
    return any(int(row[c]) > threshold for c in S.COUNT_COLUMNS)


def videos_needing_count_pass(submission: pd.DataFrame, threshold: int = 10) -> list[int]:
    """Ids of the rows whose any count exceeds ``threshold``, in id order."""
    return sorted(int(r[S.VIDEO]) for r in submission.to_dict("records") if needs_count_pass(r, threshold))


def clip_counts(row: Mapping[str, Any], clip: int = 20) -> dict[str, Any]:
    out = dict(row)
    for column in CLIPPED:
        out[column] = min(int(out[column]), clip)
    return out


def apply_count_pass(
    submission: pd.DataFrame,
    redescribed: Mapping[int, Mapping[str, Any]],
    threshold: int = 10,
    clip: int = 20,
) -> pd.DataFrame:
    """The submission with every row in need replaced by its re-description, clipped.

    A row in need whose re-description is missing (it failed) keeps its own
    values, clipped, so an implausible count never survives. Rows not in
    need are untouched.
    """
    rows = []
    for row in submission.to_dict("records"):
        if needs_count_pass(row, threshold):
            row = clip_counts(redescribed.get(int(row[S.VIDEO]), row), clip)
            row[S.VIDEO] = int(row[S.VIDEO])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(S.COLUMNS))
