"""`coool` itself turns Prefect's telemetry off (not only `make`): every server it starts inherits it."""

from __future__ import annotations

import os

import pytest
from references import REFERENCE_DIR
from typer.testing import CliRunner

from coool.cli import app

TELEMETRY = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")


def a_submission() -> str:
    return str(sorted(REFERENCE_DIR.glob("*.csv"))[0])


def test_any_coool_command_turns_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in TELEMETRY:
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(app, ["validate", a_submission()])
    assert result.exit_code == 0, result.output
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "1"


def test_a_users_own_telemetry_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    assert CliRunner().invoke(app, ["validate", a_submission()]).exit_code == 0
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
