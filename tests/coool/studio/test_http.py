"""Routes, safety and vote persistence over plain HTTP (FastAPI's TestClient; no browser)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from studio_support import DESCRIBED, FINAL, N_VIDEOS, StudioDirs, caption, csrf_from, raw_get, reason

from coool import schema as cols
from coool.decode import probe
from coool.files import atomic_write_json
from coool.studio import create_app, studio_command
from coool.studio.security import check_bind_host
from coool.studio.votes import CSV_HEADER
from coool.submission import read_submission, write_submission

BASE = "http://127.0.0.1"  # the studio answers loopback Host names only


def client(dirs: StudioDirs, **kwargs: object) -> TestClient:
    return TestClient(create_app(dirs.results, **kwargs), base_url=BASE)  # type: ignore[arg-type]


def sids(c: TestClient) -> dict[str, str]:
    """Submission label -> short id, read from the A/B picker."""
    html = c.get("/ab").text
    return {label: sid for sid, label in re.findall(r'<option value="([0-9a-f]+)"[^>]*>([^<]+)</option>', html)}


def start_session(c: TestClient, first: str = FINAL, second: str = DESCRIBED) -> int:
    token = csrf_from(c.get("/ab").text)
    ids = sids(c)
    r = c.post("/ab/start", data={"x": ids[first], "y": ids[second], "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    return int(r.headers["location"].split("/")[2])


def vote(c: TestClient, session: int, video: int, choice: str) -> dict:
    token = csrf_from(c.get(f"/ab/{session}/video/{video}").text)
    r = c.post(f"/ab/{session}/video/{video}/vote", data={"choice": choice, "csrf_token": token}, headers={"accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


# --- browsing ---------------------------------------------------------------------


def test_home_lists_submissions_by_header_and_videos(dirs: StudioDirs) -> None:
    shutil.copy(dirs.truth, dirs.results / "truth.csv")  # submission header, but it is the truth: not a submission
    write_submission(read_submission(dirs.results / FINAL), dirs.results / "merges" / "a+b.csv")
    (dirs.results / "notes.csv").write_text("a,b\n1,2\n")
    html = client(dirs).get("/").text
    listed = re.findall(r'href="/submission/[0-9a-f]+" class="mono">([^<]+)</a>', html)
    assert listed == [FINAL, DESCRIBED, "merges/a+b.csv"]  # final first, then pipeline order
    assert "captions/0.csv</a>" not in html and "notes.csv" not in html
    for video in range(N_VIDEOS):
        assert f'href="/video/{video}"' in html


def test_extra_submission_outside_results_is_listed(dirs: StudioDirs, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere" / "mine.csv"
    write_submission(read_submission(dirs.results / FINAL), extra)
    c = client(dirs, extra_submissions=[extra])
    assert "mine.csv" in c.get("/").text
    page = c.get(f"/submission/{sids(c)['mine.csv']}")
    assert page.status_code == 200 and caption("one", 2) in page.text


def test_invalid_submission_is_shown_with_its_errors(dirs: StudioDirs) -> None:
    path = dirs.results / "merges" / "broken.csv"
    path.parent.mkdir()
    path.write_text((dirs.results / FINAL).read_text().replace('"1. Ego-car collided but did not stop"', '"9. nonsense"', 1))
    c = client(dirs)
    assert re.search(r"1 error</span>", c.get("/").text)
    assert "not an allowed severity" in c.get(f"/submission/{sids(c)['merges/broken.csv']}").text


def test_video_page_shows_every_column_side_by_side_and_the_frames(dirs: StudioDirs) -> None:
    html = client(dirs).get("/video/0").text
    for column in cols.COLUMNS:
        assert f"<th>{column}</th>" in html
    one, two = read_submission(dirs.results / FINAL), read_submission(dirs.results / DESCRIBED)
    assert caption("one", 0) in html and reason("two", 0) in html
    starts = {int(one.loc[0, cols.START_FRAME]), int(two.loc[0, cols.START_FRAME])}
    for frame in starts:
        assert re.search(rf'class="start seek" data-frame="{frame}"', html)
    # The describe config's window (describe/v4/0.json) is drawn on the describe submission's lane.
    assert len(re.findall(r'class="win seek"', html)) == 6
    assert 'data-frame="31"' in html  # detect/0.json
    assert '<video id="player"' in html and 'src="/media/video/0.mp4"' in html
    for rel in ("captions/0.csv", "detect/0.json", "describe/v4/0.json"):
        assert f'href="/view/{rel}"' in html


def test_video_page_without_describe_json_or_videos(dirs: StudioDirs) -> None:
    shutil.rmtree(dirs.results / "describe" / "v4")
    write_submission(read_submission(dirs.results / FINAL), dirs.results / "describe" / "v4" / "submission.csv")
    (dirs.results / "run.json").unlink()  # no videos folder known
    c = client(dirs)
    html = c.get("/video/1").text
    assert 'class="win seek"' not in html and "No original video for 1" in html
    assert "playback is off" in c.get("/").text
    assert c.get("/video/99").status_code == 404


def test_videos_dir_comes_from_run_json_or_the_argument(dirs: StudioDirs, tmp_path: Path) -> None:
    assert client(dirs).app.state.studio.config.videos_dir == dirs.videos.resolve()
    other = tmp_path / "other"
    other.mkdir()
    assert client(dirs, videos_dir=other).app.state.studio.config.videos_dir == other.resolve()


def _refile(dirs: StudioDirs, variant: str, run: dict[str, object]) -> None:
    """The fixture's captions/ and detect/ as a switched recipe files them (captions+<variant>/ ...)."""
    for stage in ("captions", "detect"):
        (dirs.results / stage).rename(dirs.results / f"{stage}+{variant}")
    atomic_write_json(dirs.results / "run.json", {"videos_dir": str(dirs.videos), **run})


