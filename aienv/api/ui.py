"""The web UI: ``/`` is the page, ``/ui/…`` its stylesheet and JavaScript modules.

Written here with no build step; the page talks only to the JSON API under
``/api/v1`` and to the live feed. Every answer forbids framing and MIME
sniffing, and the page may load and connect to nothing but this node.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

from aienv.api.openapi import doc

STATIC = Path(__file__).with_name("static")
#: the terminal (xterm.js) sizes and colours its rows with a <style> element it makes,
#: hence inline styles; scripts stay this node's own files only
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@doc(returns="the page", content="text/html")
async def index(request: web.Request) -> web.FileResponse:
    """The web UI's page (its scripts and stylesheet are under ``/ui/``)."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _harden(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)  # every answer
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/ui/"):
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidate: ETags are cheap


def vendor_dir() -> Path:
    """Where install.sh puts the page's pinned npm packages: the virtualenv's
    ``share/aienv/vendor``."""
    return Path(sys.prefix) / "share" / "aienv" / "vendor"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    if vendor_dir().is_dir():  # without it the page says the terminal needs install.sh
        app.router.add_static("/ui/vendor", vendor_dir(), show_index=False, follow_symlinks=False)
    app.router.add_static("/ui", STATIC, show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(_harden)
