"""Self-consistency voting over model samples.

Implements PIPELINE.md Stage 3 "Decision" and Stage 4 "Cleaning and voting"
(vote, re-ask schedule), plus the Stage 4 reconcile consistency rules as a
post-vote guard and Stage 5's frame fallback.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from coool import schema as cols
from coool.parsing import canonical_label, canonical_severity

T = TypeVar("T", bound=Hashable)

_CATEGORICAL: tuple[str, ...] = (cols.DETECTION, cols.SEVERITY, cols.LABEL, cols.EGO)
_CANONICAL = {cols.SEVERITY: canonical_severity, cols.LABEL: canonical_label}
_EGO_SEVERITY = "1. Ego-car collided but did not stop"
_OTHERS_SEVERITY = "6. One or Multiple vehicles collided but ego-car is fine"


def majority(values: Sequence[T]) -> T | None:
    """The most common non-None value; ties -> the smallest in sort order.

    Stage 4 "Vote": categorical fields by majority (ties: smallest value in
    sort order). None when there is no non-None value.
    """
    counts = Counter(value for value in values if value is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min(value for value, count in counts.items() if count == top)


def median_count(values: Sequence[int]) -> int:
    """The median of the counts, rounded to an int; 0 for no values.

    Stage 4 "Vote": counts by median, rounded. Python's ``round`` rounds
    halves to even, so the median 2.5 gives 2 and 3.5 gives 4.
    """
    if not values:
        return 0
    return round(statistics.median(values))


def vote_start_index(values: Sequence[int | None]) -> int:
    """Majority of the start indexes ignoring -1 (ties smallest).

    Stage 4 "Vote": all -1 gives -1; none gives 0. Choice: None entries
    (absent in a sample) are ignored like missing samples.
    """
    present = [value for value in values if value is not None]
    if not present:
        return 0
    voted = majority([value for value in present if value != -1])
    return -1 if voted is None else voted


def _canonical(field: str, value: object) -> object:
    convert = _CANONICAL.get(field)
    return convert(value) if convert is not None and value is not None else value


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _pick_text_sample(samples: Sequence[Mapping], voted: Mapping, canonical: bool = True) -> Mapping:
    """The sample whose categorical fields agree most with the vote.

    Stage 4 "Vote": the two texts come from the sample that agrees with the
    voted detection, severity, label and ego on the most fields. Choices:
    ties go to the earliest sample; only samples with the most non-empty
    texts (of the two) compete, so an empty text is never chosen while
    another sample has one; a field voted None doesn't count.
    """

    def filled(sample: Mapping) -> int:
        return sum(not _is_blank(sample.get(field)) for field in cols.TEXT_COLUMNS)

    most_filled = max(filled(sample) for sample in samples)
    best: Mapping | None = None
    best_score = -1
    for sample in samples:
        if filled(sample) != most_filled:
            continue
        score = sum(
            voted[field] is not None
            and (_canonical(field, sample.get(field)) if canonical else sample.get(field)) == voted[field]
            for field in _CATEGORICAL
        )
        if score > best_score:  # strict: ties keep the earliest
            best, best_score = sample, score
    assert best is not None  # most_filled is reached by some sample
    return best


def vote_samples(samples: Sequence[Mapping], *, canonical: bool = True) -> dict:
    """The voted 11 answer fields of ``coerce_answer`` outputs.

    Stage 4 "Vote": detection, severity, label and ego by majority; counts
    by median; start index by ``vote_start_index``; the two texts from the
    best-agreeing sample (``_pick_text_sample``). Choices: severity and label
    are canonicalised before voting (a value that maps to no allowed value
    counts as absent), so the result only holds allowed values (``canonical``
    False: they vote as given); a field present in no sample comes out None
    (a text can also be None when the chosen sample lacks it). This is the
    ``blank_as_absent`` switch's vote; ``vote_original`` is the original's.
    """
    voted: dict[str, object] = {}
    for field in cols.ANSWER_FIELDS:
        if field in cols.TEXT_COLUMNS:
            continue  # chosen below, once the categorical vote is known
        values = (_canonical(field, sample.get(field)) if canonical else sample.get(field) for sample in samples)
        present = [value for value in values if value is not None]
        if not present:
            voted[field] = None
        elif field == cols.START_FRAME:
            voted[field] = vote_start_index(present)
        elif field in cols.COUNT_COLUMNS:
            voted[field] = median_count(present)
        else:
            voted[field] = majority(present)
    if samples:
        chosen = _pick_text_sample(samples, voted, canonical)
        for field in cols.TEXT_COLUMNS:
            voted[field] = chosen.get(field)
    else:
        voted.update({field: None for field in cols.TEXT_COLUMNS})
    return {field: voted[field] for field in cols.ANSWER_FIELDS}


def _original_majority(values: Sequence[object]) -> object:
    """The most common value; ties: the first in sort order ("" sorts before any text), or the
    first seen when the values cannot be sorted together."""
    counts = Counter(values)
    top = max(counts.values())
    winners = [value for value, count in counts.items() if count == top]
    try:
        return sorted(winners)[0]  # type: ignore[type-var]
    except TypeError:
        return winners[0]


def _original_median(values: Sequence[object]) -> int:
    numbers = [int(v) for v in values if isinstance(v, (int, float))]  # type: ignore[arg-type]
    return round(statistics.median(numbers)) if numbers else 0


def vote_original(samples: Sequence[Mapping]) -> dict:
    """The original's vote over cleaned samples (``parsing.clean_sample``), faithful.

    Only fields present in some sample are voted. Detection, ego, severity
    and label by majority, ties to the smallest (a blank severity beats any
    text); counts by the median, rounded half to even; the start index by
    majority ignoring -1, all -1 giving -1 and none 0. The two texts come
    from the first sample agreeing with the most of the four voted
    categorical fields (compared as strings), blank or not. No samples: {}.
    Keys come out in the original's order.
    """
    if not samples:
        return {}
    present = {field for sample in samples for field in sample}
    voted: dict[str, object] = {}

    def values(field: str) -> list[object]:
        return [sample[field] for sample in samples if field in sample]

    for field in (cols.DETECTION, cols.EGO, cols.SEVERITY, cols.LABEL):
        if field in present:
            voted[field] = _original_majority(values(field))
    for field in cols.COUNT_COLUMNS:
        if field in present:
            voted[field] = _original_median(values(field))
    if cols.START_FRAME in present:
        numbers = [v for v in values(cols.START_FRAME) if isinstance(v, (int, float))]
        others = [v for v in numbers if v != -1]
        if others:
            start = _original_majority(others)
        else:
            start = -1 if numbers else 0
        voted[cols.START_FRAME] = int(start)  # type: ignore[call-overload]

    def agreement(sample: Mapping) -> int:
        return sum(
            field in voted and field in sample and str(voted[field]) == str(sample[field]) for field in _CATEGORICAL
        )

    best = max(samples, key=agreement)  # max keeps the first of equals
    for field in cols.TEXT_COLUMNS:
        if field in best:
            voted[field] = best[field]
    return voted


def empty_fields(voted: Mapping, fields: Iterable[str]) -> list[str]:
    """The fields whose voted value is None or a blank string.

    Stage 4 "Cleaning and voting": a voted field that is empty is asked
    again. A field missing from ``voted`` counts as empty.
    """
    return [field for field in fields if _is_blank(voted.get(field))]


def decide_incident_frame(frames: Sequence[int]) -> int | None:
    """Stage 3 "Decision" over the detector's sampled frames.

    Majority vote (ties smallest); if the majority is -1, the upper median
    of the sorted list (index len // 2); if that is -1 too, frame 1.
    Choice: an empty list gives None, because the spec retries the whole
    video when no sample parses; the caller does that retry. Frames are not
    range-checked (``windows.detected_frame_window`` clamps them).
    """
    if not frames:
        return None
    voted = majority(frames)
    if voted != -1:
        return voted
    upper_median = sorted(frames)[len(frames) // 2]
    return 1 if upper_median == -1 else upper_median


def consistent(row: Mapping) -> dict:
    """A voted answer with the spec's consistency rules enforced.

    IMPROVEMENT over the original (which only asked the model to obey them
    in the reconcile prompt): detection -1 forces "0. No Crash", ego 0,
    label "unknown", counts 0; detection 0 forces "0. No Crash" and turns a
    non-hazard label (``schema.HAZARD_LABELS``) into "unknown"; detection 1
    replaces "0. No Crash" or None by severity 1 when ego is 1, else 6, and
    a None label by "unknown". Choices: the start index is left alone; a
    detection of None leaves the row unchanged (nothing to enforce against);
    ego/severity mismatches under detection 1 (e.g. ego 0 with severity 1)
    are left alone, since the spec does not say which field to trust.
    Returns a new dict; the input is untouched.
    """
    out = dict(row)
    detection = out.get(cols.DETECTION)
    if detection == -1:
        out[cols.SEVERITY] = cols.NO_CRASH
        out[cols.EGO] = 0
        out[cols.LABEL] = cols.UNKNOWN_LABEL
        out.update({field: 0 for field in cols.COUNT_COLUMNS})
    elif detection == 0:
        out[cols.SEVERITY] = cols.NO_CRASH
        if out.get(cols.LABEL) not in cols.HAZARD_LABELS:
            out[cols.LABEL] = cols.UNKNOWN_LABEL
    elif detection == 1:
        if out.get(cols.SEVERITY) in (None, cols.NO_CRASH):
            out[cols.SEVERITY] = _EGO_SEVERITY if out.get(cols.EGO) == 1 else _OTHERS_SEVERITY
        if out.get(cols.LABEL) is None:
            out[cols.LABEL] = cols.UNKNOWN_LABEL
    return out


def most_common_frame(frames: Sequence[int]) -> int:
    """The most common frame, ties smallest.

    Stage 5: a missing or unknown ensemble frame is replaced by the most
    common input frame (tie: smallest). Raises ValueError for no frames.
    """
    voted = majority(frames)
    if voted is None:
        raise ValueError("most_common_frame needs at least one frame")
    return voted
