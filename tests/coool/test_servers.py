"""ServerManager's phase handling: which servers stop between phases."""

from __future__ import annotations

import pytest

from coool.recipe import load_recipe, phases
from coool.servers import ServerManager
from coool.settings import Settings


async def test_end_phase_stops_only_what_the_next_phase_does_not_use(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = phases(load_recipe("second-place").stages())
    manager = ServerManager(Settings(results_dir=tmp_path))
    stopped: list[str] = []

    async def stop(role: str) -> None:
        stopped.append(role)

    monkeypatch.setattr(manager, "stop", stop)
    for i, phase in enumerate(plan):
        stopped.clear()
        await manager.end_phase(plan, i)
        following = set(plan[i + 1].roles) if i + 1 < len(plan) else set()
        assert stopped == [r for r in phase.roles if r not in following], (i, phase.roles, following)
    assert stopped == plan[-1].roles  # after the last phase everything of it stops


async def test_end_phase_keeps_a_server_both_phases_share(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = phases(load_recipe("second-place").stages(), concurrent=True) * 2  # the same roles twice
    manager = ServerManager(Settings(results_dir=tmp_path))
    stopped: list[str] = []

    async def stop(role: str) -> None:
        stopped.append(role)

    monkeypatch.setattr(manager, "stop", stop)
    await manager.end_phase(plan, 0)
    assert stopped == []
    await manager.end_phase(plan, 1)
    assert sorted(stopped) == sorted(plan[1].roles)
