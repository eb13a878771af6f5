"""The slice of the OpenAI chat-completions API (as vLLM serves it) the simulation accepts.

Unknown top-level keys are ignored, as vLLM does by default; the known ones
are type-checked so bad values get a 400 with an OpenAI-style error body.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 408: "RequestTimeout", 429: "RateLimitError"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """``{"error": {...}}`` in the shape vLLM returns."""
    kind = _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class RequestError(Exception):
    """A request the server answers with an error status (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ImageURL(_Loose):
    url: str
    detail: str | None = None


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class ImagePart(_Loose):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content or [] if isinstance(p, TextPart))

    def image_urls(self) -> list[str]:
        if isinstance(self.content, str) or self.content is None:
            return []
        return [p.image_url.url for p in self.content if isinstance(p, ImagePart)]


class JsonSchemaSpec(_Loose):
    name: str
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Loose):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format json_schema needs json_schema.schema")
        return self


class ChatRequest(_Loose):
    model: str
    messages: list[Message] = Field(min_length=1)
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: ResponseFormat | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    # vLLM extras
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    chat_template_kwargs: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def schema_and_name(self) -> tuple[dict[str, Any] | None, str | None]:
        """The JSON schema the answer must follow (OpenAI field or a vLLM extra), and its name."""
        rf = self.response_format
        if rf is not None and rf.type == "json_schema" and rf.json_schema is not None:
            return _checked(rf.json_schema.schema_), rf.json_schema.name
        for raw in ((self.structured_outputs or {}).get("json"), self.guided_json):
            if raw is not None:
                return _checked(_as_schema(raw)), None
        return None, None

    def json_mode(self) -> bool:
        rf = self.response_format
        extras = (self.structured_outputs or {}).get("json") is not None or self.guided_json is not None
        return extras or (rf is not None and rf.type in ("json_object", "json_schema"))


def _as_schema(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"the JSON schema is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise RequestError(400, "the JSON schema must be an object")
    return raw


def _checked(schema: Any) -> dict[str, Any]:
    # vLLM refuses a schema its grammar compiler can't read; the simulation refuses invalid ones.
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise RequestError(400, f"invalid JSON schema: {exc.message}") from exc
    return schema


def parse_request(body: Any) -> ChatRequest:
    """The validated request, or RequestError(400) with pydantic's reasons."""
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise RequestError(400, f"invalid request: {reasons}") from exc
