"""``python -m bench [--quick] [--only NAME ...]``: the benchmarks (`make bench`).

Figures (one module each): preprocess, scheduling, orchestration, resume,
growth, video_readers, prefix_cache (real vLLM, CPU build). Each writes ``bench/results/<figure>.json`` (``--quick``:
``bench/results/quick/``) with the machine facts and the date; the combined
table goes to ``README-table.md`` beside them, and a full run of every
figure also refreshes the table in ``README.md`` and ``docs/BENCH.md``.

Benchmarks report, they don't fail: the exit code is 0 whether goals are met
or not (it is 1 only if a benchmark could not run at all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import growth, orchestration, prefix_cache, preprocess, resume, scheduling, video_readers
from bench.common import (
    REPO,
    RESULTS_DIR,
    Context,
    log,
    machine_facts,
    scratch,
    warm_sim_memo,
    write_result,
)
from bench.data import ensure_pool
from bench.table import markdown
from coool.files import atomic_write_text

FIGURES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "preprocess": preprocess.run,
    "scheduling": scheduling.run,
    "orchestration": orchestration.run,
    "resume": resume.run,
    "growth": growth.run,
    "video_readers": video_readers.run,
    "prefix_cache": prefix_cache.run,
}
NEEDS_SIM = {"scheduling", "orchestration", "resume", "growth"}
NEEDS_POOL = {"preprocess", *NEEDS_SIM}
# Growth runs the short clips in both modes, so alone it needs neither the mode's pool nor its warm-up.
SHORT_CLIPS_ONLY = {"growth"}
# A full run of every figure refreshes the table between these markers in both files.
TABLE_DOCS = (REPO / "README.md", REPO / "docs" / "BENCH.md")
TABLE_START, TABLE_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _load(out_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for name in FIGURES:
        path = out_dir / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def _refresh_docs(table: str) -> None:
    for doc in TABLE_DOCS:
        text = doc.read_text() if doc.is_file() else ""
        if TABLE_START not in text or TABLE_END not in text:
            continue
        head, rest = text.split(TABLE_START, 1)
        _, tail = rest.split(TABLE_END, 1)
        atomic_write_text(doc, f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repeat (under 5 minutes)")
    parser.add_argument("--only", action="append", choices=sorted(FIGURES), metavar="NAME",
                        help=f"run only this figure (repeatable): {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    selected = [name for name in FIGURES if not args.only or name in args.only]
    mode = "quick" if args.quick else "full"
    out_dir = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR

    started = time.perf_counter()
    facts = machine_facts()
    log(f"bench: {mode} run of {', '.join(selected)} on {facts['cores']} cores, load {facts['load_avg_at_start']}")
    setup_started = time.perf_counter()
    if (NEEDS_POOL - SHORT_CLIPS_ONLY) & set(selected):  # video_readers makes its own clips
        ensure_pool(args.quick)
    if (NEEDS_SIM - SHORT_CLIPS_ONLY) & set(selected):
        warm_sim_memo(args.quick)
    if SHORT_CLIPS_ONLY & set(selected):
        ensure_pool(True)
        warm_sim_memo(True)
    setup_s = time.perf_counter() - setup_started

    failed = []
    work = scratch(f"run-{mode}")
    with contextlib.ExitStack() as stack:
        ctx = Context(args.quick, work, stack)
        for name in selected:
            t0 = time.perf_counter()
            load_before = [round(x, 2) for x in os.getloadavg()]
            log(f"bench: figure {name} (load average {load_before})")
            try:
                result = FIGURES[name](ctx)
            except Exception:  # one broken figure must not hide the others
                failed.append(name)
                log(f"bench: figure {name} could not run:\n{traceback.format_exc()}")
                continue
            result["mode"] = mode
            result["seconds"] = round(time.perf_counter() - t0, 1)
            # Other work on the machine shows up here: wall-time ratios suffer first, CPU ratios less.
            result["load_avg_before"] = load_before
            result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
            result["machine"] = facts
            write_result(name, result, out_dir)
            log(f"bench: figure {name} done in {result['seconds']:.0f}s -> {out_dir / (name + '.json')}")
    shutil.rmtree(work, ignore_errors=True)

    total = time.perf_counter() - started
    everything = not args.only and not failed
    table = markdown(_load(out_dir), facts, mode, total - setup_s if everything else None)
    (out_dir / "README-table.md").write_text(table)
    if everything and not args.quick:
        _refresh_docs(table)
    print()
    print(table)
    log(f"bench: {mode} run finished in {total / 60:.1f} min (setup {setup_s:.0f}s: clip pool and simulation warm-up, "
        f"cached after the first run); results in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
