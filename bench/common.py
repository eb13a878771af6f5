"""What every benchmark shares: machine facts, timing, servers, result files.

Benchmarks report, they never fail: a figure that misses its goal is
written down with the goal beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.data import cache_root
from coool.files import atomic_write_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO = BENCH_DIR.parent
ROLES = ("captioner", "detector", "describer", "ensembler")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- machine facts -------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cv2_ffmpeg() -> str:
    """The FFmpeg libraries OpenCV's video backend was built with."""
    import cv2

    info = cv2.getBuildInformation()
    match = re.search(r"FFMPEG:\s+(\S+)(.*?)\n\s*\n", info, re.DOTALL)
    if not match:
        return "unknown"
    libs = re.findall(r"(avcodec|avformat|swscale):\s+\S+\s+\(([^)]+)\)", match.group(2))
    return ", ".join(f"{k} {v}" for k, v in libs) or match.group(1)


def _git(*args: str) -> str:
    # Read-only queries: the commit and whether the tree has local changes.
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts() -> dict[str, Any]:
    import cv2
    import imageio_ffmpeg
    import numpy
    import prefect
    import psutil

    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "opencv_ffmpeg": _cv2_ffmpeg(),
        "ffmpeg_cli": imageio_ffmpeg.get_ffmpeg_version(),
        "numpy": numpy.__version__,
        "prefect": prefect.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- timing --------------------------------------------------------------------


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@dataclass
class Measure:
    """Wall time, this process's CPU and the CPU of waited-for children (and theirs)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure() -> Iterator[Measure]:
    m = Measure()
    w0, p0, c0 = time.perf_counter(), time.process_time(), _children_cpu()
    try:
        yield m
    finally:
        m.wall_s = time.perf_counter() - w0
        m.cpu_s = (time.process_time() - p0) + (_children_cpu() - c0)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summary(values: list[float]) -> dict[str, Any]:
    """Median plus the raw values, rounded for reading."""
    return {"median": round(median(values), 4), "runs": [round(v, 4) for v in values]}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# --- folders ----------------------------------------------------------------------


def scratch(name: str) -> Path:
    """An empty scratch folder under the cache (removed by the caller when done)."""
    path = cache_root() / "work" / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


# --- servers ------------------------------------------------------------------------


def free_port() -> int:
    from coool.sim.testing import free_port as _free

    return _free()


@dataclass
class SimServer:
    """One SIMULATED model server process posing as every model role."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.port}/sim/stats", timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/sim/reset", timeout=10)

    def cpu_s(self) -> float:
        import psutil

        t = psutil.Process(self.process.pid).cpu_times()
        return t.user + t.system

    def peak_rss_mib(self) -> float | None:
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
            kib = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]
            return round(kib / 1024, 1)
        except (OSError, AttributeError):
            return None

    def env(self) -> dict[str, str]:
        """Settings pointing every role at this server."""
        env = {}
        for role in ROLES:
            env[f"COOOL_{role.upper()}__URLS"] = self.url
            env[f"COOOL_{role.upper()}__MODEL"] = f"simulated-{role}"
        return env


