"""Tests for coool.windows: PIPELINE.md Stage 4 "Frame windows" and final start frame."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coool import schema as cols
from coool.windows import caption_trigger_window, detected_frame_window, is_no_clue, read_cell_int, window_index_to_frame

# ------------------------------------------------------------ detected-frame window


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # exp002 (11/2/6) in the middle of a 300-frame video: 100-66 .. 100+12
        ((100, 1, 300, 11, 2, 6), list(range(34, 113, 6))),
        # v3 (6/5/10), not shifted
        ((100, 1, 300, 6, 5, 10), list(range(40, 151, 10))),
        # near the start: 20-66 < 1, shifted to start at 1 keeping width 78 (20 is stepped over)
        ((20, 1, 300, 11, 2, 6), list(range(1, 80, 6))),
        # near the end: 295+50 > 300, shifted to end at 300 keeping width 110
        ((295, 1, 300, 6, 5, 10), list(range(190, 301, 10))),
        # step too wide: N=7 over 20 frames, 6*10 > 19 -> s = 19 // 6 = 3; 10-9 = 1, no shift
        ((10, 1, 20, 3, 3, 10), [1, 4, 7, 10, 13, 16, 19]),
        # step too wide and shifted: frame 50 clamped to 20, s = 3, start 11 -> 20-18 = 2
        ((50, 1, 20, 3, 3, 10), [2, 5, 8, 11, 14, 17, 20]),
        # detected frame past the video: clamped to 300 first
        ((500, 1, 300, 6, 5, 10), list(range(190, 301, 10))),
        # detected frame before the video (0 and -1): clamped to 1
        ((0, 1, 300, 6, 5, 10), list(range(1, 112, 10))),
        ((-1, 1, 300, 6, 5, 10), list(range(1, 112, 10))),
        # N == number of frames: 11*10 > 11 -> s = 1 -> every frame
        ((6, 1, 12, 6, 5, 10), list(range(1, 13))),
        # N exceeds the number of frames -> every frame
        ((4, 1, 8, 6, 5, 10), list(range(1, 9))),
        # one-frame window
        ((42, 1, 100, 0, 0, 6), [42]),
        ((0, 1, 100, 0, 0, 6), [1]),
        ((7, 7, 7, 0, 0, 1), [7]),
        # only pre or only post
        ((50, 1, 100, 2, 0, 5), [40, 45, 50]),
        ((50, 1, 100, 0, 2, 5), [50, 55, 60]),
        # frames 11..40: 4*10 > 29 -> s = 29 // 4 = 7; 15-14 = 1 -> shifted to 11
        ((15, 11, 40, 2, 2, 10), [11, 18, 25, 32, 39]),
    ],
)
def test_detected_frame_window(args: tuple[int, ...], expected: list[int]) -> None:
    assert detected_frame_window(*args) == expected


@pytest.mark.parametrize(
    "args",
    [
        (10, 1, 100, -1, 2, 6),
        (10, 1, 100, 2, -1, 6),
        (10, 1, 100, 2, 2, 0),
        (10, 100, 1, 2, 2, 6),
    ],
)
def test_detected_frame_window_rejects_bad_arguments(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        detected_frame_window(*args)


@settings(max_examples=400, deadline=None)
@given(
    first=st.integers(1, 50),
    length=st.integers(1, 400),
    frame=st.integers(-20, 500),
    pre=st.integers(0, 14),
    post=st.integers(0, 14),
    step=st.integers(1, 15),
)
def test_detected_frame_window_properties(first: int, length: int, frame: int, pre: int, post: int, step: int) -> None:
    last = first + length - 1
    window = detected_frame_window(frame, first, last, pre, post, step)
    size = pre + post + 1
    assert window == sorted(set(window))  # distinct, ascending
    assert first <= window[0] and window[-1] <= last
    if size > length:
        assert window == list(range(first, last + 1))
        return
    assert len(window) == size
    gaps = {b - a for a, b in zip(window, window[1:])}
    assert len(gaps) <= 1  # evenly spaced
    centre = min(max(frame, first), last)
    assert window[0] <= centre <= window[-1]
    lowered = (size - 1) * step > last - first
    if lowered:
        assert gaps == {(last - first) // (size - 1)}
    else:
        assert gaps <= {step}
        # unshifted: the window is exactly centre-pre*s .. centre+post*s
        if centre - pre * step >= first and centre + post * step <= last:
            assert centre in window
            assert window[0] == centre - pre * step


# ------------------------------------------------------------ caption-trigger window


def caption_table(
    detections: list[int],
    clues: list[str] | None = None,
    counts: list[int] | None = None,
) -> pd.DataFrame:
    """Stage 2 rows at frames 1, 11, 21, ...; counts go in the vehicles column."""
    n = len(detections)
    table = pd.DataFrame(
        {
            "frame": [1 + 10 * k for k in range(n)],
            cols.CAP_DETECTION: detections,
            cols.HAZARD_CLUES: clues if clues is not None else ["none"] * n,
        }
    )
    for field in cols.CAPTION_COUNT_FIELDS:
        table[field] = 0
    table[cols.CAP_VEHICLES] = counts if counts is not None else [0] * n
    return table


def with_detection_at(n: int, position: int, value: int = 1) -> list[int]:
    detections = [-1] * n
    detections[position] = value
    return detections


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (10, list(range(41, 152, 10))),  # rows 4..15
        (0, list(range(1, 112, 10))),  # trigger at the start: rows 0..11
        (3, list(range(1, 112, 10))),  # 3-6 < 0: shifted to rows 0..11
        (19, list(range(81, 192, 10))),  # trigger at the end: rows 8..19
        (16, list(range(81, 192, 10))),  # 16+5 > 19: shifted to rows 8..19
    ],
)
def test_caption_trigger_by_detection(position: int, expected: list[int]) -> None:
    assert caption_trigger_window(caption_table(with_detection_at(20, position)), 6, 5) == expected


def test_caption_trigger_hazard_detection_zero_triggers() -> None:
    detections = with_detection_at(20, 12, 1)
    detections[9] = 0  # first row that is not -1
    assert caption_trigger_window(caption_table(detections), 1, 1) == [81, 91, 101]


def test_caption_trigger_falls_back_to_hazard_clues() -> None:
    clues = ["none", "N/A", "", " NULL ", "na", "None."] + ["none"] * 14
    clues[7] = "debris on the lane"
    clues[12] = "pedestrian"
    table = caption_table([-1] * 20, clues=clues)
    # coool's reading: "None." is no clue (punctuation stripped), so row 7 triggers: rows 1..12.
    assert caption_trigger_window(table, 6, 5, lenient=True) == list(range(11, 122, 10))
    # The original's: "None." is a clue (row 5 triggers: rows 0..11).
    assert caption_trigger_window(table, 6, 5) == list(range(1, 112, 10))
    clues[5] = "none"
    assert caption_trigger_window(caption_table([-1] * 20, clues=clues), 6, 5) == list(range(11, 122, 10))


def test_node_is_no_clue_for_the_original_only() -> None:
    clues = ["none"] * 20
    clues[4], clues[9] = " Node ", "debris"
    table = caption_table([-1] * 20, clues=clues)
    assert caption_trigger_window(table, 1, 1) == [81, 91, 101]  # "node" is no clue: row 9
    assert caption_trigger_window(table, 1, 1, lenient=True) == [31, 41, 51]  # coool: "Node" is a clue


@pytest.mark.parametrize(
    ("value", "number"),
    [("1", 1), (" -1 ", -1), ("0", 0), ("1.9", 1), ("-0.5", 0), ("1e1", 10), ("", None), ("  ", None), ("x", None),
     ("2 cars", None), ("nan", None), ("inf", None), (None, None), (float("nan"), None), (3, 3), (2.7, 2)],
)
def test_read_cell_int_is_the_originals_reading(value: object, number: int | None) -> None:
    assert read_cell_int(value) == number


@pytest.mark.parametrize("value", ["", " ", "none", " NONE ", "Null", "na", "N/A", "node", None, float("nan")])
def test_no_clue_values(value: object) -> None:
    assert is_no_clue(value)


@pytest.mark.parametrize("value", ["None.", "'none'", "n.a.", "nothing", "debris", "-"])
def test_clue_values(value: object) -> None:
    assert not is_no_clue(value)


@pytest.mark.parametrize("blank", ["", "unknown", "n/a", None])
def test_a_blank_or_non_numeric_detection_never_triggers(blank: object) -> None:
    table = caption_table([-1] * 20)
    table[cols.CAP_DETECTION] = table[cols.CAP_DETECTION].astype(object)
    table.loc[3, cols.CAP_DETECTION] = blank
    table.loc[14, cols.CAP_DETECTION] = "1"
    assert caption_trigger_window(table, 1, 1) == [131, 141, 151]  # row 14
    # coool's reading makes the blank 0, a hazard: row 3 triggers.
    assert caption_trigger_window(table, 1, 1, lenient=True) == [21, 31, 41]


def test_the_originals_counts_are_truncated_and_may_be_negative() -> None:
    table = caption_table([-1] * 6)
    for field in cols.CAPTION_COUNT_FIELDS:
        table[field] = table[field].astype(object)
    table.loc[1, cols.CAP_VEHICLES] = "2.9"  # the original: 2; coool: 3
    table.loc[2, cols.CAP_VEHICLES] = "3"
    table.loc[3, cols.CAP_VEHICLES], table.loc[3, cols.CAP_ANIMALS] = "4", "-2"  # the original: 2; coool: 4
    assert caption_trigger_window(table, 0, 0) == [21]
    assert caption_trigger_window(table, 0, 0, lenient=True) == [31]


def test_a_saved_caption_table_keeps_a_blank_detection_blank(tmp_path) -> None:
    from coool.captions import TABLE_COLUMNS, load_captions

    rows = [{c: "" for c in TABLE_COLUMNS} | {"frame": f, "image": "x.png", cols.HAZARD_CLUES: "none"} for f in (1, 11, 21, 31)]
    for row in rows:
        row[cols.CAP_DETECTION] = -1
    rows[1][cols.CAP_DETECTION] = ""  # the captioner left it out
    rows[2][cols.HAZARD_CLUES] = "a cyclist ahead"
    pd.DataFrame(rows).to_csv(tmp_path / "0.csv", index=False)
    assert caption_trigger_window(load_captions(tmp_path / "0.csv", coerce=False), 0, 0) == [21]
    assert caption_trigger_window(load_captions(tmp_path / "0.csv", coerce=False), 0, 0, lenient=True) == [11]


def test_caption_trigger_falls_back_to_counts_first_max() -> None:
    counts = [0, 1, 2, 5, 0, 1, 0, 3, 4, 5, 0, 0]
    table = caption_table([-1] * 12, counts=counts)
    table[cols.CAP_PEDESTRIANS] = [0] * 8 + [2, 0, 0, 0]  # row 8 sums to 6: the largest
    assert caption_trigger_window(table, 1, 1) == [71, 81, 91]
    table[cols.CAP_PEDESTRIANS] = 0  # rows 3 and 9 tie at 5: the first wins
    assert caption_trigger_window(table, 1, 1) == [21, 31, 41]


def test_caption_trigger_all_quiet_takes_first_row() -> None:
    # No detection, no clue, all counts 0: the first row has the (tied) largest sum.
    assert caption_trigger_window(caption_table([-1] * 10), 2, 2) == [1, 11, 21, 31, 41]


def test_caption_trigger_short_video_takes_all_rows() -> None:
    assert caption_trigger_window(caption_table(with_detection_at(5, 4)), 6, 5) == [1, 11, 21, 31, 41]
    # N == number of rows
    assert caption_trigger_window(caption_table(with_detection_at(12, 11)), 6, 5) == list(range(1, 112, 10))


def test_caption_trigger_one_row_window() -> None:
    assert caption_trigger_window(caption_table(with_detection_at(20, 13)), 0, 0) == [131]
    assert caption_trigger_window(caption_table([1]), 0, 0) == [1]


def test_caption_trigger_sorts_rows_by_frame() -> None:
    table = caption_table(with_detection_at(20, 10))
    shuffled = table.sample(frac=1.0, random_state=3)
    assert caption_trigger_window(shuffled, 6, 5) == list(range(41, 152, 10))


def test_caption_trigger_reads_a_saved_csv() -> None:
    # pandas reads "NA", "null" and empty cells as NaN: no clue.
    text = "frame,Incident_Detection,Hazard_Clues,{}\n".format(",".join(cols.CAPTION_COUNT_FIELDS))
    rows = ["1,-1,NA,0,0,0,1", "11,-1,null,0,0,0,0", "21,-1,,0,0,0,0", "31,-1,cyclist ahead,0,0,0,0", "41,-1,none,0,0,0,2"]
    table = pd.read_csv(io.StringIO(text + "\n".join(rows)))
    assert caption_trigger_window(table, 0, 1) == [31, 41]


def test_caption_trigger_errors() -> None:
    with pytest.raises(ValueError):
        caption_trigger_window(caption_table([]), 6, 5)
    with pytest.raises(ValueError):
        caption_trigger_window(caption_table([1]).drop(columns=[cols.HAZARD_CLUES]), 6, 5)
    with pytest.raises(ValueError):
        caption_trigger_window(caption_table([1]), -1, 5)


def expected_trigger(detections: list[int], clues: list[str], sums: list[int]) -> int:
    """The trigger rule written out independently for the property test."""
    for k, value in enumerate(detections):
        if value != -1:
            return k
    for k, clue in enumerate(clues):
        if clue.strip().lower() not in ("", "none", "null", "na", "n/a"):
            return k
    return sums.index(max(sums))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([-1, -1, -1, -1, 0, 1]),
            st.sampled_from(["none", "None", "", "n/a", "NULL", "na", "none", "debris"]),
            st.integers(0, 4),
            st.integers(0, 4),
        ),
        min_size=1,
        max_size=30,
    ),
    pre=st.integers(0, 8),
    post=st.integers(0, 8),
    gap=st.integers(1, 12),
)
def test_caption_trigger_properties(rows: list[tuple], pre: int, post: int, gap: int) -> None:
    detections = [r[0] for r in rows]
    clues = [r[1] for r in rows]
    table = caption_table(detections, clues=clues, counts=[r[2] for r in rows])
    table["frame"] = [1 + gap * k for k in range(len(rows))]
    table[cols.CAP_ANIMALS] = [r[3] for r in rows]
    window = caption_trigger_window(table, pre, post)
    frames = list(table["frame"])
    size = pre + post + 1
    assert window == sorted(set(window))
    assert set(window) <= set(frames)
    assert len(window) == min(size, len(frames))
    start = frames.index(window[0])
    assert window == frames[start : start + len(window)]  # consecutive rows
    trigger = expected_trigger(detections, clues, [r[2] + r[3] for r in rows])
    assert frames[trigger] in window


# ------------------------------------------------------------ final start frame


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (-1, (1, False)),
        (0, (41, False)),
        (2, (61, False)),
        (3, (61, True)),
        (10, (61, True)),
        (-2, (41, True)),  # not Python's negative indexing
    ],
)
def test_window_index_to_frame(index: int, expected: tuple[int, bool]) -> None:
    assert window_index_to_frame([41, 51, 61], index) == expected


def test_window_index_to_frame_empty_window() -> None:
    assert window_index_to_frame([], -1) == (1, False)
    with pytest.raises(ValueError):
        window_index_to_frame([], 0)
