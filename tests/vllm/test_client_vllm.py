"""coool.llm.ChatClient against real vLLM (CPU build) serving a tiny text model.

What is proved here: every request field our client sends is accepted by
real vLLM, structured outputs hold our stage schemas (random weights, valid
JSON anyway), and our parsing reads what vLLM returns. What the model says
means nothing (its weights are random).
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pandas as pd
import pytest

from coool import schema as cols
from coool.describe import DescribePromptSet
from coool.detect import caption_markdown, parse_frame
from coool.llm import ChatClient, ModelRequestError, user_message
from coool.parsing import parse_json_strict
from coool.prompts import load_prompt
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm


def caption_table(rows: int = 6) -> pd.DataFrame:
    """A stage 2 table as the detector reads it (frames 1, 11, 21...)."""
    records = []
    for i in range(rows):
        incident = i >= rows // 2
        records.append(
            {
                "frame": 1 + 10 * i,
                cols.SCENE: "A city street with parked cars; the ego-car drives in the right lane.",
                cols.HAZARD_CLUES: "a car cuts in from the left" if incident else "none",
                cols.GAZE: "the car ahead",
                cols.CAP_BICYCLISTS: 0,
                cols.CAP_ANIMALS: 0,
                cols.CAP_PEDESTRIANS: 0,
                cols.CAP_VEHICLES: 1 if incident else 0,
                cols.CAP_DETECTION: 0 if incident else -1,
                cols.CAP_SEVERITY: cols.NO_CRASH,
                cols.CAP_EGO: 0,
                cols.CAP_LABEL: "vehicle overtakes" if incident else cols.UNKNOWN_LABEL,
            }
        )
    return pd.DataFrame.from_records(records)


def check_answers(samples, schema: dict, n: int) -> list[dict]:
    """n samples, each finished, strict JSON, valid under the schema."""
    assert len(samples) == n
    answers = []
    for sample in samples:
        assert sample.finish_reason == "stop", sample
        assert sample.reasoning is None  # vLLM sends "reasoning": null for a model without a parser
        obj = json.loads(sample.content)
        jsonschema.validate(obj, schema)
        assert parse_json_strict(sample.content) == obj
        answers.append(obj)
    return answers


async def test_detector_request_stage3(vllm_role_settings: RoleSettings) -> None:
    """Stage 3 as PIPELINE.md has it: system 'Reasoning: high', 12 samples, t 0.6, top_p 0.95, 512 tokens."""
    prompt = load_prompt("detect")
    assert prompt.title == "incident_frame"
    messages = [
        {"role": "system", "content": prompt.system},
        user_message(prompt.render(table=caption_markdown(caption_table()))),
    ]
    async with ChatClient("detector", vllm_role_settings) as client:
        samples = await client.complete(
            messages,
            n=12,
            temperature=0.6,
            top_p=0.95,
            max_tokens=512,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
        assert client.stats.requests == 1 and client.stats.samples == 12 and client.stats.retries == 0
        assert client.stats.prompt_tokens > 0 and client.stats.completion_tokens > 0
    answers = check_answers(samples, prompt.schema, 12)
    frames = [parse_frame(s.content) for s in samples]
    assert frames == [a["frame"] for a in answers]
    assert all(isinstance(f, int) and f >= -1 for f in frames)


async def test_ensembler_request_stage5(vllm_role_settings: RoleSettings) -> None:
    """Stage 5's sampling: t 0.7, top_p 0.8, top_k 20, min_p 0, 4096 tokens, seed 42, English system."""
    prompt = load_prompt("ensemble")
    assert prompt.title == "ensemble"
    candidates = "\n".join(
        f"- frame {frame}: caption: the ego car drives on a wet road. reason: a car cuts in and brakes."
        for frame in (31, 41, 41, 51, 61, 41)
    )
    messages = [{"role": "system", "content": prompt.system}, user_message(prompt.render(candidates=candidates))]
    kwargs = dict(
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        min_p=0.0,
        max_tokens=4096,
        seed=42,
        response_format=None,
    )
    async with ChatClient("ensembler", vllm_role_settings) as client:
        kwargs["response_format"] = client.response_format(prompt.title, prompt.schema)
        first = await client.complete(messages, **kwargs)
        again = await client.complete(messages, **kwargs)
    (answer,) = check_answers(first, prompt.schema, 1)
    # The tiny model is built to keep to ASCII (stage 5 asks again otherwise).
    assert answer["caption_before"].isascii() and answer["reason"].isascii()
    # seed 42 is honoured: the same request gives the same answer.
    assert again[0].content == first[0].content


async def test_describe_counts_schema_with_enums(vllm_role_settings: RoleSettings) -> None:
    """Stage 4's counts answer (9 fields, enums from coool.schema): n 4, t 0.6, top_p 0.95, top_k off, rp 1.0."""
    prompt = load_prompt("describe_counts")
    schema = prompt.schema
    assert schema["properties"][cols.SEVERITY]["enum"] == list(cols.SEVERITIES)
    assert schema["properties"][cols.LABEL]["enum"] == list(cols.LABELS)
    text = prompt.render(**DescribePromptSet(prompt, prompt, prompt).values(12))
    async with ChatClient("describer", vllm_role_settings) as client:
        samples = await client.complete(
            [user_message(text)],
            n=4,
            temperature=0.6,
            top_p=0.95,
            top_k=-1,  # "top_k off"; vLLM takes -1 and 0 alike
            repetition_penalty=1.0,
            max_tokens=8192,
            response_format=client.response_format(prompt.title, schema),
        )
    for answer in check_answers(samples, schema, 4):
        assert answer[cols.SEVERITY] in cols.SEVERITIES
        assert answer[cols.LABEL] in cols.LABELS
        assert answer[cols.DETECTION] in cols.DETECTION_VALUES
        assert answer[cols.EGO] in cols.EGO_VALUES
        assert all(answer[c] >= 0 for c in cols.COUNT_COLUMNS)


@pytest.mark.parametrize("name", ["describe_texts", "describe_reconcile", "caption"])
async def test_more_stage_schemas(vllm_role_settings: RoleSettings, name: str) -> None:
    """The other answer schemas; the reconcile pass's ask-again repetition penalty (1.3)."""
    prompt = load_prompt(name)
    async with ChatClient("describer", vllm_role_settings) as client:
        samples = await client.complete(
            [user_message("Answer with the JSON object for the frames shown.")],
            n=2,
            temperature=0.6,
            top_p=0.95,
            repetition_penalty=1.3,
            max_tokens=8192,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    check_answers(samples, prompt.schema, 2)


async def test_caption_low_temperature_with_thinking_kwarg(vllm_role_settings: RoleSettings) -> None:
    """Stage 2's sampling (t 0.01, 8192 tokens, thinking enabled through chat_template_kwargs)."""
    prompt = load_prompt("caption")
    async with ChatClient("captioner", vllm_role_settings) as client:
        samples = await client.complete(
            [user_message("Describe the frame as JSON.")],
            temperature=0.01,
            max_tokens=8192,
            chat_template_kwargs={"enable_thinking": True},
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    (answer,) = check_answers(samples, prompt.schema, 1)
    assert answer[cols.CAP_SEVERITY] in cols.CAPTION_SEVERITIES


async def test_n_choices_and_split(vllm_role_settings: RoleSettings) -> None:
    """n=4 is one request with 4 choices; n=5 with max_n=2 is 3 requests (2+2+1)."""
    fmt = {"type": "json_object"}
    async with ChatClient("describer", vllm_role_settings) as client:
        four = await client.complete([user_message("JSON please.")], n=4, temperature=1.0, max_tokens=256, response_format=fmt)
        assert len(four) == 4 and client.stats.requests == 1
    settings = vllm_role_settings.model_copy(update={"max_n": 2})
    async with ChatClient("describer", settings) as client:
        five = await client.complete([user_message("JSON please.")], n=5, temperature=1.0, max_tokens=256, response_format=fmt)
        assert len(five) == 5 and client.stats.requests == 3


async def test_vllm_seeds_child_samples_seed_plus_index(vllm_role_settings: RoleSettings) -> None:
    """vLLM gives sample i of a seeded request the seed ``seed + i``.

    So a request for n=3 with seed 42 and one for n=1 with seed 43 share a sample.
    """
    prompt = load_prompt("ensemble")
    async with ChatClient("ensembler", vllm_role_settings) as client:
        fmt = client.response_format(prompt.title, prompt.schema)
        msgs = [user_message("Write a caption and a reason.")]
        three = await client.complete(msgs, n=3, seed=42, temperature=1.0, max_tokens=512, response_format=fmt)
        one = await client.complete(msgs, n=1, seed=43, temperature=1.0, max_tokens=512, response_format=fmt)
    assert one[0].content == three[1].content
    assert len({s.content for s in three}) == 3


async def test_split_seeded_requests_give_distinct_samples(vllm_role_settings: RoleSettings) -> None:
    prompt = load_prompt("ensemble")
    settings = vllm_role_settings.model_copy(update={"max_n": 3})
    async with ChatClient("ensembler", settings) as client:
        samples = await client.complete(
            [user_message("Write a caption and a reason.")],
            n=6,
            seed=42,
            temperature=1.0,
            max_tokens=512,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    assert len(samples) == 6
    assert len({s.content for s in samples}) == 6


async def test_every_sampling_extra_accepted(vllm_role_settings: RoleSettings) -> None:
    """All the fields ChatClient.complete can send, in one request."""
    prompt = load_prompt("ensemble")
    async with ChatClient("ensembler", vllm_role_settings) as client:
        samples = await client.complete(
            [{"role": "system", "content": "You must answer in English."}, user_message("Answer.")],
            n=2,
            temperature=0.9,
            top_p=0.9,
            max_tokens=1024,
            response_format=client.response_format(prompt.title, prompt.schema),
            seed=7,
            top_k=50,
            min_p=0.05,
            repetition_penalty=1.5,
            chat_template_kwargs={"enable_thinking": False},
        )
    check_answers(samples, prompt.schema, 2)


async def test_json_object_mode(vllm_role_settings: RoleSettings) -> None:
    """structured_outputs off: the client asks for json_object, and vLLM returns JSON objects."""
    settings = vllm_role_settings.model_copy(update={"structured_outputs": False})
    async with ChatClient("describer", settings) as client:
        fmt = client.response_format("describe_counts", load_prompt("describe_counts").schema)
        assert fmt == {"type": "json_object"}
        samples = await client.complete([user_message("Answer in JSON.")], n=4, temperature=1.0, max_tokens=1024, response_format=fmt)
    assert len(samples) == 4
    for sample in samples:
        assert sample.finish_reason == "stop", sample
        assert isinstance(json.loads(sample.content), dict)


async def test_chat_template_kwargs_reach_the_template(vllm_role_settings: RoleSettings) -> None:
    """vLLM renders chat_template_kwargs into the template; a kwarg the template doesn't use is dropped, not refused.

    The tiny model's template adds an empty think block when enable_thinking is false
    (as Qwen3's does), so the prompt grows by exactly those tokens.
    """
    msgs = [user_message("Hello.")]

    async def prompt_tokens(kwargs: dict | None) -> int:
        async with ChatClient("ensembler", vllm_role_settings) as client:
            await client.complete(msgs, max_tokens=1, chat_template_kwargs=kwargs)
            return client.stats.prompt_tokens

    plain = await prompt_tokens(None)
    assert await prompt_tokens({"enable_thinking": True}) == plain
    assert await prompt_tokens({"enable_thinking": False}) > plain
    assert await prompt_tokens({"reasoning_effort": "high", "not_a_template_variable": 1}) == plain


async def test_cut_off_answer_is_reported_not_parsed(vllm_role_settings: RoleSettings) -> None:
    """max_tokens too small: finish_reason 'length' and a partial JSON that strict parsing refuses."""
    prompt = load_prompt("ensemble")
    async with ChatClient("ensembler", vllm_role_settings) as client:
        (sample,) = await client.complete(
            [user_message("Answer.")],
            temperature=1.0,
            max_tokens=4,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    assert sample.finish_reason == "length"
    assert sample.content.startswith("{")
    assert parse_json_strict(sample.content) is None


async def test_refused_request_is_not_retried(vllm_role_settings: RoleSettings) -> None:
    """A 4xx is ours to fix: raised at once as ModelRequestError with vLLM's message."""
    async with ChatClient("detector", vllm_role_settings) as client:
        with pytest.raises(ModelRequestError, match=r"HTTP 400 .*max_tokens=100000 cannot be greater than max_model_len"):
            await client.complete([user_message("Hi.")], max_tokens=100_000)
        assert client.stats.retries == 0 and client.stats.failures == 1
    wrong = vllm_role_settings.model_copy(update={"model": "not-served"})
    async with ChatClient("detector", wrong) as client:
        with pytest.raises(ModelRequestError, match=r"HTTP 404 .*does not exist"):
            await client.complete([user_message("Hi.")], max_tokens=8)
        assert client.stats.retries == 0


async def test_prompt_plus_max_tokens_over_the_context_is_accepted(vllm_role_settings: RoleSettings) -> None:
    """Only max_tokens alone is checked against max_model_len; the answer is cut at the context end."""
    async with ChatClient("ensembler", vllm_role_settings) as client:
        samples = await client.complete([user_message("word " * 200)], max_tokens=16_380, temperature=1.0)
    assert len(samples) == 1


async def test_concurrent_requests(vllm_role_settings: RoleSettings) -> None:
    """Stages send many requests at once; the server batches them."""
    prompt = load_prompt("detect")
    settings = vllm_role_settings.model_copy(update={"max_concurrency": 4})
    async with ChatClient("detector", settings) as client:
        fmt = client.response_format(prompt.title, prompt.schema)
        batches = await asyncio.gather(
            *(
                client.complete([user_message(f"Video {i}: which frame?")], n=3, temperature=0.6, top_p=0.95, max_tokens=512, response_format=fmt)
                for i in range(8)
            )
        )
        assert client.stats.requests == 8 and client.stats.failures == 0
    for samples in batches:
        check_answers(samples, prompt.schema, 3)
