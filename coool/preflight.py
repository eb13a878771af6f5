"""What a run checks before it starts anything, and the errors that stop it.

``coool run`` (with or without Prefect) and the stage commands call these
before any Prefect server, model server or stage: a user's mistake (a data
folder without videos, a results path that is a file, a bad settings file)
is one line naming the file and the problem, exit 2.

Two kinds of failure stop a run that has started, instead of becoming
per-video fallback rows (a submission of fallbacks looks valid and is not
the work): an error of the environment (no space left, a read-only or
forbidden results folder: ``EnvironmentStop``) and a stage whose every
request is refused the same way (``RefusedStop``, see ``refusal``).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coool.inputs import VIDEO_EXTENSIONS


class UserError(ValueError):
    """A mistake in what the user gave (folders, recipe, settings): one line, exit 2."""


class RunStopped(RuntimeError):
    """A run stopped on purpose: the message is the one line to show; no final submission was written."""


class EnvironmentStop(RunStopped):
    """No space, a read-only file system, no permission: not a video's failure."""


class RefusedStop(RunStopped):
    """Every request of a stage was refused the same way (a configuration error)."""


# Errors of the machine, not of one video: every later write would fail the same way.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (wrappers like ModelRequestError or a task's failure keep the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# How an OSError reads once a wrapper (a task run's failure, a stage's message) kept only its text.
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^:'\"]*(?::\s*'([^']*)')?")


def environment_error(exc: BaseException) -> OSError | None:
    """The OSError of the environment behind ``exc`` (ENOSPC, EROFS, EACCES, EPERM, EDQUOT), else None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            return e
    for e in _chain(exc):
        for match in _ERRNO_TEXT.finditer(str(e)):
            if int(match[1]) in ENVIRONMENT_ERRNOS:
                return OSError(int(match[1]), os.strerror(int(match[1])), match[2])
    return None


def environment_message(error: OSError, folder: Path | str) -> str:
    """One line: the folder (the results folder when the file is in it), the problem, the file."""
    problem = os.strerror(error.errno or 0)
    where, folder = str(error.filename or ""), Path(folder).resolve()
    if not where or Path(where).resolve().is_relative_to(folder):
        head = f"results folder {folder}: {problem}" + (f" (writing {where})" if where else "")
    else:
        head = f"{where}: {problem}"
    return f"{head}; the run stopped (an error of the machine, not of a video): rerun when it is fixed"


# How the client reports a status (coool.llm._describe): "HTTP 404 from <url>: <message>".
_STATUS_TEXT = re.compile(r"HTTP (\d{3}) from (\S+?): ")


def refusal(exc: BaseException) -> str | None:
    """How a request was refused, when retrying cannot help: ``HTTP 404 from <url>``.

    A 4xx status other than 408 (timeout) and 429 (busy) is a refusal of
    what was sent (a wrong model name, a bad request, a wrong key); the same
    refusal from the same URL on every video of a stage is a configuration
    error. Read from the error's text, which every wrapper keeps (a stage's
    own message, a Prefect task run's failure).
    """
    for e in _chain(exc):
        for match in _STATUS_TEXT.finditer(str(e)):
            status = int(match[1])
            if 400 <= status < 500 and status not in (408, 429):
                return f"HTTP {status} from {match[2]}"
    return None


# -- before a run ---------------------------------------------------------------------


def _has_videos(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".") for p in folder.iterdir())


def check_data(data: Path) -> tuple[Path, Path]:
    """``data/videos`` and ``data/heatmaps``, each an existing folder holding video files."""
    if not data.exists():
        raise UserError(f"data folder {data}: does not exist")
    if not data.is_dir():
        raise UserError(f"data folder {data}: is a file, not a folder (expected a folder with videos/ and heatmaps/)")
    found = []
    for name in ("videos", "heatmaps"):
        folder = data / name
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise UserError(f"{folder}: {what} (the data folder needs videos/ and heatmaps/)")
        try:
            if not _has_videos(folder):
                exts = ", ".join(f"*{e}" for e in VIDEO_EXTENSIONS)
                raise UserError(f"{name} folder {folder} holds no video files ({exts})")
        except PermissionError as exc:
            raise UserError(f"{folder}: cannot be read ({exc.strerror})") from None
        found.append(folder)
    return found[0], found[1]


def check_results_folder(results: Path, what: str = "results folder") -> Path:
    """Create ``results`` if needed and prove it takes a file; UserError naming the folder and the problem."""
    for parent in [results, *results.parents]:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {results}: {parent} is a file, not a folder")
        if parent.exists():
            break
    try:
        results.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".coool-write-check.", suffix=".tmp", dir=results)
        try:
            os.write(fd, b"coool")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {results}: not writable ({exc.strerror or exc})") from None
    return results


def load_checked_settings(settings_file: Path | str | None, **overrides: Any) -> Any:
    """``load_settings`` with its errors as one line naming the file."""
    from pydantic import ValidationError

    from coool.settings import load_settings

    try:
        return load_settings(settings_file, **overrides)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        where = settings_file or os.environ.get("COOOL_SETTINGS_FILE") or "COOOL_* environment"
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserError(f"settings {where}: {field}: {first['msg']} ({exc.error_count()} error(s))") from None


def folders_line(videos: Path, heatmaps: Path, results: Path, recipe: str, settings_file: Path | str | None) -> str:
    """What the run uses each folder for (the first line of a run)."""
    settings = settings_file or os.environ.get("COOOL_SETTINGS_FILE") or "none (environment and defaults)"
    return (
        f"videos: {videos.resolve()} | heatmaps: {heatmaps.resolve()} | results: {results.resolve()} | "
        f"recipe: {recipe} | settings: {settings}"
    )
