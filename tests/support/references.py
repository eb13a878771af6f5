"""Where the real reference submissions live inside the repository (tests/data)."""

from __future__ import annotations

import os
from pathlib import Path

# The eight real submissions of the original method (tests/data/reference_submissions/README.md).
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference_submissions"


def original_checkout() -> Path | None:
    """A checkout of the original 2nd-place solution's source, or None.

    ``COOOL_ORIGINAL_CHECKOUT`` names one; otherwise the read-only copy that
    CI and developers have beside the repository
    (``../shared/reference/2coool-2nd-place``). A fresh clone has neither:
    the tests that compare against the original then skip, saying why.
    """
    named = os.environ.get("COOOL_ORIGINAL_CHECKOUT")
    candidates = [Path(named)] if named else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "reference" / "2coool-2nd-place")
    return next((c for c in candidates if (c / "004_description").is_dir()), None)


ORIGINAL_MISSING = (
    "the original solution's source is not here: set COOOL_ORIGINAL_CHECKOUT to a checkout of "
    "riron1206/kaggle-2COOOL-2nd-Place-Solution (CI has a copy at ../shared/reference/2coool-2nd-place)"
)