@contextmanager
def sim_server(*, latency_s: float = 0.0, capacity: int = 64, per_token_latency_s: float = 0.0,
               log_path: Path | None = None, memo: bool = True) -> Iterator[SimServer]:
    """A SIMULATED server process for every role; ``memo``: bench.simserver (image analysis memoised)."""
    from coool.servers import wait_until_healthy
    from coool.sim.testing import SIM_SERVER_COMMAND

    port = free_port()
    command = [sys.executable, "-m", "bench.simserver"] if memo else list(SIM_SERVER_COMMAND)
    args = [*command, "--port", str(port), "--latency", str(latency_s),
            "--per-token-latency", str(per_token_latency_s), "--capacity", str(capacity)]
    for role in ROLES:
        args += ["--model", f"simulated-{role}"]
    if memo:
        args += ["--memo-file", str(cache_root() / "sim-memo.pkl")]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", 60, alive=lambda: proc.poll() is None, name="simulated server")
        yield SimServer(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PrefectServer:
    process: subprocess.Popen[bytes]
    api_url: str
    home: Path

    def env(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }


@contextmanager
def prefect_server(home: Path, log_path: Path) -> Iterator[PrefectServer]:
    """``prefect server start`` on loopback with its own database: what users run."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        from coool.servers import ServerUnavailable, wait_until_healthy

        try:
            wait_until_healthy(api, 180, alive=lambda: proc.poll() is None, name="prefect server")
        except ServerUnavailable as exc:
            raise RuntimeError(f"{exc}; see {log_path}") from None
        yield PrefectServer(proc, api, home)
    finally:
        # Only the process group we started (start_new_session): the server and its workers.
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# --- worker subprocesses ---------------------------------------------------------------


def run_worker(args: list[str], env: dict[str, str], timeout_s: float = 3600) -> dict[str, Any]:
    """``python -m bench.worker ARGS`` in a fresh process; its last stdout line is JSON."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", *args],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-25:])
        raise RuntimeError(f"bench worker {args[:1]} failed ({proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


# --- results -------------------------------------------------------------------------------


def write_result(name: str, data: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_dir / f"{name}.json", json.dumps(data, indent=2, default=str) + "\n")


def timed(fn: Callable[[], Any]) -> tuple[Any, Measure]:
    with measure() as m:
        value = fn()
    return value, m


def set_sim_latency(sim: SimServer, latency_s: float, tasks: dict[str, float] | None = None) -> None:
    """Change the simulated server's latency at runtime (per task title when given)."""
    body: dict[str, Any] = {"latency_s": latency_s}
    if tasks:
        body["tasks"] = tasks
    httpx.post(f"http://127.0.0.1:{sim.port}/sim/latency", json=body, timeout=10).raise_for_status()


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a live process and its live children (e.g. the Prefect server's)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def warm_sim_memo(quick: bool) -> None:
    """Let the simulation see every image of the pool once (bench.simserver keeps the memo).

    One plain pipeline run over the pool; skipped when done before for the same
    pool and stage-1 image settings (the memo is keyed by image content).
    """
    import cv2

    from bench.data import ensure_pool, make_dataset
    from coool.files import json_sha256
    from coool.frames import IMAGE_FORMATS

    pool, specs = ensure_pool(quick)
    marker = cache_root() / f"sim-memo-warm-{json_sha256([pool.name, repr(IMAGE_FORMATS), cv2.__version__])[:12]}"
    if marker.exists():
        return
    work = scratch(f"warmup-{pool.name}")
    data = make_dataset(pool, specs, len(specs), work / "data")
    log(f"bench: warm-up: the simulated server analyses the {len(specs)} pool clips once (cached for later runs)")
    with sim_server(log_path=work / "sim.log") as sim:
        run_worker(["pipeline", "--mode", "plain", "--data", str(data), "--results", str(work / "results")], env=sim.env())
    marker.write_text("ok\n")
    shutil.rmtree(work, ignore_errors=True)


class Context:
    """What several figures share: one Prefect server, one zero-latency simulated server."""

    def __init__(self, quick: bool, work: Path, stack: Any) -> None:
        self.quick = quick
        self.work = work
        self._stack = stack  # contextlib.ExitStack owned by the caller
        self._prefect: PrefectServer | None = None
        self._sim: SimServer | None = None

    def prefect(self) -> PrefectServer:
        if self._prefect is None:
            log("bench: starting a Prefect server on loopback (prefect server start)")
            self._prefect = self._stack.enter_context(prefect_server(self.work / "prefect-home", self.work / "prefect.log"))
            # One untimed run first: a user's server has served runs before (flows and
            # blocks registered, its services past their start-up work).
            from bench.data import ensure_pool, make_dataset

            pool, specs = ensure_pool(True)
            data = make_dataset(pool, specs, 1, self.work / "prefect-warmup" / "data")
            self.pipeline_run("prefect", data, self.work / "prefect-warmup" / "results", "quick")
            shutil.rmtree(self.work / "prefect-warmup", ignore_errors=True)
        return self._prefect

    def sim(self) -> SimServer:
        """Zero latency, capacity 64; figures that change the latency set it back."""
        if self._sim is None:
            self._sim = self._stack.enter_context(sim_server(log_path=self.work / "sim.log"))
        return self._sim

    def pipeline_run(self, mode: str, data: Path, results: Path, recipe: str = "second-place",
                     sim: SimServer | None = None, settings: dict[str, str] | None = None) -> dict[str, Any]:
        """One pipeline run in a fresh process, with the CPU the servers spent on it.

        ``settings``: extra COOOL_* environment settings for this run only.
        """
        sim = sim or self.sim()
        env = {**sim.env(), **(settings or {})}
        pf = self.prefect() if mode == "prefect" else None
        if pf is not None:
            env.update(pf.env())
        s0 = sim.cpu_s()
        p0 = process_tree_cpu_s(pf.process.pid) if pf else 0.0
        out = run_worker(["pipeline", "--mode", mode, "--data", str(data), "--results", str(results),
                          "--recipe", recipe], env=env)
        out["sim_cpu_s"] = round(sim.cpu_s() - s0, 3)
        out["prefect_server_cpu_s"] = round(process_tree_cpu_s(pf.process.pid) - p0, 3) if pf else 0.0
        return out
