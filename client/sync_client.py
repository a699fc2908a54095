"""The blocking client: ``TwitterChatClient("http://127.0.0.1:8188").submit_batch(...)``."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx

from . import calls
from .config import (MAX_RETRIES, POLL_INTERVAL, REQUEST_TIMEOUT, STREAM_READ_TIMEOUT, display_url,
                     http_headers, resolve_base_url, resolve_token)
from .errors import TwitterChatError, connection_error, decode_json, error_from_response
from .follow import BatchProgress, BatchWatch, Deadline, FollowPolicy, TaskWatch
from .sse import ServerEvent, SSEDecoder

log = logging.getLogger("twitterchat.client")


class TwitterChatClient:
    """Submit, follow and cancel tasks on a ComfyUI running the TwitterChat task service.

    ``base_url`` and ``token`` default to ``$TWITTERCHAT_URL`` (else
    ``http://127.0.0.1:8188``) and ``$TWITTERCHAT_API_TOKEN``. Every failed
    call raises :class:`TwitterChatError`. Use it as a context manager, or
    call :meth:`close`, to release the connections.
    """

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 timeout: float = REQUEST_TIMEOUT, poll_interval: float = POLL_INTERVAL,
                 max_retries: int = MAX_RETRIES, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_retries = max_retries
        token = resolve_token(token)
        self._has_token = token is not None
        self._http = httpx.Client(base_url=self.base_url, headers=http_headers(token), timeout=timeout,
                                  transport=transport)

    def __repr__(self) -> str:
        token = "set" if self._has_token else "none"
        return f"{type(self).__name__}({display_url(self.base_url)!r}, token={token})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TwitterChatClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the API, one call each ------------------------------------------------------------

    def submit_task(self, workflow: Mapping[str, Any] | None = None, *, template: str | None = None,
                    params: Mapping[str, Any] | None = None, priority: int | None = None,
                    metadata: Mapping[str, Any] | None = None, webhook_url: str | None = None,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue one task: an API-format ``workflow``, or a ``template`` with its ``params``.
        Returns ``{"task_id", "status", "batch_id"}``."""
        return self._send(calls.submit_task(workflow, template=template, params=params, priority=priority,
                                            metadata=metadata, webhook_url=webhook_url,
                                            idempotency_key=idempotency_key))

    def submit_batch(self, name: str, *, tasks: Sequence[Mapping[str, Any]] | None = None,
                     template: str | None = None, personas: Sequence[Any] | None = None,
                     params: Mapping[str, Any] | None = None, priority: int | None = None,
                     metadata: Mapping[str, Any] | None = None,
                     webhook_url: str | None = None) -> dict[str, Any]:
        """Queue a batch: ``tasks`` (bodies as for :meth:`submit_task`, see ``calls.task_body``)
        or ``template`` for each of ``personas``. Returns ``{"batch_id", "task_ids"}``."""
        return self._send(calls.submit_batch(name, tasks=tasks, template=template, personas=personas,
                                             params=params, priority=priority, metadata=metadata,
                                             webhook_url=webhook_url))

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._send(calls.get_task(task_id))

    def list_tasks(self, status: str | None = None, batch_id: str | None = None,
                   limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Tasks, newest first, page after page; at most ``limit`` of them (``None``: all)."""
        cursor: str | None = None
        while limit is None or limit > 0:
            page = self._send(calls.list_tasks(status, batch_id, calls.page_size(limit), cursor))
            tasks, cursor = calls.page_of_tasks(page, limit)
            yield from tasks
            if cursor is None:
                return
            limit = None if limit is None else limit - len(tasks)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send(calls.get_batch(batch_id))

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task; ``cancelled`` is false (and ``message`` says why) when it was already final."""
        return self._send(calls.cancel(task_id))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send(calls.cancel_batch(batch_id))

    # -- following tasks ------------------------------------------------------------------

    def wait(self, task_id: str, timeout: float | None = None, *,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Block until the task is completed, failed or cancelled; return its final JSON.

        Follows ``/events?task_id=`` and falls back to polling when the stream
        fails. ``on_update`` gets every new state of the task. Raises
        ``TimeoutError`` once ``timeout`` seconds have passed (noticed at the
        latest at the stream's next keep-alive ping, ~15 s); the task keeps
        running on the server.
        """
        watch = TaskWatch(task_id, on_update)
        self._follow(watch, Deadline(timeout), lambda: watch.update(self.get_task(task_id)),
                     task_id=task_id)
        assert watch.task is not None
        return watch.task

    def wait_for_batch(self, batch_id: str, timeout: float | None = None, *,
                       on_progress: Callable[[BatchProgress], None] | None = None) -> list[dict[str, Any]]:
        """Block until every task of the batch is final; return them, oldest first.

        Same approach as :meth:`wait`, on ``/events?batch_id=``; ``on_progress``
        gets a :class:`BatchProgress` whenever the counts or the progress change.
        """
        watch = BatchWatch(batch_id, on_progress)

        def refresh() -> None:
            watch.set_batch(self.get_batch(batch_id))
            watch.set_tasks(self.list_tasks(batch_id=batch_id))

        self._follow(watch, Deadline(timeout), refresh, batch_id=batch_id)
        return watch.results()

    def iter_events(self, task_id: str | None = None, batch_id: str | None = None,
                    last_event_id: str | None = None) -> Iterator[ServerEvent]:
        """Every event of the stream (filtered by task or batch), for as long as you iterate.

        A dropped connection is resumed with ``Last-Event-ID``, so no event is
        lost or repeated; after ``max_retries`` failed reconnections in a row
        the last error is raised.
        """
        policy = FollowPolicy(self.poll_interval, self.max_retries)
        while True:
            try:
                response = self._open_events(calls.events(task_id, batch_id, last_event_id),
                                             STREAM_READ_TIMEOUT)
            except TwitterChatError as exc:
                policy.request_failed(exc)
            else:
                policy.request_ok()
                decoder = SSEDecoder()
                try:
                    for chunk in response.iter_bytes():
                        for event in decoder.feed(chunk):
                            last_event_id = event.id or last_event_id
                            yield event
                    policy.retry_ms = decoder.retry_ms or policy.retry_ms
                    log.debug("the event stream ended; reconnecting after event %s", last_event_id)
                except httpx.TransportError as exc:
                    policy.request_failed(connection_error(self.base_url, exc))
                finally:
                    response.close()
            time.sleep(policy.delay())

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, call: calls.Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, json=call.json, params=call.params,
                                          headers=call.headers)
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        if response.is_error:
            raise error_from_response(response)
        return decode_json(response)

    def _open_events(self, call: calls.Call, read_timeout: float) -> httpx.Response:
        """The event stream's response, headers read, body not yet; raises like :meth:`_send`."""
        request = self._http.build_request(call.method, call.path, params=call.params, headers=call.headers,
                                           timeout=httpx.Timeout(self.timeout, read=read_timeout))
        try:
            response = self._http.send(request, stream=True)
            if response.is_error:
                try:
                    response.read()
                finally:
                    response.close()
                raise error_from_response(response)
        except httpx.TransportError as exc:
            raise connection_error(self.base_url, exc) from exc
        return response

    def _follow(self, watch: TaskWatch | BatchWatch, deadline: Deadline, refresh: Callable[[], None],
                **filters: str) -> None:
        """Stream (refreshing once connected), else poll, until ``watch`` is done or time is up."""
        policy = FollowPolicy(self.poll_interval, self.max_retries)
        while True:
            try:
                if policy.use_stream:
                    self._follow_stream(watch, deadline, refresh, policy, filters)
                if not watch.done:
                    refresh()
                policy.request_ok()
            except TwitterChatError as exc:
                policy.request_failed(exc)
            if watch.done:
                return
            deadline.check(watch.describe())
            time.sleep(deadline.cap(policy.delay()))

    def _follow_stream(self, watch: TaskWatch | BatchWatch, deadline: Deadline,
                       refresh: Callable[[], None], policy: FollowPolicy, filters: dict[str, str]) -> None:
        call = calls.events(last_event_id=watch.last_event_id, **filters)
        try:
            response = self._open_events(call, deadline.read_timeout())
        except TwitterChatError as exc:
            policy.stream_failed(exc)
            return
        try:
            refresh()  # connected: whatever happens from now on arrives as events
            policy.request_ok()
            if watch.done:
                return
            decoder = SSEDecoder()
            for chunk in response.iter_bytes():
                for event in decoder.feed(chunk):
                    policy.stream_delivered()
                    watch.on_event(event)
                    if watch.needs_refresh:
                        refresh()
                if watch.done or deadline.expired:
                    return
            policy.retry_ms = decoder.retry_ms or policy.retry_ms
            log.debug("the event stream ended before the end; checking with a GET")
        except httpx.TransportError as exc:
            if not deadline.expired:
                policy.stream_failed(connection_error(self.base_url, exc))
        finally:
            response.close()
