"""The dashboard at `/ui/`: three static files (api/static/) that poll the JSON API. No build
step; every server serves it."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
_FILES = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "application/javascript"),
    "style.css": ("style.css", "text/css"),
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


def _asset(name: str, content_type: str):
    body = (STATIC / name).read_bytes()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=_HEADERS)

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", _redirect, allow_head=False)
    app.router.add_get("/ui", _redirect, allow_head=False)
    for path, (name, content_type) in _FILES.items():
        app.router.add_get(f"/ui/{path}", _asset(name, content_type))
