"""Atomic file writes and content hashes shared by every stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
# ".<name>.<pid>-<random>.tmp", as atomic_write_bytes names its temp files.
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>[0-9]+)-[^./]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename.

    A reader (or a crash) never sees a half-written file: either the old
    content or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name: a later run can tell a dead writer's leftover
    # (a kill between create and rename) from a live writer's file (clean_stale_temp_files).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a live process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files that killed writers left under ``root``; return them.

    A SIGKILL between creating a temp file and renaming it leaves
    ``.<name>.<pid>-<random>.tmp`` beside the real file (which is untouched:
    the old content or none). Only files of that shape whose writer ``pid`` no
    longer runs on this machine are removed, so a run never deletes a live
    writer's file. Runs call this at start (a shared results folder across
    machines is not supported for the local layout).
    """
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            match = _TEMP_NAME.match(name)
            if match and not pid_alive(int(match.group("pid"))):
                target = Path(dirpath) / name
                try:
                    target.unlink()
                except FileNotFoundError:
                    continue
                removed.append(target)
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes: the identity of an input, whatever its path."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_sha256(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys)."""
    return text_sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))


def combined_hash(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
