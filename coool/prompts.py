"""Prompt files: loading, overriding, rendering and content hashes.

Prompts live as files in ``coool/prompts/`` (see its README). A folder of
the user's own can replace any of them by name.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coool import schema as cols
from coool.files import json_sha256

BUILTIN_DIR = Path(__file__).parent / "prompts"

_LISTS: dict[str, tuple[str, ...]] = {
    "severities": cols.SEVERITIES,
    "severities_unknown": cols.CAPTION_SEVERITIES,
    "collision_severities": tuple(s for s in cols.SEVERITIES if s != cols.NO_CRASH),
    "labels": cols.LABELS,
    "hazard_labels": cols.HAZARD_LABELS,
}


class PromptError(ValueError):
    """A prompt file that is missing or broken."""


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    system: str | None = None
    schema: dict[str, Any] | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        """Content hash: the cache key part that makes a prompt edit rerun its work."""
        return json_sha256({"text": self.text, "system": self.system, "schema": self.schema})

    @property
    def title(self) -> str:
        return str((self.schema or {}).get("title", self.name))

    def render(self, **values: object) -> str:
        """The prompt text with ``$placeholders`` filled; unknown ones are an error."""
        mapping = {k: ", ".join(json.dumps(v) for v in vals) for k, vals in _LISTS.items()}
        mapping.update({k: str(v) for k, v in values.items()})
        try:
            return string.Template(self.text).substitute(mapping).strip()
        except KeyError as exc:
            raise PromptError(f"{self.source or self.name}: no value for placeholder ${exc.args[0]}") from exc


def _expand_enums(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "enum" and isinstance(value, str) and value.startswith("$"):
                if value[1:] not in _LISTS:
                    raise PromptError(f"unknown enum placeholder {value}")
                out[key] = list(_LISTS[value[1:]])
            else:
                out[key] = _expand_enums(value)
        return out
    if isinstance(node, list):
        return [_expand_enums(v) for v in node]
    return node


def _find(filename: str, override_dir: Path | None, variant: str | None = None) -> Path | None:
    # The user's folder wins over every built-in file; within each, a variant (``plus``) is a
    # subfolder holding only the files that differ from the defaults.
    for base in (override_dir, BUILTIN_DIR):
        for folder in ((base / variant, base) if variant else (base,)) if base is not None else ():
            if (folder / filename).is_file():
                return folder / filename
    return None


def load_prompt(name: str, override_dir: str | Path | None = None, *, variant: str | None = None) -> Prompt:
    """The prompt ``name`` (``caption``, ``detect``, ``describe_texts_v2``...).

    Files in ``override_dir`` win over the built-in ones, file by file. With
    ``variant`` (``plus``: coool's improved prompts), a file in that
    subfolder wins over the default of the same name.
    """
    folder = Path(override_dir) if override_dir else None
    text_path = _find(f"{name}.md", folder, variant)
    if text_path is None:
        raise PromptError(f"no prompt named {name!r} (looked for {name}.md in {folder or ''} {BUILTIN_DIR})")
    system_path = _find(f"{name}.system.md", folder, variant)
    schema_path = _find(f"{name}.schema.json", folder, variant)
    schema_obj = None
    if schema_path is not None:
        try:
            schema_obj = _expand_enums(json.loads(schema_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise PromptError(f"{schema_path}: not valid JSON ({exc})") from exc
    return Prompt(
        name=name,
        text=text_path.read_text(encoding="utf-8"),
        system=system_path.read_text(encoding="utf-8").strip() if system_path else None,
        schema=schema_obj,
        source=text_path,
    )


def load_snippet(name: str, override_dir: str | Path | None = None, *, variant: str | None = None) -> str:
    """A text fragment inserted into prompts (e.g. ``ignore_image_text``)."""
    return load_prompt(name, override_dir, variant=variant).text


def stage_prompt(params: Any, override_dir: str | Path | None = None) -> Prompt:
    """The prompt a stage's parameters name (``params.prompt``), coool's ``plus`` variant when
    ``params.plus_prompts`` is on (CaptionParams, DetectParams, EnsembleParams)."""
    variant = "plus" if getattr(params, "plus_prompts", False) else None
    return load_prompt(params.prompt, override_dir, variant=variant)
