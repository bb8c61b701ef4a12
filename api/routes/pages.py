"""The web pages: the control room at `/`, the crew page at `/crew`, the login form at `/login`.

The pages are static files that call the API from the browser; they carry no data themselves, so they need no
login to fetch. Front-end libraries come from the npm registry at set-up (`scripts/build-web`), vendored under
`api/web/static/vendor`; nothing is loaded from another site at run time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent / "web"

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(WEB / name, headers={"Cache-Control": "no-cache"})


@router.get("/")
async def control_room() -> FileResponse:
    """Role: none (the page asks the API, which checks). The control room."""
    return _page("control.html")


@router.get("/crew")
async def crew_page() -> FileResponse:
    """Role: none (the page asks the API, which checks). The crew's tickets, for a phone."""
    return _page("crew.html")


@router.get("/login")
async def login_page() -> FileResponse:
    """Role: none. The login form."""
    return _page("login.html")


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
