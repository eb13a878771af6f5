"""Figure 2, request scheduling: do we keep a batching server full?

A SIMULATED server with batch capacity C and a fixed per-request latency L
can at best complete C/L requests per second. We run the caption stage
(stage 2) over the data set exactly as the pipeline does (``coool.schedule.Scheduler.stage``
for every video, requests bounded by the client's per-URL limit)
and compare the achieved rate with C/L, and with one request at a time (how
the original scripts called the server).

L is chosen per C so that C/L stays well below what two shared cores can
push through the client *and* the simulated server (which decodes and
inspects every image it is sent); otherwise the figure would measure the
simulation's CPU, not our scheduling.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import log, measure, median, ratio, sim_server, summary
from bench.data import dataset_specs, ensure_pool, make_dataset

GOAL_EFFICIENCY = 0.90


def _pipeline(results: Path, sim_url: str) -> Any:
    from coool.recipe import load_recipe
    from coool.run import Run
    from coool.settings import load_settings

    settings = load_settings(results_dir=results)
    settings.captioner.urls = [sim_url]
    settings.captioner.model = "simulated-captioner"
    return Run(settings, load_recipe("quick"))


async def _caption_all(pipeline: Any, videos: list[int]) -> None:
    """Stage 2 for every video, through the run's own scheduler (as run_plain runs it)."""
    from coool.run import plain_scheduler

    stage = next(s for s in pipeline.recipe.stages() if s.kind == "caption")
    async with pipeline.open_clients([stage.role]):
        await plain_scheduler(pipeline).stage(stage, videos)


async def _one_at_a_time(pipeline: Any, video: int, count: int) -> float:
    """Seconds per request when each waits for the previous one (the original's loop)."""
    from coool.captions import caption_frame
    from coool.frames import load_manifest

    frames = sorted(load_manifest(pipeline.ws.frames_dir(video)).paths(pipeline.ws.frames_dir(video)).items())[:count]
    async with pipeline.open_clients(["captioner"]) as clients:
        client = clients["captioner"]
        start = time.perf_counter()
        for frame, path in frames:
            await caption_frame(client, pipeline.prompts["caption"], frame, path, pipeline.recipe.caption)
        return (time.perf_counter() - start) / len(frames)


class _Poller:
    """Samples the server's queue every ``interval`` s: requests it holds, and slots busy."""

    def __init__(self, sim: Any, capacity: int, interval: float = 0.1) -> None:
        self.sim, self.capacity, self.interval = sim, capacity, interval
        self.samples: list[tuple[int, int, int]] = []  # (held, processing, completed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as http:
            while not self._stop.wait(self.interval):
                try:
                    s = http.get(f"http://127.0.0.1:{self.sim.port}/sim/stats").json()
                except Exception:
                    continue
                held = s["received"] - s["completed"] - s["rejected"] - s["abandoned"]
                self.samples.append((held, s["processing"], s["completed"]))

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _busy(self, total: int) -> list[tuple[int, int, int]]:
        # Only while at least C requests were still to be answered: the last partial wave
        # can't fill the server, whoever schedules it.
        return [x for x in self.samples if total - x[2] >= self.capacity and x[0] > 0]

    def kept_full(self, total: int) -> float:
        """Share of those samples in which the server held >= C requests (queued or in a slot)."""
        busy = self._busy(total)
        return sum(1 for h, _, _ in busy if h >= self.capacity) / len(busy) if busy else float("nan")

    def slots_busy(self, total: int) -> float:
        busy = self._busy(total)
        return sum(p for _, p, _ in busy) / (len(busy) * self.capacity) if busy else float("nan")


