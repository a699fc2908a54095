"""What ``wait`` and ``wait_for_batch`` know so far, and when to stream, poll or give up.

Plain data and decisions, no I/O: the sync and async clients run the same
loop around these (open the event stream, refresh with GETs once it is open so
nothing that happened before is missed, apply events, fall back to polling).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .calls import FINAL_STATUSES, is_final
from .config import MAX_RETRIES, POLL_INTERVAL, STREAM_READ_TIMEOUT
from .errors import TwitterChatError
from .sse import ServerEvent

log = logging.getLogger("twitterchat.client")

STREAM_ATTEMPTS = 3   # consecutive stream failures before a wait settles for polling
MAX_DELAY = 15.0      # seconds: the longest pause between two attempts


class Deadline:
    """A wait's time limit (``None``: none)."""

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._end = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._end is not None and self._clock() >= self._end

    def cap(self, seconds: float) -> float:
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    def read_timeout(self) -> float:
        """How long one read of the event stream may block."""
        return max(0.05, self.cap(STREAM_READ_TIMEOUT))

    def check(self, what: str) -> None:
        if self.expired:
            raise TimeoutError(f"{what} after {self.timeout:g} s")


_RANK = {"queued": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


def is_newer(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether ``new`` is a later state of the task than ``old``: a filtered stream replays a
    task's whole history, and a reply to GET may already be ahead of it."""
    if old is None:
        return True
    if is_final(old):
        return False

    def key(task: dict[str, Any]) -> tuple:
        progress = task.get("progress")
        return (task.get("attempts") or 0, _RANK.get(str(task.get("status")), 0),
                progress if isinstance(progress, (int, float)) else 0.0)

    return key(new) >= key(old)


class TaskWatch:
    """One task, followed until it reaches a final status."""

    def __init__(self, task_id: str, on_update: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.task_id = task_id
        self.task: dict[str, Any] | None = None
        self.last_event_id: str | None = None
        self._on_update = on_update

    def update(self, task: dict[str, Any]) -> None:
        if task == self.task or not is_newer(task, self.task):
            return
        self.task = task
        if self._on_update is not None:
            self._on_update(task)

    def on_event(self, event: ServerEvent) -> None:
        self.last_event_id = event.id or self.last_event_id
        data = event.data
        if event.event == "task" and isinstance(data, dict) and data.get("task_id") == self.task_id:
            self.update(data)

    @property
    def needs_refresh(self) -> bool:
        return False

    @property
    def done(self) -> bool:
        return self.task is not None and is_final(self.task)

    def describe(self) -> str:
        status = self.task.get("status") if self.task else "unknown"
        return f"task {self.task_id} not final (last status: {status})"


@dataclass(frozen=True)
class BatchProgress:
    """A batch as ``wait_for_batch`` sees it: ``counts`` per status, ``fraction`` 0..1."""

    batch_id: str
    total: int
    counts: Mapping[str, int] = field(default_factory=dict)
    fraction: float = 0.0

    @property
    def finished(self) -> int:
        return sum(self.counts.get(status, 0) for status in FINAL_STATUSES)


class BatchWatch:
    """Every task of one batch, followed until all of them are final."""

    def __init__(self, batch_id: str,
                 on_progress: Callable[[BatchProgress], None] | None = None) -> None:
        self.batch_id = batch_id
        self.batch: dict[str, Any] | None = None
        self.tasks: dict[str, dict[str, Any]] = {}
        self.last_event_id: str | None = None
        self._on_progress = on_progress
        self._reported: BatchProgress | None = None

    @property
    def total(self) -> int | None:
        total = self.batch.get("total") if self.batch else None
        return total if isinstance(total, int) else None

    def set_batch(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self._report()

    def set_tasks(self, newest_first: Iterable[dict[str, Any]]) -> None:
        """Tasks as the server lists them (newest first); kept oldest first."""
        for task in reversed(list(newest_first)):
            self._put(task)
        self._report()

    def on_event(self, event: ServerEvent) -> None:
        self.last_event_id = event.id or self.last_event_id
        data = event.data
        if not isinstance(data, dict) or data.get("batch_id") != self.batch_id:
            return
        if event.event == "batch":
            self.set_batch(data)
        elif event.event == "task" and isinstance(data.get("task_id"), str):
            self._put(data)
            self._report()

    @property
    def needs_refresh(self) -> bool:
        """The server says the batch is finished but some of its final tasks are not here yet."""
        return bool(self.batch) and self.batch.get("status") == "finished" and not self.done

    @property
    def done(self) -> bool:
        total = self.total
        finals = sum(1 for task in self.tasks.values() if is_final(task))
        return total is not None and finals >= total

    def results(self) -> list[dict[str, Any]]:
        return list(self.tasks.values())

    def progress(self) -> BatchProgress:
        total = self.total if self.total is not None else len(self.tasks)
        counts: dict[str, int] = {}
        done = 0.0
        for task in self.tasks.values():
            status = str(task.get("status"))
            counts[status] = counts.get(status, 0) + 1
            progress = task.get("progress")
            done += 1.0 if is_final(task) else (progress if isinstance(progress, (int, float)) else 0.0)
        if total > len(self.tasks):  # not listed yet: still waiting for their turn
            counts["queued"] = counts.get("queued", 0) + total - len(self.tasks)
        return BatchProgress(self.batch_id, total, counts, min(1.0, done / total) if total else 1.0)

    def describe(self) -> str:
        progress = self.progress()
        return f"batch {self.batch_id} not finished ({progress.finished}/{progress.total} tasks final)"

    def _put(self, task: dict[str, Any]) -> None:
        task_id = task.get("task_id")
        if isinstance(task_id, str) and is_newer(task, self.tasks.get(task_id)):
            self.tasks[task_id] = task

    def _report(self) -> None:
        progress = self.progress()
        if progress != self._reported and self._on_progress is not None:
            self._on_progress(progress)
        self._reported = progress


class FollowPolicy:
    """Stream while the stream works; after it fails :data:`STREAM_ATTEMPTS` times in a row (or
    is refused with a 4xx), poll. Once the server has answered, up to ``max_retries`` failed
    requests in a row are tried again (a ComfyUI restart); before that, the first one is raised
    (a wrong URL fails at once)."""

    def __init__(self, poll_interval: float = POLL_INTERVAL, max_retries: int = MAX_RETRIES) -> None:
        self.poll_interval = poll_interval
        self.max_retries = max_retries
        self.use_stream = True
        self.stream_failures = 0
        self.request_failures = 0
        self.retry_ms: int | None = None
        self.reached = False
        self._retry_after = 0.0

    def stream_delivered(self) -> None:
        self.reached = True
        self.stream_failures = 0

    def stream_failed(self, error: TwitterChatError) -> None:
        if not error.transient:
            self.use_stream = False
            log.info("the event stream was refused (%s); polling instead", error)
            return
        self.stream_failures += 1
        if self.stream_failures >= STREAM_ATTEMPTS:
            self.use_stream = False
            log.info("the event stream failed %d times in a row (last: %s); polling instead",
                     self.stream_failures, error)
        else:
            log.info("the event stream failed (%s); reconnecting", error)

    def request_ok(self) -> None:
        self.reached = True
        self.request_failures = 0
        self._retry_after = 0.0

    def request_failed(self, error: TwitterChatError) -> None:
        """Count a transient failure; re-raise ``error`` when it is not transient or one too many."""
        if not error.transient or not self.reached or self.request_failures >= self.max_retries:
            raise error
        self.request_failures += 1
        self._retry_after = error.retry_after or 0.0
        log.info("request failed (%s); attempt %d of %d in %.1f s", error,
                 self.request_failures + 1, self.max_retries + 1, self.delay())

    def delay(self) -> float:
        if self.request_failures:  # a 429's Retry-After may ask for longer than the backoff
            return max(min(self.poll_interval * 2 ** self.request_failures, MAX_DELAY), self._retry_after)
        if not self.use_stream:
            return self.poll_interval
        base = self.retry_ms / 1000 if self.retry_ms is not None else 1.0
        return min(base * 2 ** max(0, self.stream_failures - 1), MAX_DELAY)
