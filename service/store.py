"""Tasks, batches, events, idempotency keys and the webhook outbox in one SQLite file.

SQLite (WAL) is the single source of truth: every state change is committed
when it is made (ComfyUI runs no shutdown hooks, and may be killed). One
connection, used by one thread at a time (the service runs every call on its
own single store thread); every writing transaction is ``BEGIN IMMEDIATE``.

Internal states: ``waiting`` (only in this store), ``submitted`` (handed to
ComfyUI's queue), ``running``, and the final ``completed``, ``failed``,
``cancelled``. The API reports ``waiting`` and ``submitted`` as ``queued``.
States only move forward; a final state is never changed.

Each mutating method returns the events it wrote, ``(id, kind, data)``, so the
caller can wake event streams; a task's event data is exactly its API JSON.
Counts that requests need (waiting tasks, tasks per state, per-batch counts)
are kept as they change, so no request scans the table.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..utils.file_lock import FileLock

WAITING, SUBMITTED, RUNNING = "waiting", "submitted", "running"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
BuildResponse = Callable[[list, Any], dict]  # (task_ids, batch_id) -> the 202 body
FINAL = (COMPLETED, FAILED, CANCELLED)
STATES = (WAITING, SUBMITTED, RUNNING, *FINAL)
API_STATUS = {WAITING: "queued", SUBMITTED: "queued", RUNNING: "running",
              COMPLETED: COMPLETED, FAILED: FAILED, CANCELLED: CANCELLED}
API_STATUSES = ("queued", "running", COMPLETED, FAILED, CANCELLED)
RANK = {WAITING: 0, SUBMITTED: 1, RUNNING: 2, COMPLETED: 3, FAILED: 3, CANCELLED: 3}
KEEP_SECONDS = 7 * 86400  # idempotency keys and finished webhook deliveries are kept a week
WEBHOOK_TYPES = {COMPLETED: "task.completed", FAILED: "task.failed", CANCELLED: "task.cancelled"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL UNIQUE,
    batch_id TEXT,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    metadata TEXT,
    webhook_url TEXT,
    user_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0,
    current_node TEXT,
    queue_position INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    outputs TEXT,
    worker TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_waiting ON tasks(priority DESC, seq) WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, seq);
CREATE INDEX IF NOT EXISTS tasks_batch ON tasks(batch_id, seq);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    total INTEGER NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL,
    metadata TEXT,
    webhook_url TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    task_id TEXT,
    batch_id TEXT,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id, id);
CREATE INDEX IF NOT EXISTS events_batch ON events(batch_id, id);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    delivered_at REAL,
    dead INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_at) WHERE delivered_at IS NULL AND dead = 0;
"""


class StoreError(RuntimeError):
    """The store cannot be opened or used (the message says which file and why)."""


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class NewTask:
    spec: dict[str, Any]            # {"workflow": {...}} or {"template": name, "params": {...}}
    priority: int = 0
    metadata: dict[str, Any] | None = None
    webhook_url: str | None = None
    user_id: str | None = None
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Event:
    id: int
    kind: str        # "task" | "batch"
    data: dict[str, Any]
    task_id: str | None = None
    batch_id: str | None = None


TASK_COLUMNS = ("task_id, batch_id, state, priority, metadata, user_id, attempts, progress, current_node, "
                "queue_position, created_at, started_at, finished_at, error, outputs, worker, webhook_url, seq")


def task_json(row: sqlite3.Row) -> dict[str, Any]:
    state = row["state"]
    return {
        "task_id": row["task_id"], "batch_id": row["batch_id"], "status": API_STATUS[state],
        "progress": round(row["progress"], 4), "current_node": _loads(row["current_node"]),
        "queue_position": row["queue_position"] if state in (SUBMITTED, RUNNING) else None,
        "attempts": row["attempts"], "priority": row["priority"],
        "created_at": iso(row["created_at"]), "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]), "metadata": _loads(row["metadata"]),
        "user_id": row["user_id"], "worker": row["worker"], "error": _loads(row["error"]),
        "outputs": _loads(row["outputs"]) or [],
    }


def new_task_json(task: NewTask, batch_id: str | None, created_at: str | None) -> dict[str, Any]:
    """What ``task_json`` gives for a task just inserted (without reading it back)."""
    return {"task_id": task.task_id, "batch_id": batch_id, "status": "queued", "progress": 0.0,
            "current_node": None, "queue_position": None, "attempts": 0, "priority": task.priority,
            "created_at": created_at, "started_at": None, "finished_at": None, "metadata": task.metadata,
            "user_id": task.user_id, "worker": None, "error": None, "outputs": []}


