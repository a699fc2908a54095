"""Server-Sent Events: bytes as they arrive -> parsed events.

Written by hand, on the WHATWG rules, because httpx's ``iter_lines`` splits on
every Unicode line break (U+2028, U+0085, ...), which a post's text may hold
inside a ``data:`` line; SSE ends lines only at CR, LF or CRLF. Bytes are
decoded incrementally, so a character or a CRLF cut between two chunks is
put back together.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("twitterchat.client")

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerEvent:
    """One event: ``id`` (the last id the stream set), ``event`` (``task``, ``batch``, ...), ``data``."""

    id: str | None
    event: str
    data: Any


class SSEDecoder:
    """Feed it chunks of the response body; it returns the events they complete."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        return self._lines(self._text.decode(chunk))

    def close(self) -> list[ServerEvent]:
        """End of stream: an unfinished line or event is dropped, as the SSE rules say."""
        events = self._lines(self._text.decode(b"", final=True), final=True)
        self._pending, self._data, self._event = "", [], ""
        return events

    def _lines(self, text: str, final: bool = False) -> list[ServerEvent]:
        buffer = self._pending + text
        events, start = [], 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer) and not final:
                break  # maybe the first half of a CRLF: wait for the next chunk
            event = self._line(buffer[start:match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive ping
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        data, kind = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        text = "\n".join(data)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            log.warning("skipped a %r event whose data is not JSON (id %s): %.80r",
                        kind, self.last_event_id, text)
            return None
        return ServerEvent(id=self.last_event_id, event=kind, data=payload)
