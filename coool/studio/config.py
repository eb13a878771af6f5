"""Where the studio reads from and writes to, resolved once at start-up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coool.workspace import Workspace


@dataclass(frozen=True)
class StudioConfig:
    results_dir: Path
    videos_dir: Path | None
    state_dir: Path  # studio state lives in <state_dir>/studio/
    extra_submissions: tuple[Path, ...]
    truth: Path | None
    workspace: Workspace  # the results folder's layout, as its last run filed it (results_workspace)
    allow_remote: bool = False

    @property
    def studio_dir(self) -> Path:
        return self.state_dir / "studio"

    @property
    def h264_dir(self) -> Path:
        return self.studio_dir / "h264"

    @property
    def thumbs_dir(self) -> Path:
        return self.studio_dir / "thumbs"

    @property
    def votes_db(self) -> Path:
        return self.studio_dir / "votes.sqlite"

    @property
    def secret_file(self) -> Path:
        return self.studio_dir / "secret"


def read_run_json(results_dir: Path) -> dict[str, Any]:
    """``<results>/run.json`` as a dict; {} when absent or unreadable (browsing must still work)."""
    try:
        data = json.loads((results_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def results_workspace(results_dir: Path, run: dict[str, Any]) -> Workspace:
    """The results folder's layout as the run recorded in ``run`` (run.json) filed it: its
    ``variants``, else its recipe's (so a second-place-plus folder's ``captions+plus/`` is
    found); the plain layout when neither is known."""
    variants = run.get("variants")
    if isinstance(variants, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in variants.items()):
        return Workspace(results_dir, variants)
    recipe = run.get("recipe")
    if isinstance(recipe, str) and recipe.strip():
        from coool.recipe import load_recipe  # recipes load prompts and configurations: only when needed

        try:
            return Workspace(results_dir, load_recipe(recipe).output_variants())
        except (ValueError, OSError):
            pass  # a recipe that moved or is gone: the plain layout, browsing still works
    return Workspace(results_dir)


def _dir_from(value: Any, base: Path) -> Path | None:
    """A folder named in run.json: absolute, or relative to the results dir, or to the cwd."""
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value).expanduser()
    for candidate in ([path] if path.is_absolute() else [base / path, Path.cwd() / path]):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _data_root(run: dict[str, Any], results_dir: Path, videos_dir: Path | None) -> Path | None:
    for key in ("data_root", "root", "data"):
        found = _dir_from(run.get(key), results_dir)
        if found is not None:
            return found
    # The data layout is <root>/videos, <root>/heatmaps, <root>/truth.csv.
    return videos_dir.parent if videos_dir is not None else None


def find_truth(results_dir: Path, run: dict[str, Any], videos_dir: Path | None) -> Path | None:
    """<results>/truth.csv, else the data root's truth.csv, else None."""
    candidates = [results_dir / "truth.csv"]
    root = _data_root(run, results_dir, videos_dir)
    if root is not None:
        candidates.append(root / "truth.csv")
    for path in candidates:
        if path.is_file():
            return path.resolve()
    return None


def resolve_config(
    results_dir: Path,
    videos_dir: Path | None = None,
    extra_submissions: tuple[Path, ...] | list[Path] = (),
    state_dir: Path | None = None,
    truth: Path | None = None,
    allow_remote: bool = False,
) -> StudioConfig:
    """Fill the defaults: videos_dir and truth from run.json / the data root."""
    results_dir = Path(results_dir).expanduser().resolve()
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} does not exist")
    run = read_run_json(results_dir)
    if videos_dir is None:
        videos_dir = _dir_from(run.get("videos_dir") or run.get("videos"), results_dir)
    else:
        videos_dir = Path(videos_dir).expanduser().resolve()
    if truth is None:
        truth = find_truth(results_dir, run, videos_dir)
    else:
        truth = Path(truth).expanduser().resolve()
    return StudioConfig(
        results_dir=results_dir,
        videos_dir=videos_dir,
        state_dir=Path(state_dir).expanduser().resolve() if state_dir is not None else results_dir,
        extra_submissions=tuple(Path(p).expanduser().resolve() for p in extra_submissions),
        truth=truth,
        workspace=results_workspace(results_dir, run),
        allow_remote=allow_remote,
    )
