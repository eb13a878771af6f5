"""`make demo`: the whole 2nd-place recipe on synthetic videos against SIMULATED model servers.

Nothing here is a model: every role is served by coool's simulated
OpenAI-compatible server (a test double that answers from simple colour
rules). The point is to see the pipeline run end to end, in the Prefect UI,
on a machine without GPUs.

Steps: make 3 synthetic clips with heatmaps; use PREFECT_API_URL or start a
local Prefect server; start one simulated server per model role; run the
`second-place` recipe; validate and print where everything is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from coool.servers import ServerUnavailable, is_healthy, wait_until_healthy
from coool.sim.testing import free_port, start_sim_process
from coool.synthetic import make_dataset

ROLES = ("captioner", "detector", "describer", "ensembler")


def server_env(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """What `prefect server start` needs so its UI calls ITS OWN API.

    `--port` moves the server but not the address the UI is told to call
    (/ui-settings): that comes from PREFECT_UI_API_URL, else from
    PREFECT_SERVER_API_HOST/PORT (4200 by default), so name all three.
    """
    return {
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://{host}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def start_prefect(port: int, home: Path, log: Path) -> subprocess.Popen[bytes] | None:
    """A local Prefect server, unless PREFECT_API_URL names one already."""
    if os.environ.get("PREFECT_API_URL"):
        print(f"demo: using the Prefect server at {os.environ['PREFECT_API_URL']}")
        return None
    url = f"http://127.0.0.1:{port}/api"
    if is_healthy(url):
        print(f"demo: a Prefect server already runs at {url}")
        os.environ["PREFECT_API_URL"] = url
        return None
    env = {**os.environ, **server_env(port), "PREFECT_HOME": str(home)}
    log.parent.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        wait_until_healthy(url, 120, alive=lambda: proc.poll() is None, name="demo: the Prefect server")
    except ServerUnavailable as exc:
        raise SystemExit(f"{exc} (log {log})") from None
    os.environ["PREFECT_API_URL"] = url
    print(f"demo: started a Prefect server at {url} (log {log})")
    return proc


def _flush_prefect_logs() -> None:
    """Send the run logs and events Prefect still buffers while their server is up.

    Prefect ships them from background workers; stopping the server first makes
    them fail at exit with "Error logging to API". drain_all waits for each
    worker to finish its queue (and stops it: a later log starts a new one).
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.demo", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("demo/data"))
    parser.add_argument("--results", type=Path, default=Path("demo/results"))
    parser.add_argument("--recipe", default="second-place")
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--keep", action="store_true", help="leave the Prefect server running for the UI")
    args = parser.parse_args(argv)

    data, results = args.data.resolve(), args.results.resolve()
    if not (data / "videos").is_dir():
        truths = make_dataset(data, n=args.videos)
        print(f"demo: wrote {len(truths)} synthetic clips to {data} (events at frames {[t.event_frame for t in truths]})")
    home = Path(os.environ.get("PREFECT_HOME", ".prefect")).resolve()
    # SIGTERM (a `kill`, a CI timeout) takes Ctrl-C's path: the `finally` below stops the servers it started.
    signal.signal(signal.SIGTERM, _interrupt)
    prefect_proc = start_prefect(args.prefect_port, home, results.parent / "prefect-server.log")
    sims: list[subprocess.Popen[bytes]] = []
    try:
        for role in ROLES:
            port = free_port()
            model = f"simulated-{role}"
            sims.append(start_sim_process(port, model=[model], log_path=results.parent / f"sim-{role}.log",
                                          allowed_local_media_path=str(results)))  # frames live there; never a parent that may be /
            os.environ[f"COOOL_{role.upper()}__URLS"] = f"http://127.0.0.1:{port}/v1"
            os.environ[f"COOOL_{role.upper()}__MODEL"] = model
            print(f"demo: SIMULATED {role} server (no model) at http://127.0.0.1:{port}/v1")
        from coool.submission import read_submission, validate
        from flows.pipeline import pipeline_flow

        outcome = asyncio.run(
            pipeline_flow(data_root=str(data), recipe=args.recipe, results_dir=str(results))
        )
        _flush_prefect_logs()
        final = Path(outcome["written"]["final"])
        errors = [p for p in validate(read_submission(final), strict=True) if p.level == "error"]
        ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
        print()
        print("demo: done (answers come from a SIMULATED server, not a model)")
        print(f"  submission   {final}  ({outcome['videos']} rows, {'valid' if not errors else 'INVALID'})")
        print(f"  all outputs  {results}")
        print(f"  failures     {outcome['failures']}")
        print(f"  Prefect UI   {ui}  (flow run 'pipeline-{args.recipe}'; `make ui` to reopen later)")
        print(f"  studio       make studio RESULTS={results}")
        if args.keep and prefect_proc is not None:
            print("demo: the Prefect server keeps running; press Ctrl-C to stop it")
            try:
                prefect_proc.wait()
            except KeyboardInterrupt:
                pass
        return 1 if errors else 0
    finally:
        _flush_prefect_logs()
        for proc in sims:
            proc.terminate()
        if prefect_proc is not None:
            prefect_proc.terminate()
            try:
                prefect_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prefect_proc.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
