"""Our parsers against what structured outputs let through from a plainly random model.

The other tests' tiny models lean towards short, printable answers. This one
doesn't: any token, any length, so it finds what the grammar really allows.

Seen with vLLM 0.32 and its default backend (auto, which picks xgrammar
0.2.8): a plain ``{"type": "string"}`` keeps raw control characters
(U+0000-U+001F) out of JSON strings, but a string with ``maxLength`` or
``minLength`` lets them in (and bytes that are not UTF-8, which come out as
U+FFFD, so a string can even exceed maxLength in characters): Python's
``json.loads`` then refused 40 to 44 of 64 random answers, so
``parse_json_strict`` gives None for them, while ``parse_json_lenient``
(stages 2, 4, 5) still reads them. With
``--structured-outputs-config.backend guidance``: none (0 of 96). Our
prompt schemas use plain strings: keep it so, or parse with
``json.loads(..., strict=False)``.

Such a model also writes the token ``</think>`` inside strings now and then;
ChatClient's reasoning split then cuts the answer there (as vLLM's qwen3
reasoning parser does).
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from coool.detect import parse_frame
from coool.llm import ChatClient, user_message
from coool.parsing import parse_json_lenient, parse_json_strict
from coool.prompts import load_prompt
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm


async def ask(settings: RoleSettings, schema: dict, *, n: int = 16, **kwargs) -> tuple[list, int]:
    """The finished answers that were not split at a ``</think>``, and how many were."""
    async with ChatClient("ensembler", settings) as client:
        samples = await client.complete(
            [user_message("Answer.")],
            n=n,
            seed=0,
            max_tokens=kwargs.pop("max_tokens", 2048),
            response_format=client.response_format(schema.get("title", "answer"), schema),
            **kwargs,
        )
    finished = [s for s in samples if s.finish_reason == "stop"]
    kept = [s for s in finished if s.reasoning is None]
    return kept, len(finished) - len(kept)


async def test_plain_strings_parse_strictly(vllm_plain_role_settings: RoleSettings) -> None:
    """The stage 5 schema (plain strings): every answer is strict JSON, whatever the model writes."""
    prompt = load_prompt("ensemble")
    answers, split = await ask(vllm_plain_role_settings, prompt.schema, temperature=1.0)
    assert len(answers) >= 10, f"only {len(answers)} usable answers ({split} split at </think>)"
    for sample in answers:
        obj = parse_json_strict(sample.content)
        assert obj is not None, repr(sample.content)
        jsonschema.validate(obj, prompt.schema)


async def test_bounded_strings_still_parse_leniently(vllm_plain_role_settings: RoleSettings) -> None:
    """maxLength (xgrammar lets control characters in): the lenient parser still gets the object."""
    schema = {
        "title": "bounded",
        "type": "object",
        "properties": {"caption_before": {"type": "string", "maxLength": 200}, "reason": {"type": "string", "maxLength": 200}},
        "required": ["caption_before", "reason"],
        "additionalProperties": False,
    }
    answers, split = await ask(vllm_plain_role_settings, schema, temperature=1.0)
    assert len(answers) >= 10, f"only {len(answers)} usable answers ({split} split at </think>)"
    refused = too_long = 0
    loose = {**schema, "properties": {k: {"type": "string"} for k in schema["properties"]}}
    for sample in answers:
        obj = json.loads(sample.content, strict=False)
        jsonschema.validate(obj, loose)
        assert parse_json_lenient(sample.content) == obj
        refused += parse_json_strict(sample.content) is None
        too_long += any(len(v) > 200 for v in obj.values())
    print(
        f"maxLength strings: strict JSON refused {refused} of {len(answers)} answers (raw control characters); "
        f"{too_long} had a string over maxLength (in characters)"
    )


async def test_random_frames_parse_strictly(vllm_plain_role_settings: RoleSettings) -> None:
    """Stage 3's schema has no strings: whatever whitespace or digits come, parse_frame reads the frame."""
    prompt = load_prompt("detect")
    answers, _ = await ask(vllm_plain_role_settings, prompt.schema, temperature=0.6, top_p=0.95, max_tokens=512)
    assert len(answers) >= 12
    for sample in answers:
        frame = parse_frame(sample.content)
        assert isinstance(frame, int) and frame >= -1, sample.content
