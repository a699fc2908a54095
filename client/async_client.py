"""The asyncio client: the same calls as :class:`TwitterChatClient`, awaited.

``list_tasks`` and ``iter_events`` are async generators (``async for``); close
one you leave early with ``contextlib.aclosing`` to drop its connection at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import httpx

from . import calls
from .config import (MAX_RETRIES, POLL_INTERVAL, REQUEST_TIMEOUT, STREAM_READ_TIMEOUT, display_url,
                     http_headers, resolve_base_url, resolve_token)
from .errors import TwitterChatError, connection_error, decode_json, error_from_response
from .follow import BatchProgress, BatchWatch, Deadline, FollowPolicy, TaskWatch
from .sse import ServerEvent, SSEDecoder

log = logging.getLogger("twitterchat.client")


class AsyncTwitterChatClient:
    """Asyncio twin of :class:`~.sync_client.TwitterChatClient` (same arguments, same errors).

    Use ``async with AsyncTwitterChatClient() as client:``, or ``await client.aclose()``.
    """

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 timeout: float = REQUEST_TIMEOUT, poll_interval: float = POLL_INTERVAL,
                 max_retries: int = MAX_RETRIES, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_retries = max_retries
        token = resolve_token(token)
        self._has_token = token is not None
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=http_headers(token), timeout=timeout,
                                       transport=transport)

    def __repr__(self) -> str:
        token = "set" if self._has_token else "none"
        return f"{type(self).__name__}({display_url(self.base_url)!r}, token={token})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTwitterChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the API, one call each ------------------------------------------------------------

    async def submit_task(self, workflow: Mapping[str, Any] | None = None, *, template: str | None = None,
                          params: Mapping[str, Any] | None = None, priority: int | None = None,
                          metadata: Mapping[str, Any] | None = None, webhook_url: str | None = None,
                          idempotency_key: str | None = None) -> dict[str, Any]:
        return await self._send(calls.submit_task(workflow, template=template, params=params,
                                                  priority=priority, metadata=metadata,
                                                  webhook_url=webhook_url, idempotency_key=idempotency_key))

    async def submit_batch(self, name: str, *, tasks: Sequence[Mapping[str, Any]] | None = None,
                           template: str | None = None, personas: Sequence[Any] | None = None,
                           params: Mapping[str, Any] | None = None, priority: int | None = None,
                           metadata: Mapping[str, Any] | None = None,
                           webhook_url: str | None = None) -> dict[str, Any]:
        return await self._send(calls.submit_batch(name, tasks=tasks, template=template, personas=personas,
                                                   params=params, priority=priority, metadata=metadata,
                                                   webhook_url=webhook_url))

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self._send(calls.get_task(task_id))

    async def list_tasks(self, status: str | None = None, batch_id: str | None = None,
                         limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while limit is None or limit > 0:
            page = await self._send(calls.list_tasks(status, batch_id, calls.page_size(limit), cursor))
            tasks, cursor = calls.page_of_tasks(page, limit)
            for task in tasks:
                yield task
            if cursor is None:
                return
            limit = None if limit is None else limit - len(tasks)

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._send(calls.get_batch(batch_id))

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self._send(calls.cancel(task_id))

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._send(calls.cancel_batch(batch_id))

    # -- following tasks ------------------------------------------------------------------

    async def wait(self, task_id: str, timeout: float | None = None, *,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        watch = TaskWatch(task_id, on_update)

        async def refresh() -> None:
            watch.update(await self.get_task(task_id))

        await self._follow(watch, Deadline(timeout), refresh, task_id=task_id)
        assert watch.task is not None
        return watch.task

    async def wait_for_batch(self, batch_id: str, timeout: float | None = None, *,
                             on_progress: Callable[[BatchProgress], None] | None = None,
                             ) -> list[dict[str, Any]]:
        watch = BatchWatch(batch_id, on_progress)

        async def refresh() -> None:
            watch.set_batch(await self.get_batch(batch_id))
            watch.set_tasks([task async for task in self.list_tasks(batch_id=batch_id)])

        await self._follow(watch, Deadline(timeout), refresh, batch_id=batch_id)
        return watch.results()

    async def iter_events(self, task_id: str | None = None, batch_id: str | None = None,
                          last_event_id: str | None = None) -> AsyncIterator[ServerEvent]:
        policy = FollowPolicy(self.poll_interval, self.max_retries)
        while True:
            try:
                response = await self._open_events(calls.events(task_id, batch_id, last_event_id),
                                                   STREAM_READ_TIMEOUT)
            except TwitterChatError as exc:
                policy.request_failed(exc)
            else:
                policy.request_ok()
                decoder = SSEDecoder()
                try:
                    async for chunk in response.aiter_bytes():
                        for event in decoder.feed(chunk):
                            last_event_id = event.id or last_event_id
                            yield event
                    policy.retry_ms = decoder.retry_ms or policy.retry_ms
                    log.debug("the event stream ended; reconnecting after event %s", last_event_id)
                except httpx.TransportError as exc:
                    policy.request_failed(connection_error(self.base_url, exc))
                finally:
                    await response.aclose()
            await asyncio.sleep(policy.delay())

    # -- plumbing -------------------------------------------------------------------------

    async def _send(self, call: calls.Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                                headers=call.headers)
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        if response.is_error:
            raise error_from_response(response)
        return decode_json(response)

    async def _open_events(self, call: calls.Call, read_timeout: float) -> httpx.Response:
        request = self._http.build_request(call.method, call.path, params=call.params, headers=call.headers,
                                           timeout=httpx.Timeout(self.timeout, read=read_timeout))
        try:
            response = await self._http.send(request, stream=True)
            if response.is_error:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise error_from_response(response)
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        return response

    async def _follow(self, watch: TaskWatch | BatchWatch, deadline: Deadline,
                      refresh: Callable[[], Awaitable[None]], **filters: str) -> None:
        policy = FollowPolicy(self.poll_interval, self.max_retries)
        while True:
            try:
                if policy.use_stream:
                    await self._follow_stream(watch, deadline, refresh, policy, filters)
                if not watch.done:
                    await refresh()
                policy.request_ok()
            except TwitterChatError as exc:
                policy.request_failed(exc)
            if watch.done:
                return
            deadline.check(watch.describe())
            await asyncio.sleep(deadline.cap(policy.delay()))

    async def _follow_stream(self, watch: TaskWatch | BatchWatch, deadline: Deadline,
                             refresh: Callable[[], Awaitable[None]], policy: FollowPolicy,
                             filters: dict[str, str]) -> None:
        call = calls.events(last_event_id=watch.last_event_id, **filters)
        try:
            response = await self._open_events(call, deadline.read_timeout())
        except TwitterChatError as exc:
            policy.stream_failed(exc)
            return
        try:
            await refresh()  # connected: whatever happens from now on arrives as events
            policy.request_ok()
            if watch.done:
                return
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    policy.stream_delivered()
                    watch.on_event(event)
                    if watch.needs_refresh:
                        await refresh()
                if watch.done or deadline.expired:
                    return
            policy.retry_ms = decoder.retry_ms or policy.retry_ms
            log.debug("the event stream ended before the end; checking with a GET")
        except httpx.TransportError as exc:
            if not deadline.expired:
                policy.stream_failed(connection_error(self.base_url, exc))
        finally:
            await response.aclose()
