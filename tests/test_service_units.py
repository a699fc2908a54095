"""The task service's plain parts on real SQLite files: store transitions, batch
counts, restart reconciliation, idempotency, paging, events; settings; webhook
signatures checked with the Standard Webhooks reference library; the URL policy;
the token rules."""

from __future__ import annotations

import json
import sqlite3

import pytest

from comfyui_twitterchat.service.config import load_service_settings, parse_service_settings
from comfyui_twitterchat.service.store import (CANCELLED, COMPLETED, FAILED, RUNNING, SUBMITTED, WAITING, NewTask,
                                               Store)
from comfyui_twitterchat.service.webhooks import WebhookURLError, check_url, retry_delay, signed_headers
from comfyui_twitterchat.utils.settings import ConfigError

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def build(ids, batch_id):
    return {"task_ids": ids, "batch_id": batch_id}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "tasks.sqlite3")
    yield s
    s.close()


def add(store, n=1, **batch):
    result, events = store.add_tasks([NewTask(spec={"workflow": {"1": {}}}) for _ in range(n)], build,
                                     batch=batch or None)
    return result["task_ids"], result["batch_id"], events


def test_states_only_move_forward_and_a_final_state_is_kept(store):
    (task_id,), _, events = add(store)
    assert [e.data["status"] for e in events] == ["queued"]
    assert store.observe(task_id, "running", progress=0.5) == []  # not yet handed to ComfyUI: ignored
    moved, _ = store.mark_submitted(task_id, "w1")
    assert moved and store.get_task(task_id)["attempts"] == 1
    assert store.mark_submitted(task_id, "w1")[0] is False
    store.observe(task_id, "pending", queue_position=2)
    assert store.get_task(task_id)["queue_position"] == 2
    events = store.observe(task_id, "running", progress=0.4, current_node={"id": "2", "type": "K"})
    assert events[0].data["status"] == "running" and events[0].data["current_node"] == {"id": "2", "type": "K"}
    assert store.observe(task_id, "pending", queue_position=1) == []  # never backwards
    store.observe(task_id, "running", progress=0.2)
    assert store.get_task(task_id)["progress"] == 0.4  # progress never goes down
    data, _ = store.finish(task_id, COMPLETED, outputs=[{"node_id": "9", "filename": "a.png"}])
    assert data["status"] == "completed" and data["progress"] == 1.0 and data["queue_position"] is None
    assert store.finish(task_id, FAILED, error={"message": "late"})[0] is None
    assert store.observe(task_id, "running", progress=0.9) == []
    assert store.get_task(task_id)["status"] == "completed"
    assert store.api_counts()["completed"] == 1


def test_a_task_that_ran_between_two_ticks_shows_running_before_its_final_state(store):
    (task_id,), _, _ = add(store)
    store.mark_submitted(task_id, "w1")
    _, events = store.finish(task_id, COMPLETED, started_at=1000.0, finished_at=1001.0, ran=True)
    assert [e.data["status"] for e in events if e.kind == "task"] == ["running", "completed"]
    (other,), _, _ = add(store)
    store.mark_submitted(other, "w1")
    _, events = store.finish(other, CANCELLED, error={"type": "cancelled", "message": "x"})
    assert [e.data["status"] for e in events if e.kind == "task"] == ["cancelled"]


def test_batch_counts_follow_every_transition_and_the_batch_finishes_once(store):
    ids, batch_id, events = add(store, 3, name="b", webhook_url="https://example.org/hook")
    assert events[-1].kind == "batch" and events[-1].data["counts"]["queued"] == 3
    store.mark_submitted(ids[0], "w")
    store.observe(ids[0], "running", progress=0.1)
    assert store.get_batch(batch_id)["counts"] == {"queued": 2, "running": 1, "completed": 0, "failed": 0,
                                                   "cancelled": 0}
    store.finish(ids[0], COMPLETED)
    store.finish(ids[1], CANCELLED, only_from=(WAITING,))
    _, events = store.finish(ids[2], FAILED, error={"message": "boom"})
    batch = store.get_batch(batch_id)
    assert batch["status"] == "finished" and batch["progress"] == 1.0
    assert batch["counts"] == {"queued": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 1}
    assert events[-1].kind == "batch" and events[-1].data["status"] == "finished"
    outbox = store.db.execute("SELECT payload FROM outbox").fetchall()
    assert [json.loads(r["payload"])["type"] for r in outbox] == ["batch.finished"]


