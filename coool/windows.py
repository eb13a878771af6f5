"""The frames shown to the describer: PIPELINE.md Stage 4 "Frame windows".

All frame numbers are 1-based and returned in ascending order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from coool import schema as cols
from coool.parsing import coerce_int, has_hazard_clue

FRAME = "frame"  # the Stage 2 table's frame-number column


def _check_pre_post(pre: int, post: int) -> None:
    if pre < 0 or post < 0:
        raise ValueError(f"pre and post must be >= 0, got pre={pre}, post={post}")


# What the original reads as "no hazard clue" (stripped, lower-cased; nothing else is stripped).
NO_CLUE: frozenset[str] = frozenset({"", "none", "null", "na", "n/a", "node"})


def _missing(value: object) -> bool:
    # A blank CSV cell: None, or NaN when pandas read the table with its default NA values.
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_cell_int(value: object) -> int | None:
    """A caption cell as the original's caption-trigger window reads it.

    ``int(float(text))`` of the stripped text (so "1.9" is 1, truncated),
    None when the cell is blank or not a number.
    """
    if _missing(value):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return None


def is_no_clue(value: object) -> bool:
    """The original's test for "no hazard clue": blank, or one of NO_CLUE once stripped and lower-cased."""
    return _missing(value) or str(value).strip().lower() in NO_CLUE


def _trigger_position_original(rows: pd.DataFrame) -> int:
    """The original's trigger row: detection that is a number other than -1, else a clue, else most counts."""
    for position, value in enumerate(rows[cols.CAP_DETECTION]):
        detection = read_cell_int(value)
        if detection is not None and detection != -1:
            return position
    for position, value in enumerate(rows[cols.HAZARD_CLUES]):
        if not is_no_clue(value):
            return position
    best, best_sum = 0, -1
    for position, (_, row) in enumerate(rows.iterrows()):
        total = sum(read_cell_int(row[field]) or 0 for field in cols.CAPTION_COUNT_FIELDS)
        if total > best_sum:  # strictly greater: the first such row
            best, best_sum = position, total
    return best


def _trigger_position_lenient(rows: pd.DataFrame) -> int:
    """coool's trigger row (switch ``lenient_trigger``): cells read as answers are (``coerce_int``).

    A blank or non-numeric detection reads 0 and so triggers; a clue is
    "none" also with punctuation around it; negative counts count 0.
    """
    for position, value in enumerate(rows[cols.CAP_DETECTION]):
        if coerce_int(value) != -1:
            return position
    for position, value in enumerate(rows[cols.HAZARD_CLUES]):
        if has_hazard_clue(value):
            return position
    totals = [
        sum(max(coerce_int(row[field]), 0) for field in cols.CAPTION_COUNT_FIELDS)
        for _, row in rows.iterrows()
    ]
    return totals.index(max(totals))  # index() gives the first such row


def caption_trigger_window(rows: pd.DataFrame, pre: int, post: int, *, lenient: bool = False) -> list[int]:
    """Stage 4 window 1 (caption-trigger): frame numbers of N = pre+post+1 rows.

    ``rows`` is one video's Stage 2 table (sorted by frame here), best as
    saved (``load_captions(path, coerce=False)``): the original reads the
    cells as text. Trigger: the first row whose Incident_Detection is a
    number other than -1 (a blank or non-numeric one never triggers); else
    the first row whose Hazard_Clues is not blank/none/null/na/n/a/node
    (stripped, lower-cased); else the first row with the largest sum of the
    four counts (numbers truncated, blanks 0). ``lenient`` is coool's reading
    (``DescribeConfig.lenient_trigger``, see ``_trigger_position_lenient``).
    Rows trigger-pre .. trigger+post; all rows when the video has fewer than
    N; otherwise shifted to stay inside the rows, keeping exactly N. Raises
    ValueError for an empty table, missing columns or a negative pre/post.
    """
    _check_pre_post(pre, post)
    needed = (FRAME, cols.CAP_DETECTION, cols.HAZARD_CLUES, *cols.CAPTION_COUNT_FIELDS)
    missing = [column for column in needed if column not in rows.columns]
    if missing:
        raise ValueError(f"caption table lacks columns {missing}")
    if rows.empty:
        raise ValueError("caption table has no rows")
    ordered = rows.assign(**{FRAME: rows[FRAME].astype(int)}).sort_values(FRAME, kind="stable").reset_index(drop=True)
    frames = [int(frame) for frame in ordered[FRAME]]
    size = pre + post + 1
    if len(frames) < size:
        return frames
    trigger = (_trigger_position_lenient if lenient else _trigger_position_original)(ordered)
    # Clamp the start so the N rows stay inside the table.
    start = min(max(trigger - pre, 0), len(frames) - size)
    return frames[start : start + size]


def detected_frame_window(
    frame: int, first_frame: int, last_frame: int, pre: int, post: int, step: int
) -> list[int]:
    """Stage 4 window 2 (detected-frame): N = pre+post+1 frames around ``frame``.

    Frames i - pre*s .. i + post*s in steps of s. Every frame of the video
    when N exceeds its frame count; s lowered to floor(available span /
    (N-1)) when (N-1)*s is wider than the video (available span =
    last_frame - first_frame); the window shifted to stay inside
    [first_frame, last_frame], keeping its width. Choices: a detected frame
    outside the video is clamped into it first; the shift is the smallest
    that fits, so after a shift the window may step over i (i still lies
    between its first and last frame). Raises ValueError on pre or post < 0,
    step < 1 or first_frame > last_frame.
    """
    _check_pre_post(pre, post)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    if first_frame > last_frame:
        raise ValueError(f"first_frame {first_frame} > last_frame {last_frame}")
    size = pre + post + 1
    if size > last_frame - first_frame + 1:
        return list(range(first_frame, last_frame + 1))
    centre = min(max(frame, first_frame), last_frame)
    available = last_frame - first_frame
    if (size - 1) * step > available:
        step = available // (size - 1)  # size > 1 here: a 1-frame window has span 0
    width = (size - 1) * step
    start = min(max(centre - pre * step, first_frame), last_frame - width)
    return [start + k * step for k in range(size)]


def window_index_to_frame(frames: Sequence[int], index: int) -> tuple[int, bool]:
    """Stage 4 "Final start frame": (frame number, whether the index was clamped).

    Index -1 gives frame 1; otherwise the frame of the shown image at that
    index. Guard (spec: "guard an index outside the window"): an index
    outside 0..len-1 is clamped to the nearest end (so -2 gives the first
    frame, not Python's second-to-last) and the flag is True for the caller
    to record. Raises ValueError for an empty window unless the index is -1.
    """
    if index == -1:
        return 1, False
    if not frames:
        raise ValueError("no frames in the window")
    clamped = min(max(index, 0), len(frames) - 1)
    return int(frames[clamped]), clamped != index
