"""The score page: per-column scores against a truth CSV, or agreement between submissions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from coool.studio.context import Studio, studio
from coool.studio.scoring import score_view

router = APIRouter()


@router.get("/score", response_class=HTMLResponse)
def score_page(request: Request, st: Studio = Depends(studio)) -> Response:
    view = score_view(st.catalog.submissions(), st.config.truth)
    return st.render(request, "score.html", view=view, truth=st.config.truth)
