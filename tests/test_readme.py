"""The README's Makefile table names every target `make help` lists, and the variables a user sets."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_make_target_is_in_the_readme_table() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z0-9_%-]+):.*## ", makefile, re.M)
    assert {"lint", "run-deployment", "deploy", "worker", "sim", "ui"} <= set(targets)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Makefile targets") :]
    # `make deploy [...]`, `make run DATA= ...`, `make serve-<role>` for a pattern target serve-%.
    missing = [t for t in targets
               if not (f"`make {t.split('%')[0]}<" in table if "%" in t else re.search(rf"`make {re.escape(t)}[` ]", table))]  # fmt: skip
    assert not missing, f"README's Makefile table lacks {missing}"


def test_the_readme_names_the_port_variables() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for variable in ("PREFECT_PORT", "SIM_PORT", "SETTINGS", "DEPLOYMENT", "PYTEST_ARGS"):
        assert variable in readme, variable
