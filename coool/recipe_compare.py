"""Two recipes on the same data, side by side: ``coool compare-recipes`` (README, "Choosing
between faithful and plus").

Both run into one results folder: every stage whose parameters are the same in both is
computed once (its key is the same), a switched stage's outputs are filed beside the
original's (coool.workspace.Workspace), and each recipe keeps its final submission as
``submissions/<recipe>.csv``, the pair the comparison and the studio's blind A/B use.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

DEFAULT_PAIR: tuple[str, str] = ("second-place", "second-place-plus")


def check_pair(names: list[str]) -> None:
    """Raise ValueError unless ``names`` are two recipes with different names (each keeps its
    submission under its name: two of one name would overwrite each other)."""
    if len(names) != 2:
        raise ValueError(f"compare-recipes takes two recipes, got {len(names)}: {names}")
    if names[0] == names[1]:
        raise ValueError(f"compare-recipes: both recipes are named {names[0]!r}; give two different recipes")


def ab_url(results: Path, a: Path, b: Path, *, host: str = "127.0.0.1", port: int = 8765) -> str:
    """The studio's page that starts a blind A/B session on submissions ``a`` and ``b`` (files
    under ``results``, named as the studio names them: by their path relative to it)."""
    root = Path(results).resolve()
    query = urlencode({"a": Path(a).resolve().relative_to(root).as_posix(), "b": Path(b).resolve().relative_to(root).as_posix()})
    return f"http://{host}:{port}/ab/new?{query}"
