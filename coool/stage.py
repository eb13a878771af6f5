"""What a stage is: its place in the plan (``Stage``), its behaviour (``StageKind``), its errors.

A recipe becomes a list of ``Stage`` nodes (name, kind, role, dependencies,
configuration). Each kind is implemented once, in its stage's module
(``coool.frames``' stage 1 aside, which runs before any model stage):
``captions.CAPTION``, ``detect.DETECT``, ``describe.DESCRIBE``,
``count_pass.COUNT_PASS``, ``ensemble.ENSEMBLE``; ``coool.registry`` lists
them. The run (``coool.run.Run``) and the scheduler
(``coool.schedule``) only ever call the protocol below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from coool.llm import Sample

if TYPE_CHECKING:
    from coool.recipe import Recipe
    from coool.run import Run


class StageError(RuntimeError):
    """A video that a stage could not process; the message says why."""


def sample_record(sample: Sample, **context: Any) -> dict[str, Any]:
    """A raw answer as saved to disk, with what it was an answer to."""
    return {**context, "content": sample.content, "reasoning": sample.reasoning, "finish_reason": sample.finish_reason}


@dataclass(frozen=True)
class Stage:
    """One node of a run's plan: ``kind`` names its ``StageKind`` in the registry."""

    name: str
    kind: str  # a key of coool.registry.STAGE_KINDS
    role: str
    deps: tuple[str, ...]
    config: str | None = None


class StageKind(Protocol):
    """The behaviour of every stage of one kind (one object per kind)."""

    kind: str

    def plan(self, recipe: Recipe) -> list[Stage]:
        """The stages of this kind the recipe asks for (none when it doesn't use the kind)."""
        ...

    def prompts(self, recipe: Recipe, stage: Stage) -> Any:
        """The prompt (or prompt set) the stage sends, loaded once per run."""
        ...

    def key(self, run: Run, stage: Stage, video: int) -> str | None:
        """What determines the output (the key recorded in it); None while inputs are missing."""
        ...

    def output(self, run: Run, stage: Stage, video: int) -> Path:
        """Where the video's output lives (in the run's Workspace)."""
        ...

    def done(self, run: Run, stage: Stage, video: int) -> bool:
        """Whether the output is on disk (deleting it makes the work run again)."""
        ...

    async def run(self, run: Run, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        """The stage for one video, its output recording ``key`` (the run's stage key, computed
        once); raises StageError (or a request error) on failure."""
        ...


class SubmissionKind(Protocol):
    """One kind of submission a recipe defines (a describe configuration, a merge, ...)."""

    def names(self, recipe: Recipe) -> list[str]:
        """The recipe's submissions of this kind, in definition order."""
        ...

    def sources(self, recipe: Recipe, name: str) -> list[str]:
        """The submissions this one is made from (none for a describe configuration)."""
        ...

    def row(self, run: Run, name: str, video: int) -> dict[str, Any] | None:
        """The row it contributes for ``video``, from what is on disk (None: none)."""
        ...

    def path(self, run: Run, name: str) -> Path:
        """Where its CSV is written."""
        ...
