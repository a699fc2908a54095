"""kill -9 ComfyUI mid-batch, start it again on the same folders: every task is
accounted for (finished ones keep their state and outputs, interrupted ones run
again with attempts + 1, or fail with reason ``restarted`` when no attempts are
left), and webhooks still arrive signed, including ones owed from before."""

from __future__ import annotations

import json

import pytest

from collectors import wait_for
from comfyui_harness import ComfyUIServer
from pack_paths import PACK_ROOT, PROBE_NODES
from service_harness import API, WebhookReceiver, call, probe_workflow, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

SECRET = "whsec_" + "c2VydmljZS1yZXN0YXJ0LXRlc3Qta2V5LTAxMjM0NTY3"


def start(comfyui_dir, work_dir, hooks):
    server = ComfyUIServer(comfyui_dir, work_dir, {"comfyui-twitterchat": PACK_ROOT,
                                                   "twitterchat_test_probes": PROBE_NODES},
                           env={"TWITTERCHAT_WEBHOOK_SECRET": SECRET, "TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"},
                           extra_args=("--disable-api-nodes",))
    return server.start()


def kill9(server):
    process, server.process = server.process, None
    process.kill()
    process.wait(10)


def tasks_of(server, batch_id):
    status, answer, _ = call(server.url, "GET", f"{API}/tasks?batch_id={batch_id}&limit=100")
    assert status == 200, answer
    return {t["task_id"]: t for t in answer["tasks"]}


def test_kill_9_mid_batch_loses_nothing_and_runs_nothing_twice_unsaid(comfyui_dir, tmp_path):
    from standardwebhooks.webhooks import Webhook

    hooks = WebhookReceiver(fail_first=0).start()
    work = tmp_path / "comfyui"
    server = start(comfyui_dir, work, hooks)
    try:
        tasks = [{"workflow": probe_workflow(seconds=1.5, steps=15, width=700 + i), "webhook_url": hooks.url,
                  "metadata": {"n": i}} for i in range(8)]
        status, answer, _ = call(server.url, "POST", f"{API}/batches", {"name": "restart", "tasks": tasks,
                                                                         "webhook_url": hooks.url})
        assert status == 202, answer
        batch_id, ids = answer["batch_id"], answer["task_ids"]
        assert wait_for(lambda: sum(t["status"] == "completed" for t in tasks_of(server, batch_id).values()) >= 2
                        and any(t["status"] == "running" for t in tasks_of(server, batch_id).values()), 90)
        before = tasks_of(server, batch_id)
        kill9(server)

        # First restart: max_attempts 2, so what was in ComfyUI runs again with attempts 2.
        server = start(comfyui_dir, work, hooks)
        after_first = tasks_of(server, batch_id)
        assert set(after_first) == set(ids)
        for task_id, old in before.items():
            if old["status"] == "completed":
                assert after_first[task_id] == old  # state, times and outputs kept
        interrupted = [t for t, old in before.items() if old["status"] == "running"]
        assert interrupted
        # Kill again while a task on its second attempt runs: it has no attempts left.
        assert wait_for(lambda: any(t["status"] == "running" and t["attempts"] == 2
                                    for t in tasks_of(server, batch_id).values()), 60)
        second = tasks_of(server, batch_id)
        last_try = [t for t, v in second.items() if v["status"] == "running" and v["attempts"] == 2]
        kill9(server)
        server = start(comfyui_dir, work, hooks)
        final = wait_final(server.url, ids, timeout=180)
    finally:
        server.stop()
        hooks.stop()
    for task_id in interrupted:
        assert final[task_id]["attempts"] >= 2, final[task_id]
    for task_id in last_try:
        assert final[task_id]["status"] == "failed", final[task_id]
    for task_id, result in final.items():
        if result["status"] == "failed":
            # only a task caught in ComfyUI by both kills: it used its 2 attempts
            assert result["error"]["type"] == "restarted" and "no attempts left" in result["error"]["message"]
            assert result["attempts"] == 2 and second[task_id]["status"] in ("queued", "running"), result
            continue
        assert result["status"] == "completed", result
        assert result["outputs"] and result["outputs"][0]["filename"].endswith(".png")
        # attempts say how often it was handed to ComfyUI: once, or once more per restart it was caught in
        assert 1 <= result["attempts"] <= 2
    failed = {t for t, r in final.items() if r["status"] == "failed"}
    # Webhooks: one signed task webhook per task (final states from before and after the restarts),
    # and the batch's batch.finished, all verifiable.
    verifier = Webhook(SECRET)
    delivered = lambda: [json.loads(r["body"]) for r in hooks.requests]  # noqa: E731
    assert wait_for(lambda: {p["data"].get("task_id") for p in delivered()} >= set(ids)
                    and any(p["type"] == "batch.finished" for p in delivered()), 60), \
        (len(delivered()), set(ids) - {p["data"].get("task_id") for p in delivered()},
         [p["type"] for p in delivered()], [l for l in server.log_text().splitlines() if "webhook" in l][-10:])
    types = {}
    for request in hooks.requests:
        payload = verifier.verify(request["body"], request["headers"])
        types.setdefault(payload["data"].get("task_id") or "batch", set()).add(payload["type"])
    for task_id in ids:
        expected = "task.failed" if task_id in failed else "task.completed"
        assert types[task_id] == {expected}, (task_id, types[task_id])
    assert types["batch"] == {"batch.finished"}
