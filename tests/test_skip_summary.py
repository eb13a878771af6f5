"""The end of a test run lists what was skipped and how to enable it (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skips import enable_hint

REPO = Path(__file__).resolve().parents[1]


def test_every_skip_reason_in_the_suite_gets_its_command() -> None:
    assert "apt-get install chromium" in enable_hint("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    assert "make test-vllm" in enable_hint("real vLLM tests: run with -m vllm or COOOL_TEST_VLLM=1 (make test-vllm)")
    assert "COOOL_ORIGINAL_CHECKOUT" in enable_hint("the original solution's source is not here: set COOOL_ORIGINAL_CHECKOUT")
    assert enable_hint("some reason nobody planned for") == ""


def test_a_run_ends_with_the_skips_grouped_by_reason() -> None:
    # A real pytest run over two kinds of skip: the screenshot test (off unless
    # asked) and the real-vLLM folder (off unless -m vllm).
    env = {k: v for k, v in os.environ.items() if k not in ("COOOL_STUDIO_SCREENSHOTS", "COOOL_TEST_VLLM")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/coool/studio/test_browser.py::test_screenshots", "tests/vllm/test_client_vllm.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    summary = out[out.index("skipped, and how to enable") :]
    assert "set COOOL_STUDIO_SCREENSHOTS=1 to refresh docs/screenshots" in summary
    assert "enable:  COOOL_STUDIO_SCREENSHOTS=1" in summary
    assert "real vLLM tests" in summary and "enable:  make test-vllm" in summary


def test_tests_using_the_original_are_selected_by_the_reference_marker() -> None:
    # A throwaway test module under tests/ (so tests/conftest.py applies) that asks for original_dir.
    probe = REPO / "tests" / f"test_probe_reference_{os.getpid()}.py"
    probe.write_text("def test_reads_the_original(original_dir):\n    assert original_dir.is_dir()\n\n"
                     "def test_does_not():\n    pass\n")  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-m", "reference", str(probe)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stdout[-2000:]
    assert "test_reads_the_original" in result.stdout and "test_does_not" not in result.stdout
