"""The score page: per-column scores against a truth CSV, or agreement between submissions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from coool.studio.context import Studio, studio

router = APIRouter()


@router.get("/score", response_class=HTMLResponse)
def score_page(request: Request, full: bool = False, st: Studio = Depends(studio)) -> Response:
    """``?full=1`` adds METEOR and SPICE (Java; slow): computed in the background, the page refreshes."""
    refs = st.catalog.submissions()
    view = st.scorer.view(refs, st.config.truth, full)
    return st.render(request, "score.html", view=view, full=full, truth=st.config.truth, n_subs=len(refs))
