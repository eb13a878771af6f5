"""Figure 5, growth: wall time and peak memory as the number of videos grows.

The pipeline runs through Prefect (what users run) on 10, 40, 160 and 640 videos
against the zero-latency simulated server; each size is a fresh process
and results folder, so its peak resident memory (ru_maxrss) is its own.
Time should grow linearly (a fixed cost plus constant seconds per video:
fitted, and every size checked against the line), memory stay flat. The
smallest and largest sizes run again with the describer's in-flight bound
at 8 requests (default 64): what memory does then shows what drives it.

To fit the time budget on 2 cores this figure uses the ``quick`` recipe
(stage 1, captions, incident frame, one describe configuration) and the
short clips (15-17 s, both sizes); the work per video is the same at every
size, so the shape is what is measured.

``COOOL_BENCH_GROWTH_SIZES=10,40,160`` runs other sizes (full mode), e.g.
to leave 640 out when the machine is too busy for it; the result records
the sizes run.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from bench.common import Context, log, ratio
from bench.data import ensure_pool, make_dataset

GOAL_LINEAR_DEVIATION = 0.10  # every size within 10% of the least-squares line t = fixed + per_video * N
GOAL_MEMORY_GROWTH = 1.25  # peak memory at the largest size at most 1.25x the smallest
BOUNDED_DESCRIBER = {"COOOL_DESCRIBER__MAX_CONCURRENCY": "8"}


def run(ctx: Context) -> dict[str, Any]:
    pool, specs = ensure_pool(True)  # the short clips, in both modes
    # 640 shows the curve stays flat past the in-flight bounds (64 videos, 64 requests); full mode only.
    sizes = (1, 2, 4) if ctx.quick else (10, 40, 160, 640)
    if not ctx.quick and (chosen := os.environ.get("COOOL_BENCH_GROWTH_SIZES")):
        sizes = tuple(sorted(int(n) for n in chosen.split(",")))
    recipe = "quick"
    work = ctx.work / "growth"
    points = []
    for n in sizes:
        data = make_dataset(pool, specs, n, work / f"data-{n}")
        results = work / f"results-{n}"
        out = ctx.pipeline_run("prefect", data, results, recipe)
        shutil.rmtree(results, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        point = {
            "videos": n,
            "wall_s": out["wall_s"],
            "s_per_video": round(out["wall_s"] / n, 3),
            "client_cpu_s": out["cpu_s"],
            "peak_rss_mib": out["peak_rss_mib"],
            "task_runs": out["task_runs"],
            "failures": out["failures"],
            "sim_cpu_s": out["sim_cpu_s"],
            "prefect_server_cpu_s": out["prefect_server_cpu_s"],
        }
        points.append(point)
        log(f"growth: {n} videos: {out['wall_s']:.1f}s ({point['s_per_video']:.2f}s/video), "
            f"peak {out['peak_rss_mib']:.0f} MiB, {out['failures']} failures")
    # The cause check: the same smallest and largest sizes with the describer's in-flight
    # bound at 8 requests instead of 64 (each describe request carries 24 frames).
    bounded = []
    for n in (sizes[0], min(sizes[-1], 160)):  # the cause check stops at 160: time
        data = make_dataset(pool, specs, n, work / f"data-{n}")
        out = ctx.pipeline_run("prefect", data, work / f"results-bounded-{n}", recipe, settings=BOUNDED_DESCRIBER)
        shutil.rmtree(work / f"results-bounded-{n}", ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        bounded.append({"videos": n, "wall_s": out["wall_s"], "peak_rss_mib": out["peak_rss_mib"], "failures": out["failures"]})
        log(f"growth: {n} videos, describer max_concurrency 8: {out['wall_s']:.1f}s, peak {out['peak_rss_mib']:.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)
    small, large = points[0], points[-1]
    # Linear: wall = fixed + per_video * N, fitted by least squares over the sizes.
    xs = [p["videos"] for p in points]
    ys = [p["wall_s"] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    per_video = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - per_video * mx
    deviation = max(abs(y - (fixed + per_video * x)) / y for x, y in zip(xs, ys))
    memory = ratio(large["peak_rss_mib"], small["peak_rss_mib"])
    return {
        "figure": "growth",
        "recipe": recipe,
        "clips": "15-17 s, 1280x720 and 1584x660, 30 fps (the pool's short clips, repeated)",
        "points": points,
        "fit_fixed_s": round(fixed, 2),
        "fit_s_per_video": round(per_video, 3),
        "fit_max_deviation": round(deviation, 3),
        "time_per_video_largest_vs_smallest": ratio(large["s_per_video"], small["s_per_video"]),
        "peak_memory_largest_vs_smallest": memory,
        "goal_linear_deviation_at_most": GOAL_LINEAR_DEVIATION,
        "goal_memory_growth_at_most": GOAL_MEMORY_GROWTH,
        "goal_time_linear_met": deviation <= GOAL_LINEAR_DEVIATION,
        "goal_memory_flat_met": memory <= GOAL_MEMORY_GROWTH,
        "bounded_describer_settings": BOUNDED_DESCRIBER,
        "bounded_describer_points": bounded,
        "bounded_describer_memory_largest_vs_smallest": ratio(bounded[-1]["peak_rss_mib"], bounded[0]["peak_rss_mib"]),
    }
