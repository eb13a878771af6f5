"""The studio in real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Run with ``pytest -m browser``. COOOL_STUDIO_SCREENSHOTS=1 also writes the
README screenshots to docs/screenshots/.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from studio_support import DESCRIBED, FINAL, LiveServer, StudioDirs, build_results

from coool.studio import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1360, "height": 900})  # type: ignore[attr-defined]
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "404" not in msg.text else None)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def live(dirs: StudioDirs) -> Iterator[LiveServer]:
    server = LiveServer(create_app(dirs.results))
    yield server
    server.stop()


def wait_playing(page: object, selector: str) -> float:
    """Wait until the <video> has data and its clock advances; return the time reached."""
    page.wait_for_function(f"() => document.querySelector('{selector}').readyState >= 2", timeout=30_000)  # type: ignore[attr-defined]
    start = page.evaluate(f"document.querySelector('{selector}').currentTime")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        f"() => document.querySelector('{selector}').currentTime > {start} + 0.2", timeout=15_000
    )
    return float(page.evaluate(f"document.querySelector('{selector}').currentTime"))  # type: ignore[attr-defined]


def test_h264_plays_in_debian_chromium(page: object, live: LiveServer) -> None:
    page.goto(live.url + "/video/0")  # type: ignore[attr-defined]
    support = page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')")  # type: ignore[attr-defined]
    assert support in ("probably", "maybe"), f"this chromium can't play H.264: {support!r}"
    page.evaluate("document.getElementById('player').play()")  # type: ignore[attr-defined]
    assert wait_playing(page, "#player") > 0.2
    assert page.evaluate("document.getElementById('player').error") is None  # type: ignore[attr-defined]


def test_video_page_seeks_to_marked_frames(page: object, live: LiveServer) -> None:
    page.goto(live.url + "/video/0")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")  # type: ignore[attr-defined]
    page.click("button.thumb[data-frame='52']")  # 8 thumbnails of 90 frames: 1, 14, ..., 52, ..., 90  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('frame-now').textContent === '52'")  # type: ignore[attr-defined]
    page.click("#step-fwd")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('frame-now').textContent === '53'")  # type: ignore[attr-defined]
    start = page.get_attribute("svg.lane rect.start", "data-frame")  # type: ignore[attr-defined]
    page.click("svg.lane rect.start", force=True)  # type: ignore[attr-defined]
    page.wait_for_function(f"() => document.getElementById('frame-now').textContent === '{start}'")  # type: ignore[attr-defined]
    assert page.is_visible("#playhead")  # type: ignore[attr-defined]
    assert page.locator("img[alt='frame 90']").evaluate("img => img.naturalWidth") > 0  # type: ignore[attr-defined]
    # Intermediate outputs are one click away.
    page.click("text=describe v4 (stage 4)")  # type: ignore[attr-defined]
    assert page.url.endswith("/view/describe/v4/0.json")  # type: ignore[attr-defined]
    assert "16, 22, 28" in page.inner_text("section.json")  # type: ignore[attr-defined]


def test_ab_votes_by_click_and_keys_survive_a_restart(page: object, dirs: StudioDirs, tmp_path: Path) -> None:
    first = LiveServer(create_app(dirs.results))
    try:
        page.goto(first.url + "/ab")  # type: ignore[attr-defined]
        page.click("#start")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/0$"))  # type: ignore[attr-defined]
        assert page.evaluate("document.getElementById('ab-player').autoplay && document.getElementById('ab-player').muted")  # type: ignore[attr-defined]
        wait_playing(page, "#ab-player")  # autoplays, muted, without a click
        assert page.inner_text("#n-voted") == "0"  # type: ignore[attr-defined]

        page.click("#vote-A")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/1$"))  # type: ignore[attr-defined]
        page.keyboard.press("k")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/0$"))  # type: ignore[attr-defined]
        assert "current" in page.get_attribute("#vote-A", "class")  # type: ignore[attr-defined]
        assert "chosen" in page.get_attribute("#side-A", "class")  # type: ignore[attr-defined]
        page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/1$"))  # type: ignore[attr-defined]
        page.keyboard.press("ArrowLeft")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/0$"))  # type: ignore[attr-defined]
        page.keyboard.press("j")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/1$"))  # type: ignore[attr-defined]
        assert page.inner_text("#n-voted") == "1"  # type: ignore[attr-defined]

        page.keyboard.press("b")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/ab/1/video/2$"))  # type: ignore[attr-defined]
        page.keyboard.press("t")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.getElementById('status').textContent.includes('All 3 voted')")  # type: ignore[attr-defined]
        assert page.inner_text("#n-voted") == "3"  # type: ignore[attr-defined]
        assert "current" in page.get_attribute("#vote-tie", "class")  # type: ignore[attr-defined]
    finally:
        first.stop()

    second = LiveServer(create_app(dirs.results))  # a new app instance over the same dirs
    try:
        page.goto(second.url + "/ab")  # type: ignore[attr-defined]
        assert re.search(r"\b3\b", page.inner_text("table.grid tbody tr td.num"))  # type: ignore[attr-defined]
        page.goto(second.url + "/ab/1/summary")  # type: ignore[attr-defined]
        assert page.inner_text("#ties") == "1"  # type: ignore[attr-defined]
        assert int(page.inner_text("#wins-lo")) + int(page.inner_text("#wins-hi")) == 2  # type: ignore[attr-defined]
        mapping = [[c.strip() for c in row.split("\t")] for row in page.inner_text("#mapping tbody").splitlines()]  # type: ignore[attr-defined]
        assert [m[0] for m in mapping] == ["0", "1", "2"] and [m[3] for m in mapping] == ["A", "B", "tie"]

        with page.expect_download() as info:  # type: ignore[attr-defined]
            page.click("#download")  # type: ignore[attr-defined]
        saved = tmp_path / "votes.csv"
        info.value.save_as(saved)
        rows = list(csv.DictReader(saved.open()))
        assert [r["video"] for r in rows] == ["0", "1", "2"]
        assert [r["choice"] for r in rows] == ["A", "B", "tie"]
        for r, m in zip(rows, mapping):
            assert {r["shown_as_A"], r["shown_as_B"]} == {FINAL, DESCRIBED}
            assert (r["shown_as_A"], r["shown_as_B"]) == (m[1], m[2])  # the summary reveals the same mapping
            assert r["winner"] == {"A": r["shown_as_A"], "B": r["shown_as_B"], "tie": "tie"}[r["choice"]]

        # The open browser keeps voting after the restart: the secret (and so its CSRF token) persisted.
        page.goto(second.url + "/ab/1/video/2")  # type: ignore[attr-defined]
        page.keyboard.press("a")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.getElementById('status').textContent.includes('Saved')")  # type: ignore[attr-defined]
        page.goto(second.url + "/ab/1/summary")  # type: ignore[attr-defined]
        assert page.inner_text("#ties") == "0"  # type: ignore[attr-defined]

        response = page.goto(second.url + "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd")  # type: ignore[attr-defined]
        assert response.status == 404 and "root:" not in page.content()  # type: ignore[attr-defined]
        for raw in ("/files/../../../../etc/passwd", "/source/../../../../etc/passwd", "/files/studio/secret"):
            assert second.raw_status(raw) == 404, raw
    finally:
        second.stop()


def _texts(side: str, video: int) -> tuple[str, str]:
    """Plausible texts for the README screenshots."""
    if side == "one":
        return (
            "The ego-car drives in the middle lane of a straight three-lane road between a dark car and a blue car.",
            "A red barrier appears in the ego lane and the ego-car hits it without stopping.",
        )
    return (
        "The ego-car follows a clear highway lane with vehicles on both sides under a blue sky.",
        "The ego-car fails to brake for a red obstacle ahead in its lane and collides with it.",
    )


@pytest.mark.skipif(not os.environ.get("COOOL_STUDIO_SCREENSHOTS"), reason="set COOOL_STUDIO_SCREENSHOTS=1 to refresh docs/screenshots")
def test_screenshots(page: object, dataset: Path, tmp_path: Path) -> None:
    dirs = build_results(dataset, tmp_path / "results", texts=_texts)
    server = LiveServer(create_app(dirs.results))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(server.url + "/")  # type: ignore[attr-defined]
        page.screenshot(path=str(SCREENSHOTS / "home.png"))  # type: ignore[attr-defined]

        page.goto(server.url + "/video/0")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.getElementById('player').readyState >= 2")  # type: ignore[attr-defined]
        page.evaluate("() => document.getElementById('player').play()")  # type: ignore[attr-defined]
        wait_playing(page, "#player")  # played once, the paused frame shows without Chromium's loading spinner
        start = page.get_attribute("svg.lane rect.start", "data-frame")  # type: ignore[attr-defined]
        page.click("svg.lane rect.start", force=True)  # type: ignore[attr-defined]
        page.wait_for_function(f"() => document.getElementById('frame-now').textContent === '{start}'")  # type: ignore[attr-defined]
        page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")  # type: ignore[attr-defined]
        page.wait_for_timeout(1000)  # type: ignore[attr-defined]
        page.screenshot(path=str(SCREENSHOTS / "video.png"), full_page=True)  # type: ignore[attr-defined]

        page.goto(server.url + "/ab")  # type: ignore[attr-defined]
        page.click("#start")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/video/0$"))  # type: ignore[attr-defined]
        page.keyboard.press("a")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/video/1$"))  # type: ignore[attr-defined]
        wait_playing(page, "#ab-player")
        page.screenshot(path=str(SCREENSHOTS / "ab.png"))  # type: ignore[attr-defined]

        page.keyboard.press("b")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/video/2$"))  # type: ignore[attr-defined]
        page.keyboard.press("t")  # type: ignore[attr-defined]
        page.wait_for_function("() => document.getElementById('status').textContent.includes('All 3 voted')")  # type: ignore[attr-defined]
        page.goto(server.url + "/ab/1/summary")  # type: ignore[attr-defined]
        page.screenshot(path=str(SCREENSHOTS / "summary.png"))  # type: ignore[attr-defined]
    finally:
        server.stop()
    for name in ("home", "video", "ab", "summary"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
