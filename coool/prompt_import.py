"""``coool prompts import``: the authors' own prompts, read from a user's checkout of the original.

coool ships prompts in its own words. A user who wants the 2nd-place
method with the authors' exact words points this at their own clone of the
original repository: its Python files are parsed (``ast``; nothing is run or
imported) and the prompt strings are written as a prompts folder in coool's
file names and ``$placeholder`` format, for a recipe's ``prompts_dir:``.
Nothing of the original is stored in coool.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coool.files import atomic_write_text

# The snippet the count pass (v6) inserts into the describe prompts, and coool's two placeholders for
# it (coool/describe.py): a paragraph of its own, and the end of a line.
SNIPPET = "ignore_image_text"
SNIPPET_PARAGRAPH = "${ignore_image_text}"
SNIPPET_INLINE = "${ignore_image_text_inline}"


@dataclass(frozen=True)
class Source:
    """One coool prompt file and where the original keeps its text.

    ``parts`` are joined as the original joins them into the request: a
    part is a module-level string name, ``@name`` for a string assigned
    inside a function, or ``=text`` for text of coool's own (a
    ``$placeholder`` and its separator). ``fields`` maps the original's
    ``str.format`` fields to coool placeholders (``$name``) or, with
    ``None``, to the module constant passed for it.
    """

    file: str
    name: str
    parts: tuple[str, ...]
    fields: dict[str, str | None] = field(default_factory=dict)


CAPTION = "002_frame_captioning/src/glm45v_image_frames_infer_perception_vllm_server.py"
DETECT = "003_frame_detection/src/gpt-oss-120b_infer_vllm_sc_from_frames_csv.py"
DESCRIBE = "004_description/src/glm45v_multi_image_infer_vllm_sc.py"
DESCRIBE_V2 = "004_description/src/glm45v_multi_image_infer_vllm_sc_prompt_v2.py"
DESCRIBE_V6 = "004_description/src/multi_image_infer_vllm_sc_animal_count_retry.py"
ENSEMBLE = "005_ensemble/src/qwen3_next_infer_vllm_submit_ensemble_caption.py"

SOURCES: tuple[Source, ...] = (
    Source(CAPTION, "caption", ("PROMPT_MIN",)),
    # The detector's user message: a schema hint (set inside chat_json), a blank line, the prompt, a blank line, the table.
    Source(DETECT, "detect", ("@schema_hint", "=\n\n", "PROMPT_BASE", "=\n\n$table")),
    Source(DETECT, "detect.system", ("SYSTEM",)),
    # The reconcile prompts: the describe stage appends the two earlier results after a blank line.
    Source(DESCRIBE_V2, "describe_counts_v2", ("PROMPT_COUNT",)),
    Source(DESCRIBE_V2, "describe_texts_v2", ("PROMPT_TEXT",)),
    Source(DESCRIBE_V2, "describe_reconcile_v2", ("PROMPT_RECONCILE",)),
    Source(ENSEMBLE, "ensemble", ("PROMPT_PAIR_SINGLE",), {"pairs_block": "$candidates"}),
    Source(ENSEMBLE, "ensemble.system", ("SYS",)),
)

# The base describe prompts: the count pass's file (v6) is the same text with one sentence inserted at
# a few places; coool's base prompts hold placeholders there and the sentence is its own file.
BASE_WITH_SNIPPET: tuple[tuple[str, str], ...] = (
    ("describe_counts", "PROMPT_COUNT"),
    ("describe_texts", "PROMPT_TEXT"),
    ("describe_reconcile", "PROMPT_RECONCILE"),
)

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PromptImportError(ValueError):
    """The checkout lacks a file or a prompt, or a prompt is not a plain string."""


def _string(node: ast.AST, names: dict[str, str]) -> str | None:
    """The value of a string expression without running it: literals, f-strings without
    fields, ``+``, names of module strings and ``.strip()``-like calls; None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        pieces = [_string(v, names) for v in node.values]
        return None if any(p is None for p in pieces) else "".join(p for p in pieces if p is not None)
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, names), _string(node.right, names)
        return None if left is None or right is None else left + right
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("strip", "lstrip", "rstrip")
        and not node.args
        and not node.keywords
    ):
        inner = _string(node.func.value, names)
        return None if inner is None else getattr(inner, node.func.attr)()
    return None


@dataclass
class Module:
    """The strings of one parsed Python file."""

    path: Path
    strings: dict[str, str]  # module level, in order
    local: dict[str, str]  # assigned inside functions (first one wins)
    format_fields: dict[str, dict[str, str | None]]  # NAME -> {field: the constant name passed, if any}
    constants: dict[str, str]  # module-level numbers (``MAX_WORDS_BEFORE = 30``), as text

    @classmethod
    def parse(cls, path: Path) -> Module:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as exc:
            raise PromptImportError(f"{path}: not valid Python ({exc.msg}, line {exc.lineno})") from exc
        strings: dict[str, str] = {}
        constants: dict[str, str] = {}
        for node in tree.body:
            target, value = _assignment(node)
            if target is None or value is None:
                continue
            if (text := _string(value, strings)) is not None:
                strings[target] = text
            elif isinstance(value, ast.Constant) and type(value.value) in (int, float):
                constants[target] = str(value.value)
        local: dict[str, str] = {}
        formats: dict[str, dict[str, str | None]] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    target, value = _assignment(inner)
                    if target is not None and value is not None and target not in local:
                        if (text := _string(value, strings)) is not None:
                            local[target] = text
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Name)
            ):
                passed = {
                    k.arg: (k.value.id if isinstance(k.value, ast.Name) else None) for k in node.keywords if k.arg
                }
                formats.setdefault(node.func.value.id, {}).update(passed)
        return cls(path, strings, local, formats, constants)


