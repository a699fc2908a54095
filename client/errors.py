"""One exception for everything the service refuses, and how a response becomes one.

The service answers errors as ``{"error": {"type": ..., "message": ...}}``
(``invalid_workflow`` adds ``node_errors``). Messages name the request's method
and URL, never its headers, so a token cannot end up in a traceback or a log.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .config import display_url

_SNIPPET_CHARS = 200


class TwitterChatError(Exception):
    """The service answered with an error (``status`` is the HTTP status).

    ``type`` and ``message`` are the server's own (``not_found``, ``queue_full``,
    ...); ``body`` is the decoded JSON body, or the text when it was not JSON.
    """

    def __init__(self, status: int | None, type: str, message: str, body: Any = None, *,
                 node_errors: Any = None, retry_after: float | None = None,
                 request: str | None = None) -> None:
        super().__init__(status, type, message)
        self.status = status
        self.type = type
        self.message = message
        self.body = body
        self.node_errors = node_errors
        self.retry_after = retry_after
        self.request = request

    def __str__(self) -> str:
        head = f"HTTP {self.status} {self.type}" if self.status is not None else self.type
        text = f"{head}: {self.message}"
        return f"{text} ({self.request})" if self.request else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, type={self.type!r}, message={self.message!r})"

    @property
    def transient(self) -> bool:
        """Worth trying again later: no answer at all, the queue is full, or the server is unwell."""
        return self.status is None or self.status == 429 or self.status >= 500


class TwitterChatConnectionError(TwitterChatError):
    """The service could not be reached, or the connection failed (``status`` is None)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(None, "connection_error", message)
        self.url = display_url(url)


def describe_request(request: httpx.Request) -> str:
    return f"{request.method} {display_url(str(request.url))}"


def connection_error(base_url: str, exc: httpx.TransportError) -> TwitterChatConnectionError:
    """The error for a transport failure: naming the URL, never the request's headers."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        message = f"could not reach the TwitterChat service at {display_url(base_url)}: {reason}"
    else:
        message = f"the connection to the TwitterChat service at {display_url(base_url)} failed: {reason}"
    return TwitterChatConnectionError(base_url, message)


def error_from_response(response: httpx.Response) -> TwitterChatError:
    """The :class:`TwitterChatError` for an error response (its body must have been read)."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        kind = error["type"]
        message = str(error.get("message") or response.reason_phrase)
        node_errors = error.get("node_errors", body.get("node_errors"))
    else:
        kind = "http_error"
        snippet = body if isinstance(body, str) else json.dumps(body)
        snippet = " ".join(snippet.split())[:_SNIPPET_CHARS]
        message = f"{response.reason_phrase}: {snippet}" if snippet else response.reason_phrase
        node_errors = None
    return TwitterChatError(response.status_code, kind, message, body, node_errors=node_errors,
                            retry_after=_retry_after(response),
                            request=describe_request(response.request))


def decode_json(response: httpx.Response) -> Any:
    """The JSON body of a successful response; anything else is the wrong server."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TwitterChatError(response.status_code, "invalid_response",
                               "the answer is not JSON; is this URL a ComfyUI with the TwitterChat pack?",
                               response.text[:_SNIPPET_CHARS],
                               request=describe_request(response.request)) from None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare enough to ignore
        return None
