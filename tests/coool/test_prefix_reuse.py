"""Issue #16.2: in second-place-plus the describe requests of a window share a byte-identical prefix.

vLLM's automatic prefix cache reuses the KV of a prompt's leading tokens
when a later request starts with the same tokens (images by their content).
Under ``images_first`` every request of a describe window begins with the
same user message parts, the images, before any text: the three passes of a
video, their re-asks and the passes of another configuration with the same
window (v3 and v3-prompt2). The requests are recorded as sent, the HTTP
bodies that reach the simulated server (a test double, no model inside).
Faithful keeps the original's layout (text first), so its passes share no
such prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from coool.describe import DescribePromptSet, describe_unit
from coool.improvements import resolve, with_improvements
from coool.llm import ChatClient
from coool.params import DescribeConfig, load_describe_configs
from coool.settings import RoleSettings
from coool.workspace import video_json

CONFIGS = load_describe_configs()
SHARED = ("v3", "v3-prompt2")  # the method's two configurations with the same window


class RecordingClient(ChatClient):
    """A ChatClient whose HTTP clients keep the body of every request they send."""

    def __init__(self, role: str, settings: RoleSettings, **kwargs: Any) -> None:
        super().__init__(role, settings, **kwargs)
        self.bodies: list[bytes] = []

        async def keep(request: httpx.Request) -> None:
            if request.url.path.endswith("/chat/completions"):
                # A body with images is streamed (coool.llm.streamed_body): read it whole here, it is then sent as read.
                self.bodies.append(await request.aread())

        key = settings.api_key.get_secret_value()
        self._clients = [
            AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=settings.timeout_s,
                        http_client=httpx.AsyncClient(event_hooks={"request": [keep]}))
            for url in settings.urls
        ]


def plus(name: str) -> DescribeConfig:
    return with_improvements(CONFIGS[name], resolve("all"))


def image_end(body: bytes) -> tuple[int, list[str]]:
    """The byte offset where the last image URL of the request ends, and the image URLs in order."""
    parts = json.loads(body)["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    last = urls[-1].encode()
    return body.rindex(last) + len(last), urls


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


async def record(sim, role, stage1, tmp_path: Path, configs: list[DescribeConfig], video: int, frame: int) -> list[bytes]:
    frames_dir = stage1.copy(video, tmp_path / "frames")
    async with RecordingClient("describer", role(sim)) as client:
        for config in configs:
            await describe_unit(client, video, config, DescribePromptSet.load(config), frames_dir, video_json(tmp_path / config.name, video),
                                detected_frame=frame)
    return client.bodies


async def test_plus_requests_of_a_window_share_their_prefix_up_to_the_last_image(sim, role, stage1, synthetic_data,
                                                                                   tmp_path: Path) -> None:
    truth = synthetic_data.truths[1]
    configs = [plus(name) for name in SHARED]
    assert configs[0].images_first and configs[0].window == configs[1].window
    assert (configs[0].pre, configs[0].post, configs[0].step) == (configs[1].pre, configs[1].post, configs[1].step)
    bodies = await record(sim, role, stage1, tmp_path, configs, truth.video_id, truth.event_frame)
    assert len(bodies) >= 6  # three passes (and any re-asks) per configuration
    messages = [json.loads(b)["messages"] for b in bodies]
    # The prompts really differ (between the passes, and v3-prompt2's texts and reconcile
    # prompts from v3's; their counts prompts are the same): only the images are shared.
    texts = {m[-1]["content"][-1]["text"] for m in messages}
    assert len(texts) >= 5
    ends = [image_end(b) for b in bodies]
    urls = ends[0][1]
    assert len(urls) == configs[0].size and all(u.startswith("data:image/png;base64,") for u in urls)
    for body, message, (end, its_urls) in zip(bodies, messages, ends, strict=True):
        assert its_urls == urls  # the same bytes, the same encoding, the same order
        assert len(message) == 1 and message[0]["role"] == "user"  # no per-pass system message before the images
        assert [p["type"] for p in message[0]["content"]] == ["image_url"] * len(urls) + ["text"]
        # Byte-identical as sent, from the first byte to the end of the last image.
        assert common_prefix(body, bodies[0]) >= end, body[: end][-200:]


async def test_faithful_keeps_the_text_first_so_its_passes_share_no_image_prefix(sim, role, stage1, synthetic_data,
                                                                                  tmp_path: Path) -> None:
    truth = synthetic_data.truths[1]
    config = CONFIGS["v3"]
    assert not config.images_first
    bodies = await record(sim, role, stage1, tmp_path, [config], truth.video_id, truth.event_frame)
    first_image = [json.loads(b)["messages"][-1]["content"] for b in bodies]
    assert all([p["type"] for p in c][:2] == ["text", "image_url"] for c in first_image)
    counts, texts = bodies[0], bodies[1]
    # The two passes part in their first text part, before any image.
    assert common_prefix(counts, texts) < counts.index(b'"image_url"')


@pytest.mark.parametrize("names", [("v3", "v3-prompt2"), ("v4", "v6-counts")])
def test_the_configurations_that_share_a_window_in_the_method(names: tuple[str, str]) -> None:
    """The pairs whose window (and role, so server) are the same: their passes can share the images' prefix."""
    a, b = (CONFIGS[n] for n in names)
    assert (a.role, a.window, a.pre, a.post, a.step) == (b.role, b.window, b.pre, b.post, b.step)