def batch_json(row: sqlite3.Row) -> dict[str, Any]:
    counts = {status: row[status] for status in API_STATUSES}
    done = row["completed"] + row["failed"] + row["cancelled"]
    total = row["total"]
    return {
        "batch_id": row["batch_id"], "name": row["name"],
        "status": "finished" if row["finished_at"] is not None else "active",
        "total": total, "counts": counts, "progress": round(done / total, 4) if total else 1.0,
        "created_at": iso(row["created_at"]), "finished_at": iso(row["finished_at"]),
        "metadata": _loads(row["metadata"]),
    }


class Store:
    def __init__(self, path: str | Path, clock=time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()  # one thread at a time; the service uses one thread anyway
        self._owner = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One ComfyUI per store: a second one would take the first one's running tasks for
            # leftovers of a restart. The lock dies with the process, even on kill -9.
            self._owner = FileLock(self.path, timeout=0).acquire()
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                      timeout=5.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except TimeoutError:  # before OSError: TimeoutError is one
            raise StoreError(f"the task store {self.path} is in use by another ComfyUI; give each instance "
                             "its own TWITTERCHAT_SERVICE_DB_PATH (or user directory)") from None
        except (OSError, sqlite3.Error) as exc:
            self._release_owner()
            raise StoreError(f"cannot open the task store {self.path}: {exc}") from exc
        self.counts = {state: 0 for state in STATES}
        for row in self.db.execute("SELECT state, count(*) AS n FROM tasks GROUP BY state"):
            self.counts[row["state"]] = row["n"]

    def close(self) -> None:
        with self._lock:
            self.db.close()
            self._release_owner()

    def _release_owner(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.release()

    # -- transactions ------------------------------------------------------
    def _write(self, work):
        """Run ``work(pending_events)`` in one BEGIN IMMEDIATE transaction; return its events."""
        with self._lock:
            events: list[Event] = []
            counts = dict(self.counts)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work(events)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                self.counts = counts
                raise
            return result, events

    def _event(self, events: list[Event], kind: str, data: dict[str, Any], task_id: str | None,
               batch_id: str | None) -> None:
        cursor = self.db.execute(
            "INSERT INTO events (kind, task_id, batch_id, data, created_at) VALUES (?, ?, ?, ?, ?)",
            (kind, task_id, batch_id, dumps(data), self.clock()))
        events.append(Event(cursor.lastrowid, kind, data, task_id, batch_id))

    def _task_events(self, events: list[Event], datas: list[dict[str, Any]], batch_id: str | None,
                     now: float) -> None:
        """One ``task`` event per task JSON, written in bulk (a 10,000-task batch stays well under a
        second). The write lock is held, so the AUTOINCREMENT ids just taken are contiguous."""
        self.db.executemany(
            "INSERT INTO events (kind, task_id, batch_id, data, created_at) VALUES ('task', ?, ?, ?, ?)",
            [(d["task_id"], batch_id, dumps(d), now) for d in datas])
        last = self.db.execute("SELECT max(id) FROM events").fetchone()[0]
        events.extend(Event(last - len(datas) + 1 + i, "task", d, d["task_id"], batch_id)
                      for i, d in enumerate(datas))

    def _task_row(self, task_id: str) -> sqlite3.Row | None:
        return self.db.execute(f"SELECT {TASK_COLUMNS}, spec, cancel_requested FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()

    def _task_changed(self, events: list[Event], task_id: str) -> dict[str, Any]:
        row = self._task_row(task_id)
        data = task_json(row)
        self._event(events, "task", data, task_id, row["batch_id"])
        return data

    def _move_batch_count(self, events: list[Event], batch_id: str | None, old: str | None, new: str) -> None:
        if batch_id is None or (old is not None and API_STATUS[old] == API_STATUS[new]):
            return
        sets = [f"{API_STATUS[new]} = {API_STATUS[new]} + 1"]
        if old is not None:
            sets.append(f"{API_STATUS[old]} = {API_STATUS[old]} - 1")
        self.db.execute(f"UPDATE batches SET {', '.join(sets)} WHERE batch_id = ?", (batch_id,))
        self._batch_changed(events, batch_id)

    def _batch_changed(self, events: list[Event], batch_id: str) -> None:
        """A batch event with its new counts; the batch finishes (once) when every task is final."""
        row = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            return
        done = row["completed"] + row["failed"] + row["cancelled"]
        if done == row["total"] and row["finished_at"] is None:
            self.db.execute("UPDATE batches SET finished_at = ? WHERE batch_id = ?", (self.clock(), batch_id))
            row = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row["webhook_url"]:
                self._enqueue_webhook(row["webhook_url"], "batch.finished", batch_json(row))
        self._event(events, "batch", batch_json(row), None, batch_id)

    def _set_state(self, row: sqlite3.Row, new: str) -> None:
        self.counts[row["state"]] -= 1
        self.counts[new] += 1

    def _enqueue_webhook(self, url: str, event_type: str, data: dict[str, Any]) -> None:
        now = self.clock()
        payload = {"type": event_type, "timestamp": iso(now), "data": data}
        self.db.execute("INSERT INTO outbox (msg_id, url, payload, next_at, created_at) VALUES (?, ?, ?, ?, ?)",
                        (f"msg_{uuid.uuid4().hex}", url, dumps(payload), now, now))

    # -- submitting --------------------------------------------------------
    def add_tasks(self, tasks: list[NewTask], build: BuildResponse, *, batch: Mapping[str, Any] | None = None,
                  idempotency: tuple[str, str] | None = None) -> tuple[dict[str, Any], list[Event]]:
        """Insert tasks (and their batch) in one transaction; returns (result, events).

        ``build(task_ids, batch_id)`` makes the response; ``idempotency`` is
        (key, body hash): the response is stored under the key, and a key stored
        meanwhile by a concurrent request wins (its response is returned).
        """
        def work(events: list[Event]) -> dict[str, Any]:
            if idempotency is not None:
                stored = self.db.execute("SELECT body_hash, response FROM idempotency WHERE key = ?",
                                         (idempotency[0],)).fetchone()
                if stored is not None:
                    return {"replay": True, "body_hash": stored["body_hash"],
                            "response": json.loads(stored["response"])}
            now = self.clock()
            batch_id = None
            if batch is not None:
                batch_id = batch.get("batch_id") or str(uuid.uuid4())
                self.db.execute(
                    "INSERT INTO batches (batch_id, name, total, queued, created_at, metadata, webhook_url) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (batch_id, batch["name"], len(tasks), len(tasks), now,
                     dumps(batch.get("metadata")) if batch.get("metadata") is not None else None,
                     batch.get("webhook_url")))
            rows = [(t.task_id, batch_id, WAITING, t.priority, dumps(t.spec),
                     dumps(t.metadata) if t.metadata is not None else None, t.webhook_url, t.user_id, now)
                    for t in tasks]
            self.db.executemany(
                "INSERT INTO tasks (task_id, batch_id, state, priority, spec, metadata, webhook_url, user_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.counts[WAITING] += len(tasks)
            created = iso(now)
            self._task_events(events, [new_task_json(t, batch_id, created) for t in tasks], batch_id, now)
            if batch_id is not None:
                brow = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
                self._event(events, "batch", batch_json(brow), None, batch_id)
            task_ids = [t.task_id for t in tasks]
            response = build(task_ids, batch_id)
            if idempotency is not None:
                self.db.execute("INSERT INTO idempotency (key, body_hash, response, created_at) VALUES (?, ?, ?, ?)",
                                (idempotency[0], idempotency[1], dumps(response), now))
            return {"replay": False, "task_ids": task_ids, "batch_id": batch_id, "response": response}

        return self._write(work)

    def idempotent_response(self, key: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            row = self.db.execute("SELECT body_hash, response FROM idempotency WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row["body_hash"], json.loads(row["response"]))

    # -- reading -----------------------------------------------------------
    def get_task(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else task_json(row)

    def task_state(self, task_id: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else row["state"]

    def task_worker(self, task_id: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT worker FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else row["worker"]

    def task_spec(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT spec FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else json.loads(row["spec"])

    def list_tasks(self, status: str | None = None, batch_id: str | None = None, limit: int = 50,
                   cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Newest first; ``cursor`` is the ``seq`` below which to continue (stable under inserts)."""
        where, args = [], []
        if status is not None:
            states = [s for s, api in API_STATUS.items() if api == status]
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if batch_id is not None:
            where.append("batch_id = ?")
            args.append(batch_id)
        if cursor is not None:
            where.append("seq < ?")
            args.append(cursor)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self.db.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [task_json(r) for r in rows], (rows[-1]["seq"] if more and rows else None)

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else batch_json(row)

    def list_batches(self, limit: int = 50, cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        sql, args = "SELECT * FROM batches", []
        if cursor is not None:
            sql, args = sql + " WHERE seq < ?", [cursor]
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [batch_json(r) for r in rows], (rows[-1]["seq"] if more and rows else None)

    def batch_task_ids(self, batch_id: str, states: Iterable[str]) -> list[str]:
        states = list(states)
        with self._lock:
            rows = self.db.execute(
                f"SELECT task_id FROM tasks WHERE batch_id = ? AND state IN ({', '.join('?' * len(states))})",
                (batch_id, *states)).fetchall()
        return [r["task_id"] for r in rows]

    def ids_in_states(self, states: Iterable[str]) -> list[str]:
        states = list(states)
        with self._lock:
            rows = self.db.execute(f"SELECT task_id FROM tasks WHERE state IN ({', '.join('?' * len(states))})",
                                   states).fetchall()
        return [r["task_id"] for r in rows]

    def next_waiting(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """The next waiting tasks in priority, then submission order."""
        with self._lock:
            rows = self.db.execute("SELECT task_id, spec FROM tasks WHERE state = 'waiting' "
                                   "ORDER BY priority DESC, seq LIMIT ?", (limit,)).fetchall()
        return [(r["task_id"], json.loads(r["spec"])) for r in rows]

    def events_after(self, after: int, task_id: str | None = None, batch_id: str | None = None,
                     limit: int = 500) -> list[Event]:
        where, args = ["id > ?"], [after]
        if task_id is not None:
            where.append("task_id = ?")
            args.append(task_id)
        if batch_id is not None:
            where.append("batch_id = ?")
            args.append(batch_id)
        with self._lock:
            rows = self.db.execute(f"SELECT id, kind, task_id, batch_id, data FROM events WHERE "
                                   f"{' AND '.join(where)} ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [Event(r["id"], r["kind"], json.loads(r["data"]), r["task_id"], r["batch_id"]) for r in rows]

    def last_event_id(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT max(id) FROM events").fetchone()
        return row[0] or 0

    def api_counts(self) -> dict[str, int]:
        counts = {status: 0 for status in API_STATUSES}
        for state, n in self.counts.items():
            counts[API_STATUS[state]] += n
        return counts

    # -- state changes -----------------------------------------------------
    def mark_submitted(self, task_id: str, worker: str | None) -> tuple[bool, list[Event]]:
        """waiting -> submitted with attempts + 1, written before the prompt enters ComfyUI's queue."""
        def work(events: list[Event]) -> bool:
            row = self._task_row(task_id)
            if row is None or row["state"] != WAITING:
                return False
            self.db.execute("UPDATE tasks SET state = ?, attempts = attempts + 1, worker = ?, progress = 0, "
                            "current_node = NULL, queue_position = NULL WHERE task_id = ?",
                            (SUBMITTED, worker, task_id))
            self._set_state(row, SUBMITTED)
            self._task_changed(events, task_id)
            return True

        return self._write(work)

    def take(self, worker: str, room: int, *, max_attempts: int, block_ms: int = 0
             ) -> tuple[list[tuple[str, dict[str, Any], str | None]], list[Event]]:
        """Up to ``room`` waiting tasks, marked submitted to ``worker`` (the queue contract the Redis
        store shares; one instance has no leases, so ``max_attempts`` and ``block_ms`` play no part)."""
        taken, events = [], []
        for task_id, spec in self.next_waiting(room):
            moved, more = self.mark_submitted(task_id, worker)
            events += more
            if moved:
                taken.append((task_id, spec, None))
        return taken, events

    def observe(self, task_id: str, status: str, *, progress: float | None = None,
                current_node: dict[str, Any] | None = None, queue_position: int | None = None,
                started_at: float | None = None, worker: str | None = None) -> list[Event]:
        """A non-final monitor info (``pending`` or ``running``); never moves a task backwards.
        ``worker`` is for the shared (Redis) store; one instance owns every task here."""
        def work(events: list[Event]) -> None:
            row = self._task_row(task_id)
            if row is None or row["state"] in FINAL:
                return
            state = RUNNING if status == "running" else SUBMITTED
            if RANK[state] < RANK[row["state"]] or row["state"] == WAITING:
                return
            new_progress = max(row["progress"], progress or 0.0)
            node = dumps(current_node) if current_node is not None else None
            position = 0 if state == RUNNING else queue_position
            if (state, new_progress, node, position) == (row["state"], row["progress"], row["current_node"],
                                                         row["queue_position"]):
                return
            started = row["started_at"]
            if state == RUNNING and started is None:
                started = started_at or self.clock()
            self.db.execute("UPDATE tasks SET state = ?, progress = ?, current_node = ?, queue_position = ?, "
                            "started_at = ? WHERE task_id = ?",
                            (state, new_progress, node, position, started, task_id))
            if state != row["state"]:
                self._set_state(row, state)
                self._move_batch_count(events, row["batch_id"], row["state"], state)
            self._task_changed(events, task_id)

        return self._write(work)[1]

    def finish(self, task_id: str, state: str, *, error: dict[str, Any] | None = None,
               outputs: list[dict[str, Any]] | None = None, started_at: float | None = None,
               finished_at: float | None = None, only_from: Iterable[str] | None = None,
               ran: bool = False) -> tuple[dict[str, Any] | None, list[Event]]:
        """Move a task to a final state (once); returns its JSON when it moved.

        ``ran``: ComfyUI's history shows the prompt started (a task never seen
        running gets its ``running`` event first).
        """
        assert state in FINAL

        def work(events: list[Event]) -> dict[str, Any] | None:
            row = self._task_row(task_id)
            if row is None or row["state"] in FINAL:
                return None
            if only_from is not None and row["state"] not in only_from:
                return None
            if ran and row["state"] == SUBMITTED:
                # It ran between two monitor ticks: say so, so every follower sees queued -> running -> final.
                self.db.execute("UPDATE tasks SET state = ?, queue_position = 0, started_at = COALESCE(?, "
                                "started_at, ?) WHERE task_id = ?", (RUNNING, started_at, self.clock(), task_id))
                self._set_state(row, RUNNING)
                self._task_changed(events, task_id)
                self._move_batch_count(events, row["batch_id"], SUBMITTED, RUNNING)
                row = self._task_row(task_id)
            progress = 1.0 if state == COMPLETED else row["progress"]
            self.db.execute(
                "UPDATE tasks SET state = ?, progress = ?, current_node = NULL, queue_position = NULL, "
                "started_at = COALESCE(?, started_at), finished_at = ?, error = ?, outputs = ? WHERE task_id = ?",
                (state, progress, started_at, finished_at or self.clock(), dumps(error) if error is not None else None,
                 dumps(outputs or []), task_id))
            self._set_state(row, state)
            data = self._task_changed(events, task_id)
            if row["webhook_url"]:
                self._enqueue_webhook(row["webhook_url"], WEBHOOK_TYPES[state], data)
            self._move_batch_count(events, row["batch_id"], row["state"], state)
            return data

        return self._write(work)

    def cancel_waiting_in_batch(self, batch_id: str, error: dict[str, Any]) -> tuple[int, list[Event]]:
        """Cancel every task of a batch still waiting in the store, in one transaction."""
        def work(events: list[Event]) -> int:
            now = self.clock()
            seqs = [r[0] for r in self.db.execute("SELECT seq FROM tasks WHERE batch_id = ? AND state = ?",
                                                  (batch_id, WAITING))]
            if not seqs:
                return 0
            self.db.execute("UPDATE tasks SET state = ?, finished_at = ?, error = ?, cancel_requested = 1 "
                            "WHERE batch_id = ? AND state = ?", (CANCELLED, now, dumps(error), batch_id, WAITING))
            rows = []  # exactly the tasks selected above: the write lock is held since then
            for start in range(0, len(seqs), 500):
                chunk = seqs[start:start + 500]
                rows += self.db.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE seq IN "
                                        f"({', '.join('?' * len(chunk))}) ORDER BY seq", chunk).fetchall()
            self.counts[WAITING] -= len(rows)
            self.counts[CANCELLED] += len(rows)
            datas = [task_json(row) for row in rows]
            self._task_events(events, datas, batch_id, now)
            for row, data in zip(rows, datas):
                if row["webhook_url"]:
                    self._enqueue_webhook(row["webhook_url"], WEBHOOK_TYPES[CANCELLED], data)
            self.db.execute("UPDATE batches SET queued = queued - ?, cancelled = cancelled + ? WHERE batch_id = ?",
                            (len(rows), len(rows), batch_id))
            self._batch_changed(events, batch_id)
            return len(rows)

        return self._write(work)

    def request_cancel(self, task_id: str) -> None:
        with self._lock:
            self.db.execute("UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?", (task_id,))

    def cancel_requested(self, task_id: str) -> bool:
        with self._lock:
            row = self.db.execute("SELECT cancel_requested FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return bool(row and row[0])

    def requeue_after_restart(self, max_attempts: int) -> list[Event]:
        """Tasks that were in ComfyUI's queue or running when it stopped: waiting again, or failed."""
        def work(events: list[Event]) -> None:
            rows = self.db.execute(f"SELECT {TASK_COLUMNS}, cancel_requested FROM tasks WHERE state IN (?, ?)",
                                   (SUBMITTED, RUNNING)).fetchall()
            for row in rows:
                task_id = row["task_id"]
                if row["cancel_requested"]:
                    self._finish_in_tx(events, row, CANCELLED,
                                       {"type": "cancelled", "message": "cancelled; ComfyUI restarted before "
                                                                        "the cancel was confirmed"})
                elif row["attempts"] >= max_attempts:
                    self._finish_in_tx(events, row, FAILED, {
                        "type": "restarted", "message": f"ComfyUI restarted while the task was "
                                                        f"{API_STATUS[row['state']]}; no attempts left "
                                                        f"({row['attempts']} of {max_attempts})"})
                else:
                    self.db.execute("UPDATE tasks SET state = ?, progress = 0, current_node = NULL, "
                                    "queue_position = NULL, started_at = NULL WHERE task_id = ?",
                                    (WAITING, task_id))
                    self._set_state(row, WAITING)
                    self._move_batch_count(events, row["batch_id"], row["state"], WAITING)
                    self._task_changed(events, task_id)

        return self._write(work)[1]

    def _finish_in_tx(self, events: list[Event], row: sqlite3.Row, state: str, error: dict[str, Any]) -> None:
        self.db.execute("UPDATE tasks SET state = ?, current_node = NULL, queue_position = NULL, finished_at = ?, "
                        "error = ? WHERE task_id = ?", (state, self.clock(), dumps(error), row["task_id"]))
        self._set_state(row, state)
        data = self._task_changed(events, row["task_id"])
        if row["webhook_url"]:
            self._enqueue_webhook(row["webhook_url"], WEBHOOK_TYPES[state], data)
        self._move_batch_count(events, row["batch_id"], row["state"], state)

    # -- webhook outbox ----------------------------------------------------
    def due_webhooks(self, now: float, limit: int = 20) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.execute("SELECT id, msg_id, url, payload, attempts FROM outbox WHERE delivered_at IS NULL "
                                   "AND dead = 0 AND next_at <= ? ORDER BY next_at LIMIT ?", (now, limit)).fetchall()

    def next_webhook_at(self) -> float | None:
        with self._lock:
            row = self.db.execute("SELECT min(next_at) FROM outbox WHERE delivered_at IS NULL AND dead = 0").fetchone()
        return row[0]

    def webhook_result(self, outbox_id: int, *, delivered: bool, error: str | None = None,
                       retry_at: float | None = None) -> None:
        with self._lock:
            if delivered:
                self.db.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                                "WHERE id = ?", (self.clock(), outbox_id))
            elif retry_at is None:
                self.db.execute("UPDATE outbox SET dead = 1, attempts = attempts + 1, last_error = ? WHERE id = ?",
                                (error, outbox_id))
            else:
                self.db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                                (retry_at, error, outbox_id))

    def outbox_stats(self) -> dict[str, int]:
        """Pending deliveries (through the partial index) and given-up ones (few; pruned)."""
        with self._lock:
            pending = self.db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND dead = 0").fetchone()
            dead = self.db.execute("SELECT count(*) FROM outbox WHERE dead = 1").fetchone()
        return {"pending": pending[0], "dead": dead[0]}

    # -- housekeeping ------------------------------------------------------
    def prune(self, keep_events: int, keep_seconds: float = KEEP_SECONDS) -> int:
        """Drop events beyond the newest ``keep_events``, and delivered or given-up webhooks and
        idempotency keys older than ``keep_seconds``; tasks and batches are kept."""
        with self._lock:
            removed = 0
            last = self.db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
            if last > keep_events:
                removed += self.db.execute("DELETE FROM events WHERE id <= ?", (last - keep_events,)).rowcount
            before = self.clock() - keep_seconds
            removed += self.db.execute("DELETE FROM outbox WHERE (delivered_at IS NOT NULL OR dead = 1) "
                                       "AND created_at < ?", (before,)).rowcount
            removed += self.db.execute("DELETE FROM idempotency WHERE created_at < ?", (before,)).rowcount
            return removed

