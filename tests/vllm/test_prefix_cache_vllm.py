"""Issue #16.2 on REAL vLLM: second-place-plus makes the server compute fewer prompt tokens in stage 4.

The describe stage of both recipes (faithful: text first; plus: the images
first, byte-identical across the passes and the two configurations of a
window) runs on the same synthetic clips against vLLM (CPU build, tiny
random-weight Qwen2-VL, prefix caching on). vLLM's own counters
(``/metrics``) say how many prompt tokens it computed rather than read from
its prefix cache. A check that reuse happens, not a speed claim: the figure
is bench/prefix_cache.py's (``make bench``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.prefix_cache import compare, make_clips
from coool.settings import RoleSettings

pytestmark = pytest.mark.vllm


# A server start (a minute idle, up to eight on a loaded machine) and three arms of one clip.
@pytest.mark.timeout(2400)
def test_plus_computes_fewer_prompt_tokens_than_faithful(vllm_vl_stats_role_settings: RoleSettings, tmp_path: Path) -> None:
    clips = make_clips(tmp_path / "clips", 1)
    root = vllm_vl_stats_role_settings.urls[0].removesuffix("/v1")
    result = compare(root, vllm_vl_stats_role_settings, clips, tmp_path, arms=("faithful", "plus", "plus-text-first"))
    faithful, plus, text_first = (result["arms"][a] for a in ("faithful", "plus", "plus-text-first"))
    for arm in (faithful, plus, text_first):
        assert arm["failures"] == 0 and arm["requests"] >= 6  # three passes x two configurations
        assert arm["prompt_tokens"] > 0 and arm["queries"] > 0  # the counters moved
    assert plus["computed_tokens"] < faithful["computed_tokens"], result
    # The layout's own share: the same prompts with the text first reuse less.
    assert plus["computed_tokens"] < text_first["computed_tokens"], result
    assert plus["hit_rate"] > text_first["hit_rate"], result
