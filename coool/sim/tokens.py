"""Token arithmetic of the simulated model server: estimates, not a tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 256


def estimate_tokens(text: str | None) -> int:
    """About one token per four characters (rounded up), zero for nothing."""
    return -(-len(text or "") // CHARS_PER_TOKEN)


def prompt_tokens(texts: Sequence[str], images: int) -> int:
    return sum(estimate_tokens(t) for t in texts) + TOKENS_PER_IMAGE * images


def apply_stop(content: str, stop: Sequence[str], include: bool) -> tuple[str, str | None]:
    """Content cut at the earliest stop string, and that string (vLLM's stop_reason)."""
    hits = [(content.find(s), s) for s in stop if s and s in content]
    if not hits:
        return content, None
    at, word = min(hits)
    return content[: at + len(word)] if include else content[:at], word


def limit_tokens(content: str, reasoning: str | None, max_tokens: int | None) -> tuple[str, str | None, bool]:
    """Reasoning then content cut to ``max_tokens``; True when something was cut (finish "length")."""
    if max_tokens is None or estimate_tokens(content) + estimate_tokens(reasoning) <= max_tokens:
        return content, reasoning, False
    budget = max_tokens * CHARS_PER_TOKEN
    # A reasoning model thinks first, so the reasoning eats the budget before the answer does.
    if reasoning is not None:
        reasoning = reasoning[:budget]
        budget -= len(reasoning)
    return content[: max(0, budget)], reasoning, True
