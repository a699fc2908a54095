"""One contract for both task stores: the SQLite file (one instance) and Redis (many
instances, tests/harness/redis_harness.py runs a real redis-server). Every test here
runs against both, so the service can use either without knowing which."""

from __future__ import annotations

import pytest

from comfyui_twitterchat.service.redis_store import RedisStore
from comfyui_twitterchat.service.store import (CANCELLED, COMPLETED, FAILED, RUNNING, SUBMITTED, WAITING, NewTask,
                                               Store)


def build(ids, batch_id):
    return {"task_ids": ids, "batch_id": batch_id}


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(tmp_path / "tasks.sqlite3")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix="contract", lease_seconds=60)
        s.open()
    yield s
    s.close()


def add(store, n=1, priority=0, webhook_url=None, **batch):
    tasks = [NewTask(spec={"workflow": {"1": {"n": i}}}, priority=priority, webhook_url=webhook_url)
             for i in range(n)]
    result, events = store.add_tasks(tasks, build, batch=batch or None)
    return result["task_ids"], result["batch_id"], events


def test_submitted_tasks_are_read_back_and_listed_newest_first_in_pages(store):
    first, _, events = add(store, 3)
    assert [e.data["status"] for e in events] == ["queued"] * 3
    assert [e.id for e in events] == sorted(e.id for e in events) and len({e.id for e in events}) == 3
    second, batch_id, _ = add(store, 2, name="b")
    task = store.get_task(first[0])
    assert task["status"] == "queued" and task["attempts"] == 0 and task["batch_id"] is None
    assert store.task_spec(first[1]) == {"workflow": {"1": {"n": 1}}}
    page, cursor = store.list_tasks(limit=2)
    assert [t["task_id"] for t in page] == second[::-1]
    rest, end = store.list_tasks(limit=10, cursor=cursor)
    assert [t["task_id"] for t in rest] == first[::-1] and end is None
    in_batch, _ = store.list_tasks(batch_id=batch_id)
    assert [t["task_id"] for t in in_batch] == second[::-1]
    assert store.get_batch(batch_id)["counts"]["queued"] == 2
    assert store.api_counts()["queued"] == 5
    assert store.get_task("no-such-task") is None and store.get_batch("no-such-batch") is None


def test_take_marks_tasks_submitted_in_submission_order_and_only_once(store):
    ids, _, _ = add(store, 3)
    taken, events = store.take("w1", 2, max_attempts=2)
    assert [t[0] for t in taken] == ids[:2]
    assert taken[0][1] == {"workflow": {"1": {"n": 0}}}
    assert [e.data["status"] for e in events if e.kind == "task"] == ["queued", "queued"]
    task = store.get_task(ids[0])
    assert task["attempts"] == 1 and task["worker"] == "w1" and store.task_worker(ids[0]) == "w1"
    assert store.task_state(ids[0]) == SUBMITTED
    again, _ = store.take("w2", 5, max_attempts=2)
    assert [t[0] for t in again] == ids[2:]


def test_states_only_move_forward_and_a_final_state_is_written_once(store):
    (task_id,), _, _ = add(store)
    assert store.observe(task_id, "running", progress=0.5) == []  # still waiting: ignored
    store.take("w", 1, max_attempts=2)
    events = store.observe(task_id, "running", progress=0.4, current_node={"id": "2", "type": "K"})
    assert events[-1].data["status"] == "running" and events[-1].data["current_node"] == {"id": "2", "type": "K"}
    assert store.observe(task_id, "pending", queue_position=1) == []  # never backwards
    store.observe(task_id, "running", progress=0.2)
    assert store.get_task(task_id)["progress"] == 0.4  # progress never shrinks
    data, events = store.finish(task_id, COMPLETED, outputs=[{"kind": "post", "text": "hi"}])
    assert data["status"] == "completed" and data["progress"] == 1.0 and data["outputs"][0]["text"] == "hi"
    assert store.finish(task_id, FAILED, error={"type": "x"})[0] is None
    assert store.observe(task_id, "running", progress=0.9) == []
    assert store.get_task(task_id)["status"] == "completed"
    assert store.task_state(task_id) == COMPLETED


def test_a_task_that_ran_between_two_ticks_is_shown_running_before_its_end(store):
    (task_id,), _, _ = add(store)
    store.take("w", 1, max_attempts=2)
    _, events = store.finish(task_id, FAILED, error={"type": "boom", "message": "m"}, ran=True)
    statuses = [e.data["status"] for e in events if e.kind == "task"]
    assert statuses == ["running", "failed"]
    assert store.get_task(task_id)["error"] == {"type": "boom", "message": "m"}


def test_only_from_refuses_a_move_from_another_state(store):
    (task_id,), _, _ = add(store)
    store.take("w", 1, max_attempts=2)
    assert store.finish(task_id, CANCELLED, only_from=(WAITING,))[0] is None
    assert store.task_state(task_id) == SUBMITTED


