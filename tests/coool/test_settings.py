"""Settings: the spec's models per role, environment variables, the YAML file, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from coool.settings import ROLES, RoleSettings, Settings, load_settings


def test_defaults_are_the_spec_models_on_distinct_ports() -> None:
    s = load_settings()
    assert ROLES == ("captioner", "detector", "describer", "ensembler")
    assert {r: s.role(r).model for r in ROLES} == {
        "captioner": "zai-org/GLM-4.5V",
        "detector": "openai/gpt-oss-120b",
        "describer": "Qwen/Qwen3-VL-235B-A22B-Thinking-FP8",
        "ensembler": "Qwen/Qwen3-Next-80B-A3B-Instruct",
    }
    assert {r: s.role(r).urls for r in ROLES} == {
        "captioner": ["http://127.0.0.1:8000/v1"],
        "detector": ["http://127.0.0.1:8001/v1"],
        "describer": ["http://127.0.0.1:22002/v1"],
        "ensembler": ["http://127.0.0.1:22003/v1"],
    }
    assert s.image_format == "png" and s.results_dir == Path("results") and s.data_root is None
    assert (s.video_concurrency, s.task_retries) == (64, 2)
    role = s.describer
    assert (role.max_concurrency, role.max_attempts, role.max_n, role.structured_outputs) == (64, 6, 16, True)
    assert role.image_transport == "data" and role.api_key.get_secret_value() == "EMPTY"
    assert role.server.backend == "external"


def test_roles_do_not_share_state() -> None:
    s = load_settings()
    s.captioner.urls.append("http://extra/v1")
    assert load_settings().captioner.urls == ["http://127.0.0.1:8000/v1"]
    assert s.detector.urls == ["http://127.0.0.1:8001/v1"]


def test_unknown_role() -> None:
    with pytest.raises(KeyError, match="unknown model role 'painter'"):
        load_settings().role("painter")


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        ("http://gpu1:8000/v1", ["http://gpu1:8000/v1"]),
        ("http://gpu1:8000/v1, http://gpu2:8000/v1,", ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]),
        ('["http://gpu1:8000/v1", "http://gpu2:8000/v1"]', ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]),
    ],
    ids=["one", "comma-separated", "json-list"],
)
def test_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, urls: list[str]) -> None:
    monkeypatch.setenv("COOOL_DESCRIBER__URLS", value)
    s = load_settings()
    assert s.describer.urls == urls
    assert s.describer.model == "Qwen/Qwen3-VL-235B-A22B-Thinking-FP8"  # one field alone is overridden
    assert s.captioner.urls == ["http://127.0.0.1:8000/v1"]


def test_nested_fields_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COOOL_CAPTIONER__MODEL", "served-glm")
    monkeypatch.setenv("COOOL_CAPTIONER__MAX_N", "4")
    monkeypatch.setenv("COOOL_CAPTIONER__STRUCTURED_OUTPUTS", "false")
    monkeypatch.setenv("COOOL_CAPTIONER__IMAGE_TRANSPORT", "file")
    monkeypatch.setenv("COOOL_CAPTIONER__API_KEY", "sk-test")
    monkeypatch.setenv("COOOL_VIDEO_CONCURRENCY", "5")
    monkeypatch.setenv("COOOL_DATA_ROOT", str(tmp_path))
    s = load_settings()
    c = s.captioner
    assert (c.model, c.max_n, c.structured_outputs, c.image_transport) == ("served-glm", 4, False, "file")
    assert c.api_key.get_secret_value() == "sk-test" and "sk-test" not in repr(c)
    assert c.urls == ["http://127.0.0.1:8000/v1"]
    assert s.video_concurrency == 5 and s.data_root == tmp_path


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        RoleSettings(max_concurrency=0)
    with pytest.raises(ValidationError):
        RoleSettings(image_transport="ftp")
    with pytest.raises(ValidationError):
        load_settings(video_concurrency=0)
    monkeypatch.setenv("COOOL_DETECTOR__MAX_N", "zero")
    with pytest.raises(ValidationError):
        load_settings()


def test_yaml_file_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "image_format: jpg\n"
        "video_concurrency: 8\n"
        "captioner:\n"
        "  model: yaml-glm\n"
        "  urls: [http://yaml:8000/v1]\n"
        "  max_concurrency: 2\n"
        "detector:\n"
        "  server: {backend: process, command: [vllm, serve, x]}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("COOOL_SETTINGS_FILE", str(path))
    s = load_settings()
    assert (s.image_format, s.video_concurrency) == ("jpg", 8)
    assert (s.captioner.model, s.captioner.urls, s.captioner.max_concurrency) == ("yaml-glm", ["http://yaml:8000/v1"], 2)
    assert s.detector.server.backend == "process" and s.detector.server.command == ["vllm", "serve", "x"]
    assert s.detector.model == "openai/gpt-oss-120b"  # still the default
    # The environment beats the file (field by field), keyword arguments beat both.
    monkeypatch.setenv("COOOL_CAPTIONER__MODEL", "env-glm")
    monkeypatch.setenv("COOOL_VIDEO_CONCURRENCY", "30")
    s = load_settings()
    assert (s.video_concurrency, s.captioner.model, s.captioner.urls) == (30, "env-glm", ["http://yaml:8000/v1"])
    assert s.image_format == "jpg"
    assert load_settings(video_concurrency=40).video_concurrency == 40


def test_a_missing_settings_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COOOL_SETTINGS_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Settings()


def test_identity_changes_with_what_answers_and_nothing_else() -> None:
    """The model part of every cache key: name, pinned revision, and what coool launches."""
    from coool.settings import RoleSettings, ServerSettings

    plain = RoleSettings(model="m")
    assert plain.identity == "m"
    assert RoleSettings(model="m", revision="abc").identity == "m@abc"
    # The user's own server: coool does not launch it, so launch options say nothing about it.
    assert RoleSettings(model="m", server=ServerSettings(launch="plus")).identity == "m"
    launched = RoleSettings(model="m", server=ServerSettings(backend="process", launch="plus", weights="/w"))
    assert launched.identity == "m launch=plus weights=/w"
    assert RoleSettings(model="m", server=ServerSettings(backend="docker")).identity == "m"
