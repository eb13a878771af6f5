"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from references import ORIGINAL_MISSING, original_checkout
from roles import point_roles_at
from skips import enable_hint

from coool.synthetic import ClipTruth, make_dataset

# No telemetry from test servers (and no failed lookups on a closed network).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@dataclass(frozen=True)
class SyntheticData:
    """A make_dataset folder: treat it as read-only (copy files to change them)."""

    root: Path
    videos: Path
    heatmaps: Path
    truths: list[ClipTruth]

    def video(self, video_id: int) -> Path:
        return self.videos / f"{video_id}.mp4"

    def heatmap(self, video_id: int) -> Path:
        return self.heatmaps / f"{video_id}.mp4"


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    """Three synthetic clips (120 frames, 320x180), each with a red obstacle event."""
    root = tmp_path_factory.mktemp("synthetic")
    truths = make_dataset(root, 3, frames=120, seed=0)
    return SyntheticData(root, root / "videos", root / "heatmaps", truths)


@pytest.fixture(scope="session")
def original_dir() -> Path:
    """The original solution's source (tests marked ``reference`` use it); skips when absent."""
    found = original_checkout()
    if found is None:
        pytest.skip(ORIGINAL_MISSING)
    return found


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One real Prefect server for the whole session (Prefect's test harness: a
    temporary server process with its own database). Returns its API URL, which
    child processes can be given through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def roles_on_sim(monkeypatch: pytest.MonkeyPatch) -> object:
    """A fresh simulated model server (a test double) with every role pointed at it."""
    from coool.sim.testing import running_sim_server

    with running_sim_server(model=["sim-model"]) as sim:
        for key, value in point_roles_at(sim.url).items():
            monkeypatch.setenv(key, value)
        yield sim


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that reads the original's source is a ``reference`` test, whether
    or not it says so: `-m reference` (CI, beside ../shared) selects them all."""
    for item in items:
        if "original_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reference)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """List what was skipped, grouped by reason, and how to enable it: a fresh
    clone passes without the optional parts, and says what it did not run."""
    reasons = Counter(_skip_reason(r) for r in terminalreporter.stats.get("skipped", []) if r.when in ("setup", "call"))
    if not reasons:
        return
    terminalreporter.section("skipped, and how to enable")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:4d} skipped: {reason}")
        hint = enable_hint(reason)
        if hint:
            terminalreporter.write_line(f"       enable:  {hint}")
