"""Plain data -> compact info objects, and the change tracking between ticks.

Never imports ComfyUI: ``comfy_source.py`` reads the queue, history and
progress registry and hands over plain values, so everything here is tested
on the captured payloads of both ComfyUI versions.

An info object (all plain JSON types)::

    {"id", "type": "queue"|"history",
     "status": "pending"|"running"|"completed"|"failed"|"cancelled",
     "progress": 0..1, "current_node": {"id", "type"} | None,
     "queue_time", "start_time", "end_time" (ISO 8601 UTC or None),
     "result": "success"|"failure"|None,
     "error_info": {"message", "type", "node_id", "node_type", "traceback": [2 frames]} | None,
     "queue_position": 0 for running, 1.. for pending in queue-number order, None when done}

It never carries the workflow, ``extra_data``, the queue item's sixth element
or any node input.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from ..utils.structured_logger import redact_text

ERROR_MESSAGE_LIMIT = 500
FRAME_LIMIT = 600
TRACEBACK_FRAMES = 2
TERMINAL = ("completed", "failed", "cancelled")


def iso_utc(value_ms: float | None) -> str | None:
    if value_ms is None:
        return None
    return datetime.fromtimestamp(value_ms / 1000.0, tz=timezone.utc).isoformat(timespec="milliseconds")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class QueueEntry:
    """The parts of a queue item the monitor may use (never extra_data or item[5])."""

    number: float
    prompt_id: str
    prompt: Mapping[str, Any] = field(repr=False)
    outputs: tuple[str, ...]
    create_time_ms: float | None = None


def queue_entry(item: Sequence[Any]) -> QueueEntry:
    """A ``(number, prompt_id, prompt, extra_data, outputs[, sensitive])`` item -> QueueEntry."""
    item = getattr(item, "queue_tuple", item)  # some forks wrap the tuple in an object
    extra = item[3] if len(item) > 3 and isinstance(item[3], Mapping) else {}
    create_time = extra.get("create_time")
    outputs = item[4] if len(item) > 4 and item[4] is not None else ()
    return QueueEntry(number=item[0], prompt_id=str(item[1]),
                      prompt=item[2] if isinstance(item[2], Mapping) else {},
                      outputs=tuple(str(o) for o in outputs),
                      create_time_ms=create_time if isinstance(create_time, (int, float)) else None)


@dataclass(frozen=True)
class ProgressSnapshot:
    """The progress registry of the prompt being run: {node_id: (state, value, max)}."""

    prompt_id: str | None
    nodes: Mapping[str, tuple[str, float, float]]
    node_types: Mapping[str, str] = field(default_factory=dict)  # class types of expanded nodes


@dataclass(frozen=True)
class HistorySummary:
    """What the monitor keeps of a history entry (see ``summarize_history_entry``)."""

    number: float | None
    status_str: str | None
    messages: tuple[tuple[str, Mapping[str, Any]], ...]


def summarize_history_entry(entry: Mapping[str, Any]) -> HistorySummary:
    """Cheap enough to run under ComfyUI's queue lock: no deep copy, no formatting."""
    prompt = entry.get("prompt") or ()
    status = entry.get("status") or {}
    messages = tuple((m[0], m[1]) for m in (status.get("messages") or ()) if len(m) >= 2)
    return HistorySummary(number=prompt[0] if len(prompt) > 0 else None,
                          status_str=status.get("status_str"), messages=messages)


def nodes_to_run(prompt: Mapping[str, Any], outputs: Iterable[str]) -> frozenset[str]:
    """Every node the outputs depend on (the outputs included)."""
    seen: set[str] = set()
    stack = [o for o in outputs if o in prompt]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        inputs = prompt.get(node_id, {}).get("inputs", {}) if isinstance(prompt.get(node_id), Mapping) else {}
        for value in inputs.values() if isinstance(inputs, Mapping) else ():
            if isinstance(value, (list, tuple)) and len(value) == 2 and str(value[0]) in prompt:
                stack.append(str(value[0]))
    return frozenset(seen or prompt.keys())


