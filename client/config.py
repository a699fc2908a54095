"""Where the service is and how to authenticate: arguments first, then the environment."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

URL_ENV = "TWITTERCHAT_URL"
TOKEN_ENV = "TWITTERCHAT_API_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8188"
API_PREFIX = "/twitterchat/api/v1"

REQUEST_TIMEOUT = 30.0        # seconds for an ordinary call
STREAM_READ_TIMEOUT = 45.0    # the server pings every ~15 s, so 45 s of silence means a dead stream
POLL_INTERVAL = 1.0           # seconds between GETs once the event stream is given up
MAX_RETRIES = 5               # consecutive connection failures a wait survives before giving up
USER_AGENT = "comfyui-twitterchat-client"


def resolve_base_url(url: str | None = None) -> str:
    """``url``, else ``$TWITTERCHAT_URL``, else the local ComfyUI; without a trailing slash."""
    chosen = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip()
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the service URL must look like http://host:port, got {display_url(chosen)!r}")
    return chosen.rstrip("/")


def resolve_token(token: str | None = None) -> str | None:
    """``token``, else ``$TWITTERCHAT_API_TOKEN``; an empty value means no token."""
    chosen = token if token is not None else os.environ.get(TOKEN_ENV, "")
    return chosen.strip() or None


def display_url(url: str) -> str:
    """``url`` safe for messages: any ``user:password@`` part is dropped."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def http_headers(token: str | None) -> dict[str, str]:
    """Headers of every request; the token only ever goes into ``Authorization``."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers
