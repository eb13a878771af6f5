"""Where the real reference submissions live inside the repository (tests/data)."""

from __future__ import annotations

from pathlib import Path

# The eight real submissions of the original method (tests/data/reference_submissions/README.md).
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference_submissions"
