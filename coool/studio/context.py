"""The objects every request handler shares, and the helpers they all use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from coool import schema as cols
from coool.studio import security
from coool.studio.catalog import Catalog
from coool.studio.config import StudioConfig
from coool.studio.media import Media
from coool.studio.render import register_filters
from coool.studio.scoring import Scorer
from coool.studio.votes import VoteStore

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Studio:
    config: StudioConfig
    catalog: Catalog
    media: Media
    votes: VoteStore
    scorer: Scorer
    secret: bytes
    templates: Jinja2Templates

    @classmethod
    def build(cls, config: StudioConfig) -> Studio:
        templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
        register_filters(templates.env)
        templates.env.globals["cols"] = cols
        return cls(
            config=config,
            catalog=Catalog(
                config.results_dir,
                config.extra_submissions,
                exclude=[config.truth] if config.truth else [],
                videos_dir=config.videos_dir,
            ),
            media=Media(config.h264_dir, config.thumbs_dir),
            votes=VoteStore(config.votes_db),
            scorer=Scorer(),
            secret=security.load_or_create_secret(config.secret_file),
            templates=templates,
        )

    def csrf(self, request: Request) -> str:
        return security.csrf_token(self.secret, request.state.session_id)

    def check_csrf(self, request: Request, token: str | None) -> None:
        """403 unless the POST carries this browser session's token (form field or X-CSRF-Token)."""
        token = token or request.headers.get("x-csrf-token")
        if not security.csrf_ok(self.secret, request.cookies.get(security.COOKIE), token):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("csrf_token", self.csrf(request))
        context.setdefault("config", self.config)
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def results_file(self, rel: str) -> Path:
        """A file under the results dir, never the studio's own state (secret, votes); else 404."""
        path = security.confined(self.config.results_dir, rel)
        if path is None or path.is_relative_to(self.config.studio_dir.resolve()):
            raise HTTPException(status_code=404)
        return path

    def source_file(self, video: int) -> Path | None:
        return self.catalog.video_files().get(video)


def studio(request: Request) -> Studio:
    return request.app.state.studio
