"""Lenient JSON parsing and coercion of model answers.

Implements PIPELINE.md Stage 3 ("strictly parsed") and Stage 4 "Cleaning and
voting" (parse leniently, coerce). Field names and allowed values come from
``coool.schema``.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
import unicodedata
from collections.abc import Mapping

import json_repair

from coool import schema as cols

_THINK_END = "</think>"
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_CURLY = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
# A whole string that is a decimal literal: rounded like a float.
_FLOAT_LITERAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_LEADING_INT = re.compile(r"[+-]?\d+")
# Severity written as its number: "3", "3.", "3. ego-car ..." (not "30").
_SEVERITY_DIGIT = re.compile(r"([0-6])(?!\d)")
_NO_CLUE = frozenset({"", "none", "null", "na", "n/a"})
# The largest count an answer may give: absurd counts stay integers every reader can hold
# (a 30-digit "count" would overflow 64-bit readers). The count pass deals with implausible ones.
MAX_COUNT = 2**31 - 1
_LABEL_CUTOFF = 0.85

_ANSWER_COUNTS = frozenset(cols.COUNT_COLUMNS)
_ANSWER_STRINGS = frozenset((cols.CAPTION, cols.REASON, cols.SEVERITY, cols.LABEL))


# ---------------------------------------------------------------- parsing


def parse_json_strict(text: str) -> dict | None:
    """The whole stripped text as one JSON object, else None.

    Stage 3: the detector's samples are "strictly parsed".
    """
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text.strip())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _balanced_objects(text: str) -> list[str]:
    """Every top-level balanced ``{...}`` in order; braces inside JSON strings don't count."""
    found: list[str] = []
    depth = 0
    start = -1
    in_string = False
    escaped = False
    for pos, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"' and depth > 0:
            # Quotes in prose outside an object don't open strings.
            in_string = True
        elif char == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                found.append(text[start : pos + 1])
    return found


def _parse_candidates(body: str) -> dict | None:
    """The body as JSON, else the first balanced object in it that parses to a dict."""
    whole = parse_json_strict(body)
    if whole is not None:
        return whole
    # Later objects are tried only after the earlier one failed as a whole
    # (never an object nested inside it), so nested dicts are not mistaken
    # for the answer.
    for candidate in _balanced_objects(body):
        parsed = parse_json_strict(candidate)
        if parsed is not None:
            return parsed
    return None


def parse_json_lenient(text: str) -> dict | None:
    """A model's answer as a dict, else None.

    Stage 4 "Cleaning and voting": a text before ``</think>`` is reasoning
    (dropped; the last ``</think>`` counts); strip a code fence; else the
    first balanced ``{...}``; else the same after replacing curly quotes.
    Choices where the spec is silent: if the first balanced object does not
    parse, later top-level objects are tried; the last resort (not in the
    spec) is ``json_repair`` on the first balanced object (or, when braces
    never close, from the first ``{``), accepted only as a non-empty dict
    (json_repair turns ``{`` or plain prose into ``{}``/``""``).
    """
    if not isinstance(text, str):
        return None
    body = text.rpartition(_THINK_END)[2] if _THINK_END in text else text
    fence = _FENCE.search(body)
    if fence:
        body = fence.group(1)
    body = body.strip()
    parsed = _parse_candidates(body)
    if parsed is not None:
        return parsed
    straight = body.translate(_CURLY)
    if straight != body:
        parsed = _parse_candidates(straight)
        if parsed is not None:
            return parsed
    return _repair(straight)


def _repair(body: str) -> dict | None:
    objects = _balanced_objects(body)
    if objects:
        candidate = objects[0]
    elif "{" in body:
        candidate = body[body.index("{") :]  # truncated answer: braces never close
    else:
        return None
    try:
        value = json_repair.loads(candidate)
    except Exception:  # json_repair is best effort; any failure means "no dict"
        return None
    return value if isinstance(value, dict) and value else None


# ---------------------------------------------------------------- coercion


def coerce_int(value: object) -> int:
    """An answer's number as an int.

    Stage 4 "Coerce": ints as is, floats rounded, the leading integer of a
    string, anything else 0. Choices: bools are ints (True -> 1); a string
    that is wholly a decimal literal ("2.7", "1e2") is read as a float and
    rounded, any other string gives its leading integer ("2.7 cars" -> 2,
    " 3 cars" -> 3). Rounding is Python's ``round`` (halves to even:
    2.5 -> 2, 3.5 -> 4). NaN and infinities give 0.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _round(float(value))
    if isinstance(value, str):
        text = value.strip()
        if _FLOAT_LITERAL.fullmatch(text):
            return _round(float(text))
        match = _LEADING_INT.match(text)
        return int(match.group()) if match else 0
    return 0


def _round(number: float) -> int:
    return round(number) if math.isfinite(number) else 0


def _key(name: object) -> str:
    """Field-name key ignoring case and everything but letters and digits."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _lookup(obj: Mapping, fields: tuple[str, ...]) -> dict[str, object]:
    """The value of each field found in obj: the exact key first, else the
    first key equal to it ignoring case, spaces, underscores and punctuation.
    Fields found nowhere are left out."""
    loose: dict[str, object] = {}
    for name, value in obj.items():
        loose.setdefault(_key(name), value)
    found: dict[str, object] = {}
    for field in fields:
        if field in obj:
            found[field] = obj[field]
        elif _key(field) in loose:
            found[field] = loose[_key(field)]
    return found


