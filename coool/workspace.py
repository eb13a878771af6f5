"""Where everything of one run lives: the results directory (docs/LAYOUT.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from coool.files import atomic_write_json, read_json

# File names inside a stage's folder. The Workspace uses them for a results folder, and the
# stage commands (`coool caption`, `detect`, ...) for the folders a user names.
MANIFEST = "manifest.json"
SUBMISSION = "submission.csv"


def video_frames_dir(frames_root: Path, video: int) -> Path:
    """Stage 1's folder of one video under ``frames_root``: ``<video>/``."""
    return Path(frames_root) / str(video)


def manifest_in(frames_dir: Path) -> Path:
    """Stage 1's manifest in a video's frames folder."""
    return Path(frames_dir) / MANIFEST


def video_json(folder: Path, video: int) -> Path:
    """A stage's per-video output in ``folder``: ``<video>.json`` (detect, describe, ensemble)."""
    return Path(folder) / f"{video}.json"


class CaptionFiles(NamedTuple):
    """What stage 2 writes for one video; ``meta`` (key and summary) last, marking it done."""

    table: Path
    raw: Path
    meta: Path


def caption_files(folder: Path, video: int) -> CaptionFiles:
    """Stage 2's files of one video in ``folder``: ``<video>.csv``, ``.raw.jsonl``, ``.json``."""
    folder = Path(folder)
    return CaptionFiles(folder / f"{video}.csv", folder / f"{video}.raw.jsonl", video_json(folder, video))


def submission_in(folder: Path) -> Path:
    """The submission of a describe configuration's or the ensemble's folder."""
    return Path(folder) / SUBMISSION


@dataclass(frozen=True)
class Workspace:
    """Every path of a results folder.

    ``variants`` (``Recipe.output_variants()``): per stage (``caption``, ``detect``,
    ``describe:<config>``, ``derived`` for merges and the count pass's table, ``ensemble``),
    the variant its outputs are filed under. ``""`` (the original method, and a bare
    ``Workspace(root)``) keeps the plain paths; ``plus`` files them as ``captions+plus/``,
    ``describe/v4+plus/``, ... so that two recipes' outputs live side by side.
    """

    root: Path
    variants: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def _marked(self, name: str, stage: str) -> str:
        """``name`` as filed for ``stage``'s variant (``name+<variant>``)."""
        variant = self.variants.get(stage, "")
        return f"{name}+{variant}" if variant else name

    # stage 1
    @property
    def frames_root(self) -> Path:
        return self.root / "frames"

    def frames_dir(self, video: int) -> Path:
        return video_frames_dir(self.frames_root, video)

    def manifest_path(self, video: int) -> Path:
        return manifest_in(self.frames_dir(video))

    # stage 2
    @property
    def captions_dir(self) -> Path:
        return self.root / self._marked("captions", "caption")

    def captions_files(self, video: int) -> CaptionFiles:
        return caption_files(self.captions_dir, video)

    def captions_path(self, video: int) -> Path:
        return self.captions_files(video).table

    def captions_raw_path(self, video: int) -> Path:
        return self.captions_files(video).raw

    # stage 3
    @property
    def detect_dir(self) -> Path:
        return self.root / self._marked("detect", "detect")

    def detect_path(self, video: int) -> Path:
        return video_json(self.detect_dir, video)

    @property
    def detections_csv(self) -> Path:
        return self.root / f"{self._marked('detect', 'detect')}.csv"

    # stage 4
    @property
    def describe_root(self) -> Path:
        return self.root / "describe"

    def describe_configs(self) -> list[str]:
        """The describe configurations with a folder of outputs."""
        if not self.describe_root.is_dir():
            return []
        return sorted(p.name for p in self.describe_root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def describe_dir(self, config: str) -> Path:
        """The configuration's folder (a name ``describe_configs()`` listed is used as it is)."""
        return self.describe_root / self._marked(config, f"describe:{config}")

    def describe_path(self, config: str, video: int) -> Path:
        return video_json(self.describe_dir(config), video)

    def describe_submission(self, config: str) -> Path:
        return submission_in(self.describe_dir(config))

    def merge_csv(self, name: str) -> Path:
        return self.root / "merges" / f"{self._marked(name, 'derived')}.csv"

    @property
    def count_pass_csv(self) -> Path:
        return self.root / f"{self._marked('count-pass', 'derived')}.csv"

    # stage 5
    @property
    def ensemble_dir(self) -> Path:
        return self.root / self._marked("ensemble", "ensemble")

    def ensemble_path(self, video: int) -> Path:
        return video_json(self.ensemble_dir, video)

    @property
    def ensemble_submission(self) -> Path:
        return submission_in(self.ensemble_dir)

    @property
    def submission_csv(self) -> Path:
        """The final submission of the last run, whichever its recipe."""
        return self.root / SUBMISSION

    @property
    def submissions_dir(self) -> Path:
        return self.root / "submissions"

    def recipe_submission(self, recipe: str) -> Path:
        """The final submission of recipe ``recipe``: kept when another recipe runs in the same folder."""
        return self.submissions_dir / f"{safe_name(recipe)}.csv"

    @property
    def failures_csv(self) -> Path:
        return self.root / "failures.csv"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def prefect_dir(self) -> Path:
        return self.root / ".prefect"

    def record_run(self, info: dict[str, Any]) -> Path:
        """``run.json``: merged with what is there, so a rerun keeps history fields."""
        current = read_json(self.run_json) if self.run_json.exists() else {}
        current.update(info)
        return atomic_write_json(self.run_json, current)


def safe_name(name: str) -> str:
    """``name`` as one file name: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "_"


def cached_output(path: Path, key: str) -> dict[str, Any] | None:
    """The saved output at ``path`` if it was made for ``key`` (else None).

    Every stage output records the key of what determined it, so a rerun
    can tell finished work from stale work without asking Prefect.
    """
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (ValueError, OSError):
        return None  # unreadable: redo it
    return data if isinstance(data, dict) and data.get("key") == key else None


def write_output(path: Path, key: str | None, model: str, usage: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
    """A unit's output at ``path``, atomically: the key it was made for (what ``cached_output``
    checks), the model that answered, the tokens, then the result's own fields."""
    return atomic_write_json(path, {"key": key, "model": model, "usage": dict(usage), **result})
