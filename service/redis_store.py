"""The task store and queue in Redis, shared by many ComfyUI instances (``service.backend = redis``).

Same interface and rules as the SQLite ``Store`` (tests/test_store_contract.py runs
both): states only move forward, a final state is written once, every change
writes its events, batch counters move with their tasks. Each change is one
optimistic transaction (``WATCH`` the task and its batch, ``MULTI``/``EXEC``);
events get whole-number ids from a Lua script inside the same transaction, so
``Last-Event-ID`` works as with SQLite.

The queue is a stream with one consumer group (``<prefix>:jobs``, group
``workers``); each instance is one consumer, named after the instance:

- ``take`` pulls at most ``room`` entries: first its own pending entries left by
  a restart, then entries idle longer than the lease (``XAUTOCLAIM``: their
  instance died), then new ones (``XREADGROUP >``). A task taken again counts
  an attempt; past ``max_attempts`` it fails and its entry goes to
  ``<prefix>:jobs:dead``.
- ``heartbeat`` renews the lease of running entries, only those this instance
  still owns (a Lua script checks ``XPENDING`` before ``XCLAIM ... JUSTID``).
- A task's entry is acknowledged (``XACK``, then deleted) in the transaction
  that stores its final state, never before.

Redis unreachable: every call raises ``StoreUnavailable`` (the API answers 503).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from typing import Any, Callable, Iterable, Mapping

from .store import (API_STATUS, API_STATUSES, CANCELLED, COMPLETED, FAILED, FINAL, KEEP_SECONDS, RANK, RUNNING,
                    STATES, SUBMITTED, WAITING, WEBHOOK_TYPES, BuildResponse, Event, NewTask, StoreError, batch_json,
                    dumps, iso, new_task_json, task_json)

GROUP = "workers"
OUTBOX_LEASE_SECONDS = 60.0  # a claimed webhook delivery returns to the outbox if its sender dies
CHUNK = 200

# Appends events with whole-number ids (n-0): INCR and XADD in one script, so ids are unique and
# ordered across instances. Records a task's / batch's first event id for filtered replays.
# KEYS[1] events stream, KEYS[2] counter; ARGV[1] key prefix, then (kind, task, batch, data) fours.
APPEND_EVENTS = """
local ids = {}
for i = 2, #ARGV, 4 do
  local n = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], n .. '-0', 'kind', ARGV[i], 'task', ARGV[i + 1], 'batch', ARGV[i + 2],
             'data', ARGV[i + 3])
  if ARGV[i + 1] ~= '' then redis.call('HSETNX', ARGV[1] .. ':task:' .. ARGV[i + 1], 'first_event', n) end
  if ARGV[i + 2] ~= '' then redis.call('HSETNX', ARGV[1] .. ':batch:' .. ARGV[i + 2], 'first_event', n) end
  ids[#ids + 1] = n
end
return ids
"""

# Renews the lease of entries this consumer still owns; returns the ids it no longer owns.
# KEYS[1] jobs stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids.
HEARTBEAT = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# Claims due webhook deliveries: each due id is pushed OUTBOX_LEASE_SECONDS ahead, atomically,
# so two instances never send the same delivery at once. KEYS[1] outbox zset, KEYS[2] messages.
CLAIM_WEBHOOKS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""


class StoreUnavailable(StoreError):
    """Redis cannot be reached; ``public`` is safe to show to API clients."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


def _text(value: Any) -> str:
    """A field value as Redis keeps it: text as it is, JSON for dicts and lists, str() for numbers."""
    return value if isinstance(value, str) else dumps(value) if isinstance(value, (dict, list)) else str(value)


def _num(value: Any, kind: Callable = float) -> Any:
    return None if value in (None, "") else kind(value)


def _task_row(h: Mapping[str, str]) -> dict[str, Any]:
    """A task hash as the row ``task_json`` reads (the SQLite column types)."""
    return {"task_id": h["task_id"], "batch_id": h.get("batch_id"), "state": h["state"],
            "priority": int(h.get("priority") or 0), "metadata": h.get("metadata"), "user_id": h.get("user_id"),
            "attempts": int(h.get("attempts") or 0), "progress": float(h.get("progress") or 0.0),
            "current_node": h.get("current_node"), "queue_position": _num(h.get("queue_position"), int),
            "created_at": float(h["created_at"]), "started_at": _num(h.get("started_at")),
            "finished_at": _num(h.get("finished_at")), "error": h.get("error"), "outputs": h.get("outputs"),
            "worker": h.get("worker"), "webhook_url": h.get("webhook_url"), "seq": int(h["seq"])}


def _batch_row(h: Mapping[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {status: int(h.get(status) or 0) for status in API_STATUSES}
    row.update(batch_id=h["batch_id"], name=h.get("name", ""), total=int(h["total"]),
               created_at=float(h["created_at"]), finished_at=_num(h.get("finished_at")),
               metadata=h.get("metadata"), webhook_url=h.get("webhook_url"), seq=int(h["seq"]))
    return row


class _Tx:
    """What one transaction writes: field changes go to the pipeline, events are collected and
    appended last (by the script), so their ids come back with EXEC."""

    def __init__(self, store: "RedisStore", pipe: Any) -> None:
        self.store, self.pipe = store, pipe
        self.events: list[tuple[str, dict[str, Any], str | None, str | None]] = []
        self.began = False

    def begin(self) -> None:
        if not self.began:
            self.pipe.multi()
            self.began = True

    def put(self, key: str, fields: Mapping[str, Any]) -> None:
        setting = {k: _text(v) for k, v in fields.items() if v is not None}
        clearing = [k for k, v in fields.items() if v is None]
        if setting:
            self.pipe.hset(key, mapping=setting)
        if clearing:
            self.pipe.hdel(key, *clearing)

    def event(self, kind: str, data: dict[str, Any], task_id: str | None, batch_id: str | None) -> None:
        self.events.append((kind, data, task_id, batch_id))


def _unavailable(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: "RedisStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except self._redis_errors as exc:
            raise StoreUnavailable(f"Redis at {self.display} is unreachable ({type(exc).__name__}); tasks cannot "
                                   "be stored or read until it is back") from exc
    return wrapper


class RedisStore:
    """The shared store and queue; every method may be called from any thread."""

    distributed = True

    def __init__(self, url: str, *, password: str | None = None, prefix: str = "twitterchat",
                 lease_seconds: float = 60.0, clock=time.time, client: Any = None) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self._redis_errors = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
        self._watch_error = redis.WatchError
        self.clock = clock
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.r = client or redis.Redis.from_url(
            url, password=password, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
            health_check_interval=15, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        kwargs = self.r.connection_pool.connection_kwargs
        self.display = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        self.path = self.display  # shown by /health in place of the SQLite file name
        self.jobs, self.dead = self._k("jobs"), self._k("jobs:dead")
        self.events_key = self._k("events")
        self.cancel_channel = self._k("cancel")
        self._append = self.r.register_script(APPEND_EVENTS)
        self._heartbeat = self.r.register_script(HEARTBEAT)
        self._claim_webhooks = self.r.register_script(CLAIM_WEBHOOKS)
        self.counts = {state: 0 for state in STATES}
        self._backlog: list[tuple[str, dict[str, str]]] | None = None  # own pending entries at start

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def task_key(self, task_id: str) -> str:
        return self._k("task", task_id)

    def batch_key(self, batch_id: str) -> str:
        return self._k("batch", batch_id)

    @_unavailable
    def open(self) -> None:
        """Check the connection and create the consumer group (from the stream's start)."""
        import redis

        self.r.ping()
        try:
            self.r.xgroup_create(self.jobs, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.refresh_counts()

    def close(self) -> None:
        self.r.close()

    # -- transactions ------------------------------------------------------
    def _transaction(self, watch: Iterable[str], work: Callable[[_Tx], Any]) -> tuple[Any, list[Event]]:
        """``work(tx)`` reads (after WATCH), calls ``tx.begin()`` and queues writes; retried on conflict."""
        while True:
            with self.r.pipeline() as pipe:
                try:
                    if watch:
                        pipe.watch(*watch)
                    tx = _Tx(self, pipe)
                    result = work(tx)
                    if not tx.began:
                        return result, []
                    if tx.events:
                        args = [self.prefix]
                        for kind, data, task_id, batch_id in tx.events:
                            args += [kind, task_id or "", batch_id or "", dumps(data)]
                        self._append(keys=[self.events_key, self._k("eventseq")], args=args, client=pipe)
                    replies = pipe.execute()
                except self._watch_error:
                    continue
            ids = replies[-1] if tx.events else []
            return result, [Event(int(i), kind, data, task_id, batch_id)
                            for i, (kind, data, task_id, batch_id) in zip(ids, tx.events)]

    def _task_hash(self, pipe: Any, task_id: str) -> dict[str, str] | None:
        h = pipe.hgetall(self.task_key(task_id))
        return h or None

    def _move(self, tx: _Tx, h: dict[str, str], new: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Queue a task's state change (indexes, counts, its event) and return its new JSON."""
        task_id, old = h["task_id"], h["state"]
        updated = {**h, **fields, "state": new}
        row = _task_row({k: _text(v) for k, v in updated.items() if v is not None})
        tx.put(self.task_key(task_id), {**fields, "state": new})
        if new != old:
            seq = int(h["seq"])
            tx.pipe.zrem(self._k("state", old), task_id)
            tx.pipe.zadd(self._k("state", new), {task_id: seq})
            tx.pipe.hincrby(self._k("counts"), old, -1)
            tx.pipe.hincrby(self._k("counts"), new, 1)
        data = task_json(row)
        tx.event("task", data, task_id, h.get("batch_id"))
        return data

    def _batch_counts(self, tx: _Tx, batch: dict[str, Any] | None, old: str | None, new: str, n: int = 1) -> None:
        """Move ``n`` tasks of a watched batch (``batch`` is its hash as read) from ``old`` to ``new``."""
        if batch is None or (old is not None and API_STATUS[old] == API_STATUS[new]):
            return
        row = _batch_row(batch)
        row[API_STATUS[new]] += n
        if old is not None:
            row[API_STATUS[old]] -= n
        changes: dict[str, Any] = {API_STATUS[new]: row[API_STATUS[new]]}
        if old is not None:
            changes[API_STATUS[old]] = row[API_STATUS[old]]
        done = row[COMPLETED] + row[FAILED] + row[CANCELLED]
        if done == row["total"] and row["finished_at"] is None:
            row["finished_at"] = changes["finished_at"] = self.clock()
            if row["webhook_url"]:
                self._webhook(tx, row["webhook_url"], "batch.finished", batch_json(row))
        tx.put(self.batch_key(row["batch_id"]), changes)
        batch.update({k: str(v) for k, v in changes.items()})
        tx.event("batch", batch_json(row), None, row["batch_id"])

    def _watch_batch(self, pipe: Any, h: Mapping[str, str]) -> dict[str, str] | None:
        batch_id = h.get("batch_id")
        if not batch_id:
            return None
        pipe.watch(self.batch_key(batch_id))
        return pipe.hgetall(self.batch_key(batch_id)) or None

    def _webhook(self, tx: _Tx, url: str, event_type: str, data: dict[str, Any]) -> None:
        now = self.clock()
        msg_id = f"msg_{uuid.uuid4().hex}"
        message = {"url": url, "payload": dumps({"type": event_type, "timestamp": iso(now), "data": data}),
                   "attempts": 0, "created_at": now}
        tx.pipe.hset(self._k("outbox", "msgs"), msg_id, dumps(message))
        tx.pipe.zadd(self._k("outbox"), {msg_id: now})

    def _ack(self, tx: _Tx, h: Mapping[str, str]) -> None:
        entry = h.get("entry")
        if entry:
            tx.pipe.xack(self.jobs, GROUP, entry)
            tx.pipe.xdel(self.jobs, entry)

    # -- submitting --------------------------------------------------------
    @_unavailable
    def add_tasks(self, tasks: list[NewTask], build: BuildResponse, *, batch: Mapping[str, Any] | None = None,
                  idempotency: tuple[str, str] | None = None) -> tuple[dict[str, Any], list[Event]]:
        idem_key = self._k("idem", idempotency[0]) if idempotency else None
        first = self.r.incrby(self._k("seq"), len(tasks) + 1) - len(tasks)  # numbers lost to a replay are gaps

        def work(tx: _Tx) -> dict[str, Any]:
            if idem_key is not None:
                stored = tx.pipe.get(idem_key)
                if stored is not None:
                    stored = json.loads(stored)
                    return {"replay": True, "body_hash": stored["body_hash"], "response": stored["response"]}
            now = self.clock()
            batch_id = None
            tx.begin()
            if batch is not None:
                batch_id = batch.get("batch_id") or str(uuid.uuid4())
                brow = {"batch_id": batch_id, "name": batch["name"], "total": len(tasks), "queued": len(tasks),
                        "created_at": now, "metadata": dumps(batch["metadata"]) if batch.get("metadata") is not None
                        else None, "webhook_url": batch.get("webhook_url"), "seq": first - 1}
                tx.put(self.batch_key(batch_id), brow)
                tx.pipe.zadd(self._k("batches"), {batch_id: first - 1})
            created = iso(now)
            for offset, t in enumerate(tasks):
                seq = first + offset
                tx.put(self.task_key(t.task_id), {
                    "task_id": t.task_id, "batch_id": batch_id, "state": WAITING, "priority": t.priority,
                    "spec": dumps(t.spec), "metadata": dumps(t.metadata) if t.metadata is not None else None,
                    "webhook_url": t.webhook_url, "user_id": t.user_id, "attempts": 0, "progress": 0.0,
                    "created_at": now, "seq": seq})
                tx.pipe.zadd(self._k("tasks"), {t.task_id: seq})
                tx.pipe.zadd(self._k("state", WAITING), {t.task_id: seq})
                if batch_id is not None:
                    tx.pipe.zadd(self._k("batch", batch_id, "tasks"), {t.task_id: seq})
                tx.event("task", new_task_json(t, batch_id, created), t.task_id, batch_id)
            tx.pipe.hincrby(self._k("counts"), WAITING, len(tasks))
            if batch_id is not None:
                tx.event("batch", batch_json(_batch_row({k: str(v) for k, v in brow.items() if v is not None})),
                         None, batch_id)
            # The queue entries go last: an instance never reads an entry whose task is not stored.
            for t in tasks:
                tx.pipe.xadd(self.jobs, {"task_id": t.task_id})
            task_ids = [t.task_id for t in tasks]
            response = build(task_ids, batch_id)
            if idem_key is not None:
                tx.pipe.set(idem_key, dumps({"body_hash": idempotency[1], "response": response}),
                            ex=int(KEEP_SECONDS))
            return {"replay": False, "task_ids": task_ids, "batch_id": batch_id, "response": response}

        result, events = self._transaction([idem_key] if idem_key else [], work)
        if not result["replay"]:
            self.counts[WAITING] += len(tasks)
        return result, events

    @_unavailable
    def idempotent_response(self, key: str) -> tuple[str, dict[str, Any]] | None:
        stored = self.r.get(self._k("idem", key))
        if stored is None:
            return None
        stored = json.loads(stored)
        return stored["body_hash"], stored["response"]

    # -- reading -----------------------------------------------------------
    @_unavailable
    def get_task(self, task_id: str) -> dict[str, Any] | None:
        h = self.r.hgetall(self.task_key(task_id))
        return task_json(_task_row(h)) if h else None

    @_unavailable
    def task_state(self, task_id: str) -> str | None:
        return self.r.hget(self.task_key(task_id), "state")

    @_unavailable
    def task_worker(self, task_id: str) -> str | None:
        return self.r.hget(self.task_key(task_id), "worker")

    @_unavailable
    def task_spec(self, task_id: str) -> dict[str, Any] | None:
        spec = self.r.hget(self.task_key(task_id), "spec")
        return None if spec is None else json.loads(spec)

    def _page(self, index: str, limit: int, cursor: int | None) -> tuple[list[str], int | None]:
        top = f"({cursor}" if cursor is not None else "+inf"
        found = self.r.zrevrangebyscore(index, top, "-inf", start=0, num=limit + 1, withscores=True)
        more = len(found) > limit
        found = found[:limit]
        return [member for member, _ in found], (int(found[-1][1]) if more and found else None)

    def _union_page(self, indexes: list[str], limit: int, cursor: int | None) -> tuple[list[str], int | None]:
        top = f"({cursor}" if cursor is not None else "+inf"
        merged: list[tuple[str, float]] = []
        for index in indexes:
            merged += self.r.zrevrangebyscore(index, top, "-inf", start=0, num=limit + 1, withscores=True)
        merged.sort(key=lambda item: -item[1])
        more = len(merged) > limit
        merged = merged[:limit]
        return [member for member, _ in merged], (int(merged[-1][1]) if more and merged else None)

    @_unavailable
    def list_tasks(self, status: str | None = None, batch_id: str | None = None, limit: int = 50,
                   cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first, like the SQLite store; ``cursor`` is the ``seq`` below which to continue."""
        states = [s for s, api in API_STATUS.items() if api == status] if status else None
        if batch_id is None:
            indexes = [self._k("state", s) for s in states] if states else [self._k("tasks")]
            ids, next_cursor = self._union_page(indexes, limit, cursor)
            rows = self._task_rows(ids)
        else:
            # A batch's tasks, filtered by state as they are read (a batch is at most 10,000 tasks).
            rows, next_cursor, position = [], None, cursor
            while len(rows) <= limit:
                ids, position = self._page(self._k("batch", batch_id, "tasks"), 500, position)
                rows += [r for r in self._task_rows(ids) if states is None or r["state"] in states]
                if position is None:
                    break
            if len(rows) > limit:
                rows, next_cursor = rows[:limit], rows[limit - 1]["seq"]
        return [task_json(r) for r in rows], next_cursor

    def _task_rows(self, ids: list[str]) -> list[dict[str, Any]]:
        with self.r.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(self.task_key(task_id))
            return [_task_row(h) for h in pipe.execute() if h]

    @_unavailable
    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        h = self.r.hgetall(self.batch_key(batch_id))
        return batch_json(_batch_row(h)) if h else None

    @_unavailable
    def list_batches(self, limit: int = 50, cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        ids, next_cursor = self._page(self._k("batches"), limit, cursor)
        with self.r.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hgetall(self.batch_key(batch_id))
            rows = [h for h in pipe.execute() if h]
        return [batch_json(_batch_row(h)) for h in rows], next_cursor

    @_unavailable
    def batch_task_ids(self, batch_id: str, states: Iterable[str]) -> list[str]:
        states = set(states)
        ids = self.r.zrange(self._k("batch", batch_id, "tasks"), 0, -1)
        with self.r.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(self.task_key(task_id), "state")
            found = pipe.execute()
        return [task_id for task_id, state in zip(ids, found) if state in states]

    @_unavailable
    def ids_in_states(self, states: Iterable[str]) -> list[str]:
        ids: list[str] = []
        for state in states:
            ids += self.r.zrange(self._k("state", state), 0, -1)
        return ids

    @_unavailable
    def events_after(self, after: int, task_id: str | None = None, batch_id: str | None = None,
                     limit: int = 500) -> list[Event]:
        """Events after ``after``, oldest first. Filtered reads start at the task's (batch's) first
        event and scan at most 20 pages; the returned list's ``scanned_to`` says how far they read,
        so a follower moves on past other tasks' events."""
        owner = self.task_key(task_id) if task_id else self.batch_key(batch_id) if batch_id else None
        start = after
        if owner is not None:
            first = self.r.hget(owner, "first_event")
            if first is None:
                return _Events([], after)
            start = max(after, int(first) - 1)
        found: list[Event] = []
        scanned = start
        for _ in range(20 if owner else 1):
            entries = self.r.xrange(self.events_key, f"{scanned + 1}-0", "+", count=limit)
            for entry_id, fields in entries:
                scanned = int(entry_id.split("-", 1)[0])
                if task_id and fields.get("task") != task_id or batch_id and fields.get("batch") != batch_id:
                    continue
                found.append(Event(scanned, fields["kind"], json.loads(fields["data"]),
                                   fields.get("task") or None, fields.get("batch") or None))
                if len(found) >= limit:
                    return _Events(found, scanned)
            if len(entries) < limit:
                break
        return _Events(found, scanned)

    @_unavailable
    def last_event_id(self) -> int:
        return int(self.r.get(self._k("eventseq")) or 0)

    @_unavailable
    def refresh_counts(self) -> dict[str, int]:
        found = self.r.hgetall(self._k("counts"))
        self.counts = {state: int(found.get(state) or 0) for state in STATES}
        return self.counts

    def api_counts(self) -> dict[str, int]:
        counts = {status: 0 for status in API_STATUSES}
        for state, n in self.refresh_counts().items():
            counts[API_STATUS[state]] += n
        return counts

    # -- the queue ---------------------------------------------------------
    @_unavailable
    def take(self, worker: str, room: int, *, max_attempts: int, block_ms: int = 0
             ) -> tuple[list[tuple[str, dict[str, Any], str]], list[Event]]:
        """Up to ``room`` tasks for ``worker`` to run, marked submitted: [(task_id, spec, entry_id)]."""
        if room <= 0:
            return [], []
        entries: list[tuple[str, dict[str, str]]] = []
        if self._backlog is None:  # once per process: what this consumer held when its ComfyUI stopped
            reply = self.r.xreadgroup(GROUP, worker, {self.jobs: "0"}, count=10_000)
            self._backlog = list(_stream_entries(reply))
        while self._backlog and len(entries) < room:
            entries.append(self._backlog.pop(0))
        if len(entries) < room:
            reply = self.r.xautoclaim(self.jobs, GROUP, worker, int(self.lease_seconds * 1000), "0-0",
                                      count=room - len(entries))
            entries += [(entry_id, fields) for entry_id, fields in (reply[1] if reply else []) if fields]
        if len(entries) < room:
            reply = self.r.xreadgroup(GROUP, worker, {self.jobs: ">"}, count=room - len(entries),
                                      block=block_ms or None)
            entries += list(_stream_entries(reply))
        taken, events = [], []
        for entry_id, fields in entries:
            task_id = (fields or {}).get("task_id")
            if not task_id:  # deleted meanwhile
                self.r.xack(self.jobs, GROUP, entry_id)
                continue
            spec, more = self._claim(task_id, worker, entry_id, max_attempts)
            events += more
            if spec is not None:
                taken.append((task_id, spec, entry_id))
        return taken, events

    def _claim(self, task_id: str, worker: str, entry_id: str, max_attempts: int
               ) -> tuple[dict[str, Any] | None, list[Event]]:
        def work(tx: _Tx) -> dict[str, Any] | None:
            h = self._task_hash(tx.pipe, task_id)
            if h is None or h["state"] in FINAL:  # cancelled while waiting, or finished by a late instance
                tx.begin()
                tx.pipe.xack(self.jobs, GROUP, entry_id)
                tx.pipe.xdel(self.jobs, entry_id)
                return None
            batch = self._watch_batch(tx.pipe, h)
            attempts = int(h.get("attempts") or 0)
            tx.begin()
            if attempts >= max_attempts:
                previous = h.get("worker") or "an instance"
                error = {"type": "no_attempts_left",
                         "message": f"taken {attempts} time(s) (last by {previous}) without a final state; "
                                    f"max_attempts is {max_attempts}; moved to the dead-letter stream"}
                tx.pipe.xadd(self.dead, {"task_id": task_id, "entry": entry_id, "attempts": attempts,
                                         "worker": previous})
                self._finish_tx(tx, {**h, "entry": entry_id}, batch, FAILED, error=error)
                return None
            self._move(tx, h, SUBMITTED, {"attempts": attempts + 1, "worker": worker, "entry": entry_id,
                                          "progress": 0.0, "current_node": None, "queue_position": None,
                                          "started_at": None})
            self._batch_counts(tx, batch, h["state"], SUBMITTED)
            return json.loads(h["spec"])

        return self._transaction([self.task_key(task_id)], work)

    @_unavailable
    def heartbeat(self, worker: str, entries: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """Renew the lease of ``{task_id: entry_id}``; returns (task ids whose entry another instance
        took, task ids with a cancel request)."""
        if not entries:
            return [], []
        lost = set(self._heartbeat(keys=[self.jobs], args=[GROUP, worker, *entries.values()]))
        with self.r.pipeline(transaction=False) as pipe:
            for task_id in entries:
                pipe.hget(self.task_key(task_id), "cancel_requested")
            flags = pipe.execute()
        return ([t for t, e in entries.items() if e in lost],
                [t for t, flag in zip(entries, flags) if flag == "1"])

    @_unavailable
    def queue_stats(self) -> dict[str, Any]:
        info = self.r.xinfo_groups(self.jobs)
        group = next((g for g in info if g.get("name") == GROUP), {})
        return {"stream_length": self.r.xlen(self.jobs), "pending": group.get("pending", 0),
                "consumers": group.get("consumers", 0), "dead": self.r.xlen(self.dead)}

    # -- state changes -----------------------------------------------------
    @_unavailable
    def mark_submitted(self, task_id: str, worker: str | None) -> tuple[bool, list[Event]]:
        """waiting -> submitted (the SQLite store's contract); the queue path uses ``take``."""
        def work(tx: _Tx) -> bool:
            h = self._task_hash(tx.pipe, task_id)
            if h is None or h["state"] != WAITING:
                return False
            batch = self._watch_batch(tx.pipe, h)
            tx.begin()
            self._move(tx, h, SUBMITTED, {"attempts": int(h.get("attempts") or 0) + 1, "worker": worker,
                                          "progress": 0.0, "current_node": None, "queue_position": None})
            self._batch_counts(tx, batch, WAITING, SUBMITTED)
            return True

        moved, events = self._transaction([self.task_key(task_id)], work)
        if moved:
            self.counts[WAITING] -= 1
            self.counts[SUBMITTED] += 1
        return moved, events

    @_unavailable
    def observe(self, task_id: str, status: str, *, progress: float | None = None,
                current_node: dict[str, Any] | None = None, queue_position: int | None = None,
                started_at: float | None = None, worker: str | None = None) -> list[Event]:
        """A non-final monitor info; never moves a task backwards. With ``worker``, only the
        instance that holds the task may move it (a run another instance took over is ignored)."""
        def work(tx: _Tx) -> None:
            h = self._task_hash(tx.pipe, task_id)
            if h is None or h["state"] in FINAL or h["state"] == WAITING:
                return
            if worker is not None and h.get("worker") != worker:
                return
            state = RUNNING if status == "running" else SUBMITTED
            if RANK[state] < RANK[h["state"]]:
                return
            old_progress = float(h.get("progress") or 0.0)
            new_progress = max(old_progress, progress or 0.0)
            node = dumps(current_node) if current_node is not None else None
            position = 0 if state == RUNNING else queue_position
            if (state, new_progress, node, position) == (h["state"], old_progress, h.get("current_node"),
                                                         _num(h.get("queue_position"), int)):
                return
            started = h.get("started_at")
            if state == RUNNING and started is None:
                started = started_at or self.clock()
            batch = self._watch_batch(tx.pipe, h) if state != h["state"] else None
            tx.begin()
            self._move(tx, h, state, {"progress": new_progress, "current_node": node, "queue_position": position,
                                      "started_at": started})
            if state != h["state"]:
                self._batch_counts(tx, batch, h["state"], state)

        return self._transaction([self.task_key(task_id)], work)[1]

    def _finish_tx(self, tx: _Tx, h: dict[str, str], batch: dict[str, str] | None, state: str, *,
                   error: dict[str, Any] | None = None, outputs: list[dict[str, Any]] | None = None,
                   started_at: float | None = None, finished_at: float | None = None) -> dict[str, Any]:
        progress = 1.0 if state == COMPLETED else float(h.get("progress") or 0.0)
        data = self._move(tx, h, state, {
            "progress": progress, "current_node": None, "queue_position": None,
            "started_at": started_at if started_at is not None else h.get("started_at"),
            "finished_at": finished_at or self.clock(), "error": dumps(error) if error is not None else None,
            "outputs": dumps(outputs or [])})
        if h.get("webhook_url"):
            self._webhook(tx, h["webhook_url"], WEBHOOK_TYPES[state], data)
        self._batch_counts(tx, batch, h["state"], state)
        self._ack(tx, h)
        return data

    @_unavailable
    def finish(self, task_id: str, state: str, *, error: dict[str, Any] | None = None,
               outputs: list[dict[str, Any]] | None = None, started_at: float | None = None,
               finished_at: float | None = None, only_from: Iterable[str] | None = None,
               ran: bool = False) -> tuple[dict[str, Any] | None, list[Event]]:
        """Move a task to a final state (once) and acknowledge its queue entry in the same transaction."""
        assert state in FINAL
        only_from = tuple(only_from) if only_from is not None else None

        def work(tx: _Tx) -> dict[str, Any] | None:
            h = self._task_hash(tx.pipe, task_id)
            if h is None or h["state"] in FINAL:
                return None
            if only_from is not None and h["state"] not in only_from:
                return None
            batch = self._watch_batch(tx.pipe, h)
            tx.begin()
            if ran and h["state"] == SUBMITTED:
                # It ran between two monitor ticks: every follower sees queued -> running -> final.
                self._move(tx, h, RUNNING, {"queue_position": 0, "started_at": started_at or h.get("started_at")
                                            or self.clock()})
                self._batch_counts(tx, batch, SUBMITTED, RUNNING)
                h = {**h, "state": RUNNING, "queue_position": "0",
                     "started_at": str(started_at or h.get("started_at") or self.clock())}
            return self._finish_tx(tx, h, batch, state, error=error, outputs=outputs, started_at=started_at,
                                   finished_at=finished_at)

        data, events = self._transaction([self.task_key(task_id)], work)
        return data, events

    @_unavailable
    def cancel_waiting_in_batch(self, batch_id: str, error: dict[str, Any]) -> tuple[int, list[Event]]:
        """Cancel the batch's tasks still waiting, a few hundred per transaction (one batch event each)."""
        ids = self.batch_task_ids(batch_id, (WAITING,))
        total, events = 0, []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]

            def work(tx: _Tx) -> int:
                with_state = []
                for task_id in chunk:
                    h = tx.pipe.hgetall(self.task_key(task_id))
                    if h and h["state"] == WAITING:
                        with_state.append(h)
                if not with_state:
                    return 0
                tx.pipe.watch(self.batch_key(batch_id))
                batch = tx.pipe.hgetall(self.batch_key(batch_id)) or None
                tx.begin()
                now = self.clock()
                for h in with_state:
                    data = self._move(tx, h, CANCELLED, {"finished_at": now, "error": dumps(error),
                                                         "cancel_requested": 1, "outputs": "[]"})
                    if h.get("webhook_url"):
                        self._webhook(tx, h["webhook_url"], WEBHOOK_TYPES[CANCELLED], data)
                self._batch_counts(tx, batch, WAITING, CANCELLED, len(with_state))
                return len(with_state)

            count, more = self._transaction([self.task_key(t) for t in chunk], work)
            total += count
            events += more
        return total, events

    @_unavailable
    def request_cancel(self, task_id: str) -> None:
        """Flag the task (the instance running it sees the flag at its next heartbeat) and tell
        every instance at once."""
        if self.r.exists(self.task_key(task_id)):
            self.r.hset(self.task_key(task_id), "cancel_requested", "1")
            self.r.publish(self.cancel_channel, task_id)

    @_unavailable
    def cancel_requested(self, task_id: str) -> bool:
        return self.r.hget(self.task_key(task_id), "cancel_requested") == "1"

    def requeue_after_restart(self, max_attempts: int) -> list[Event]:
        """Nothing to do here: this instance's entries are still pending in its consumer, and
        ``take`` runs them again (or fails them by their attempts) first."""
        return []

    # -- webhook outbox ----------------------------------------------------
    @_unavailable
    def due_webhooks(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        flat = self._claim_webhooks(keys=[self._k("outbox"), self._k("outbox", "msgs")],
                                    args=[now, now + OUTBOX_LEASE_SECONDS, limit])
        rows = []
        for msg_id, raw in zip(flat[::2], flat[1::2]):
            if not raw:
                self.r.zrem(self._k("outbox"), msg_id)
                continue
            message = json.loads(raw)
            rows.append({"id": msg_id, "msg_id": msg_id, "url": message["url"], "payload": message["payload"],
                         "attempts": message["attempts"]})
        return rows

    @_unavailable
    def next_webhook_at(self) -> float | None:
        found = self.r.zrange(self._k("outbox"), 0, 0, withscores=True)
        return found[0][1] if found else None

    @_unavailable
    def webhook_result(self, outbox_id: str, *, delivered: bool, error: str | None = None,
                       retry_at: float | None = None) -> None:
        msgs = self._k("outbox", "msgs")
        raw = self.r.hget(msgs, outbox_id)
        if raw is None:
            return
        message = json.loads(raw)
        message["attempts"] += 1
        message["last_error"] = error
        with self.r.pipeline() as pipe:
            if delivered:
                pipe.zrem(self._k("outbox"), outbox_id)
                pipe.hdel(msgs, outbox_id)
            elif retry_at is None:
                pipe.zrem(self._k("outbox"), outbox_id)
                pipe.hdel(msgs, outbox_id)
                pipe.hset(self._k("outbox", "dead"), outbox_id, dumps(message))
            else:
                pipe.hset(msgs, outbox_id, dumps(message))
                pipe.zadd(self._k("outbox"), {outbox_id: retry_at})
            pipe.execute()

    @_unavailable
    def outbox_stats(self) -> dict[str, int]:
        return {"pending": self.r.zcard(self._k("outbox")), "dead": self.r.hlen(self._k("outbox", "dead"))}

    # -- housekeeping ------------------------------------------------------
    @_unavailable
    def prune(self, keep_events: int, keep_seconds: float = KEEP_SECONDS) -> int:
        """Trim the event stream to the newest ``keep_events``; idempotency keys expire by themselves."""
        return int(self.r.xtrim(self.events_key, maxlen=keep_events, approximate=False) or 0)


class _Events(list):
    """Events, plus how far a filtered read scanned (``stream_events`` moves its cursor there)."""

    def __init__(self, events: list[Event], scanned_to: int) -> None:
        super().__init__(events)
        self.scanned_to = scanned_to


def _stream_entries(reply: Any) -> Iterable[tuple[str, dict[str, str]]]:
    """Entries of an XREADGROUP reply, in RESP2 (list) or RESP3 (dict) shape."""
    if not reply:
        return
    streams = reply.items() if isinstance(reply, dict) else reply
    for _, entries in streams:
        if isinstance(reply, dict):  # RESP3: {stream: [[(id, fields), ...]]}
            entries = entries[0] if entries and isinstance(entries[0], list) and entries[0] \
                and isinstance(entries[0][0], (list, tuple)) else entries
        for entry_id, fields in entries:
            yield entry_id, fields or {}
