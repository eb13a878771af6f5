"""One measured pipeline run in a fresh process: ``python -m bench.worker pipeline ...``.

A fresh process per run keeps runs independent (no warm caches, no Prefect
client state carried over) and gives an honest peak memory (ru_maxrss).
Settings come from the environment (COOOL_*, PREFECT_API_URL), as for a user.
The last stdout line is the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any


def _count_tasks(outcome: dict[str, Any], frames_tasks: int) -> int:
    """Task runs of a pipeline flow: one per video in stage 1, one per (stage, video) after."""
    total = frames_tasks
    for report in outcome.get("stages", []):
        total += report["done"] + report["cached"] + report["skipped"] + len(report["failed"])
    return total


def run_pipeline(mode: str, data: Path, results: Path, recipe: str, concurrent: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    from coool.recipe import load_recipe
    from coool.run import Run, run_plain
    from coool.settings import load_settings

    if mode == "prefect":
        from flows.pipeline import pipeline_flow
    import_s = time.perf_counter() - t0

    w0, c0 = time.perf_counter(), time.process_time()
    if mode == "prefect":
        outcome = asyncio.run(
            pipeline_flow(data_root=str(data), recipe=recipe, results_dir=str(results), concurrent=concurrent)
        )
        stage_count = len(outcome.get("stages", []))
        tasks = _count_tasks(outcome, frames_tasks=outcome["videos"])
    else:
        settings = load_settings(results_dir=results)
        pipeline = Run(settings, load_recipe(recipe))
        outcome = asyncio.run(run_plain(pipeline, data / "videos", data / "heatmaps", concurrent=concurrent))
        stage_count = len(pipeline.recipe.stages())
        tasks = outcome["videos"] * (1 + stage_count)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    if mode == "prefect":
        try:  # send buffered run logs before the process ends (what users' runs do too)
            from prefect.logging.handlers import APILogHandler

            APILogHandler.flush()
        except Exception:
            pass
    return {
        "mode": mode,
        "recipe": recipe,
        "videos": outcome["videos"],
        "failures": outcome["failures"],
        "stages": stage_count,
        "task_runs": tasks,
        "import_s": round(import_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stage_seconds": {r["stage"]: r["seconds"] for r in outcome.get("stages", [])},
        "cached": sum(r["cached"] for r in outcome.get("stages", [])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="the whole recipe, through Prefect or plain")
    p.add_argument("--mode", choices=("prefect", "plain"), required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--recipe", default="second-place")
    p.add_argument("--concurrent", action="store_true")
    args = parser.parse_args(argv)
    # Warnings only: a benchmark's stdout is its result line.
    logging.basicConfig(level=logging.WARNING)
    result = run_pipeline(args.mode, args.data, args.results, args.recipe, args.concurrent)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
