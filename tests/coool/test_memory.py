"""coool.memory: the malloc arena cap a run sets (its effect on memory is measured in bench/growth.py)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from coool.memory import limit_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
                    reason="glibc malloc arenas exist on Linux only")
def test_the_arena_cap_is_accepted_by_glibc() -> None:
    assert limit_malloc_arenas(2) is True


def test_building_a_run_sets_the_cap_in_a_fresh_process(tmp_path) -> None:
    """A Run sets the cap (both coool run paths build one) and nothing breaks in a fresh process."""
    code = (
        "from unittest import mock\n"
        "import coool.run as r\n"
        "from coool.recipe import load_recipe\n"
        "from coool.settings import load_settings\n"
        "with mock.patch.object(r, 'limit_malloc_arenas', wraps=r.limit_malloc_arenas) as cap:\n"
        f"    r.Run(load_settings(results_dir={str(tmp_path)!r}), load_recipe('quick'))\n"
        "assert cap.call_count == 1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
