"""Issue #16.1 on the real vLLM (CPU build, tiny random-weight model): the usage of every
response is recorded, the cached prompt tokens included when vLLM reports them."""

from __future__ import annotations

import pytest

from coool.llm import ChatClient, count_usage, user_message
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm

# Long enough to fill several of vLLM's KV-cache blocks, so a repeat can reuse its prefix.
PROMPT = "Describe the road scene in one short sentence. " + " ".join(
    f"Frame {i}: a car ahead in the right lane, a cyclist on the kerb, wet asphalt." for i in range(40)
)


async def test_usage_of_every_response_with_cached_prompt_tokens(vllm_usage_role_settings: RoleSettings) -> None:
    settings = vllm_usage_role_settings.model_copy(update={"max_n": 2})
    messages = [user_message(PROMPT)]
    async with ChatClient("describer", settings) as client:
        with count_usage() as first:
            samples = await client.complete(messages, n=3, max_tokens=8, temperature=1.0, seed=1)
        with count_usage() as again:
            await client.complete(messages, n=1, max_tokens=8, temperature=1.0, seed=2)
        stats = client.stats
    assert len(samples) == 3
    # n=3 at max_n 2: two requests, both counted; the prompt is counted once per request.
    assert first.responses == 2 and first.unreported == 0
    assert first.prompt_tokens > 300 and first.prompt_tokens % 2 == 0
    assert again.prompt_tokens == first.prompt_tokens // 2
    assert 3 <= first.completion_tokens <= 3 * 8
    # vLLM reports cached prompt tokens with --enable-prompt-tokens-details; the repeat hits the prefix cache.
    assert first.cached_prompt_tokens is not None and again.cached_prompt_tokens is not None
    assert again.cached_prompt_tokens > 0
    assert stats.prompt_tokens == first.prompt_tokens + again.prompt_tokens
    assert stats.cached_prompt_tokens == first.cached_prompt_tokens + again.cached_prompt_tokens
