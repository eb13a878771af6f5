"""``python -m coool.sim``: the same as ``coool sim-server`` (the SIMULATED model server, no model inside)."""

import sys

from coool.cli import app

if __name__ == "__main__":
    app(["sim-server", *sys.argv[1:]], prog_name="python -m coool.sim")
