"""``coool studio``: browse a results directory, blind-A/B two submissions, see scores.

Safe by default: loopback only, Host header checked (DNS rebinding), a
per-install secret from which every browser session's CSRF token is derived,
and every served file confined to the results or videos folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from coool.studio import security
from coool.studio.config import resolve_config
from coool.studio.context import STATIC_DIR, Studio
from coool.studio.routes_ab import router as ab_router
from coool.studio.routes_browse import router as browse_router
from coool.studio.routes_score import router as score_router

# No inline script or style anywhere: the pages work under a strict policy.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(
    results_dir: Path,
    videos_dir: Path | None = None,
    extra_submissions: Sequence[Path] = (),
    state_dir: Path | None = None,
    *,
    truth: Path | None = None,
    allow_remote: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> FastAPI:
    """The studio app over one results directory.

    videos_dir defaults to run.json's ``videos_dir``; truth to <results>/truth.csv
    or the data root's truth.csv. State (secret, votes, H.264 and thumbnail
    caches) goes to ``<state_dir or results_dir>/studio/``. Requests must name a
    loopback Host (or one of ``allowed_hosts``) unless ``allow_remote``.
    """
    config = resolve_config(results_dir, videos_dir, list(extra_submissions), state_dir, truth, allow_remote)
    st = Studio.build(config)
    hosts = tuple(allowed_hosts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        st.media.close()
        st.scorer.close()

    app = FastAPI(title="coool studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.studio = st

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not allow_remote and not security.host_allowed(request.headers.get("host", ""), hosts):
            return PlainTextResponse("unexpected Host header (the studio answers loopback names only)", status_code=400)
        session_id = request.cookies.get(security.COOKIE)
        fresh = not session_id or len(session_id) > 64
        request.state.session_id = security.new_session_id() if fresh else session_id
        response = await call_next(request)
        if fresh:
            response.set_cookie(security.COOKIE, request.state.session_id, httponly=True, samesite="strict")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return st.render(request, "error.html", status_code=exc.status_code, status=exc.status_code, detail=exc.detail)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(browse_router)
    app.include_router(ab_router)
    app.include_router(score_router)
    return app


def check_inputs(
    results_dir: Path, videos_dir: Path | None, submissions: Sequence[Path], truth: Path | None
) -> None:
    """Raise ValueError naming the first input path that is missing or of the wrong kind."""
    if not results_dir.is_dir():
        what = "is not a folder" if results_dir.exists() else "does not exist"
        raise ValueError(f"{results_dir}: the results folder {what} (give the --results folder of a run)")
    if videos_dir is not None and not Path(videos_dir).is_dir():
        raise ValueError(f"{videos_dir}: the videos folder does not exist")
    for path in [*submissions, *([truth] if truth is not None else [])]:
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such CSV file")


def studio_command(
    results_dir: Path,
    videos_dir: Path | None = None,
    submissions: Sequence[Path] = (),
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    truth: Path | None = None,
    state_dir: Path | None = None,
    allow_remote: bool = False,
) -> None:
    """Serve the studio until interrupted.

    Raises ValueError (one line: the path and the problem) for a missing input,
    and for a non-loopback host without allow_remote.
    """
    import uvicorn

    security.check_bind_host(host, allow_remote)
    check_inputs(Path(results_dir), videos_dir, submissions, truth)
    app = create_app(
        Path(results_dir), videos_dir, list(submissions), state_dir, truth=truth, allow_remote=allow_remote
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"coool studio: http://{shown}:{port}/  (results: {app.state.studio.config.results_dir})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