def test_batch_counts_follow_their_tasks_and_the_batch_finishes_once_with_its_webhook(store):
    ids, batch_id, events = add(store, 3, webhook_url="https://example.com/hook", name="spring",
                                metadata={"campaign": "x"})
    assert events[-1].kind == "batch" and events[-1].data["counts"]["queued"] == 3
    store.take("w", 3, max_attempts=2)
    store.observe(ids[0], "running", progress=0.1)
    assert store.get_batch(batch_id)["counts"] == {"queued": 2, "running": 1, "completed": 0, "failed": 0,
                                                   "cancelled": 0}
    store.finish(ids[0], COMPLETED)
    store.finish(ids[1], FAILED, error={"type": "e"})
    _, events = store.finish(ids[2], CANCELLED, error={"type": "cancelled"})
    batch = store.get_batch(batch_id)
    assert batch["status"] == "finished" and batch["progress"] == 1.0
    assert batch["counts"] == {"queued": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 1}
    assert events[-1].kind == "batch" and events[-1].data["status"] == "finished"
    due = store.due_webhooks(now=9e12)
    kinds = sorted(__import__("json").loads(row["payload"])["type"] for row in due)
    assert kinds == ["task.cancelled", "task.completed", "task.failed"]
    assert store.api_counts() == {"queued": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 1}


def test_cancelling_a_batch_cancels_only_its_waiting_tasks_in_one_go(store):
    ids, batch_id, _ = add(store, 5, name="b")
    store.take("w", 1, max_attempts=2)
    count, events = store.cancel_waiting_in_batch(batch_id, {"type": "cancelled", "message": "with its batch"})
    assert count == 4
    assert {e.data["task_id"] for e in events if e.kind == "task"} == set(ids[1:])
    assert store.task_state(ids[0]) == SUBMITTED
    assert store.get_batch(batch_id)["counts"]["cancelled"] == 4
    assert store.batch_task_ids(batch_id, (SUBMITTED, RUNNING)) == ids[:1]
    assert store.take("w", 5, max_attempts=2)[0] == []  # cancelled tasks are never handed out


def test_an_idempotency_key_replays_the_first_answer(store):
    tasks = [NewTask(spec={"workflow": {}})]
    first, _ = store.add_tasks(tasks, build, idempotency=("/tasks:k1", "hash-a"))
    again, events = store.add_tasks([NewTask(spec={"workflow": {}})], build, idempotency=("/tasks:k1", "hash-a"))
    assert again["replay"] and again["response"] == first["response"] and events == []
    assert store.idempotent_response("/tasks:k1") == ("hash-a", first["response"])
    assert store.idempotent_response("/tasks:other") is None
    assert store.api_counts()["queued"] == 1


def test_events_come_in_order_with_whole_number_ids_and_filter_by_task_and_batch(store):
    start = store.last_event_id()
    (lone,), _, _ = add(store)
    ids, batch_id, _ = add(store, 2, name="b")
    store.take("w", 3, max_attempts=2)
    store.finish(lone, COMPLETED)
    events = store.events_after(start)
    assert [e.id for e in events] == sorted(e.id for e in events) and all(isinstance(e.id, int) for e in events)
    assert events[-1].id == store.last_event_id()
    mine = store.events_after(0, task_id=lone)
    assert [e.data["status"] for e in mine] == ["queued", "queued", "completed"]
    in_batch = store.events_after(0, batch_id=batch_id)
    assert {e.task_id for e in in_batch if e.kind == "task"} == set(ids)
    assert store.events_after(mine[-1].id, task_id=lone) == []
    page = store.events_after(start, limit=2)
    assert len(page) == 2 and page[0].id == events[0].id


def test_a_cancel_request_is_recorded(store):
    (task_id,), _, _ = add(store)
    assert store.cancel_requested(task_id) is False
    store.request_cancel(task_id)
    assert store.cancel_requested(task_id) is True


def test_webhook_deliveries_are_retried_then_given_up_or_delivered(store):
    (a, b), _, _ = add(store, 2, webhook_url="https://example.com/hook")
    store.take("w", 2, max_attempts=2)
    store.finish(a, COMPLETED)
    store.finish(b, FAILED)
    rows = store.due_webhooks(now=9e12)
    assert len(rows) == 2 and store.due_webhooks(now=0) == []
    store.webhook_result(rows[0]["id"], delivered=False, error="HTTP 500", retry_at=1.0)
    store.webhook_result(rows[1]["id"], delivered=True)
    assert store.outbox_stats() == {"pending": 1, "dead": 0}
    retry = store.due_webhooks(now=9e12)
    assert [r["msg_id"] for r in retry] == [rows[0]["msg_id"]] and retry[0]["attempts"] == 1
    store.webhook_result(retry[0]["id"], delivered=False, error="HTTP 410")
    assert store.outbox_stats() == {"pending": 0, "dead": 1}
    assert store.next_webhook_at() is None


def test_pruning_keeps_the_newest_events_and_every_task(store):
    ids, _, _ = add(store, 30)
    store.prune(keep_events=10)
    kept = store.events_after(0, limit=1000)
    assert len(kept) == 10 and kept[-1].id == store.last_event_id()
    assert store.list_tasks(limit=100)[0][-1]["task_id"] == ids[0]
    assert store.get_task(ids[0])["status"] == "queued"
