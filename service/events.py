"""Server-Sent Events from the store's event table.

Every stream reads the events table after the last id it sent, so a stream
never skips, reorders or duplicates an event, a slow client never holds
memory for others, and ``Last-Event-ID`` resumes exactly where a client left.
The hub only says "something new was committed"; each stream then reads.

A stream filtered by task or batch starts from that task's or batch's first
event (it sees every task it follows to its final state); an unfiltered one
starts now. A comment line every ``PING_SECONDS`` keeps proxies open and finds
clients that went away (ComfyUI's server never cancels a handler on its own).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

PING_SECONDS = 15.0
PAGE = 500


class EventHub:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.subscribers = 0

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def waiter(self) -> asyncio.Event:
        """Take this before reading, then wait on it: nothing committed in between is missed."""
        return self._event


def format_event(event_id: int, kind: str, data: Any) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {kind}\ndata: {body}\n\n".encode()


async def stream_events(response: Any, hub: EventHub, read: Callable[[int], Awaitable[list]], start_after: int,
                        ping_seconds: float = PING_SECONDS) -> None:
    """Write events to a prepared ``StreamResponse`` until the client goes away."""
    last = start_after
    hub.subscribers += 1
    try:
        await response.write(b"retry: 2000\n\n")
        # Where this stream starts, as an id without data: a client that reconnects before the
        # first event (an idle system) still resumes exactly here (EventSource keeps the id too).
        await response.write(f"id: {start_after}\n\n".encode())
        while True:
            waiter = hub.waiter()
            events = await read(last)
            for event in events:
                await response.write(format_event(event.id, event.kind, event.data))
                last = event.id
            # A filtered read of a shared (Redis) stream may scan past other tasks' events.
            last = max(last, getattr(events, "scanned_to", last))
            if len(events) >= PAGE:
                continue
            try:
                await asyncio.wait_for(waiter.wait(), ping_seconds)
            except asyncio.TimeoutError:
                await response.write(b": ping\n\n")
    except ConnectionError:  # the client went away (aiohttp raises ClientConnectionResetError)
        return
    finally:
        hub.subscribers -= 1