def running_progress(to_run: frozenset[str], snapshot: ProgressSnapshot | None
                     ) -> tuple[float, str | None]:
    """(finished nodes + the current node's fraction) / nodes to run, and the current node id."""
    if snapshot is None or not to_run:
        return 0.0, None
    finished = 0
    fraction = 0.0
    current = None
    for node_id, (state, value, maximum) in snapshot.nodes.items():
        if node_id not in to_run:
            continue
        if state in ("finished", "error"):
            finished += 1
        elif state == "running":
            current = node_id
            if maximum and maximum > 0:
                fraction = max(0.0, min(1.0, value / maximum))
    return min(1.0, (finished + fraction) / len(to_run)), current


def error_info_from(data: Mapping[str, Any]) -> dict[str, Any]:
    """The failure as published: message and the two innermost frames, redacted with the
    log's rules (an exception can carry a connection URL with a password, or a key)."""
    message = str(data.get("exception_message") or "").strip()
    # ComfyUI appends tips (out-of-memory advice) after a blank line: keep the error itself.
    message = _clip(message.split("\n\n", 1)[0].strip() or "unknown error", ERROR_MESSAGE_LIMIT)
    frames = [str(f).strip() for f in (data.get("traceback") or ())][-TRACEBACK_FRAMES:]
    return {"message": redact_text(message), "type": data.get("exception_type"),
            "node_id": None if data.get("node_id") is None else str(data.get("node_id")),
            "node_type": data.get("node_type"),
            "traceback": [redact_text(_clip(f, FRAME_LIMIT)) for f in frames]}


def outcome(summary: HistorySummary) -> tuple[str, dict[str, Any] | None, float | None, float | None]:
    """(status, error_info, start_ms, end_ms) of a finished prompt, from its messages first."""
    start = end = None
    error = interrupted = None
    succeeded = False
    for event, data in summary.messages:
        stamp = data.get("timestamp") if isinstance(data, Mapping) else None
        if event == "execution_start":
            start = stamp
        elif event == "execution_error":
            error, end = data, stamp
        elif event == "execution_interrupted":
            interrupted, end = data, stamp
        elif event == "execution_success":
            succeeded, end = True, stamp
    if error is not None:
        return "failed", error_info_from(error), start, end
    if interrupted is not None:
        return "cancelled", None, start, end
    if succeeded or summary.status_str == "success":
        return "completed", None, start, end
    if summary.status_str == "error":
        return "failed", {"message": "prompt failed without an error message", "type": None,
                          "node_id": None, "node_type": None, "traceback": []}, start, end
    return "completed", None, start, end


def make_info(prompt_id: str, kind: str, status: str, *, progress: float = 0.0,
              current_node: dict[str, Any] | None = None, queue_time: float | None = None,
              start_ms: float | None = None, end_ms: float | None = None,
              error_info: dict[str, Any] | None = None, queue_position: int | None = None
              ) -> dict[str, Any]:
    result = None
    if status == "completed":
        result = "success"
    elif status in ("failed", "cancelled"):
        result = "failure"
    return {"id": prompt_id, "type": kind, "status": status, "progress": round(progress, 4),
            "current_node": current_node, "queue_time": iso_utc(queue_time),
            "start_time": iso_utc(start_ms), "end_time": iso_utc(end_ms), "result": result,
            "error_info": error_info, "queue_position": queue_position}


def history_info(prompt_id: str, summary: HistorySummary, *, last_progress: float = 0.0,
                 queue_time: float | None = None, first_seen_ms: float | None = None) -> dict[str, Any]:
    status, error, start, end = outcome(summary)
    progress = 1.0 if status == "completed" else last_progress
    return make_info(prompt_id, "history", status, progress=progress, queue_time=queue_time,
                     start_ms=start if start is not None else first_seen_ms, end_ms=end,
                     error_info=error)


@dataclass
class _Active:
    number: float
    queue_time: float | None
    to_run: frozenset[str]
    prompt: Mapping[str, Any] = field(repr=False)
    first_running_ms: float | None = None
    progress: float = 0.0


