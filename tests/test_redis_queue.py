"""The shared queue's rules on a real redis-server (AOF on): leases, take-over with attempts,
the dead-letter stream, a consumer's own entries after a restart, acknowledgement only with
the final state, the cancel channel, fencing of a run another instance took over, and Redis
killed and restarted with nothing lost. The whole-system proof with three ComfyUI
instances is tests/test_scale_out_e2e.py."""

from __future__ import annotations

import time

import pytest
import redis

from ci_policy import need
from comfyui_twitterchat.service.redis_store import GROUP, RedisStore, StoreUnavailable
from comfyui_twitterchat.service.store import COMPLETED, FAILED, SUBMITTED, NewTask

LEASE = 0.6


def build(ids, batch_id):
    return {"task_ids": ids}


@pytest.fixture
def aof_redis(tmp_path):
    from redis_harness import RedisServer, redis_binary

    need(redis_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def open_store(server, **kwargs):
    store = RedisStore(server.url, prefix="q", lease_seconds=kwargs.pop("lease", LEASE), **kwargs)
    store.open()
    return store


def add(store, n=1):
    result, _ = store.add_tasks([NewTask(spec={"workflow": {"1": {"i": i}}}) for i in range(n)], build)
    return result["task_ids"]


def pending(store):
    return store.r.xpending(store.jobs, GROUP)["pending"]


def test_an_entry_whose_instance_stops_renewing_is_taken_over_with_one_more_attempt(aof_redis):
    a, b = open_store(aof_redis), open_store(aof_redis)
    (task_id,) = add(a)
    taken, _ = a.take("A", 1, max_attempts=3)
    entry = taken[0][2]
    assert b.take("B", 1, max_attempts=3)[0] == []  # A holds a live lease
    time.sleep(LEASE + 0.2)  # A "died": no heartbeat
    again, events = b.take("B", 1, max_attempts=3)
    assert [(t[0], t[2]) for t in again] == [(task_id, entry)]
    task = b.get_task(task_id)
    assert task["attempts"] == 2 and task["worker"] == "B" and task["status"] == "queued"
    assert events[-1].data["worker"] == "B"
    lost, _ = a.heartbeat("A", {task_id: entry})
    assert lost == [task_id]  # A learns its lease is gone; it cannot renew B's


def test_renewed_leases_are_never_taken_over(aof_redis):
    a, b = open_store(aof_redis), open_store(aof_redis)
    (task_id,) = add(a)
    ((_, _, entry),), _ = a.take("A", 1, max_attempts=3)
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        assert a.heartbeat("A", {task_id: entry}) == ([], [])
        assert b.take("B", 1, max_attempts=3)[0] == []
        time.sleep(LEASE / 4)
    assert a.get_task(task_id)["worker"] == "A"


def test_a_task_past_its_attempts_fails_and_goes_to_the_dead_letter_stream(aof_redis):
    a = open_store(aof_redis)
    (task_id,) = add(a)
    a.take("A", 1, max_attempts=2)
    time.sleep(LEASE + 0.2)
    assert len(a.take("B", 1, max_attempts=2)[0]) == 1  # second attempt
    time.sleep(LEASE + 0.2)
    taken, events = a.take("C", 1, max_attempts=2)
    assert taken == []
    task = a.get_task(task_id)
    assert task["status"] == "failed" and task["error"]["type"] == "no_attempts_left"
    assert "B" in task["error"]["message"]
    dead = a.r.xrange(a.dead)
    assert [fields["task_id"] for _, fields in dead] == [task_id]
    assert pending(a) == 0 and a.r.xlen(a.jobs) == 0


def test_a_restarted_instance_runs_its_own_pending_entries_first(aof_redis):
    before = open_store(aof_redis)
    ids = add(before, 3)
    before.take("A", 2, max_attempts=3)
    after = open_store(aof_redis)  # the same consumer name in a new process: its ComfyUI queue is empty
    taken, _ = after.take("A", 2, max_attempts=3)
    assert [t[0] for t in taken] == ids[:2]
    assert [after.get_task(t)["attempts"] for t in ids[:2]] == [2, 2]
    assert [t[0] for t in after.take("A", 2, max_attempts=3)[0]] == ids[2:]


def test_an_entry_is_acknowledged_only_with_its_final_state(aof_redis):
    store = open_store(aof_redis)
    ids = add(store, 2)
    store.take("A", 2, max_attempts=3)
    assert pending(store) == 2
    store.observe(ids[0], "running", progress=0.5, worker="A")
    assert pending(store) == 2
    store.finish(ids[0], COMPLETED)
    store.finish(ids[1], FAILED, error={"type": "x"})
    assert pending(store) == 0 and store.r.xlen(store.jobs) == 0


def test_a_task_cancelled_while_waiting_is_never_run(aof_redis):
    store = open_store(aof_redis)
    (task_id,) = add(store)
    store.finish(task_id, "cancelled", only_from=("waiting",))
    assert store.take("A", 1, max_attempts=3)[0] == []
    assert pending(store) == 0 and store.r.xlen(store.jobs) == 0


def test_only_the_instance_holding_a_task_moves_it(aof_redis):
    store = open_store(aof_redis)
    (task_id,) = add(store)
    store.take("A", 1, max_attempts=3)
    assert store.observe(task_id, "running", progress=0.3, worker="B") == []
    assert store.task_state(task_id) == SUBMITTED
    assert store.observe(task_id, "running", progress=0.3, worker="A")[-1].data["status"] == "running"


def test_a_cancel_request_is_published_to_every_instance_and_flagged_for_the_heartbeat(aof_redis):
    store = open_store(aof_redis)
    (task_id,) = add(store)
    ((_, _, entry),), _ = store.take("A", 1, max_attempts=3)
    listener = redis.Redis.from_url(aof_redis.url, decode_responses=True).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(store.cancel_channel)
    listener.get_message(timeout=1.0)
    store.request_cancel(task_id)
    message = listener.get_message(timeout=2.0)
    assert message is not None and message["data"] == task_id
    assert store.heartbeat("A", {task_id: entry}) == ([], [task_id])
    listener.close()


def test_redis_killed_answers_a_clear_error_and_after_its_restart_nothing_is_lost(aof_redis):
    store = open_store(aof_redis)
    ids = add(store, 3)
    store.take("A", 1, max_attempts=3)
    aof_redis.kill()
    with pytest.raises(StoreUnavailable) as caught:
        add(store)
    assert "Redis at redis://127.0.0.1:" in caught.value.public and "unreachable" in caught.value.public
    with pytest.raises(StoreUnavailable):
        store.finish(ids[0], COMPLETED)
    aof_redis.start()
    data, _ = store.finish(ids[0], COMPLETED)  # the running task's result is stored once Redis is back
    assert data["status"] == "completed"
    assert [t[0] for t in store.take("A", 5, max_attempts=3)[0]] == ids[1:]
    assert store.api_counts() == {"queued": 2, "running": 0, "completed": 1, "failed": 0, "cancelled": 0}