def _assignment(node: ast.AST) -> tuple[str | None, ast.AST | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _template(text: str, module: Module, source: Source, name: str) -> str:
    """The original's text in coool's format: ``$`` escaped; for a ``str.format`` template its
    ``{field}`` become coool placeholders or the constants passed, and ``{{ }}`` single braces."""
    text = text.replace("$", "$$")
    passed = module.format_fields.get(name)
    if passed is None:
        return text  # not a format template: its braces are literal

    def replace(match: re.Match[str]) -> str:
        whole, field_name = match.group(0), match.group(1)
        if field_name is None:
            return whole[0]
        if field_name in source.fields and source.fields[field_name] is not None:
            return str(source.fields[field_name])
        constant = passed.get(field_name)
        if constant is not None and constant in module.strings:
            return module.strings[constant].replace("$", "$$")
        if constant is not None and constant in module.constants:
            return module.constants[constant]
        raise PromptImportError(f"{module.path}: {name} has the field {{{field_name}}}, which coool cannot fill")

    return _FIELD.sub(replace, text)


def with_snippet_placeholders(base: str, variant: str, where: str) -> tuple[str, str]:
    """``base`` with coool's snippet placeholders where ``variant`` inserts a sentence, and the sentence.

    The sentence is what the variant's lines add to the base's. Where it
    stands as a paragraph of its own it becomes SNIPPET_PARAGRAPH (filled
    with the sentence and a blank line), where it ends a line after a space
    SNIPPET_INLINE. The result is checked: empty placeholders give ``base``
    back, filled ones ``variant``; anything else is an error naming ``where``.
    """
    old, new = base.splitlines(keepends=True), variant.splitlines(keepends=True)
    sentences: set[str] = set()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "insert":
            sentences.update(line.strip() for line in new[j1:j2] if line.strip())
        elif tag == "replace":
            for before, after in zip(old[i1:i2], new[j1:j2]):
                head = before.rstrip("\n")
                if after.startswith(head + " "):
                    sentences.add(after.rstrip("\n")[len(head) :].strip())
    if not sentences:
        if base != variant:
            raise PromptImportError(f"{where}: the count pass's prompt differs from the base beyond one sentence")
        return base, ""
    if len(sentences) > 1:
        raise PromptImportError(f"{where}: the count pass inserts more than one sentence: {sorted(sentences)}")
    (sentence,) = sentences
    text = variant.replace(" " + sentence, SNIPPET_INLINE).replace(sentence + "\n\n", SNIPPET_PARAGRAPH)
    empty = text.replace(SNIPPET_INLINE, "").replace(SNIPPET_PARAGRAPH, "")
    filled = text.replace(SNIPPET_INLINE, " " + sentence).replace(SNIPPET_PARAGRAPH, sentence + "\n\n")
    if empty != base or filled != variant:
        raise PromptImportError(f"{where}: the count pass's prompt differs from the base beyond one sentence")
    return text, sentence


def _module(root: Path, file: str, modules: dict[str, Module]) -> Module:
    if file not in modules:
        path = root / file
        if not path.is_file():
            raise PromptImportError(f"{path}: missing (is {root} a checkout of the 2nd-place repository?)")
        modules[file] = Module.parse(path)
    return modules[file]


def read_prompts(checkout: str | Path, sources: Iterable[Source] = SOURCES) -> dict[str, str]:
    """``{coool file stem: text}`` for every prompt of the original, read from ``checkout``.

    Raises PromptImportError naming the file and the prompt that is missing.
    """
    root = Path(checkout)
    if not root.is_dir():
        raise PromptImportError(f"{root}: not a folder (expected a checkout of the original repository)")
    modules: dict[str, Module] = {}
    out: dict[str, str] = {}
    for name, variable in BASE_WITH_SNIPPET:
        base, count_pass = _module(root, DESCRIBE, modules), _module(root, DESCRIBE_V6, modules)
        for module in (base, count_pass):
            if variable not in module.strings:
                raise PromptImportError(f"{module.path}: no string {variable} (the {name} prompt)")
        text, sentence = with_snippet_placeholders(
            base.strings[variable].replace("$", "$$"), count_pass.strings[variable].replace("$", "$$"), f"{count_pass.path} {variable}"
        )
        out[name] = text.strip() + "\n"
        if sentence:
            out[SNIPPET] = sentence + "\n"
    for source in sources:
        path = root / source.file
        module = _module(root, source.file, modules)
        pieces = []
        for part in source.parts:
            if part.startswith("="):
                pieces.append(part[1:])
                continue
            table = module.local if part.startswith("@") else module.strings
            key = part.lstrip("@")
            if key not in table:
                raise PromptImportError(f"{path}: no string {key} (the {source.name} prompt)")
            pieces.append(_template(table[key], module, source, key))
        out[source.name] = "".join(pieces).strip() + "\n"
    return out


def write_prompts(prompts: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Each prompt as ``<out>/<name>.md`` (atomically); the written paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(folder / f"{name}.md", text) for name, text in prompts.items()]


def import_prompts(checkout: str | Path, out_dir: str | Path) -> list[Path]:
    """Read the original's prompts from ``checkout`` and write them to ``out_dir``."""
    return write_prompts(read_prompts(checkout), out_dir)
