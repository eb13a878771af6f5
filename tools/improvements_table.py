"""The README's "faithful vs plus" table for one stage, from the switches themselves.

    python tools/improvements_table.py describe

Prints one Markdown row per switch that the stage's parameters declare
(``coool.improvements.catalogue``): name, what it changes, why. The README
holds this output; ``tests/coool/test_readme_switches.py`` checks it is current.
"""

from __future__ import annotations

import sys

from coool.improvements import catalogue


def table(stage: str) -> str:
    """The Markdown table of ``stage``'s switches."""
    lines = ["| switch | what it changes (on) | why |", "| --- | --- | --- |"]
    for item in catalogue():
        if item.stage == stage:
            lines.append(f"| `{item.name}` | {item.what} | {item.why} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else "describe"))
