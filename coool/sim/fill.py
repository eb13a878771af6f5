"""A small JSON-schema-driven filler for the simulated model server.

vLLM enforces a ``json_schema`` response format by constrained decoding, so
every answer validates. The simulation gets the same guarantee differently:
a task handler proposes values, and each proposed value is kept only where it
validates against its piece of the schema; everything else gets a default
derived from the schema itself.

Handled: local ``$ref`` (``#/$defs/..`` / ``#/definitions/..``), ``anyOf`` /
``oneOf`` / ``allOf``, ``type`` (also lists of types), ``enum``, ``const``,
``default``, ``required``, ``properties``, ``items``, ``minimum`` /
``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum``, ``minLength`` /
``maxLength`` and ``minItems`` / ``maxItems``.
"""

from __future__ import annotations

import math
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

MISSING: Any = object()  # "the handler proposed nothing here"
_MAX_REF_DEPTH = 32  # recursive schemas are cut off instead of looping forever


def fill_schema(schema: dict[str, Any], proposal: Any = MISSING) -> Any:
    """A value valid against ``schema``, keeping every proposed part that validates."""
    return _fill(inline_refs(schema), proposal)


def is_valid(schema: Any, value: Any) -> bool:
    """jsonschema's verdict, with the draft the schema names (2020-12 by default)."""
    if not isinstance(schema, dict):
        return schema is not False
    return validator_for(schema, default=Draft202012Validator)(schema).is_valid(value)


def inline_refs(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The schema with local ``$ref`` s replaced by their targets (so pieces stand alone)."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [inline_refs(item, root, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema and depth < _MAX_REF_DEPTH:
        target = _resolve(root, schema["$ref"])
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        merged = {**target, **siblings} if isinstance(target, dict) else siblings
        return inline_refs(merged, root, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "definitions"):
            continue  # already inlined where used
        if key in ("properties", "patternProperties") and isinstance(value, dict):
            # A map of names to schemas: a property may well be called "enum" or "default".
            out[key] = {name: inline_refs(sub, root, depth) for name, sub in value.items()}
        elif key in ("enum", "const", "default", "examples"):
            out[key] = value  # data, not schemas
        else:
            out[key] = inline_refs(value, root, depth)
    return out


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}  # remote refs are not fetched: treat as "anything"
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return list(declared)
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def _fill(schema: Any, proposal: Any) -> Any:
    if not isinstance(schema, dict):
        return "none" if proposal is MISSING else proposal
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return _fill(merged, proposal)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _fill_union(schema, key, proposal)
    types = _types(schema)
    if "object" in types and (proposal is MISSING or isinstance(proposal, dict)) and "enum" not in schema:
        return _fill_object(schema, {} if proposal is MISSING else proposal)
    if "array" in types and isinstance(proposal, list):
        return _fill_array(schema, proposal)
    if proposal is not MISSING:
        adjusted = _adjust(schema, types, proposal)
        if is_valid(schema, adjusted):
            return adjusted
    return _default(schema, types)


def _fill_union(schema: dict[str, Any], key: str, proposal: Any) -> Any:
    base = {k: v for k, v in schema.items() if k != key}
    branches = [{**base, **b} for b in schema[key] if isinstance(b, dict)]
    if proposal is not MISSING:
        for branch in branches:
            candidate = _fill(branch, proposal)
            if is_valid(schema, candidate) and candidate == proposal:
                return candidate
        for branch in branches:
            candidate = _fill(branch, proposal)
            if is_valid(schema, candidate):
                return candidate
    # Prefer a non-null branch: "null" is a poor stand-in for a missing answer.
    ordered = sorted(branches, key=lambda b: _types(b) == ["null"])
    for branch in ordered:
        candidate = _fill(branch, MISSING)
        if is_valid(schema, candidate):
            return candidate
    return _fill(ordered[0], MISSING) if ordered else "none"


def _fill_object(schema: dict[str, Any], proposal: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if not properties:
        # No declared fields: the proposal is the answer, plus any required keys.
        out = dict(proposal)
        for key in required:
            out.setdefault(key, "none")
        return out
    out: dict[str, Any] = {}
    for key, sub in properties.items():
        if key in proposal:
            out[key] = _fill(sub, proposal[key])
        elif key in required:
            out[key] = _fill(sub, MISSING)
    for key in required:
        if key not in out:
            out[key] = proposal.get(key, "none")
    return out


def _fill_array(schema: dict[str, Any], proposal: list[Any]) -> list[Any]:
    items = schema.get("items", {})
    out = [_fill(items, p) for p in proposal]
    if "maxItems" in schema:
        out = out[: int(schema["maxItems"])]
    while len(out) < int(schema.get("minItems", 0)):
        out.append(_fill(items, MISSING))
    return out


def _adjust(schema: dict[str, Any], types: list[str], value: Any) -> Any:
    """Small repairs a constrained decoder would also make: clamp numbers, cut long strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and "integer" in types and "number" not in types and value.is_integer():
        value = int(value)
    if isinstance(value, (int, float)):
        low, high = _bounds(schema, integer=isinstance(value, int))
        if low is not None and value < low:
            value = low
        if high is not None and value > high:
            value = high
    if isinstance(value, str) and "maxLength" in schema:
        value = value[: int(schema["maxLength"])]
    return value


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float | None, float | None]:
    step = 1 if integer else 1e-9
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)):
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)):
        high = schema["exclusiveMaximum"] - step
    if integer:
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    return low, high


def _default(schema: dict[str, Any], types: list[str]) -> Any:
    if "default" in schema and is_valid(schema, schema["default"]):
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    non_null = [t for t in types if t != "null"]
    kind = non_null[0] if non_null else (types[0] if types else "string")
    if kind in ("integer", "number"):
        low, high = _bounds(schema, integer=kind == "integer")
        value = low if low is not None else 0
        if high is not None and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "string":
        text = "none"
        min_len = int(schema.get("minLength", 0))
        if len(text) < min_len:
            text = ("none " * (min_len // 5 + 1))[:min_len]
        return text[: int(schema["maxLength"])] if "maxLength" in schema else text
    if kind == "boolean":
        return False
    if kind == "array":
        return [_fill(schema.get("items", {}), MISSING) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "object":
        return _fill_object(schema, {})
    return None
