"""A new describe-like stage kind, written as a user would add one: its own
module (this one) and one entry in the registry, nothing else.

``notes``: for every video, once its incident frame is known, ask the
describer one question and keep the answer. It proves that the plan, the
run, the scheduler, the flows and the resume logic find a stage from the
registry alone (issue #13).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coool.files import atomic_write_json, combined_hash, read_json
from coool.llm import user_message
from coool.registry import STAGE_KINDS
from coool.stage import Stage, StageError
from coool.workspace import cached_output


class NotesStage:
    kind = "notes"

    def plan(self, recipe: Any) -> list[Stage]:
        return [Stage("notes", self.kind, "describer", ("detect",))]

    def prompts(self, recipe: Any, stage: Stage) -> str:
        return "In one sentence: what happens around frame $frame of this dashcam video?"

    def key(self, run: Any, stage: Stage, video: int) -> str | None:
        detect = run.ws.detect_path(video)
        if not detect.exists():
            return None
        return combined_hash([read_json(detect)["key"], run.prompt(stage), run.identity(stage)])

    def output(self, run: Any, stage: Stage, video: int) -> Path:
        return run.ws.root / "notes" / f"{video}.json"

    def done(self, run: Any, stage: Stage, video: int) -> bool:
        return self.output(run, stage, video).exists()

    async def run(self, run: Any, stage: Stage, video: int, key: str | None) -> dict[str, Any]:
        path = self.output(run, stage, video)
        if key is not None and cached_output(path, key) is not None:
            return {"video": video, "cached": True}
        frame = run.detected_frame(video)
        if frame is None:
            raise StageError(f"video {video}: no incident frame")
        question = run.prompt(stage).replace("$frame", str(frame))
        (answer,) = await run.client(stage.role).complete([user_message(question)], temperature=0.0)
        atomic_write_json(path, {"key": key, "frame": frame, "answer": answer.content})
        return {"video": video, "cached": False}


NOTES = NotesStage()


@contextmanager
def notes_registered() -> Iterator[NotesStage]:
    """The registry with ``notes`` after ``detect`` (the one edit a new stage needs), restored after."""
    saved = dict(STAGE_KINDS)
    kinds = list(saved.items())
    at = [name for name, _ in kinds].index("detect") + 1
    STAGE_KINDS.clear()
    STAGE_KINDS.update(dict([*kinds[:at], (NOTES.kind, NOTES), *kinds[at:]]))
    try:
        yield NOTES
    finally:
        STAGE_KINDS.clear()
        STAGE_KINDS.update(saved)
