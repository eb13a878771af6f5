"""How to enable each kind of skipped test: the list printed at the end of a run (tests/conftest.py)."""

from __future__ import annotations

# What each kind of skip needs, for the list printed at the end of a run. The
# reasons already say it; this line is the command to copy.
ENABLE_HINTS = (
    ("chromium", "apt-get install chromium   (Debian's; Playwright drives it, no browser download)"),
    ("vLLM", "make test-vllm   (builds the vLLM CPU venv once; docs/VLLM.md)"),
    ("original solution", "COOOL_ORIGINAL_CHECKOUT=/path/to/kaggle-2COOOL-2nd-Place-Solution make test PYTEST_ARGS='-m reference'"),
    ("COOOL_STUDIO_SCREENSHOTS", "COOOL_STUDIO_SCREENSHOTS=1 make test PYTEST_ARGS=tests/coool/studio/test_browser.py"),
)


def enable_hint(reason: str) -> str:
    """The command that turns a skip with this reason into a run ('' when the reason is all there is)."""
    return next((hint for key, hint in ENABLE_HINTS if key.lower() in reason.lower()), "")
