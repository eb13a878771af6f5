"""The reasoning split against real vLLM with ``--reasoning-parser qwen3``.

The captioner (GLM-4.5V, parser glm45) and the Qwen3-VL Thinking describer
are served with a reasoning parser: vLLM moves the think block out of
``content`` into the message's ``reasoning`` field (vLLM 0.32 names it
``reasoning``; older releases ``reasoning_content``: ChatClient reads both),
and applies the JSON schema only to what follows ``</think>``.

Not tested here, seen once and written down in docs/VLLM.md: with thinking
turned off in the template (``enable_thinking: false``), the qwen3 parser
still splits the answer at a ``</think>`` the model writes, even inside a
JSON string; this tiny model writes ``</think>`` often, so such a test says
more about the model than about our client.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from coool.llm import ChatClient, user_message
from coool.prompts import load_prompt
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm


async def test_reasoning_is_split_and_the_answer_keeps_the_schema(vllm_reasoning_role_settings: RoleSettings) -> None:
    prompt = load_prompt("detect")
    async with ChatClient("describer", vllm_reasoning_role_settings) as client:
        samples = await client.complete(
            [user_message("Which frame? Think first.")],
            n=16,
            seed=3,
            temperature=1.0,
            max_tokens=512,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    assert len(samples) == 16
    answered = [s for s in samples if s.content]
    # A sample that ended inside its think block has no answer (content null).
    assert len(answered) >= 12
    for sample in answered:
        assert "<think>" not in sample.content and "</think>" not in sample.content
        jsonschema.validate(json.loads(sample.content), prompt.schema)
    reasoned = [s for s in samples if s.reasoning]
    assert reasoned, "no sample carried reasoning"
    assert all(isinstance(s.reasoning, str) and "</think>" not in s.reasoning for s in reasoned)
