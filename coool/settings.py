"""Settings: environment variables (``COOOL_...``) and an optional YAML file.

Every model stage talks to a *role* (captioner, detector, describer,
ensembler); these settings map each role to a served model name, one or
more OpenAI-compatible base URLs, and how its server is obtained.

Precedence, highest first: keyword arguments, environment variables
(``COOOL_CAPTIONER__URLS='["http://gpu1:8000/v1"]'``), the YAML file named
by ``COOOL_SETTINGS_FILE``, the defaults below.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ROLES: tuple[str, ...] = ("captioner", "detector", "describer", "ensembler")


class ServerSettings(BaseModel):
    """How the pipeline gets a role's model server."""

    # external: already running at the role's URLs; process: a command we
    # start and stop; docker: the role's image from images/ via the docker SDK.
    backend: Literal["external", "process", "docker"] = Field("external", description="how the server is obtained")
    command: list[str] = Field(
        default_factory=list,
        description="argv for the process backend (default: the role's env's `vllm serve` with its launch flags)",
    )
    launch: Literal["original", "plus"] = Field(
        "original", description="launch flags (coool/configs/servers.yaml): the original authors' or coool's plus variant"
    )
    weights: str = Field("", description="what vLLM loads: hub id or local folder (default: the launch's weights)")
    flags: list[str] = Field(
        default_factory=list, description="extra vLLM flags after the launch's (a repeated flag wins); both backends"
    )
    venv: str = Field("", description="process backend: the env whose bin/vllm serves (default: <envs_dir>/<role's env>)")
    image: str = Field("", description="image for the docker backend")
    gpus: str = Field("all", description="GPUs for the server: docker device request; process: CUDA_VISIBLE_DEVICES unless all")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the server")
    health_timeout_s: float = Field(1800.0, description="how long to wait for /health")
    port: int | None = Field(None, description="docker backend: port to serve on (default: the URL's)")
    model_cache: str | None = Field(
        None, description="docker backend: host folder mounted at /root/.cache/huggingface, so weights are downloaded once"
    )


class RoleSettings(BaseModel):
    # Empty means "the role's default" (filled in by Settings), so an
    # environment variable can override one field of a role alone.
    model: str = Field("", description="served model name")
    revision: str | None = Field(
        None, description="weights revision (hub commit hash or tag) the server loads; part of every cache key"
    )
    urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="OpenAI-compatible base URLs (…/v1); requests spread across them"
    )
    api_key: SecretStr = Field(SecretStr("EMPTY"), description="bearer token (vLLM --api-key); never logged")
    max_concurrency: int = Field(64, ge=1, description="requests in flight per URL")
    timeout_s: float = Field(
        900.0, gt=0, description="deadline of one request attempt, whole (connect, wait, read); retried like any timeout"
    )
    # The largest real answer: max_n=16 samples of max_tokens=8192, at most ~32 bytes a token
    # as JSON (a long token, or non-ASCII escaped as \uXXXX), is 16*8192*32 = 4 MiB plus a few
    # KB of fields per choice; 16 MiB leaves 4x that. Typical English answers are ~4 bytes a token.
    max_response_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="larger responses are cut off while read and count as unusable answers"
    )
    max_attempts: int = Field(6, ge=1, description="tries per request on transient errors")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each try")
    max_n: int = Field(16, ge=1, description="largest n one request may ask; larger n is split")
    structured_outputs: bool = Field(True, description="send json_schema response formats (vLLM structured outputs)")
    image_transport: Literal["data", "file"] = Field("data", description="base64 data URLs, or file:// under the data root")
    server: ServerSettings = Field(default_factory=ServerSettings)

    @property
    def identity(self) -> str:
        """What the cache keys record of the model: its name, its revision when pinned and,
        for a server coool launches, what it launches when that is not the default (the plus
        launch's reasoning parser or other weights change the answers)."""
        identity = f"{self.model}@{self.revision}" if self.revision else self.model
        if self.server.backend != "external":
            if self.server.launch != "original":
                identity += f" launch={self.server.launch}"
            if self.server.weights:
                identity += f" weights={self.server.weights}"
        return identity

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        # Allow "http://a/v1,http://b/v1" from an environment variable.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value


# The spec's models; ports are distinct so that several servers can run at
# once when the GPUs allow (the reference reused 8000 and 22002 in turn).
ROLE_DEFAULTS: dict[str, tuple[str, int]] = {
    "captioner": ("zai-org/GLM-4.5V", 8000),
    "detector": ("openai/gpt-oss-120b", 8001),
    "describer": ("Qwen/Qwen3-VL-235B-A22B-Thinking-FP8", 22002),
    "ensembler": ("Qwen/Qwen3-Next-80B-A3B-Instruct", 22003),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COOOL_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    results_dir: Path = Field(Path("results"), description="where every output and the cache live")
    data_root: Path | None = Field(None, description="folder holding videos/ and heatmaps/; file:// images must lie under it")
    image_format: Literal["png", "jpg"] = Field("png", description="stacked frame images (png lossless, jpg smaller)")
    video_concurrency: int = Field(64, ge=1, description="videos in flight at once per stage (requests are bounded per URL too)")
    frames_concurrency: int = Field(4, ge=1, description="videos decoded at once in stage 1 (CPU work: a few threads are plenty)")
    task_retries: int = Field(2, ge=0, description="Prefect retries of a (stage, video) task after the client's own retries")
    task_retry_delay_s: float = Field(10.0, ge=0, description="delay before a task retry")
    envs_dir: Path = Field(Path("envs"), description="where `make env-...` builds the per-model vLLM envs (process backend)")
    result_storage_block: str | None = Field(None, description="Prefect filesystem block (e.g. 's3-bucket/coool') for cached results; default: <results>/.prefect")

    captioner: RoleSettings = Field(default_factory=RoleSettings)
    detector: RoleSettings = Field(default_factory=RoleSettings)
    describer: RoleSettings = Field(default_factory=RoleSettings)
    ensembler: RoleSettings = Field(default_factory=RoleSettings)

    @model_validator(mode="after")
    def _fill_role_defaults(self) -> Settings:
        for name, (model, port) in ROLE_DEFAULTS.items():
            role: RoleSettings = getattr(self, name)
            if not role.model:
                role.model = model
            if not role.urls:
                role.urls = [f"http://127.0.0.1:{port}/v1"]
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = _settings_file.get() or os.environ.get("COOOL_SETTINGS_FILE")
        if settings_file:
            path = Path(settings_file)
            if not path.is_file():
                raise FileNotFoundError(f"COOOL_SETTINGS_FILE={settings_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def role(self, name: str) -> RoleSettings:
        if name not in ROLES:
            raise KeyError(f"unknown model role {name!r}; roles are {', '.join(ROLES)}")
        return getattr(self, name)


# The file of the Settings being built (load_settings), scoped to that call: no process-wide state.
_settings_file: ContextVar[str | None] = ContextVar("settings_file", default=None)


def load_settings(settings_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, ``settings_file`` (else COOOL_SETTINGS_FILE) and ``overrides``."""
    token = _settings_file.set(str(settings_file) if settings_file else None)
    try:
        return Settings(**overrides)
    finally:
        _settings_file.reset(token)