def test_restart_requeues_by_attempts_and_fails_the_rest_as_restarted(tmp_path):
    path = tmp_path / "tasks.sqlite3"
    store = Store(path)
    ids, _, _ = add(store, 4)
    for task_id in ids[:3]:
        store.mark_submitted(task_id, "w")
    store.observe(ids[0], "running", progress=0.5)
    store.db.execute("UPDATE tasks SET attempts = 2 WHERE task_id = ?", (ids[1],))
    store.request_cancel(ids[2])
    store.db.close()  # like kill -9: nothing more is written, and the OS frees the owner lock
    store._release_owner()
    store = Store(path)
    assert store.counts[SUBMITTED] == 2 and store.counts[RUNNING] == 1 and store.counts[WAITING] == 1
    store.requeue_after_restart(max_attempts=2)
    again, failed, cancelled, untouched = (store.get_task(t) for t in ids)
    assert again["status"] == "queued" and again["attempts"] == 1 and again["progress"] == 0
    assert store.task_state(ids[0]) == WAITING
    assert failed["status"] == "failed" and failed["error"]["type"] == "restarted"
    assert cancelled["status"] == "cancelled"
    assert untouched["status"] == "queued" and untouched["attempts"] == 0
    assert [t for t, _ in store.next_waiting(10)] == [ids[0], ids[3]]
    store.close()


def test_a_second_comfyui_cannot_open_a_store_in_use(store):
    from comfyui_twitterchat.service.store import StoreError

    with pytest.raises(StoreError, match="in use by another ComfyUI"):
        Store(store.path)
    (task_id,), _, _ = add(store)  # the owner is unaffected
    assert store.get_task(task_id)["status"] == "queued"


def test_waiting_order_is_priority_then_submission(store):
    low, _, _ = add(store, 2)
    result, _ = store.add_tasks([NewTask(spec={}, priority=5)], build)
    assert [t for t, _ in store.next_waiting(3)] == [result["task_ids"][0], *low]


def test_idempotency_replays_the_stored_answer(store):
    first, _ = store.add_tasks([NewTask(spec={})], build, idempotency=("k1", "hash-a"))
    again, events = store.add_tasks([NewTask(spec={})], build, idempotency=("k1", "hash-b"))
    assert again["replay"] and again["body_hash"] == "hash-a" and again["response"] == first["response"]
    assert events == [] and store.api_counts()["queued"] == 1


def test_paging_is_newest_first_and_stable_under_inserts(store):
    ids, _, _ = add(store, 5)
    page, cursor = store.list_tasks(limit=2)
    assert [t["task_id"] for t in page] == ids[::-1][:2] and cursor is not None
    add(store, 3)
    page2, cursor2 = store.list_tasks(limit=2, cursor=cursor)
    assert [t["task_id"] for t in page2] == ids[::-1][2:4]
    page3, cursor3 = store.list_tasks(limit=2, cursor=cursor2)
    assert [t["task_id"] for t in page3] == ids[:1] and cursor3 is None


def test_events_replay_after_an_id_filtered_by_task_and_batch(store):
    (solo,), _, _ = add(store)
    ids, batch_id, _ = add(store, 2, name="b")
    store.mark_submitted(solo, "w")
    everything = store.events_after(0)
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert {e.task_id for e in store.events_after(0, task_id=solo)} == {solo}
    in_batch = store.events_after(0, batch_id=batch_id)
    assert {e.kind for e in in_batch} == {"task", "batch"} and solo not in {e.task_id for e in in_batch}
    middle = everything[1].id
    assert [e.id for e in store.events_after(middle)] == [e.id for e in everything if e.id > middle]
    assert store.prune(keep_events=2) == len(everything) - 2
    assert len(store.events_after(0)) == 2


