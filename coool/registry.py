"""Every stage kind and submission kind a recipe can use, in plan order.

Adding a stage: implement ``coool.stage.StageKind`` in its module and list
it here; the plan, the run, the scheduler, the flows and the CLI find it.
"""

from __future__ import annotations

from coool.captions import CAPTION
from coool.count_pass import COUNT_PASS, COUNT_PASSED
from coool.describe import DESCRIBE, DESCRIBED
from coool.detect import DETECT
from coool.ensemble import ENSEMBLE, ENSEMBLED
from coool.stage import StageKind, SubmissionKind
from coool.submission import MERGED

# Plan order: a kind's stages come after those of the kinds they depend on.
STAGE_KINDS: dict[str, StageKind] = {k.kind: k for k in (CAPTION, DETECT, DESCRIBE, COUNT_PASS, ENSEMBLE)}

# Definition order: a submission is made only from submissions of the kinds before it.
SUBMISSION_KINDS: tuple[SubmissionKind, ...] = (DESCRIBED, MERGED, COUNT_PASSED, ENSEMBLED)