def run(ctx: Any) -> dict[str, Any]:
    quick = ctx.quick
    pool, specs = ensure_pool(quick)
    n = 4 if quick else 20
    repeats = 1 if quick else 2
    # (capacity, latency): C/L = 32 requests/s in both cases, which keeps the client
    # and the simulated server together under half of two cores.
    cases = [(16, 0.5), (64, 2.0)]
    seq_requests = 3 if quick else 5
    work = ctx.work / "scheduling"
    work.mkdir(parents=True, exist_ok=True)
    data = make_dataset(pool, specs, n, work / "data")
    frames_total = sum(s.frames for s in dataset_specs(specs, n))

    # Stage 1 once: every case captions the same stacked frames.
    base = _pipeline(work / "results", "http://unused/v1")
    pairs, videos = base.collect_inputs(data / "videos", data / "heatmaps")
    log(f"scheduling: stage 1 for {n} videos ({frames_total} frames)")
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(base.frames, pairs))

    cases_out = []
    for capacity, latency in cases:
        with sim_server(latency_s=latency, capacity=capacity, log_path=work / "sim.log") as sim:
            pipeline = _pipeline(work / "results", sim.url)
            # The client's in-flight bound per URL must reach C, or the server can't fill.
            pipeline.settings.captioner.max_concurrency = max(64, capacity)
            runs, cpu_client, cpu_sim, max_processing, requests = [], [], [], [], 0
            kept_full: list[float] = []
            slots_busy: list[float] = []
            for r in range(repeats):
                shutil.rmtree(pipeline.ws.captions_dir, ignore_errors=True)
                sim.reset()
                sim_cpu0 = sim.cpu_s()
                with _Poller(sim, capacity) as poll, measure() as m:
                    asyncio.run(_caption_all(pipeline, videos))
                total = sim.stats()["completed"]
                kept_full.append(poll.kept_full(total))
                slots_busy.append(poll.slots_busy(total))
                stats = sim.stats()
                requests = stats["completed"]
                runs.append(requests / m.wall_s)
                cpu_client.append(m.cpu_s / requests * 1000)
                cpu_sim.append((sim.cpu_s() - sim_cpu0) / requests * 1000)
                max_processing.append(stats["max_processing"])
                log(f"scheduling: C={capacity} L={latency}s run {r + 1}: {requests} requests in {m.wall_s:.1f}s "
                    f"= {runs[-1]:.2f}/s (ideal {capacity / latency:.2f}/s); server held >= C requests "
                    f"{kept_full[-1]:.0%} of the time, slots busy {slots_busy[-1]:.0%}")
            sim.reset()
            seq_s = asyncio.run(_one_at_a_time(pipeline, videos[0], seq_requests))
        ideal = capacity / latency
        achieved = median(runs)
        # The last wave is partly empty: ceil(R/C) waves of L seconds is the real best.
        best = requests / (math.ceil(requests / capacity) * latency)
        cases_out.append({
            "capacity": capacity,
            "latency_s": latency,
            "requests": requests,
            "ideal_rps": ideal,
            "best_possible_rps": round(best, 3),
            "achieved_rps": summary(runs),
            "efficiency": ratio(achieved, ideal),
            "efficiency_vs_best_possible": ratio(achieved, best),
            "one_at_a_time_rps": round(1 / seq_s, 4),
            "speedup_vs_one_at_a_time": ratio(achieved, 1 / seq_s),
            "server_max_processing": max(max_processing),
            "server_held_at_least_C": summary(kept_full),
            "server_slots_busy": summary(slots_busy),
            "client_cpu_ms_per_request": summary(cpu_client),
            "sim_cpu_ms_per_request": summary(cpu_sim),
            "goal_efficiency": GOAL_EFFICIENCY,
            "goal_met": achieved / ideal >= GOAL_EFFICIENCY,
        })
    shutil.rmtree(work, ignore_errors=True)
    return {
        "figure": "scheduling",
        "videos": n,
        "video_frames": frames_total,
        "repeats": repeats,
        "cases": cases_out,
        "notes": (
            "Caption stage (stage 2) over the data set against one SIMULATED server with batch capacity C "
            "and a fixed latency L per request; ideal = C/L requests/s. One-at-a-time = the same requests "
            "sent sequentially. Client CPU per request shows how many requests/s one core can feed."
        ),
    }