def test_cancelling_a_batch_counts_each_waiting_task_once(tmp_path):
    store = Store(tmp_path / "frozen.sqlite3", clock=lambda: 1000.0)  # every write at the same instant
    ids, batch_id, _ = add(store, 3, name="b")
    store.finish(ids[0], CANCELLED, only_from=(WAITING,))
    count, events = store.cancel_waiting_in_batch(batch_id, {"type": "cancelled", "message": "x"})
    assert count == 2 and [e.task_id for e in events if e.kind == "task"] == ids[1:]
    assert store.counts[WAITING] == 0 and store.counts[CANCELLED] == 3
    assert store.get_batch(batch_id)["counts"]["cancelled"] == 3 and store.get_batch(batch_id)["counts"]["queued"] == 0
    assert store.cancel_waiting_in_batch(batch_id, {"type": "cancelled", "message": "x"}) == (0, [])
    store.close()


def test_old_webhook_deliveries_and_idempotency_keys_are_pruned(tmp_path):
    now = [1000.0]
    store = Store(tmp_path / "p.sqlite3", clock=lambda: now[0])
    store.add_tasks([NewTask(spec={})], build, idempotency=("k", "h"))
    store._write(lambda events: store._enqueue_webhook("https://example.org/h", "task.completed", {}))
    (row,) = store.due_webhooks(now[0])
    store.webhook_result(row["id"], delivered=True)
    store._write(lambda events: store._enqueue_webhook("https://example.org/h", "task.failed", {}))
    now[0] += 8 * 86400
    assert store.prune(keep_events=1000) == 2  # the delivered webhook and the key; the pending one stays
    assert store.outbox_stats() == {"pending": 1, "dead": 0} and store.idempotent_response("k") is None
    store.close()


def test_a_ten_thousand_task_batch_is_one_transaction(store):
    ids, batch_id, events = add(store, 10_000, name="big")
    assert len(ids) == 10_000 and len(events) == 10_001
    assert store.get_batch(batch_id)["counts"]["queued"] == 10_000 and store.counts[WAITING] == 10_000
    with pytest.raises(sqlite3.IntegrityError):  # a failing insert leaves nothing half-written
        store.add_tasks([NewTask(spec={}, task_id="dup"), NewTask(spec={}, task_id="dup")], build)
    assert store.counts[WAITING] == 10_000 and store.get_task("dup") is None


def test_settings_from_config_and_environment():
    settings = parse_service_settings({"service": {"max_inflight": 3}},
                                      {"TWITTERCHAT_SERVICE_MAX_ATTEMPTS": "4", "TWITTERCHAT_WEBHOOK_SECRET": SECRET,
                                       "TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.org, 127.0.0.1"})
    assert settings.max_inflight == 3 and settings.max_attempts == 4 and len(settings.webhook_key) == 24
    assert settings.webhook_allowed_hosts == ("127.0.0.1", "hooks.example.org")
    assert SECRET not in repr(settings)
    for config, env, key in (({"service": {"max_inflight": 0}}, {}, "max_inflight"),
                             ({"service": {"api_token": "x"}}, {}, "secrets do not belong"),
                             ({}, {"TWITTERCHAT_WEBHOOK_SECRET": "plain"}, "whsec_"),
                             ({}, {"TWITTERCHAT_API_TOKEN": "short"}, "16"),
                             ({}, {"TWITTERCHAT_SERVICE_MAX_WAITING": "lots"}, "MAX_WAITING")):
        with pytest.raises(ConfigError, match=key):
            parse_service_settings(config, env)
    assert load_service_settings({"service": {"max_inflight": -1}}, {}).enabled is False


