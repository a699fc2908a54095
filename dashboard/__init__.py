"""The dashboard page: a live view of the task service, served by ComfyUI itself.

``GET /twitterchat/dashboard`` answers the page and
``GET /twitterchat/dashboard/static/{name}`` its scripts and styles. Files are
served from a fixed allow-list (the files of ``static/`` with a known suffix,
read once at registration), so no request can name anything else. The page's
scripts live here and not under ``web/``: ComfyUI imports every ``.js`` under a
pack's ``web/`` into its own UI.

The page talks only to the pack's own HTTP API (``/twitterchat/api/v1``,
``/twitterchat/health``, ``/twitterchat/monitor/stats``); it needs no build
step and fetches nothing from the internet.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger("twitterchat.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PATH = "/twitterchat/dashboard"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)$")
# The page loads only its own files and talks only to this server. (ComfyUI's own
# block-external middleware replaces this header with its looser policy when it is on.)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


def static_files(folder: Path = STATIC_DIR) -> dict[str, Path]:
    """The allow-list: file name -> path, for the plain files directly inside ``folder``."""
    return {path.name: path for path in sorted(folder.iterdir())
            if path.is_file() and not path.is_symlink() and SAFE_NAME.match(path.name)}


def _headers(name: str) -> dict[str, str]:
    return {"Content-Type": f"{CONTENT_TYPES[Path(name).suffix]}; charset=utf-8", "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP, "Referrer-Policy": "same-origin"}


def register(server: Any) -> None:
    """Add the page's routes to ComfyUI's ``server.routes`` (before ComfyUI builds its app)."""
    from aiohttp import web

    files = static_files()
    if "index.html" not in files:
        logger.error("dashboard: %s has no index.html; the page is not served", STATIC_DIR)
        return

    def respond(name: str) -> web.Response:
        # Read on each request: a few small files, and an edited file shows up on reload.
        return web.Response(body=files[name].read_bytes(), headers=_headers(name))

    async def page(request: web.Request) -> web.Response:
        return respond("index.html")

    async def page_slash(request: web.Request) -> web.Response:
        # The page's links are relative to /twitterchat/dashboard (no slash).
        raise web.HTTPFound(PAGE_PATH)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files or name == "index.html":
            raise web.HTTPNotFound(text="no such dashboard file")
        return respond(name)

    server.routes.get(PAGE_PATH)(page)
    server.routes.get(PAGE_PATH + "/")(page_slash)
    server.routes.get(PAGE_PATH + "/static/{name}")(static)