def clean_text(text: str) -> str:
    """One line of text: control and format characters dropped (NUL, bidi
    overrides, zero-width marks), every run of white space (newlines too) one
    space, stripped. Guard (not in the spec): a model's text must not smuggle
    line breaks or invisible characters into a one-sentence CSV field."""
    kept = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
    return " ".join(kept.split())


def _text(value: object) -> str | None:
    """A text field: stripped string; None stays None.

    Choices: numbers and bools become their str (a severity given as 3 ->
    "3"); lists are joined with "; "; dicts become their JSON text. Strings
    are made one clean line (``clean_text``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        parts = (_text(item) for item in value)
        return "; ".join(part for part in parts if part)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value).strip()


def _detection(value: object) -> int:
    number = coerce_int(value)
    return number if number in cols.DETECTION_VALUES else 0


def _ego(value: object) -> int:
    number = coerce_int(value)
    return number if number in cols.EGO_VALUES else 0


def coerce_answer(obj: Mapping) -> dict:
    """The 11 describe answer fields of one sample, coerced.

    Stage 4 "Coerce": numbers via ``coerce_int``; Incident Detection outside
    {-1,0,1} -> 0; Ego-car outside {0,1} -> 0; negative counts -> 0; texts
    stripped. Guard (not in the spec): counts above ``MAX_COUNT`` become
    ``MAX_COUNT``. Severity and Label keep the model's string (see
    ``canonical_severity``/``canonical_label``). The start index is not
    range-checked here (``windows.window_index_to_frame`` guards it).
    Choices: a missing field is None so voting can tell "absent" from a
    value; a non-mapping answer gives all None. Improvement over the
    original: keys are matched ignoring case, spaces, underscores and
    punctuation ("incident_detection", "Ego car involved").
    """
    found = _lookup(obj, cols.ANSWER_FIELDS) if isinstance(obj, Mapping) else {}
    out: dict[str, object] = {}
    for field in cols.ANSWER_FIELDS:
        if field not in found:
            out[field] = None
            continue
        value = found[field]
        if field == cols.DETECTION:
            out[field] = _detection(value)
        elif field == cols.EGO:
            out[field] = _ego(value)
        elif field in _ANSWER_COUNTS:
            out[field] = min(max(coerce_int(value), 0), MAX_COUNT)
        elif field in _ANSWER_STRINGS:
            out[field] = _text(value)
        else:  # the start index
            out[field] = coerce_int(value)
    return out


def _fold(text: str) -> str:
    """Lower case, whitespace runs as one space."""
    return " ".join(text.lower().split())


def canonical_severity(value: str | None) -> str | None:
    """A model's severity as one of ``schema.SEVERITIES``, else None.

    Exact match; case/space-insensitive match; a leading digit 0-6 ("3",
    "3.", "3. ego-car collided ...") -> that severity. Choice: the text
    without its number ("no crash") also matches, case/space-insensitively.
    """
    if value is None:
        return None
    text = str(value)
    if text in cols.SEVERITIES:
        return text
    folded = _fold(text)
    for severity in cols.SEVERITIES:
        if folded == _fold(severity) or folded == _fold(severity.partition(". ")[2]):
            return severity
    digit = _SEVERITY_DIGIT.match(folded)
    return cols.SEVERITIES[int(digit.group(1))] if digit else None


def _mentions_ego(text: str) -> bool:
    return "ego" in text


def canonical_label(value: str | None) -> str | None:
    """A model's label as one of ``schema.LABELS``, else None.

    Exact match; case/space-insensitive match; else the closest label by
    difflib ratio >= 0.85. Choice (guard): a close match must agree with the
    input on mentioning the ego car, because that flips who is involved:
    'car hits pedestrian' scores 0.86 against 'ego-car hits a pedestrian'
    and is rejected (None); 'vehicle hits barrier' (best 0.78) is None too.
    """
    if value is None:
        return None
    text = str(value)
    if text in cols.LABELS:
        return text
    folded = _fold(text)
    by_fold = {_fold(label): label for label in cols.LABELS}
    if folded in by_fold:
        return by_fold[folded]
    for match in difflib.get_close_matches(folded, list(by_fold), n=3, cutoff=_LABEL_CUTOFF):
        if _mentions_ego(match) == _mentions_ego(folded):
            return by_fold[match]
    return None


def coerce_caption(obj: Mapping) -> dict:
    """The 11 Stage 2 (frame caption) fields of one answer, coerced.

    Stage 2 fields with Stage 4's coercion rules: counts via ``coerce_int``
    clipped at >= 0, Incident_Detection outside {-1,0,1} -> 0,
    Ego_car_involved outside {0,1} -> 0, texts stripped; Crash_Severity and
    Label canonicalised, an unknown value -> "unknown". Choices: the row is
    always complete, since it becomes a table row (no voting needs
    "absent"): a missing number follows "anything else 0" (so a missing
    Incident_Detection reads 0), a missing text is "", a missing
    severity/label is "unknown"; keys match loosely as in ``coerce_answer``.
    """
    found = _lookup(obj, cols.CAPTION_FIELDS) if isinstance(obj, Mapping) else {}
    out: dict[str, object] = {}
    for field in cols.CAPTION_FIELDS:
        value = found.get(field)
        if field == cols.CAP_DETECTION:
            out[field] = _detection(value)
        elif field == cols.CAP_EGO:
            out[field] = _ego(value)
        elif field in cols.CAPTION_COUNT_FIELDS:
            out[field] = min(max(coerce_int(value), 0), MAX_COUNT)
        elif field == cols.CAP_SEVERITY:
            out[field] = canonical_severity(_text(value)) or "unknown"
        elif field == cols.CAP_LABEL:
            out[field] = canonical_label(_text(value)) or cols.UNKNOWN_LABEL
        else:
            out[field] = _text(value) or ""
    return out


def has_hazard_clue(value: object) -> bool:
    """Whether a Hazard_Clues value names a clue.

    Stage 4 caption-trigger window: empty/none/null/na/n/a mean no clue
    (case-insensitive, stripped). Choices: None and NaN (pandas reads "NA",
    "null", "" as NaN) mean no clue; surrounding punctuation and quotes are
    ignored ("None." is no clue).
    """
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    text = str(value).strip().strip(".!;:'\"` ").lower()
    return text not in _NO_CLUE


# ---------------------------------------------------------------- the original's cleaning (faithful)

_OPEN_FENCE = re.compile(r"^```(?:json|JSON)?\s*")
_CLOSE_FENCE = re.compile(r"\s*```$")
_ORIGINAL_INT = re.compile(r"^-?\d+")
_ORIGINAL_NUMBERS = frozenset((cols.START_FRAME, cols.DETECTION, cols.EGO, *cols.COUNT_COLUMNS))


def _first_brace_block(text: str) -> str | None:
    """From the first ``{`` to the brace that balances it, counting every brace (even in strings)."""
    start = text.find("{")
    if start == -1:
        return None
    depth = 0
    for pos in range(start, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[start : pos + 1]
    return None


def parse_answer(text: str) -> dict | None:
    """A describe sample as the original parsed it; None when it does not parse.

    Faithful to the original (stage 4): a code fence is removed only at the
    very start and end; then the whole text as JSON, else the block from the
    first ``{`` to its balancing brace, else the whole text with curly double
    quotes and the right single quote straightened. Nothing else: no
    ``</think>`` handling, no repair. Guard (the original would crash on
    it): JSON that is not an object (a list, a number) counts as unparsable.
    The original cleans an unparsable sample like an empty object.
    """
    if not isinstance(text, str):
        return None
    body = _CLOSE_FENCE.sub("", _OPEN_FENCE.sub("", text.strip())).strip()
    attempts = [body, _first_brace_block(body), body.replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'")]
    for attempt in attempts:
        if attempt is None:
            continue
        try:
            value = json.loads(attempt)
        except (ValueError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    return None


def _original_int(value: object) -> int:
    """The original's number reading: floats rounded, a string's leading integer ("2.7" -> 2), else 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        match = _ORIGINAL_INT.match(value.strip())
        return int(match.group()) if match else 0
    return 0


def _original_text(value: object) -> str:
    """The original's text reading: None is "", anything else its Python ``str``, stripped
    (JSON's true, 1.5 and lists read "True", "1.5", "['a']")."""
    return "" if value is None else str(value).strip()


def clean_sample(obj: Mapping, fields: tuple[str, ...] | list[str], *, absent_as_none: bool = False) -> dict:
    """One parsed sample restricted to ``fields``, cleaned as the original did (faithful).

    Every field is present: numbers (start index, detection, ego, counts)
    read with the original's rule, a missing one 0; texts (severity, label,
    caption, reason) stripped, a missing one "". Detection outside {-1,0,1}
    and ego outside {0,1} become 0; negative counts 0. Keys match exactly.
    With ``absent_as_none`` (the ``blank_as_absent`` switch) a missing or
    null field and a blank text are None instead, so voting skips them.
    """
    source = obj if isinstance(obj, Mapping) else {}
    out: dict[str, object] = {}
    for field in fields:
        value = source.get(field)
        if absent_as_none and (value is None or (isinstance(value, str) and not value.strip())):
            out[field] = None
            continue
        if field in _ORIGINAL_NUMBERS:
            number = _original_int(value)
            if field == cols.DETECTION and number not in cols.DETECTION_VALUES:
                number = 0
            elif field == cols.EGO and number not in cols.EGO_VALUES:
                number = 0
            elif field in _ANSWER_COUNTS and number < 0:
                number = 0
            out[field] = number
        else:
            out[field] = _original_text(value)
    return out
