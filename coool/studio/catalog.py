"""What the results directory holds: submissions (by header) and videos."""

from __future__ import annotations

import csv
import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from coool import schema as cols
from coool.inputs import VIDEO_EXTENSIONS
from coool.submission import Problem, SubmissionError, read_submission, validate

# Folders that never hold submissions; pruning frames/ keeps the walk fast (tens of thousands of PNGs).
SKIP_DIRS = frozenset({"frames", "studio", "ensemble"})


@dataclass(frozen=True)
class SubmissionRef:
    key: str  # identity stored with votes: results-relative path, or the absolute path of an extra file
    label: str
    path: Path

    @property
    def sid(self) -> str:
        """Short URL-safe id (paths contain slashes)."""
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()[:10]


@dataclass
class LoadedSubmission:
    ref: SubmissionRef
    frame: pd.DataFrame  # strings, exactly as written
    problems: list[Problem]
    rows: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(p.level == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.level == "warning" for p in self.problems)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def has_submission_header(path: Path) -> bool:
    """True if the CSV's first line is exactly the submission header."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header is not None and [h.lstrip("\ufeff") for h in header] == list(cols.COLUMNS)


def _order(rel: str) -> tuple[int, str]:
    # Final first, then the stages' outputs in pipeline order, then anything else.
    if rel == "submission.csv":
        return (0, rel)
    # Each recipe's final submission (submissions/<recipe>.csv) next: the pairs to compare.
    for rank, prefix in enumerate(("submissions/", "describe/", "merges/", "count-pass"), start=1):
        if rel.startswith(prefix):
            return (rank, rel)
    return (9, rel)


class Catalog:
    """Finds and loads submissions; re-reads a file only when it changed on disk."""

    def __init__(
        self,
        results_dir: Path,
        extra: Iterable[Path] = (),
        exclude: Iterable[Path] = (),
        videos_dir: Path | None = None,
    ) -> None:
        self.results_dir = results_dir
        self.extra = tuple(extra)
        self.exclude = {p.resolve() for p in exclude}
        self.videos_dir = videos_dir
        self._headers: dict[Path, tuple[tuple[int, int] | None, bool]] = {}
        self._loaded: dict[Path, tuple[tuple[int, int] | None, LoadedSubmission]] = {}
        self._lock = threading.Lock()

    # --- discovery ------------------------------------------------------------------

    def _is_submission(self, path: Path) -> bool:
        stamp = _stamp(path)
        cached = self._headers.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, has_submission_header(path))
            self._headers[path] = cached
        return cached[1]

    def submissions(self) -> list[SubmissionRef]:
        """Every submission-header CSV under the results dir, then the extra files."""
        found: list[tuple[tuple[int, str], SubmissionRef]] = []
        for dirpath, dirnames, filenames in os.walk(self.results_dir):
            here = Path(dirpath)
            top = here == self.results_dir
            # "ensemble+plus": another recipe's switched outputs of a skipped folder (coool.workspace).
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and not (top and d.split("+", 1)[0] in SKIP_DIRS)
            )
            for name in filenames:
                path = here / name
                if not name.endswith(".csv") or name.startswith(".") or path.resolve() in self.exclude:
                    continue
                if self._is_submission(path):
                    rel = path.relative_to(self.results_dir).as_posix()
                    found.append((_order(rel), SubmissionRef(rel, rel, path)))
        refs = [ref for _, ref in sorted(found, key=lambda item: item[0])]
        seen = {ref.path.resolve() for ref in refs}
        names = [p.name for p in self.extra]
        for path in self.extra:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            label = path.name if names.count(path.name) == 1 else str(path)
            refs.append(SubmissionRef(str(path.resolve()), label, path))
        return refs

    def by_sid(self, sid: str) -> SubmissionRef | None:
        return next((r for r in self.submissions() if r.sid == sid), None)

    def by_key(self, key: str) -> SubmissionRef | None:
        return next((r for r in self.submissions() if r.key == key), None)

    # --- loading --------------------------------------------------------------------

    def load(self, ref: SubmissionRef) -> LoadedSubmission:
        """The submission's rows as written, with its validation problems (never raises on bad rows)."""
        stamp = _stamp(ref.path)
        with self._lock:
            cached = self._loaded.get(ref.path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        try:
            frame = read_submission(ref.path)
            problems = validate(frame)
        except SubmissionError as exc:
            frame, problems = pd.DataFrame(columns=list(cols.COLUMNS)), [Problem(None, None, str(exc))]
        loaded = LoadedSubmission(ref, frame, problems)
        if list(frame.columns) == list(cols.COLUMNS):
            for row in frame.to_dict("records"):
                video = str(row[cols.VIDEO]).strip()
                if video.isdigit():
                    loaded.rows.setdefault(int(video), {k: str(v) for k, v in row.items()})
        with self._lock:
            self._loaded[ref.path] = (stamp, loaded)
        return loaded

    # --- videos ---------------------------------------------------------------------

    def video_files(self) -> dict[int, Path]:
        """Original videos by id: ``<id>.<ext>`` in the videos folder."""
        if self.videos_dir is None or not self.videos_dir.is_dir():
            return {}
        out: dict[int, Path] = {}
        for path in sorted(self.videos_dir.iterdir()):
            if path.stem.isdigit() and path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                out.setdefault(int(path.stem), path)
        return out

    def video_ids(self) -> list[int]:
        """Every id that has a video file or a row in some submission."""
        ids = set(self.video_files())
        for ref in self.submissions():
            ids.update(self.load(ref).rows)
        return sorted(ids)
