"""Blind A/B: two submissions' texts per video, sides randomized and hidden, votes in SQLite."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from coool import schema as cols
from coool.studio.catalog import LoadedSubmission
from coool.studio.context import Studio, studio
from coool.studio.votes import CHOICES, TIE, Session, tally, votes_csv

router = APIRouter(prefix="/ab")


def _session(st: Studio, session_id: int) -> tuple[Session, LoadedSubmission, LoadedSubmission, list[int]]:
    """The session, both submissions (lo, hi) and the videos both have; 404 if any is gone."""
    session = st.votes.session(session_id)
    if session is None:
        raise HTTPException(status_code=404, detail=f"no A/B session {session_id}")
    subs = []
    for key in (session.key_lo, session.key_hi):
        ref = st.catalog.by_key(key)
        if ref is None:
            raise HTTPException(status_code=404, detail=f"submission {key} of session {session_id} is no longer found")
        subs.append(st.catalog.load(ref))
    lo, hi = subs
    return session, lo, hi, sorted(set(lo.rows) & set(hi.rows))


@router.get("", response_class=HTMLResponse)
def ab_index(request: Request, st: Studio = Depends(studio)) -> Response:
    refs = st.catalog.submissions()
    labels = {r.key: r.label for r in refs}
    counts = st.votes.counts()
    sessions = [
        {"s": s, "lo": labels.get(s.key_lo, s.key_lo + " (missing)"), "hi": labels.get(s.key_hi, s.key_hi + " (missing)"),
         "voted": counts.get(s.id, 0)}
        for s in st.votes.sessions()
    ]  # fmt: skip
    return st.render(request, "ab_index.html", refs=refs, sessions=sessions, pick=(None, None))


@router.get("/new", response_class=HTMLResponse)
def ab_new(request: Request, a: str = "", b: str = "", st: Studio = Depends(studio)) -> Response:
    """The start form with the pair ``a``, ``b`` preselected (each a submission's path relative
    to the results folder, as listed, or its id): ``coool compare-recipes`` prints this link.
    Starting stays a POST (CSRF-checked), one click away."""
    refs = st.catalog.submissions()
    picked = []
    for wanted in (a, b):
        ref = st.catalog.by_key(wanted) or st.catalog.by_sid(wanted)
        if ref is None:
            raise HTTPException(status_code=404, detail=f"no submission {wanted!r} in the results folder")
        picked.append(ref.sid)
    return st.render(request, "ab_index.html", refs=refs, sessions=[], pick=tuple(picked))


@router.post("/start")
def ab_start(
    request: Request,
    x: Annotated[str | None, Form()] = None,
    y: Annotated[str | None, Form()] = None,
    csrf_token: Annotated[str | None, Form()] = None,
    st: Studio = Depends(studio),
) -> Response:
    st.check_csrf(request, csrf_token)
    ref_x, ref_y = st.catalog.by_sid(x or ""), st.catalog.by_sid(y or "")
    if ref_x is None or ref_y is None:
        raise HTTPException(status_code=404, detail="unknown submission")
    if ref_x.key == ref_y.key:
        raise HTTPException(status_code=400, detail="pick two different submissions")
    session = st.votes.session_for(ref_x.key, ref_y.key)
    return RedirectResponse(f"/ab/{session.id}", status_code=303)


@router.get("/{session_id:int}")
def ab_resume(session_id: int, st: Studio = Depends(studio)) -> Response:
    """Resume at the first video without a vote (the last one when all are voted)."""
    session, _, _, videos = _session(st, session_id)
    if not videos:
        return RedirectResponse(f"/ab/{session_id}/summary", status_code=303)
    voted = st.votes.votes(session)
    video = next((v for v in videos if v not in voted), videos[-1])
    return RedirectResponse(f"/ab/{session_id}/video/{video}", status_code=303)


@router.get("/{session_id:int}/video/{video:int}", response_class=HTMLResponse)
def ab_video(request: Request, session_id: int, video: int, st: Studio = Depends(studio)) -> Response:
    session, lo, hi, videos = _session(st, session_id)
    if video not in videos:
        raise HTTPException(status_code=404, detail=f"video {video} is not in both submissions")
    by_key = {lo.ref.key: lo, hi.ref.key: hi}
    key_a, key_b = session.sides(video)
    sides = [("A", by_key[key_a].rows[video]), ("B", by_key[key_b].rows[video])]
    voted = st.votes.votes(session)
    i = videos.index(video)
    prev_id = videos[i - 1] if i > 0 else None
    next_id = videos[i + 1] if i + 1 < len(videos) else None
    source = st.source_file(video)
    if next_id is not None and (next_source := st.source_file(next_id)) is not None:
        st.media.prefetch(next_id, next_source)
    return st.render(
        request,
        "ab_video.html",
        session=session,
        video=video,
        position=i + 1,
        videos=videos,
        voted=voted,
        vote=voted.get(video),
        sides=sides,
        text_columns=cols.TEXT_COLUMNS,
        has_source=source is not None,
        prev_id=prev_id,
        next_id=next_id,
    )


@router.post("/{session_id:int}/video/{video:int}/vote")
def ab_vote(
    request: Request,
    session_id: int,
    video: int,
    choice: Annotated[str | None, Form()] = None,
    csrf_token: Annotated[str | None, Form()] = None,
    st: Studio = Depends(studio),
) -> Response:
    st.check_csrf(request, csrf_token)  # first: a forged request learns nothing, not even 404s
    session, _, _, videos = _session(st, session_id)
    if video not in videos:
        raise HTTPException(status_code=404, detail=f"video {video} is not in both submissions")
    if choice not in CHOICES:
        raise HTTPException(status_code=400, detail=f"choice must be one of {CHOICES}")
    st.votes.vote(session, video, choice)
    voted = st.votes.votes(session)
    i = videos.index(video)
    next_id = videos[i + 1] if i + 1 < len(videos) else None
    next_url = f"/ab/{session_id}/video/{next_id}" if next_id is not None else None
    if "application/json" in request.headers.get("accept", ""):
        # The sides are not echoed: the page stays blind until the summary.
        return JSONResponse({"ok": True, "choice": choice, "voted": len(voted), "total": len(videos), "next": next_url})
    return RedirectResponse(next_url or f"/ab/{session_id}/video/{video}", status_code=303)


@router.get("/{session_id:int}/summary", response_class=HTMLResponse)
def ab_summary(request: Request, session_id: int, st: Studio = Depends(studio)) -> Response:
    session, lo, hi, videos = _session(st, session_id)
    voted = st.votes.votes(session)
    labels = {lo.ref.key: lo.ref.label, hi.ref.key: hi.ref.label, TIE: "tie"}
    mapping = []
    for video in videos:
        key_a, key_b = session.sides(video)
        mapping.append({"video": video, "a": labels[key_a], "b": labels[key_b], "vote": voted.get(video)})
    return st.render(
        request,
        "ab_summary.html",
        session=session,
        lo=lo.ref,
        hi=hi.ref,
        counts=tally(session, voted),
        labels=labels,
        mapping=mapping,
        n_voted=sum(v in voted for v in videos),
        total=len(videos),
    )


@router.get("/{session_id:int}/votes.csv")
def ab_votes_csv(session_id: int, st: Studio = Depends(studio)) -> PlainTextResponse:
    session = st.votes.session(session_id)
    if session is None:
        raise HTTPException(status_code=404)
    return PlainTextResponse(
        votes_csv(st.votes.votes(session)),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="ab_session_{session_id}_votes.csv"'},
    )
