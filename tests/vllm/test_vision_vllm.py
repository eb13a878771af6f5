"""Image roles (captioner, describer) against real vLLM serving a tiny vision-language model.

The model is a random-weight Qwen2-VL (``COOOL_VLLM_VL_KIND=llava`` for a
LLaVA one); images go in as the client makes them: base64 data URLs, or
``file://`` URLs under the server's allowed media path.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from coool import schema as cols
from coool.describe import DescribePromptSet
from coool.llm import ChatClient, ImageFile, ModelRequestError, image_url, user_message
from coool.prompts import load_prompt
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm

WIDTH, HEIGHT = 320, 180  # the synthetic clips' size


def road_frame(index: int) -> np.ndarray:
    """A dashcam-like frame: sky, grey road, a red obstacle that grows with the index."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    img[: HEIGHT // 2] = (200, 160, 90)
    img[HEIGHT // 2 :] = (90, 90, 90)
    size = 6 + 3 * index
    cx, cy = WIDTH // 2, HEIGHT // 2 + 20
    cv2.rectangle(img, (cx - size, cy - size // 2), (cx + size, cy + size // 2), (0, 0, 220), -1)
    return img


def heatmap_frame(index: int) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cv2.circle(img, (WIDTH // 2 + 4 * index, HEIGHT // 2), 25, (255, 255, 255), -1)
    return cv2.GaussianBlur(img, (31, 31), 0)


def write_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def check(samples, schema: dict, n: int) -> list[dict]:
    assert len(samples) == n
    out = []
    for sample in samples:
        assert sample.finish_reason == "stop", sample
        obj = json.loads(sample.content)
        jsonschema.validate(obj, schema)
        out.append(obj)
    return out


async def test_captioner_stacked_frame_data_url(vllm_vl_role_settings: RoleSettings, tmp_path: Path) -> None:
    """Stage 2: one stacked image (heatmap above the frame) as a data URL, t 0.01, 8192 tokens, thinking on."""
    stacked = write_png(tmp_path / "000011.png", np.vstack([heatmap_frame(1), road_frame(1)]))
    prompt = load_prompt("caption")
    async with ChatClient("captioner", vllm_vl_role_settings) as client:
        part = client.image_url(stacked)
        assert part == ImageFile(stacked)  # made a data URL when the request is sent
        samples = await client.complete(
            [user_message(prompt.render(), [part])],
            temperature=0.01,
            max_tokens=8192,
            chat_template_kwargs={"enable_thinking": True},
            response_format=client.response_format(prompt.title, prompt.schema),
        )
        assert client.stats.prompt_tokens > 0
    (answer,) = check(samples, prompt.schema, 1)
    assert answer[cols.CAP_SEVERITY] in cols.CAPTION_SEVERITIES and answer[cols.CAP_LABEL] in cols.LABELS


async def test_describer_24_frame_window_file_urls(
    vllm_vl_role_settings: RoleSettings, vllm_media_root: Path
) -> None:
    """Stage 4, the widest window (v4: 24 frames) in one request as file:// URLs; n 4, t 0.6, top_p 0.95."""
    frames = [write_png(vllm_media_root / "raw" / f"{1 + 6 * i:06d}.png", road_frame(i)) for i in range(24)]
    prompt = load_prompt("describe_counts")
    settings = vllm_vl_role_settings.model_copy(update={"image_transport": "file"})
    async with ChatClient("describer", settings, media_root=vllm_media_root) as client:
        urls = [client.image_url(f) for f in frames]
        assert all(u.startswith("file://") for u in urls)
        samples = await client.complete(
            [user_message(prompt.render(**DescribePromptSet(prompt, prompt, prompt).values(24)), urls)],
            n=4,
            temperature=0.6,
            top_p=0.95,
            top_k=-1,
            repetition_penalty=1.0,
            max_tokens=8192,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
        # 24 images cost far more prompt tokens than the text alone.
        assert client.stats.prompt_tokens > 24 * 8
    for answer in check(samples, prompt.schema, 4):
        assert answer[cols.LABEL] in cols.LABELS and answer[cols.SEVERITY] in cols.SEVERITIES


async def test_describer_reconcile_data_urls(vllm_vl_role_settings: RoleSettings, tmp_path: Path) -> None:
    """The reconcile pass: 12 frames as data URLs plus both earlier JSONs, the 11-field answer."""
    frames = [write_png(tmp_path / f"{i:06d}.png", road_frame(i)) for i in range(12)]
    prompt = load_prompt("describe_reconcile")
    async with ChatClient("describer", vllm_vl_role_settings) as client:
        text = "Counts JSON: {}\nTexts JSON: {}\nReconcile them into one answer."
        samples = await client.complete(
            [user_message(text, [client.image_url(f) for f in frames])],
            n=4,
            temperature=0.6,
            top_p=0.95,
            max_tokens=8192,
            response_format=client.response_format(prompt.title, prompt.schema),
        )
    check(samples, prompt.schema, 4)


async def test_file_url_outside_the_allowed_path_is_refused(vllm_vl_role_settings: RoleSettings, tmp_path: Path) -> None:
    """The server's own guard (besides the client's): HTTP 400, not retried."""
    outside = write_png(tmp_path / "outside.png", road_frame(0))
    async with ChatClient("describer", vllm_vl_role_settings) as client:
        with pytest.raises(ModelRequestError, match=r"HTTP 400 .*must be a subpath of `--allowed-local-media-path"):
            await client.complete([user_message("Describe.", [outside.as_uri()])], max_tokens=8)
        assert client.stats.retries == 0


async def test_more_images_than_the_server_allows_is_refused(
    vllm_vl_role_settings: RoleSettings, tmp_path: Path
) -> None:
    """--limit-mm-per-prompt caps images per request (the tests' server: 24)."""
    url = image_url(write_png(tmp_path / "f.png", road_frame(0)))
    async with ChatClient("describer", vllm_vl_role_settings) as client:
        with pytest.raises(ModelRequestError, match=r"HTTP 400 .*At most 24 image"):
            await client.complete([user_message("Describe.", [url] * 25)], max_tokens=8)