def test_webhook_signatures_verify_with_the_standard_webhooks_library():
    from standardwebhooks.webhooks import Webhook

    settings = parse_service_settings({}, {"TWITTERCHAT_WEBHOOK_SECRET": SECRET})
    body = json.dumps({"type": "task.completed", "timestamp": "2026-11-25T00:00:00Z", "data": {"task_id": "t"}})
    headers = signed_headers(settings.webhook_key, "msg_1", body)
    assert Webhook(SECRET).verify(body, headers)["data"] == {"task_id": "t"}
    with pytest.raises(Exception):
        Webhook(SECRET).verify(body + " ", headers)
    assert 4 <= retry_delay(1) <= 6 and retry_delay(100) is None


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://10.0.0.8/x", "http://169.254.169.254/latest",
                                 "http://[::1]/x", "http://localhost:8000/x", "ftp://example.org/x",
                                 "https://user:pw@example.org/x", "http://192.168.1.1/"])
def test_webhook_urls_to_private_places_are_refused_by_default(url):
    with pytest.raises(WebhookURLError):
        check_url(url, ())


def test_webhook_urls_that_could_never_be_sent_are_refused_at_submit():
    for url in ("http://a..b.com/hook", "http://" + "x" * 64 + ".example.org/h", "http://example.com:abc/",
                "http://example.com:99999/"):
        with pytest.raises(WebhookURLError):
            check_url(url, ())


