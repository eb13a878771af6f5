"""Where everything of one run lives: the results directory (docs/LAYOUT.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coool.files import atomic_write_json, read_json


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    # stage 1
    def frames_dir(self, video: int) -> Path:
        return self.root / "frames" / str(video)

    def manifest_path(self, video: int) -> Path:
        return self.frames_dir(video) / "manifest.json"

    # stage 2
    @property
    def captions_dir(self) -> Path:
        return self.root / "captions"

    def captions_path(self, video: int) -> Path:
        return self.captions_dir / f"{video}.csv"

    def captions_raw_path(self, video: int) -> Path:
        return self.captions_dir / f"{video}.raw.jsonl"

    def captions_meta_path(self, video: int) -> Path:
        """The caption unit's key and summary, written last."""
        return self.captions_dir / f"{video}.json"

    # stage 3
    @property
    def detect_dir(self) -> Path:
        return self.root / "detect"

    def detect_path(self, video: int) -> Path:
        return self.detect_dir / f"{video}.json"

    @property
    def detections_csv(self) -> Path:
        return self.root / "detect.csv"

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
        return self.describe_root / config

    def describe_path(self, config: str, video: int) -> Path:
        return self.describe_dir(config) / f"{video}.json"

    def describe_submission(self, config: str) -> Path:
        return self.describe_dir(config) / "submission.csv"

    def merge_csv(self, name: str) -> Path:
        return self.root / "merges" / f"{name}.csv"

    @property
    def count_pass_csv(self) -> Path:
        return self.root / "countpass.csv"

    # stage 5
    @property
    def ensemble_dir(self) -> Path:
        return self.root / "ensemble"

    def ensemble_path(self, video: int) -> Path:
        return self.ensemble_dir / f"{video}.json"

    @property
    def submission_csv(self) -> Path:
        return self.root / "submission.csv"

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
