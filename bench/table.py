"""The README table: every figure beside its goal, from the results JSON files."""

from __future__ import annotations

from typing import Any


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _ok(met: bool) -> str:
    return "yes" if met else "**no**"


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, goal, met) rows for the figures present."""
    out: list[tuple[str, str, str, str]] = []
    if (r := results.get("preprocess")) is not None:
        a, q = r["approaches"], r["ratios"]
        g = r["goals"]
        mb = {k: v["bytes_written"] / 1e6 for k, v in a.items()}
        fps = {k: v["video_frames_per_s"] for k, v in a.items()}
        what = f"{r['videos']} videos, {r['video_frames']} frames"
        out += [
            (f"1a. Stage 1 / decode floor ({what})", _x(q["ours_vs_floor_wall"]) + f" wall, {_x(q['ours_vs_floor_cpu'])} CPU",
             f"<= {g['ours_vs_floor_at_most']:.1f}x", _ok(g["ours_vs_floor_met"])),
            ("1b. Original approach / stage 1", _x(q["original_vs_ours_wall"]) + f" wall, {_x(q['original_vs_ours_cpu'])} CPU",
             f">= {g['original_vs_ours_at_least']:.0f}x", _ok(g["original_vs_ours_met"])),
            ("1c. Bytes written: original / stage 1",
             f"{q['original_vs_ours_bytes']:.1f}x ({mb['original']:.0f} MB vs {mb['ours']:.0f} MB)", "-", "-"),
            ("1d. Video frames per second: floor / stage 1 / original",
             f"{fps['floor']:.0f} / {fps['ours']:.0f} / {fps['original']:.0f}", "-", "-"),
        ]
    if (r := results.get("scheduling")) is not None:
        for c in r["cases"]:
            out.append((
                f"2. Caption requests/s, C={c['capacity']}, L={c['latency_s']:g} s ({r['videos']} videos, {c['requests']} requests)",
                f"{_pct(c['efficiency'])} of C/L = {c['ideal_rps']:g}/s; {c['speedup_vs_one_at_a_time']:.0f}x one-at-a-time; "
                f"server held >= C requests {_pct(c['server_held_at_least_C']['median'])} of the time",
                f">= {_pct(c['goal_efficiency'])}", _ok(c["goal_met"]),
            ))
    if (r := results.get("orchestration")) is not None:
        out.append((
            f"3. Prefect / plain, whole pipeline ({r['videos']} videos, {r['task_runs']} task runs, zero latency)",
            (f"{_x(r['prefect_vs_plain_wall'])} wall, {_x(r['prefect_vs_plain_client_cpu'])} our CPU; "
             f"+{r['added_wall_ms_per_task_run']:.0f} ms wall per task run (the Prefect server spends "
             f"{r['prefect_server_cpu_ms_per_task_run']:.0f} ms CPU on each)"),
            f"< {r['goal_prefect_vs_plain_under']:.2f}x", _ok(r["goal_met"]),
        ))
    resume = results.get("resume")
    if resume is not None and "first_run_prefect_vs_plain" in resume:
        ratio = resume["first_run_prefect_vs_plain"]
        goal = (results.get("orchestration") or {}).get("goal_prefect_vs_plain_under", 1.2)
        out.append((
            f"3b. Prefect / plain, whole pipeline ({resume['videos']} videos) with figure 4's simulated model latency",
            f"{_x(ratio)} wall ({resume['first_run_s']:.0f} s vs {resume['first_run_plain_s']:.0f} s)",
            f"< {goal:.2f}x", _ok(ratio < goal),
        ))
    if (r := results.get("resume")) is not None:
        out.append((
            f"4. Rerun of a finished pipeline / first run ({r['videos']} videos, simulated latency)",
            f"{_pct(r['rerun_fraction'])} ({r['rerun_prefect_s']['median']:.0f} s vs {r['first_run_s']:.0f} s), "
            f"{max(r['rerun_prefect_requests'])} requests; without Prefect {_pct(r['rerun_plain_fraction'])}",
            f"<= {_pct(r['goal_rerun_fraction_at_most'])}, 0 requests", _ok(r["goal_met"]),
        ))
    if (r := results.get("growth")) is not None:
        pts = r["points"]
        sizes = "/".join(str(p["videos"]) for p in pts)
        out += [
            (f"5a. Wall time at {sizes} videos (quick recipe, Prefect)",
             " / ".join(f"{p['wall_s']:.0f} s" for p in pts)
             + f": {r['fit_fixed_s']:.0f} s + {r['fit_s_per_video']:.2f} s per video, every size within "
             f"{_pct(r['fit_max_deviation'])} of that line",
             f"linear (within {_pct(r['goal_linear_deviation_at_most'])})", _ok(r["goal_time_linear_met"])),
            (f"5b. Peak memory (MiB) at {sizes} videos",
             " / ".join(f"{p['peak_rss_mib']:.0f}" for p in pts) + f" (largest/smallest {_x(r['peak_memory_largest_vs_smallest'])}, "
             f"last step {_x(pts[-1]['peak_rss_mib'] / pts[-2]['peak_rss_mib'])})",
             f"flat (<= {_x(r['goal_memory_growth_at_most'])})", _ok(r["goal_memory_flat_met"])),
        ]
        if bounded := r.get("bounded_describer_points"):
            out.append((
                f"5c. Peak memory (MiB) at {'/'.join(str(p['videos']) for p in bounded)} videos, describer "
                f"max_concurrency 8 instead of 64 (cause check)",
                " / ".join(f"{p['peak_rss_mib']:.0f}" for p in bounded)
                + f" (largest/smallest {_x(r['bounded_describer_memory_largest_vs_smallest'])}); wall "
                + " / ".join(f"{p['wall_s']:.0f} s" for p in bounded),
                f"flat (<= {_x(r['goal_memory_growth_at_most'])})",
                _ok(r["bounded_describer_memory_largest_vs_smallest"] <= r["goal_memory_growth_at_most"]),
            ))
    if (r := results.get("video_readers")) is not None:
        out += _video_reader_rows(r)
    if (r := results.get("prefix_cache")) is not None:
        out += _prefix_cache_rows(r)
    return out


_IMAGES = {"tiny": "the tiny model's images (<= 224x224, ~60 tokens)", "large": "images up to 640x360 (~290 tokens)"}


def _prefix_cache_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from bench.prefix_cache import summary_line

    what = (f"{r['clips']} clips x {', '.join(r['configs'])} ({r['window']['frames']}-frame window), real vLLM "
            f"(CPU), tiny random-weight Qwen2-VL")
    return [
        (f"7{'abcd'[i]}. Stage 4 prompt tokens vLLM computed, plus / faithful: {what}, {_IMAGES.get(size, size)}",
         summary_line(s), f"<= {r['goal_computed_ratio_at_most']:.1f}x", _ok(s["goal_met"]))
        for i, (size, s) in enumerate(r["sizes"].items())
    ]


_READER_NAMES = {"coool": "coool (OpenCV)", "moviepy_get_frame": "moviepy get_frame", "moviepy_iter": "moviepy iter_frames"}


def _video_reader_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    s, corr = r["summary"], r["correctness"]

    def exact(names: list[str], reader: str) -> str:
        ok = sum(1 for n in names if corr[n][reader]["all_exact"])
        counts = sum(1 for n in names if corr[n][reader]["frames_agree"])
        wrong = sum(corr[n][reader]["wrong"] + len(corr[n][reader]["missing"]) for n in names)
        selected = sum(corr[n][reader]["selected"] for n in names)
        return f"{ok}/{len(names)} clips exact ({wrong}/{selected} frames wrong), {counts}/{len(names)} counts right"

    readers = list(_READER_NAMES)
    lengths = "/".join(f"{c['seconds']:g}" for c in r["clips"] if c["kind"] == "cfr")
    return [
        (f"6a. Every {r['every']}th frame vs ffmpeg's decode, MPEG-4 SP clips ({len(s['cfr_clips'])})",
         "; ".join(f"{_READER_NAMES[x]}: {exact(s['cfr_clips'], x)}" for x in readers),
         "coool exact", _ok(s["exact_cfr"]["coool"])),
        (f"6b. The same on VFR clips ({len(s['vfr_clips'])}: dropped frames; 30 then 15 fps)",
         "; ".join(f"{_READER_NAMES[x]}: {exact(s['vfr_clips'], x)}" for x in readers),
         "coool exact", _ok(s["exact_vfr"]["coool"])),
        (f"6c. moviepy / coool, every {r['every']}th frame of {r['size']} MPEG-4 SP, {lengths} s clips",
         "; ".join(f"{_READER_NAMES[x]} {s['cfr_wall_ratio_range'][x][0]:.1f}-{s['cfr_wall_ratio_range'][x][1]:.1f}x wall, "
                   f"{s['cfr_cpu_ratio_range'][x][0]:.1f}-{s['cfr_cpu_ratio_range'][x][1]:.1f}x CPU" for x in readers[1:]),
         "moviepy used where exact and < 1x", "not used" if not s["moviepy_wins_anywhere"] else "**wins: see BENCH.md**"),
    ]


def _measured_apart(results: dict[str, dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """One line per figure whose results come from another day or machine than the header's."""
    here = (machine.get("date_utc", "?")[:10], machine.get("cpu"))
    lines = []
    for name, r in results.items():
        m = r.get("machine") or {}
        if (m.get("date_utc", "?")[:10], m.get("cpu")) != here:
            took = f", {r['seconds'] / 60:.1f} min" if r.get("seconds") else ""
            lines.append(f"Figure {name} was measured apart: {m.get('date_utc', '?')[:10]} on {m.get('cores')} cores "
                         f"({m.get('cpu')}), OpenCV {m.get('opencv')}; `python -m bench{' --quick' if r.get('mode') == 'quick' else ''} --only {name}`{took}.")
    return lines


def markdown(results: dict[str, dict[str, Any]], machine: dict[str, Any], mode: str, total_s: float | None) -> str:
    lines = [
        f"Measured {machine.get('date_utc', '?')[:10]} on {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('ram_gib')} GiB RAM, Python {machine.get('python')}, OpenCV {machine.get('opencv')}, "
        f"ffmpeg {machine.get('ffmpeg_cli')}, Prefect {machine.get('prefect')}; `make bench{' BENCH_ARGS=--quick' if mode == 'quick' else ''}`"
        + (f" took {total_s / 60:.1f} min." if total_s else "."),
        *_measured_apart(results, machine),
        "Every figure is a ratio of runs made side by side in one `make bench` run; medians of repeated runs.",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    return "\n".join(lines) + "\n"