def test_a_webhook_send_connects_to_the_address_that_was_checked(monkeypatch):
    import asyncio
    import socket

    from comfyui_twitterchat.service.webhooks import check_resolved, pinned_request

    answers = iter(["93.184.215.14", "127.0.0.1"])  # DNS rebinding: public when checked, loopback after

    async def getaddrinfo(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    async def resolve():
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
        return await check_resolved("https://hooks.example.org/h?x=1", ())

    address = asyncio.run(resolve())
    assert address == "93.184.215.14"
    target, headers, extensions = pinned_request("https://hooks.example.org/h?x=1", address)
    assert target == "https://93.184.215.14:443/h?x=1"
    assert headers == {"host": "hooks.example.org"} and extensions == {"sni_hostname": "hooks.example.org"}
    assert pinned_request("http://127.0.0.1:9/h", None) == ("http://127.0.0.1:9/h", {}, {})


def test_webhook_allow_list():
    assert check_url("http://127.0.0.1:9000/hook", ("127.0.0.1",))
    assert check_url("https://example.org/hook", ())
    with pytest.raises(WebhookURLError, match="ALLOWED_HOSTS"):
        check_url("https://example.org/hook", ("127.0.0.1",))


def test_token_rules(monkeypatch):
    from comfyui_twitterchat.service import routes
    from comfyui_twitterchat.service.comfy_bridge import is_loopback_only

    assert is_loopback_only(["127.0.0.1"]) and is_loopback_only(["::1", "localhost"])
    assert not is_loopback_only(["0.0.0.0"]) and not is_loopback_only(["127.0.0.1", "::"])
    assert not is_loopback_only(["my-host"])

    class Request:
        def __init__(self, auth=None):
            self.headers = {"Authorization": auth} if auth else {}

    def outcome(token, loopback, auth):
        api = routes.Api(lambda: None, parse_service_settings({}, {"TWITTERCHAT_API_TOKEN": token} if token else {}),
                         lambda: None)
        api._loopback = loopback
        try:
            api.authorize(Request(auth))
        except routes.ApiError as exc:
            return exc.status
        return 200

    token = "a-token-of-enough-length"
    assert outcome(None, True, None) == 200
    assert outcome(None, False, None) == 503
    assert outcome(token, True, None) == 401 and outcome(token, False, None) == 401
    assert outcome(token, False, "Bearer nope") == 403 and outcome(token, False, f"Basic {token}") == 401
    assert outcome(token, False, f"Bearer {token}") == 200


class ComfyBridgeDouble:
    """TEST DOUBLE for service/comfy_bridge.py: a prompt neither waiting in ComfyUI's queue nor running."""

    def delete_pending(self, task_id):
        return False

    def interrupt_running(self, task_id):
        return False


def test_a_cancel_that_loses_the_race_with_the_feeder_keeps_following_the_task(tmp_path):
    import asyncio

    from comfyui_twitterchat.service.config import ServiceSettings
    from comfyui_twitterchat.service.tasks import TaskService

    store = Store(tmp_path / "race.sqlite3")
    (task_id,), _, _ = add(store)
    store.mark_submitted(task_id, "w")  # the feeder handed it to ComfyUI ...
    service = TaskService(ServiceSettings(), store, ComfyBridgeDouble(), worker="w", output_root=lambda: tmp_path,
                          websocket=None)
    service.inflight.add(task_id)
    store.task_state = lambda t: WAITING  # ... just after cancel() read it as waiting
    answer = asyncio.run(service.cancel(task_id))
    assert answer["cancelled"] is False and answer["status"] == "queued"
    assert task_id in service.inflight  # its final state, from the monitor, will still be applied
    assert store.cancel_requested(task_id)
    service.executor.shutdown()
    store.close()


def test_a_delivery_that_raises_anything_is_an_attempt_not_a_stuck_outbox_row(tmp_path):
    import asyncio

    from comfyui_twitterchat.service.webhooks import WebhookSender

    now = 1000.0
    store = Store(tmp_path / "w.sqlite3", clock=lambda: now)
    store._write(lambda events: store._enqueue_webhook("http://127.0.0.1:9/h", "task.completed", {"task_id": "t"}))

    class Service:
        def __init__(self):
            self.store = store

        async def run(self, fn, *args, **kwargs):
            return fn(*args, **kwargs)

    class ClientDouble:
        """TEST DOUBLE for httpx.AsyncClient: every send fails with an error httpx does not wrap."""

        async def post(self, *args, **kwargs):
            raise UnicodeError("label too long")

    settings = parse_service_settings({}, {"TWITTERCHAT_WEBHOOK_SECRET": SECRET})
    sender = WebhookSender(Service(), settings.webhook_key, ("127.0.0.1",))
    (row,) = store.due_webhooks(now)
    asyncio.run(sender._deliver(ClientDouble(), row))
    after = store.db.execute("SELECT attempts, next_at, dead, last_error FROM outbox").fetchone()
    assert after["attempts"] == 1 and after["next_at"] > now and not after["dead"]
    assert "UnicodeError" in after["last_error"] and store.due_webhooks(now) == []
    store.close()


def test_the_persona_list_has_the_example_cards_and_the_input_folders_cards_with_uploads(tmp_path):
    from comfyui_twitterchat.service.templates import PACK_ROOT, list_personas

    card = json.loads((PACK_ROOT / "examples" / "personas" / "tea_girl_meilin.json").read_text(encoding="utf-8"))
    (tmp_path / "personas").mkdir()
    (tmp_path / "mine.json").write_text(json.dumps(card), encoding="utf-8")
    (tmp_path / "personas" / "uploaded.json").write_text(json.dumps(card), encoding="utf-8")
    (tmp_path / "notes.json").write_text("{\"not\": \"a card\"}", encoding="utf-8")
    found = list_personas([PACK_ROOT / "examples" / "personas", tmp_path])
    files = [(p["file"], p["folder"]) for p in found]
    assert ("tea_girl_meilin.json", "examples") in files and ("chengdu_baker_xiaoyu.json", "examples") in files
    assert files[-2:] == [("mine.json", "input"), ("personas/uploaded.json", "input")]
    xiaoyu = next(p for p in found if p["file"] == "chengdu_baker_xiaoyu.json")
    assert xiaoyu["user_id"] == "xiaoyu_001" and xiaoyu["name"] == "小雨"