@pytest.mark.parametrize(
    ("variant", "run"),
    [
        ("plus", {"recipe": "second-place-plus"}),  # run.json names the recipe: its variants
        ("sw-1234abcd", {"recipe": "gone.yaml", "variants": {"caption": "sw-1234abcd", "detect": "sw-1234abcd"}}),
    ],
)
def test_a_switched_recipes_folder_shows_its_captions_and_detect(dirs: StudioDirs, variant: str, run: dict) -> None:
    _refile(dirs, variant, run)
    c = client(dirs)
    home = c.get("/").text
    for rel in (f"captions+{variant}/0.csv", f"detect+{variant}/0.json"):
        assert f'href="/view/{rel}"' in home
    html = c.get("/video/0").text
    for rel in (f"captions+{variant}/0.csv", f"detect+{variant}/0.json"):
        assert f'href="/view/{rel}"' in html
    assert "detect (stage 3)" in html and re.search(r'class="start seek" data-frame="31"', html)  # the detect lane
    assert c.get(f"/view/detect+{variant}/0.json").status_code == 200


def test_an_unknown_recipe_in_run_json_browses_the_plain_layout(dirs: StudioDirs) -> None:
    atomic_write_json(dirs.results / "run.json", {"videos_dir": str(dirs.videos), "recipe": "no-such-recipe"})
    assert client(dirs).app.state.studio.config.workspace.variants == {}
    assert 'href="/view/captions/0.csv"' in client(dirs).get("/").text


def test_intermediates_render_readably(dirs: StudioDirs) -> None:
    c = client(dirs)
    table = c.get("/view/captions/0.csv").text
    assert "<th>Scene_Description</th>" in table and "<td>A grey road.</td>" in table
    detect = c.get("/view/detect/0.json").text
    assert re.search(r'<span class="pill">31 ×2</span>', detect)  # the votes, tallied
    describe = c.get("/view/describe/v4/0.json").text
    assert "[10, 16, 22, 28, 34, 40]" in describe and "(500 characters)" in describe  # long text folded
    assert c.get("/view/run.json").status_code == 200
    assert c.get("/files/detect/0.json").json()["frame"] == 31


def test_h264_is_transcoded_once_and_served_with_ranges(dirs: StudioDirs) -> None:
    c = client(dirs)
    r = c.get("/media/video/1.mp4")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    cached = dirs.results / "studio" / "h264" / "1.mp4"
    info = probe(cached)
    assert info.codec == "h264" and info.frames == probe(dirs.videos / "1.mp4").frames
    before = cached.stat().st_mtime_ns
    part = c.get("/media/video/1.mp4", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.headers["content-range"] == f"bytes 0-99/{cached.stat().st_size}"
    assert cached.stat().st_mtime_ns == before  # not transcoded again
    assert c.get("/media/video/7.mp4").status_code == 404


def test_thumbnails_only_for_frames_of_the_video(dirs: StudioDirs) -> None:
    c = client(dirs)
    r = c.get("/media/thumb/0/45.jpg")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert c.get("/media/thumb/0/91.jpg").status_code == 404  # 90 frames
    assert c.get("/media/thumb/0/0.jpg").status_code == 404
    # The first miss rendered the page's whole strip in the same decoding pass.
    made = sorted(int(p.stem) for p in (dirs.results / "studio" / "thumbs" / "0").glob("*.jpg"))
    assert made == [1, 14, 26, 39, 45, 52, 65, 77, 90]


def test_a_broken_original_does_not_break_the_pages(dirs: StudioDirs, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(dirs.videos, videos)
    (videos / "1.mp4").write_bytes(b"not a video at all")
    c = client(dirs, videos_dir=videos)
    page = c.get("/video/1")
    assert page.status_code == 200 and caption("one", 1) in page.text
    assert c.get("/media/video/1.mp4").status_code == 500
    assert c.get("/media/thumb/1/1.jpg").status_code == 404
    assert c.get("/media/video/0.mp4").status_code == 200


# --- safety -----------------------------------------------------------------------

TRAVERSALS = [
    "/files/../../etc/passwd",
    "/files/../../../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/files/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/captions/../../../../etc/passwd",
    "/files/..\\..\\etc\\passwd",
    "/files/link-out",
    "/files/dir-out/passwd",
    "/files/studio/secret",
    "/files/studio/votes.sqlite",
    "/files/.hidden",
    "/view/../../etc/passwd",
    "/view/%2e%2e/%2e%2e/etc/passwd",
    "/view/link-out",
    "/source/../../etc/passwd",
    "/source/%2e%2e/%2e%2e/etc/passwd",
    "/source//etc/passwd",
    "/source/link-out",
]


def test_no_path_traversal(dirs: StudioDirs) -> None:
    os.symlink("/etc/passwd", dirs.results / "link-out")
    os.symlink("/etc", dirs.results / "dir-out")
    (dirs.results / ".hidden").write_text("x")
    app = create_app(dirs.results, videos_dir=_videos_with_link(dirs))
    TestClient(app, base_url=BASE).get("/")  # creates the secret and votes db
    assert (dirs.results / "studio" / "secret").is_file()
    for path in TRAVERSALS:
        status, body = raw_get(app, path)
        assert status == 404, f"{path} -> {status}"
        assert b"root:" not in body
    assert raw_get(app, "/files/run.json")[0] == 200  # a legitimate file still works
    assert raw_get(app, "/source/0.mp4")[0] == 200


def _videos_with_link(dirs: StudioDirs) -> Path:
    """A private copy of the videos folder holding a symlink out of it."""
    folder = dirs.results.parent / "videos-copy"
    shutil.copytree(dirs.videos, folder)
    os.symlink("/etc/passwd", folder / "link-out")
    return folder


def test_csrf_is_required_on_every_post(dirs: StudioDirs) -> None:
    c = client(dirs)
    session = start_session(c)
    token = csrf_from(c.get("/ab").text)
    url = f"/ab/{session}/video/0/vote"
    assert c.post(url, data={"choice": "A"}).status_code == 403
    assert c.post(url, data={"choice": "A", "csrf_token": "0" * 64}).status_code == 403
    assert c.post(url, data={"choice": "A", "csrf_token": token[:-1] + ("0" if token[-1] != "0" else "1")}).status_code == 403
    assert c.post(url).status_code == 403
    assert c.post("/ab/start", data={"x": "a", "y": "b"}).status_code == 403
    # Another browser (another cookie) can't reuse this session's token.
    other = client(dirs)
    other.get("/")
    assert other.post(url, data={"choice": "A", "csrf_token": token}).status_code == 403
    # A token without its cookie is refused too.
    bare = TestClient(c.app, base_url=BASE, cookies={})
    assert bare.post(url, data={"choice": "A", "csrf_token": token}).status_code == 403
    assert "0," not in c.get(f"/ab/{session}/votes.csv").text  # nothing was stored
    by_header = c.post(url, data={"choice": "A"}, headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert by_header.status_code == 303  # the token may come as a header too


def test_host_header_must_be_loopback(dirs: StudioDirs) -> None:
    app = create_app(dirs.results)
    assert TestClient(app, base_url="http://evil.example").get("/").status_code == 400
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8765").get("/").status_code == 200
    assert TestClient(create_app(dirs.results, allow_remote=True), base_url="http://evil.example").get("/").status_code == 200


def test_binding_refuses_non_loopback_hosts(dirs: StudioDirs) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        check_bind_host(host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ValueError, match="refusing"):
            check_bind_host(host)
        check_bind_host(host, allow_remote=True)
    with pytest.raises(ValueError, match="refusing"):
        studio_command(dirs.results, host="0.0.0.0", port=1)  # refused before anything is served


def test_secret_is_private_and_stable(dirs: StudioDirs, tmp_path: Path) -> None:
    c = client(dirs)
    secret = dirs.results / "studio" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = secret.read_text()
    token = csrf_from(c.get("/").text)
    client(dirs)  # a second instance reuses the secret: this browser's token stays valid
    assert secret.read_text() == first and csrf_from(c.get("/").text) == token
    state = tmp_path / "state"
    client(dirs, state_dir=state)
    assert (state / "studio" / "secret").is_file() and (state / "studio" / "votes.sqlite").is_file()


def test_security_headers(dirs: StudioDirs) -> None:
    r = client(dirs).get("/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


# --- blind A/B --------------------------------------------------------------------


def test_ab_page_is_blind(dirs: StudioDirs) -> None:
    c = client(dirs)
    session = start_session(c)
    ids = sids(c)
    for video in range(N_VIDEOS):
        html = c.get(f"/ab/{session}/video/{video}").text
        main = html[html.index("<main>"):]
        for leak in (FINAL, DESCRIBED, "describe/v4", *ids.values()):
            assert leak not in main
        assert caption("one", video) in main and caption("two", video) in main
        assert main.index('id="side-A"') < main.index('id="side-B"')


def test_sides_are_stable_and_reopening_the_pair_resumes(dirs: StudioDirs) -> None:
    c = client(dirs)
    session = start_session(c)
    pages = [c.get(f"/ab/{session}/video/{v}").text for v in range(N_VIDEOS)]
    assert start_session(c, DESCRIBED, FINAL) == session  # unordered pair: same session
    c2 = client(dirs)  # a restarted app
    assert start_session(c2) == session
    for video, page in enumerate(pages):
        again = c2.get(f"/ab/{session}/video/{video}").text
        side_a = lambda html: re.search(r'id="side-A">.*?<p class="text"[^>]*>([^<]*)</p>', html, re.S).group(1)  # noqa: E731
        assert side_a(again) == side_a(page)


def test_randomization_uses_both_orders(dirs: StudioDirs) -> None:
    store = client(dirs).app.state.studio.votes
    session = store.session_for("x.csv", "y.csv")
    firsts = {session.sides(v)[0] for v in range(40)}
    assert firsts == {"x.csv", "y.csv"}
    other = store.session_for("x.csv", "z.csv")  # another session: another seed
    assert [session.sides(v)[0] == "x.csv" for v in range(40)] != [other.sides(v)[0] == "x.csv" for v in range(40)]


def test_votes_persist_and_download_as_csv(dirs: StudioDirs) -> None:
    c = client(dirs)
    session = start_session(c)
    assert c.get(f"/ab/{session}", follow_redirects=False).headers["location"] == f"/ab/{session}/video/0"
    assert vote(c, session, 0, "A") == {"ok": True, "choice": "A", "voted": 1, "total": 3, "next": f"/ab/{session}/video/1"}
    vote(c, session, 1, "B")
    vote(c, session, 2, "A")
    vote(c, session, 2, "tie")  # a changed mind replaces the vote
    assert (dirs.results / "studio" / "votes.sqlite").is_file()

    c2 = client(dirs)  # restart: a new app over the same dirs
    assert c2.get(f"/ab/{session}", follow_redirects=False).headers["location"] == f"/ab/{session}/video/2"
    r = c2.get(f"/ab/{session}/votes.csv")
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert tuple(rows[0]) == CSV_HEADER
    body = {int(row[0]): row for row in rows[1:]}
    assert sorted(body) == [0, 1, 2]
    assert [body[v][3] for v in range(3)] == ["A", "B", "tie"]
    for video, (_, shown_a, shown_b, choice, winner, ts) in body.items():
        assert {shown_a, shown_b} == {FINAL, DESCRIBED}
        assert winner == {"A": shown_a, "B": shown_b, "tie": "tie"}[choice]
        assert ts.endswith("+00:00")
    # The page showed A's texts: the CSV's A must be the submission those texts came from.
    page = c2.get(f"/ab/{session}/video/0").text
    a_text = re.search(r'id="side-A">.*?<p class="text"[^>]*>([^<]*)</p>', page, re.S).group(1)
    assert a_text == caption("one" if body[0][1] == FINAL else "two", 0)

    summary = c2.get(f"/ab/{session}/summary").text
    wins = {FINAL: 0, DESCRIBED: 0}
    for row in body.values():
        if row[4] != "tie":
            wins[row[4]] += 1
    assert re.search(r'id="ties">1<', summary)
    assert sum(wins.values()) == 2
    for video, row in body.items():
        assert re.search(rf'/video/{video}">{video}</a></td>\s*<td class="mono">{re.escape(row[1])}</td>\s*<td class="mono">{re.escape(row[2])}</td>', summary)


def test_vote_rejects_bad_input(dirs: StudioDirs) -> None:
    c = client(dirs)
    session = start_session(c)
    token = csrf_from(c.get("/ab").text)
    assert c.post(f"/ab/{session}/video/0/vote", data={"choice": "C", "csrf_token": token}).status_code == 400
    assert c.post(f"/ab/{session}/video/9/vote", data={"choice": "A", "csrf_token": token}).status_code == 404
    assert c.post("/ab/99/video/0/vote", data={"choice": "A", "csrf_token": token}).status_code == 404
    ids = sids(c)
    assert c.post("/ab/start", data={"x": ids[FINAL], "y": ids[FINAL], "csrf_token": token}).status_code == 400


# --- scores -----------------------------------------------------------------------


def _score_page(c: TestClient, url: str = "/score") -> str:
    import time

    for _ in range(120):  # computed in the background; the page says so until it's done
        html = c.get(url).text
        if 'id="computing"' not in html:
            return html
        time.sleep(0.5)
    raise AssertionError("scores never finished")


def test_score_page_against_the_truth(dirs: StudioDirs) -> None:
    html = _score_page(client(dirs))  # truth.csv found at the data root (videos_dir's parent)
    assert "Scores against the truth" in html and str(dirs.truth) in html
    assert "scoring failed" not in html
    # FINAL has the true start frames, DESCRIBED is 6 frames late.
    assert re.search(rf'<th class="mono">{re.escape(FINAL)}</th><td class="num">0.0</td>', html)
    assert re.search(rf'<th class="mono">{re.escape(DESCRIBED)}</th><td class="num">6.0</td>', html)
    assert "Incident Recognition" in html and "CIDEr-D" in html


def test_score_page_without_truth_shows_agreement(dirs: StudioDirs) -> None:
    (dirs.results / "run.json").unlink()  # no videos folder, so no data root and no truth
    html = _score_page(client(dirs))
    assert "Agreement between submissions" in html and "comparison failed" not in html
    assert f"{FINAL} vs {DESCRIBED}" in html
