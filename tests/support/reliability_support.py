"""Helpers of the reliability tests (tests/reliability): small datasets, role
environments, child pipeline runs, and checks of a results folder.

Everything here talks to the SIMULATED model server (a test double, no model
inside); nothing is model output.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from roles import point_roles_at

from coool import schema as cols
from coool.submission import read_submission, validate

REPO = Path(__file__).resolve().parents[2]
COOOL = str(Path(sys.executable).with_name("coool"))
# What atomic_write_bytes (and transcode_h264) name their temp files: ".<name>.<...>.tmp".
TEMP_FILE = re.compile(r"^\..+\.tmp$")

# A small recipe with every kind of model stage: captions, the incident frame, two
# describe configurations (one per window kind), a merge and the ensemble.
SMALL_RECIPE = """\
name: reliability-small
description: captions, detect, two describe configurations, a merge and the ensemble (reliability tests)
caption: {every: 10}
describe: [v4, exp004]
merges:
  v4+exp004: {primary: v4, fallback: exp004}
ensemble:
  base: v4+exp004
  inputs: [v4, exp004]
final: ensemble
"""


def write_small_recipe(folder: Path) -> Path:
    path = Path(folder) / "reliability-small.yaml"
    path.write_text(SMALL_RECIPE, encoding="utf-8")
    return path


def role_env(url: str, **extra: str) -> dict[str, str]:
    """COOOL_* variables sending every role to ``url`` (quick retries), plus ``extra``."""
    env = point_roles_at(url)
    env.update(extra)
    return env


def per_role(setting: str, value: str) -> dict[str, str]:
    """``COOOL_<ROLE>__<SETTING>=value`` for every role."""
    return {f"COOOL_{role}__{setting}": value for role in ("CAPTIONER", "DETECTOR", "DESCRIBER", "ENSEMBLER")}


def child_env(prefect_api: str, coool_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child pipeline run: ours without any COOOL_*, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOOL_")}
    env.update(coool_env)
    env["PREFECT_API_URL"] = prefect_api
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def start_run(data: Path, results: Path, recipe: str | Path, env: Mapping[str, str], log: Path,
              *extra: str) -> subprocess.Popen[bytes]:
    """``coool run`` (the Prefect flow) as a child in its own session (so a kill takes all of it)."""
    argv = [COOOL, "run", "--data", str(data), "--results", str(results), "--recipe", str(recipe), *extra]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (the child and whatever it started), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, *, alive: subprocess.Popen[bytes] | None = None,
               poll_s: float = 0.03) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the child exited ({alive.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


# -- checks of a results folder ------------------------------------------------------------


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and TEMP_FILE.match(p.name))


def unreadable_files(root: Path) -> list[str]:
    """Every JSON / JSONL / CSV file (and Prefect's persisted results) that does not parse, with why."""
    bad = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or TEMP_FILE.match(path.name):
            continue
        try:
            if path.suffix == ".json" or ".prefect" in path.parts:
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".jsonl":
                for line in path.read_text(encoding="utf-8").splitlines():
                    json.loads(line)
            elif path.suffix == ".csv":
                with open(path, newline="", encoding="utf-8") as fh:
                    rows = list(csv.reader(fh, strict=True))
                if not rows:
                    raise ValueError("empty CSV")
                short = [i for i, r in enumerate(rows) if len(r) != len(rows[0])]
                if short:  # a file cut mid-row has a last row with fewer cells
                    raise ValueError(f"rows {short[:5]} do not have the header's {len(rows[0])} cells")
        except Exception as exc:  # any failure to parse is what we look for
            bad.append(f"{path.relative_to(root)}: {type(exc).__name__}: {exc}")
    return bad


def assert_valid_submission(path: Path, videos: list[int]) -> pd.DataFrame:
    """Strictly valid (labels too), exactly ``videos``, one row each."""
    frame = read_submission(path)
    errors = [p for p in validate(frame, expected_videos=videos, strict=True) if p.level == "error"]
    assert not errors, "\n".join(map(str, errors))
    assert sorted(int(v) for v in frame[cols.VIDEO]) == sorted(videos)
    return frame


def failures(results: Path) -> pd.DataFrame:
    return pd.read_csv(Path(results) / "failures.csv", dtype=str, keep_default_na=False)


# -- requests per unit of work, from what the outputs recorded -----------------------------

DESCRIBE_TITLES = {"counts": "describe_counts", "texts": "describe_texts", "reconcile": "describe_reconcile"}


def unit_requests(results: Path) -> dict[tuple[str, int], Counter[str]]:
    """Requests each finished (stage, video) made, per simulated task title, read from its output.

    For a run without faults: one request per captioned frame, the detect
    requests it records (12 per attempt as the original, one with coool's
    batched_samples), one per describe pass plus one per re-ask, one per
    ensemble attempt.
    """
    results = Path(results)
    out: dict[tuple[str, int], Counter[str]] = {}
    for meta in (results / "captions").glob("*.json"):
        video = int(meta.stem)
        raw = (results / "captions" / f"{video}.raw.jsonl").read_text(encoding="utf-8").splitlines()
        out[("caption", video)] = Counter({"frame_caption": len(raw)})
    for path in (results / "detect").glob("*.json"):
        saved = json.loads(path.read_text())
        out[("detect", int(path.stem))] = Counter({"incident_frame": int(saved.get("requests", saved["attempts"]))})
    for config_dir in (results / "describe").glob("*"):
        for path in config_dir.glob("*.json"):
            passes = json.loads(path.read_text())["passes"]
            out[(f"describe:{config_dir.name}", int(path.stem))] = Counter(
                {DESCRIBE_TITLES[name]: 1 + len(p["reasks"]) for name, p in passes.items()}
            )
    for path in (results / "ensemble").glob("*.json"):
        out[("ensemble", int(path.stem))] = Counter({"ensemble": len(json.loads(path.read_text())["samples"])})
    return out


def finished_units(results: Path) -> set[tuple[str, int]]:
    """The (stage, video) pairs whose output is complete on disk (their last file written)."""
    return set(unit_requests(results))


def total(counters: list[Counter[str]] | Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for c in counters:
        out.update(c)
    return out


# -- what a run left in Prefect ------------------------------------------------------------------


async def run_tree(flow_run_id: Any) -> list[Any]:
    """The flow run and every subflow run under it (any depth)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    ids, frontier = [flow_run_id], [flow_run_id]
    async with get_client() as client:
        while frontier:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            frontier = [c.id for c in children if c.id not in ids]
            ids += frontier
    return ids


async def run_artifacts(flow_run_id: Any) -> list[Any]:
    """Every artifact that the run (or a subflow or task of it) published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = await run_tree(flow_run_id)
    async with get_client() as client:
        return await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))


def summary_tables(markdown: str) -> dict[str, list[list[str]]]:
    """The tables of a markdown summary, by the ``## heading`` above each (cells stripped)."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not set(line) <= set("|-: "):
            tables.setdefault(heading, []).append([c.strip() for c in line.strip().strip("|").split("|")])
    return tables