class PromptTracker:
    """Remembers what was published, so a tick emits only what changed.

    An info goes out when its status, current node or queue position changes,
    or its progress moves by at least ``progress_step`` (or reaches 1.0).
    Finished prompts are remembered (bounded) so history is processed once.
    """

    def __init__(self, progress_step: float = 0.05, remember_finished: int = 20000) -> None:
        self.progress_step = progress_step
        self.remember_finished = remember_finished
        self._active: dict[str, _Active] = {}
        self._published: dict[str, tuple[str, str | None, float, int | None]] = {}
        self._last_info: dict[str, dict[str, Any]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.finished_count = 0  # every final info ever built: a clock in units of history entries

    @property
    def active_ids(self) -> set[str]:
        return set(self._active)

    def knows(self, prompt_id: str) -> bool:
        return prompt_id in self._active or prompt_id in self._finished

    def is_finished(self, prompt_id: str) -> bool:
        return prompt_id in self._finished

    def _should_publish(self, prompt_id: str, status: str, node_id: str | None, progress: float,
                        position: int | None) -> bool:
        """Compare with what was last published; cheap, so idle ticks build no info at all."""
        previous = self._published.get(prompt_id)
        if previous is not None and previous[0] == status and previous[1] == node_id \
                and previous[3] == position:
            if abs(previous[2] - progress) < self.progress_step and progress < 1.0:
                return False
        self._published[prompt_id] = (status, node_id, progress, position)
        return True

    def _record(self, info: dict[str, Any]) -> dict[str, Any]:
        self._last_info[info["id"]] = info
        return info

    def observe_queue(self, running: Sequence[QueueEntry], pending: Sequence[QueueEntry],
                      snapshot: ProgressSnapshot | None, now_ms: float
                      ) -> tuple[list[dict[str, Any]], list[str]]:
        """Infos that changed, and ids that left the queue since the last tick."""
        infos: list[dict[str, Any]] = []
        present: set[str] = set()
        for entry in running:
            active = self._track(entry)
            if active is None:
                continue
            present.add(entry.prompt_id)
            if active.first_running_ms is None:
                active.first_running_ms = now_ms
            own = snapshot if snapshot is not None and snapshot.prompt_id == entry.prompt_id else None
            progress, node_id = running_progress(active.to_run, own)
            active.progress = max(active.progress, progress)
            if not self._should_publish(entry.prompt_id, "running", node_id, round(active.progress, 4), 0):
                continue
            current = None
            if node_id is not None:
                node = active.prompt.get(node_id)
                node_type = node.get("class_type") if isinstance(node, Mapping) else None
                current = {"id": node_id, "type": node_type or (own.node_types.get(node_id) if own else None)}
            infos.append(self._record(make_info(
                entry.prompt_id, "queue", "running", progress=active.progress, current_node=current,
                queue_time=active.queue_time, start_ms=active.first_running_ms, queue_position=0)))
        for position, entry in enumerate(sorted(pending, key=lambda e: e.number), start=1):
            active = self._track(entry)
            if active is None:
                continue
            present.add(entry.prompt_id)
            if self._should_publish(entry.prompt_id, "pending", None, 0.0, position):
                infos.append(self._record(make_info(entry.prompt_id, "queue", "pending",
                                                    queue_time=active.queue_time, queue_position=position)))
        vanished = [pid for pid in self._active if pid not in present]
        return infos, vanished

    def _track(self, entry: QueueEntry) -> _Active | None:
        if entry.prompt_id in self._finished:
            return None
        active = self._active.get(entry.prompt_id)
        if active is None:
            active = _Active(number=entry.number, queue_time=entry.create_time_ms,
                             to_run=nodes_to_run(entry.prompt, entry.outputs), prompt=entry.prompt)
            self._active[entry.prompt_id] = active
        return active

    def finish(self, prompt_id: str, summary: HistorySummary | None, now_ms: float) -> dict[str, Any] | None:
        """The final info of a prompt that left the queue (``summary`` None: deleted unrun)."""
        if prompt_id in self._finished:
            return None
        active = self._active.pop(prompt_id, None)
        if summary is None:
            # A pending prompt removed from the queue leaves no history entry.
            info = make_info(prompt_id, "queue", "cancelled", queue_time=active.queue_time if active else None,
                             end_ms=now_ms, progress=active.progress if active else 0.0)
        else:
            info = history_info(prompt_id, summary,
                                last_progress=active.progress if active else 0.0,
                                queue_time=active.queue_time if active else None,
                                first_seen_ms=active.first_running_ms if active else None)
        self._remember_finished(prompt_id)
        return info

    def observe_history(self, summaries: Mapping[str, HistorySummary], now_ms: float) -> list[dict[str, Any]]:
        """Final infos for finished prompts not seen before (e.g. queued and done between ticks)."""
        infos = []
        for prompt_id, summary in summaries.items():
            if prompt_id in self._finished:
                continue
            info = self.finish(prompt_id, summary, now_ms)
            if info is not None:
                infos.append(info)
        return infos

    def _remember_finished(self, prompt_id: str) -> None:
        self._published.pop(prompt_id, None)
        self._last_info.pop(prompt_id, None)
        self._finished[prompt_id] = None
        self.finished_count += 1
        while len(self._finished) > self.remember_finished:
            self._finished.popitem(last=False)

    def snapshot(self) -> list[dict[str, Any]]:
        """The last published info of every prompt still queued or running (for full snapshots)."""
        return [dict(info) for info in self._last_info.values()]


def counter_value(number: Any) -> int | None:
    """The ``PromptServer.number`` value behind a queue number (negative: queued to the front)."""
    try:
        value = abs(float(number))
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() else None


class UnseenPrompts:
    """Prompts the server has handed out but the monitor has not yet seen anywhere.

    ComfyUI bumps ``PromptServer.number`` for every ``POST /prompt`` before it
    validates the prompt and puts it in the queue, and sets ``last_prompt_id``
    when its worker takes a prompt. Every counter value and every started id is
    therefore expected to show up in the queue or in history; a prompt queued,
    run and finished between two ticks shows up only in history. While anything
    is outstanding the tick reads history, as far back as entries can have been
    added since the oldest expectation (``history_span``). An expectation that
    is never met (the prompt failed validation, or its history was deleted) is
    dropped after ``expire_seconds``. An idle server has nothing outstanding,
    so its ticks never read history.

    Prompts posted with an explicit ``number`` do not move the counter: one that
    runs unseen is caught through ``last_prompt_id`` when it is the last prompt
    the worker took before the tick (or by any history read while it is among
    the newest entries).
    """

    def __init__(self, expire_seconds: float, max_span: int) -> None:
        self.expire_seconds = expire_seconds
        self.max_span = max_span
        self.expired = 0
        self._counter: int | None = None
        self._numbers: dict[int, tuple[float, int]] = {}  # value -> (noticed at, finished_count then)
        self._ids: dict[str, tuple[float, int]] = {}

    def expect_counter(self, counter: int | None, now: float, finished_count: int) -> None:
        if counter is None:
            return
        if self._counter is not None and counter > self._counter:
            for value in range(max(self._counter, counter - self.max_span), counter):
                self._numbers.setdefault(value, (now, finished_count))
        self._counter = counter

    def expect_id(self, prompt_id: str, now: float, finished_count: int) -> None:
        self._ids.setdefault(prompt_id, (now, finished_count))

    def saw(self, prompt_id: str, number: Any) -> None:
        self._ids.pop(prompt_id, None)
        value = counter_value(number)
        if value is not None:
            self._numbers.pop(value, None)

    @property
    def outstanding(self) -> int:
        return len(self._numbers) + len(self._ids)

    def history_span(self, finished_count: int) -> int:
        """How many of the newest history entries can hold every outstanding prompt.

        Entries added since the oldest expectation are the prompts the monitor
        finished since then plus the outstanding ones themselves.
        """
        if not self.outstanding:
            return 0
        oldest = min(seen for _, seen in (*self._numbers.values(), *self._ids.values()))
        return min(self.max_span, finished_count - oldest + self.outstanding)

    def expire(self, now: float) -> None:
        if not self._numbers and not self._ids:
            return
        for pending in (self._numbers, self._ids):
            for key in [k for k, (noticed, _) in pending.items() if now - noticed > self.expire_seconds]:
                del pending[key]
                self.expired += 1
