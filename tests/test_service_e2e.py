"""The task service on a real ComfyUI (0.3.75 from the harness) with the probe
nodes: 50 mixed tasks followed over SSE and the websocket, cancelling a
waiting, a queued and a running task beside someone else's prompt, priorities,
a 20-persona batch against the OpenAI test double, and signed webhooks."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from collectors import WebsocketCollector, wait_for
from openai_double import Faults, FakeOpenAIServer
from service_harness import API, SSECollector, WebhookReceiver, call, probe_workflow, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, test only
KEY = "sk-service-e2e-abcdefghijklmnopqrstuvwxyz0123"
FINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def llm_double():
    server = FakeOpenAIServer(Faults(latency=0.05)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hooks():
    receiver = WebhookReceiver(fail_first=1).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def service(comfyui_server_factory, llm_double, hooks):
    return comfyui_server_factory(env={
        "OPENAI_BASE_URL": llm_double.base_url, "OPENAI_API_KEY": KEY, "TWITTERCHAT_WEATHER_URL": "",
        "TWITTERCHAT_WEBHOOK_SECRET": SECRET, "TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"})


def submit(server, body, headers=None):
    status, answer, _ = call(server.url, "POST", f"{API}/tasks", body, headers=headers)
    assert status == 202, answer
    assert answer["status"] == "queued" and answer["batch_id"] is None
    return answer["task_id"]


def task(server, task_id):
    status, answer, _ = call(server.url, "GET", f"{API}/tasks/{task_id}")
    assert status == 200, answer
    return answer


def test_fifty_tasks_reach_their_final_states_live_over_sse_and_the_websocket(service):
    sse = SSECollector(service.url)
    ws = WebsocketCollector(service.url, "twitterchat.task")
    kinds = {}
    try:
        for i in range(50):
            if i % 5 == 0:
                body, kind = {"workflow": probe_workflow(seconds=1.2, steps=12, width=8 + i)}, "slow"
            elif i % 5 == 1:
                body, kind = {"workflow": probe_workflow(seconds=0.05, width=8 + i, fail=f"probe {i} failed")}, "fail"
            else:
                body, kind = {"workflow": probe_workflow(seconds=0.05, steps=2, width=8 + i)}, "quick"
            body["metadata"] = {"n": i, "kind": kind}
            kinds[submit(service, body)] = kind
            if i == 20:
                sse.cut()  # a client cut off mid-stream resumes with Last-Event-ID and misses nothing
        final = wait_final(service.url, list(kinds), timeout=240)
        assert wait_for(lambda: all(sse.task_statuses(t)[-1:] in (["completed"], ["failed"]) for t in kinds), 20)
        assert wait_for(lambda: all(any(m["task_id"] == t and m["status"] in FINAL for m in ws.messages)
                                    for t in kinds), 20)
    finally:
        sse.stop()
        ws.stop()
    assert sse.connections >= 2
    ids = [event_id for event_id, *_ in sse.events]
    assert ids == sorted(set(ids)), "SSE events were repeated or reordered across the reconnect"
    for task_id, kind in kinds.items():
        result = final[task_id]
        assert result["metadata"]["kind"] == kind
        assert result["attempts"] == 1
        assert result["started_at"] and result["finished_at"] and result["created_at"] <= result["started_at"]
        statuses = sse.task_statuses(task_id)
        assert statuses[0] == "queued" and "running" in statuses, (task_id, statuses)
        seen = [m["status"] for m in ws.messages if m["task_id"] == task_id]
        assert "queued" in seen and "running" in seen and seen[-1] == result["status"], seen
        for sequence in (statuses, seen):  # states only move forward
            ranks = [("queued", "running").index(s) if s in ("queued", "running") else 2 for s in sequence]
            assert ranks == sorted(ranks), sequence
        if kind == "fail":
            assert result["status"] == "failed", result
            error = result["error"]
            assert error["message"] == f"probe {result['metadata']['n']} failed"
            assert error["node_type"] == "TCProbeFail" and error["type"] == "ValueError"
            assert len(error["traceback"]) == 2 and "innermost" in error["traceback"][-1]
            assert result["outputs"] == []
        else:
            assert result["status"] == "completed" and result["progress"] == 1.0 and result["error"] is None
            (image,) = result["outputs"]
            assert image["node_id"] == "9" and image["type"] == "output" and image["filename"].endswith(".png")
            with urllib.request.urlopen(service.url + image["url"], timeout=10) as response:
                assert response.read(8) == b"\x89PNG\r\n\x1a\n"
        if kind == "slow":
            progress = [d["progress"] for _, k, d, _ in sse.events
                        if k == "task" and d["task_id"] == task_id and d["status"] == "running"]
            assert any(0 < p < 1 for p in progress), progress
            nodes = [d["current_node"] for _, k, d, _ in sse.events if k == "task" and d["task_id"] == task_id
                     and d["current_node"]]
            assert {"id": "2", "type": "TCProbeSlow"} in nodes
    # The task JSON never carries the workflow or ComfyUI's extra_data.
    raw = json.dumps([d for _, _, d, _ in sse.events])
    assert "extra_data" not in raw and "TCProbeSlow\", \"inputs\"" not in raw and "class_type" not in raw


def test_list_is_newest_first_and_pages_stably_while_tasks_are_added(service):
    first = [submit(service, {"workflow": probe_workflow(seconds=0.01, width=200 + i)}) for i in range(6)]
    status, page, _ = call(service.url, "GET", f"{API}/tasks?limit=4")
    assert status == 200 and len(page["tasks"]) == 4 and page["next_cursor"]
    assert [t["task_id"] for t in page["tasks"]] == first[::-1][:4]
    later = submit(service, {"workflow": probe_workflow(seconds=0.01, width=300)})  # inserted between pages
    status, page2, _ = call(service.url, "GET", f"{API}/tasks?limit=4&cursor={page['next_cursor']}")
    assert [t["task_id"] for t in page2["tasks"]][:2] == first[::-1][4:6]
    assert later not in [t["task_id"] for t in page2["tasks"]]
    wait_final(service.url, first + [later])
    status, done, _ = call(service.url, "GET", f"{API}/tasks?status=completed&limit=500")
    assert status == 200 and set(first) <= {t["task_id"] for t in done["tasks"]}
    assert all(t["status"] == "completed" for t in done["tasks"])
    assert call(service.url, "GET", f"{API}/tasks?status=bogus")[0] == 400


def test_cancel_waiting_queued_and_running_while_other_prompts_keep_running(service):
    running = submit(service, {"workflow": probe_workflow(seconds=6, steps=60, width=401)})
    queued = submit(service, {"workflow": probe_workflow(seconds=2, steps=10, width=402)})
    waiting = submit(service, {"workflow": probe_workflow(seconds=2, steps=10, width=403)})
    later = submit(service, {"workflow": probe_workflow(seconds=0.2, steps=2, width=404)})
    assert wait_for(lambda: task(service, running)["status"] == "running", 60)
    assert wait_for(lambda: task(service, queued)["queue_position"] is not None, 30)
    # Someone else's prompt, queued straight to ComfyUI: never touched by the service's cancel.
    other = service.queue_prompt(probe_workflow(seconds=1, steps=5, width=405))
    assert task(service, waiting)["queue_position"] is None  # still in the service, not in ComfyUI

    status, answer, _ = call(service.url, "POST", f"{API}/tasks/{waiting}/cancel")
    assert status == 200 and answer["cancelled"] and answer["status"] == "cancelled", answer
    status, answer, _ = call(service.url, "DELETE", f"{API}/tasks/{queued}")
    assert status == 200 and answer["cancelled"] and answer["status"] == "cancelled", answer
    status, answer, _ = call(service.url, "POST", f"{API}/tasks/{running}/cancel")
    assert status == 200 and answer["cancelled"], answer

    final = wait_final(service.url, [running, queued, waiting, later], timeout=60)
    assert final[running]["status"] == "cancelled" and final[running]["error"]["type"] == "cancelled"
    assert final[running]["progress"] < 1.0
    assert final[queued]["status"] == "cancelled" and final[waiting]["status"] == "cancelled"
    assert final[waiting]["attempts"] == 0 and final[waiting]["started_at"] is None
    assert final[later]["status"] == "completed"
    assert service.wait_for_history(other, 60)["status"]["status_str"] == "success"
    for never_ran in (queued, waiting):
        assert service.get_json(f"/history/{never_ran}") == {}
    # Cancelling a finished task changes nothing, and says so.
    status, answer, _ = call(service.url, "POST", f"{API}/tasks/{later}/cancel")
    assert status == 200 and answer["cancelled"] is False and "already" in answer["message"]
    assert task(service, later)["status"] == "completed"
    # Someone else's prompt is not a task.
    assert call(service.url, "POST", f"{API}/tasks/{other}/cancel")[0] == 404


def test_cancelling_a_batch_while_it_is_being_fed_leaves_no_task_behind(service):
    for attempt in range(3):  # the race: a task read as waiting is handed to ComfyUI as the cancel runs
        status, batch, _ = call(service.url, "POST", f"{API}/batches", {
            "name": f"cancelled while fed {attempt}",
            "tasks": [{"workflow": probe_workflow(seconds=0.2, steps=1, width=1000 + 100 * attempt + i)}
                      for i in range(30)]})  # each one distinct: ComfyUI's cache would skip repeats
        assert status == 202
        time.sleep(0.3 + 0.2 * attempt)
        status, answer, _ = call(service.url, "POST", f"{API}/batches/{batch['batch_id']}/cancel")
        assert status == 200 and answer["cancelled"] > 0
        final = wait_final(service.url, batch["task_ids"], timeout=60)
        assert all(t["status"] in ("completed", "cancelled") for t in final.values())
        status, summary, _ = call(service.url, "GET", f"{API}/batches/{batch['batch_id']}")
        assert summary["status"] == "finished" and summary["counts"]["queued"] == 0, summary


def test_higher_priority_runs_before_earlier_waiting_tasks(service):
    blockers = [submit(service, {"workflow": probe_workflow(seconds=1.0, steps=4, width=500 + i)}) for i in range(2)]
    low = [submit(service, {"workflow": probe_workflow(seconds=0.05, width=510 + i)}) for i in range(3)]
    high = submit(service, {"workflow": probe_workflow(seconds=0.05, width=520), "priority": 10})
    final = wait_final(service.url, blockers + low + [high], timeout=60)
    assert final[high]["priority"] == 10
    assert all(final[high]["started_at"] < final[t]["started_at"] for t in low)


def test_a_twenty_persona_batch_against_the_openai_double(service, llm_double, hooks):
    from pack_paths import PERSONAS_DIR

    base = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text())
    personas = []
    for i in range(20):
        persona = json.loads(json.dumps(base))
        persona["data"]["name"] = f"Persona {i}"
        personas.append({"persona_json": json.dumps(persona), "user_id": f"persona_{i:02d}"})
    personas[0] = "tea_girl_meilin.json"  # a bare file name: user id from the card, else the file stem
    sse = SSECollector(service.url)
    try:
        status, answer, _ = call(service.url, "POST", f"{API}/batches", {
            "name": "twenty personas", "template": "persona_posts", "personas": personas,
            "params": {"num_days": 2, "start_day_offset": 0, "llm_profile": "openai"},
            "webhook_url": hooks.url, "metadata": {"campaign": "e2e"}})
        assert status == 202, answer
        batch_id, task_ids = answer["batch_id"], answer["task_ids"]
        assert len(task_ids) == 20
        final = wait_final(service.url, task_ids, timeout=400)
        assert wait_for(lambda: any(k == "batch" and d["batch_id"] == batch_id and d["status"] == "finished"
                                    for _, k, d, _ in sse.events), 20)
    finally:
        sse.stop()
    status, batch, _ = call(service.url, "GET", f"{API}/batches/{batch_id}")
    assert status == 200 and batch["status"] == "finished" and batch["progress"] == 1.0
    assert batch["counts"] == {"queued": 0, "running": 0, "completed": 20, "failed": 0, "cancelled": 0}
    assert batch["metadata"] == {"campaign": "e2e"} and batch["name"] == "twenty personas"
    users = set()
    for task_id in task_ids:
        result = final[task_id]
        assert result["status"] == "completed", result["error"]
        assert result["batch_id"] == batch_id
        posts = [o for o in result["outputs"] if o.get("kind") == "post"]
        assert len(posts) == 2, result["outputs"]
        for post in posts:
            assert post["text"] and post["user_id"] == result["user_id"] and post["date"]
            assert (service.output_dir / post["folder"] / "tweet.txt").read_text().strip() == post["text"]
        users.add(result["user_id"])
    assert len(users) == 20 and "tea_girl_meilin" in users  # the card names no user id: the file stem
    status, listed, _ = call(service.url, "GET", f"{API}/tasks?batch_id={batch_id}&limit=100")
    assert {t["task_id"] for t in listed["tasks"]} == set(task_ids)
    # The key never reached a task record, an event or a webhook.
    assert KEY not in json.dumps(final) and KEY not in json.dumps([d for _, _, d, _ in sse.events])
    assert wait_for(lambda: any(json.loads(r["body"])["type"] == "batch.finished" for r in hooks.requests), 30)
    assert all(KEY not in r["body"] for r in hooks.requests)


def test_webhooks_are_signed_retried_and_verifiable(service, hooks):
    from standardwebhooks.webhooks import Webhook

    done = submit(service, {"workflow": probe_workflow(seconds=0.05, width=600), "webhook_url": hooks.url,
                            "metadata": {"hook": "ok"}})
    failed = submit(service, {"workflow": probe_workflow(seconds=0.05, width=601, fail="hooked failure"),
                              "webhook_url": hooks.url})
    wait_final(service.url, [done, failed])

    def deliveries(task_id):
        return [r for r in hooks.requests if json.loads(r["body"])["data"].get("task_id") == task_id]

    assert wait_for(lambda: deliveries(done) and deliveries(failed), 40)
    verifier = Webhook(SECRET)
    for task_id, kind in ((done, "task.completed"), (failed, "task.failed")):
        request = deliveries(task_id)[-1]
        payload = verifier.verify(request["body"], request["headers"])
        assert payload["type"] == kind and payload["data"]["task_id"] == task_id and payload["timestamp"]
        assert request["headers"]["webhook-id"].startswith("msg_")
    # The receiver failed its first delivery on purpose: the same message came again (same webhook-id).
    first_id = hooks.requests[0]["headers"]["webhook-id"]
    assert wait_for(lambda: sum(r["headers"]["webhook-id"] == first_id for r in hooks.requests) >= 2, 30)
    tampered = dict(deliveries(done)[-1]["headers"])
    with pytest.raises(Exception):
        verifier.verify(deliveries(done)[-1]["body"].replace("ok", "ko"), tampered)
    # Only allowed hosts: a private address is refused at submit time, and nothing is stored.
    status, answer, _ = call(service.url, "POST", f"{API}/tasks", {
        "workflow": probe_workflow(width=602), "webhook_url": "http://10.1.2.3/hook"})
    assert status == 400 and answer["error"]["type"] == "invalid_webhook_url", answer


def test_health_and_metrics(service):
    status, health, _ = call(service.url, "GET", "/twitterchat/health")
    assert status == 200 and health["status"] == "ok" and health["monitor_running"] is True
    assert health["queue_depth"]["waiting"] >= 0 and health["tasks"]["completed"] > 0
    with urllib.request.urlopen(service.url + "/twitterchat/metrics", timeout=10) as response:
        text = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain")
    completed = [line for line in text.splitlines() if line.startswith('twitterchat_tasks{status="completed"}')]
    assert completed and float(completed[0].split()[-1]) == health["tasks"]["completed"]
    assert "twitterchat_task_duration_seconds_bucket" in text
    assert 'twitterchat_llm_requests_total{profile="openai"}' in text
    assert 'twitterchat_monitor_sent_total{channel="websocket"}' in text
    assert "twitterchat_waiting_tasks" in text


def run_cli(service, *args, env=None, timeout=240):
    """The `twitterchat` command as a user runs it (the pack loaded from this checkout)."""
    import os
    import subprocess
    import sys

    from pack_paths import PACK_ROOT

    bootstrap = ("import sys; sys.path.insert(0, sys.argv[1]); from pack_paths import load_pack; load_pack(); "
                 "from comfyui_twitterchat.client.cli import main; sys.exit(main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", bootstrap, str(PACK_ROOT / "tests" / "harness"), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TWITTERCHAT_URL": service.url, **(env or {})})


def test_python_client_sync_and_async(service):
    import asyncio

    from comfyui_twitterchat.client import AsyncTwitterChatClient, TwitterChatClient, TwitterChatError

    with TwitterChatClient(service.url) as client:
        batch = client.submit_batch("client batch", tasks=[
            {"workflow": probe_workflow(seconds=0.3, steps=3, width=800 + i)} for i in range(4)]
            + [{"workflow": probe_workflow(seconds=0.05, width=810, fail="client sees this")}])
        results = client.wait_for_batch(batch["batch_id"], timeout=120)
        assert sorted(r["status"] for r in results) == ["completed"] * 4 + ["failed"]
        assert {r["task_id"] for r in results} == set(batch["task_ids"])
        assert client.get_batch(batch["batch_id"])["status"] == "finished"
        one = client.submit_task(probe_workflow(seconds=0.05, width=820), metadata={"via": "client"})
        final = client.wait(one["task_id"], timeout=60)
        assert final["status"] == "completed" and final["metadata"] == {"via": "client"}
        with pytest.raises(TwitterChatError) as refused:
            client.submit_task({"1": {"class_type": "NoSuchNode", "inputs": {}}})
        assert refused.value.status == 400 and refused.value.type == "invalid_workflow"

    async def run_async():
        async with AsyncTwitterChatClient(service.url) as client:
            task = await client.submit_task(probe_workflow(seconds=0.05, width=830))
            return await client.wait(task["task_id"], timeout=60)

    assert asyncio.run(run_async())["status"] == "completed"


def test_cli_submit_batch_status_cancel_and_exit_codes(service, tmp_path):
    from pack_paths import PERSONAS_DIR

    good = tmp_path / "good_api.json"
    good.write_text(json.dumps(probe_workflow(seconds=0.05, width=900)))
    done = run_cli(service, "submit", str(good), "--wait", "--json")
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["task_id"]
    assert task(service, task_id)["status"] == "completed"
    bad = tmp_path / "fails_api.json"
    bad.write_text(json.dumps(probe_workflow(seconds=0.05, width=901, fail="cli failure")))
    failed = run_cli(service, "submit", str(bad), "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    status = run_cli(service, "status", task_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    cards = tmp_path / "cards"
    cards.mkdir()
    for i in range(2):
        card = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text())
        card["data"]["name"] = f"CLI {i}"
        (cards / f"cli_persona_{i}.json").write_text(json.dumps(card))
    batch = run_cli(service, "batch", "--personas", str(cards / "*.json"), "--days", "1",
                    "--llm-profile", "openai", "--watch")
    assert batch.returncode == 0, batch.stdout + batch.stderr
    slow = tmp_path / "slow_api.json"
    slow.write_text(json.dumps(probe_workflow(seconds=20, steps=40, width=902)))
    queued = run_cli(service, "submit", str(slow), "--json")
    slow_id = json.loads(queued.stdout)["task_id"]
    cancelled = run_cli(service, "cancel", slow_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_final(service.url, [slow_id], timeout=60)[slow_id]["status"] == "cancelled"
    unreachable = run_cli(service, "status", task_id, env={"TWITTERCHAT_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr
