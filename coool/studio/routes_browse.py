"""Browsing: the home page, one page per video, result files rendered or raw, media."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from coool import schema as cols
from coool.decode import VideoError
from coool.studio import intermediates, render, security
from coool.studio.context import Studio, studio
from coool.studio.media import strip_frames
from coool.submission import SubmissionError, load_submission
from coool.workspace import Workspace

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, st: Studio = Depends(studio)) -> Response:
    refs = st.catalog.submissions()
    loaded = [st.catalog.load(r) for r in refs]
    files = st.catalog.video_files()
    ws = st.config.workspace
    videos = []
    for video in st.catalog.video_ids():
        rows = [s.rows.get(video) for s in loaded]
        labels = {r[cols.LABEL] for r in rows if r}
        videos.append(
            {
                "id": video,
                "has_source": video in files,
                "in_subs": sum(r is not None for r in rows),
                "labels": sorted(labels),
                "captions": _rel_if_file(ws, ws.captions_path(video)),
                "detect": _rel_if_file(ws, ws.detect_path(video)),
            }
        )
    return st.render(request, "home.html", submissions=loaded, videos=videos, n_subs=len(refs))


def _rel_if_file(ws: Workspace, path: Path) -> str | None:
    """``path`` relative to the results folder (a /view/ link) when it exists."""
    return path.relative_to(ws.root).as_posix() if path.is_file() else None


def _neighbours(ids: list[int], video: int) -> tuple[int | None, int | None]:
    if video not in ids:
        return None, None
    i = ids.index(video)
    return (ids[i - 1] if i > 0 else None), (ids[i + 1] if i + 1 < len(ids) else None)


def _lanes(st: Studio, video: int, subs: list[tuple[Any, dict[str, str] | None]]) -> list[intermediates.Lane]:
    ws = st.config.workspace
    lanes, covered = [], set()
    for loaded, row in subs:
        start = row.get(cols.START_FRAME, "") if row else ""
        lane = intermediates.Lane(loaded.ref.label, int(start) if start.strip().isdigit() else None)
        config = intermediates.submission_config(loaded.ref.key)
        window = intermediates.describe_window(ws, config, video) if config else None
        if window is not None:
            lane.window = window[0]
            covered.add(config)
        lanes.append(lane)
    for config in ws.describe_configs():
        window = intermediates.describe_window(ws, config, video)
        if config not in covered and window is not None:
            lanes.append(intermediates.Lane(f"describe/{config} window", window[1], window[0], kind="describe"))
    detected = intermediates.detected_frame(ws, video)
    if detected is not None:
        lanes.append(intermediates.Lane("detect (stage 3)", detected, kind="detect"))
    return lanes


def _truth_lane(truth: Path | None, video: int) -> intermediates.Lane | None:
    """The truth's start frame for this video, drawn first on the timeline (None without a usable truth row)."""
    if truth is None:
        return None
    try:
        frame = load_submission(truth)
    except (SubmissionError, OSError):
        return None  # the score page says why the truth file is not usable
    rows = frame[frame[cols.VIDEO].astype(str) == str(video)]
    if rows.empty:
        return None
    start = str(rows.iloc[0][cols.START_FRAME]).strip()
    return intermediates.Lane("truth", int(start), kind="truth") if start.isdigit() else None


@router.get("/video/{video:int}", response_class=HTMLResponse)
def video_page(request: Request, video: int, st: Studio = Depends(studio)) -> Response:
    ids = st.catalog.video_ids()
    source = st.source_file(video)
    loaded = [st.catalog.load(r) for r in st.catalog.submissions()]
    subs = [(s, s.rows.get(video)) for s in loaded]
    if source is None and not any(row for _, row in subs):
        raise HTTPException(status_code=404, detail=f"no video {video}")
    meta = st.media.meta(source) if source else None
    lanes = _lanes(st, video, subs)
    truth = _truth_lane(st.config.truth, video)
    if truth is not None:
        lanes.insert(0, truth)
    mentioned = [f for lane in lanes for f in [lane.start, *lane.window] if f]
    frames = meta.frames if meta else max(mentioned, default=1)
    # Columns where the submissions disagree get highlighted.
    differ = {c for c in cols.COLUMNS if len({row[c] for _, row in subs if row}) > 1}
    prev_id, next_id = _neighbours(ids, video)
    return st.render(
        request,
        "video.html",
        video=video,
        source=source,
        meta=meta,
        frames=frames,
        subs=subs,
        differ=differ,
        lanes=lanes,
        strip=strip_frames(meta.frames) if meta else [],
        links=intermediates.links(st.config.workspace, video),
        prev_id=prev_id,
        next_id=next_id,
    )


@router.get("/submission/{sid}", response_class=HTMLResponse)
def submission_page(request: Request, sid: str, st: Studio = Depends(studio)) -> Response:
    ref = st.catalog.by_sid(sid)
    if ref is None:
        raise HTTPException(status_code=404)
    loaded = st.catalog.load(ref)
    return st.render(request, "submission.html", sub=loaded, rows=loaded.frame.to_dict("records"))


@router.get("/view/{rel:path}", response_class=HTMLResponse)
def view_file(request: Request, rel: str, st: Studio = Depends(studio)) -> Response:
    """A result file made readable: CSV as a table, JSON / JSON lines as a tree."""
    path = st.results_file(rel)
    rel = path.relative_to(st.config.results_dir).as_posix()
    if path.suffix == ".csv":
        header, rows = render.read_table(path)
        links = {}
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                link = render.image_link(cell, st.config.results_dir)
                if link:
                    links[(i, j)] = link
        return st.render(request, "table.html", rel=rel, header=header, rows=rows, links=links)
    if path.suffix in (".json", ".jsonl"):
        try:
            data = render.load_json_any(path)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"{rel} is not valid JSON: {exc}") from exc
        return st.render(
            request,
            "json.html",
            rel=rel,
            data=data,
            summary=render.scalars(data),
            tallies=render.int_tallies(data),
            pretty=json.dumps(data, indent=2, ensure_ascii=False),
        )
    raise HTTPException(status_code=404, detail="only CSV and JSON files have a view; use /files/ for the raw file")


@router.get("/files/{rel:path}")
def raw_file(rel: str, st: Studio = Depends(studio)) -> FileResponse:
    """A results file as is (confined to the results dir; the studio's state is never served)."""
    return FileResponse(st.results_file(rel))


@router.get("/source/{rel:path}")
def source_file(rel: str, st: Studio = Depends(studio)) -> FileResponse:
    """An original from the videos dir as is."""
    if st.config.videos_dir is None:
        raise HTTPException(status_code=404)
    path = security.confined(st.config.videos_dir, rel)
    if path is None:
        raise HTTPException(status_code=404)
    return FileResponse(path)


@router.get("/media/video/{video:int}.mp4")
def h264_video(video: int, st: Studio = Depends(studio)) -> FileResponse:
    """The H.264 copy (transcoded on first request); FileResponse answers Range requests (206)."""
    source = st.source_file(video)
    if source is None:
        raise HTTPException(status_code=404, detail=f"no original for video {video}")
    try:
        path = st.media.h264(video, source)
    except (VideoError, RuntimeError) as exc:
        raise HTTPException(status_code=500, detail=str(exc)) from exc
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "no-cache"})


@router.get("/media/thumb/{video:int}/{frame:int}.jpg")
def thumbnail(video: int, frame: int, st: Studio = Depends(studio)) -> FileResponse:
    source = st.source_file(video)
    if source is None:
        raise HTTPException(status_code=404)
    try:
        path = st.media.thumbnail(video, source, frame)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except VideoError as exc:
        raise HTTPException(status_code=500, detail=str(exc)) from exc
    return FileResponse(path, media_type="image/jpeg")
