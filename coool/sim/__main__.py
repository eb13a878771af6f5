"""``python -m coool.sim``: the SIMULATED model server (a test double, no model inside)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from coool.sim.serve import sim_server_command


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m coool.sim",
        description="Simulated OpenAI-compatible model server for tests and demos. No model inside.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--per-token-latency", type=float, default=0.0, help="seconds per completion token")
    parser.add_argument("--capacity", type=int, default=64, help="requests processed at once")
    parser.add_argument("--faults", default="", help='e.g. "5xx=0.1,hang=0.05,malformed=0.05"')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", action="append", help="served model name (repeat for several)")
    parser.add_argument("--allowed-local-media-path", default=None)
    parser.add_argument("--max-n", type=int, default=16)
    parser.add_argument("--hang-s", type=float, default=3600.0)
    parser.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 (as vLLM --api-key); default: $COOOL_SIM_API_KEY"
    )
    args = parser.parse_args(argv)
    sim_server_command(
        host=args.host,
        port=args.port,
        latency=args.latency,
        per_token_latency=args.per_token_latency,
        capacity=args.capacity,
        faults=args.faults,
        seed=args.seed,
        model=args.model or ["sim-model"],
        allowed_local_media_path=args.allowed_local_media_path,
        max_n=args.max_n,
        hang_s=args.hang_s,
        # From the environment by default, so the key never has to appear in a process listing.
        api_key=args.api_key or os.environ.get("COOOL_SIM_API_KEY") or None,
    )


if __name__ == "__main__":
    main()
