"""The task service on a ComfyUI that listens on 0.0.0.0 (traffic still goes to
127.0.0.1 only): the bearer token is enforced, and the 400/409/413/429 paths
answer clearly and store nothing. Also UI-format workflows: converted with the
server's node definitions, or refused with a message to export the API format."""

from __future__ import annotations

import json

import pytest

from service_harness import API, call, probe_workflow, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

TOKEN = "tc-test-token-7f3a9c1e5b2d4f60"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(comfyui_server_factory):
    server = comfyui_server_factory(env={"TWITTERCHAT_API_TOKEN": TOKEN, "TWITTERCHAT_SERVICE_MAX_WAITING": "3",
                                         "TWITTERCHAT_SERVICE_MAX_INFLIGHT": "1"},
                                    extra_args=("--listen", "0.0.0.0"))
    return server


def count_tasks(server) -> int:
    status, answer, _ = call(server.url, "GET", f"{API}/tasks?limit=500", headers=AUTH)
    assert status == 200
    return len(answer["tasks"])


def test_token_is_required_beyond_loopback(guarded):
    for method, path in (("GET", f"{API}/tasks"), ("POST", f"{API}/tasks"), ("GET", "/twitterchat/metrics"),
                         ("GET", f"{API}/events"), ("POST", f"{API}/batches/x/cancel"), ("GET", "/twitterchat/health")):
        status, answer, _ = call(guarded.url, method, path, {} if method == "POST" else None)
        assert status == 401 and answer["error"]["type"] == "unauthorized", (path, answer)
        status, answer, _ = call(guarded.url, method, path, {} if method == "POST" else None,
                                 headers={"Authorization": "Bearer wrong-token-wrong-token"})
        assert status == 403 and answer["error"]["type"] == "forbidden", (path, answer)
        assert TOKEN not in json.dumps(answer)
    status, answer, _ = call(guarded.url, "GET", f"{API}/tasks", headers=AUTH)
    assert status == 200 and answer["tasks"] == []
    # ComfyUI's own routes are ComfyUI's business; the API prefix copy of ours is guarded too.
    assert call(guarded.url, "GET", f"/api{API}/tasks")[0] == 401


def test_invalid_workflows_are_refused_with_comfyuis_node_errors_and_nothing_is_stored(guarded):
    broken = probe_workflow(width=16)
    del broken["2"]["inputs"]["image"]
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"workflow": broken}, headers=AUTH)
    assert status == 400 and answer["error"]["type"] == "invalid_workflow", answer
    assert "2" in answer["error"]["node_errors"]
    assert answer["error"]["node_errors"]["2"]["class_type"] == "TCProbeSlow"
    for body, fragment in (({"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}, "NoSuchNode"),
                           ({"workflow": "not a workflow"}, "API-format"),
                           ({"template": "persona_posts", "params": {"persona_file": "../../etc/passwd",
                                                                     "user_id": "u1"}}, "persona_file"),
                           ({"template": "persona_posts", "params": {"persona_file": "tea_girl_meilin.json",
                                                                     "user_id": "../x"}}, "user_id"),
                           ({"workflow": probe_workflow(), "priority": "high"}, "priority"),
                           ({"workflow": probe_workflow(), "extra_data": {"api_key_comfy_org": "x"}}, "extra_data")):
        status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", body, headers=AUTH)
        assert status == 400 and fragment in answer["error"]["message"], (body, answer)
    pasted = "sk-pasted-into-the-profile-field-0123456789"
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"template": "persona_posts", "params": {
        "persona_file": "tea_girl_meilin.json", "user_id": "u1", "llm_profile": pasted}}, headers=AUTH)
    assert status == 400 and "llm_profile" in answer["error"]["message"] and pasted not in json.dumps(answer)
    assert pasted not in guarded.log_text()
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"workflow": {"1": 5}}, headers=AUTH)
    assert status == 400 and answer["error"]["type"] == "invalid_workflow", answer
    status, answer, _ = call(guarded.url, "POST", f"{API}/batches", {
        "name": "n", "template": "persona_posts", "personas": ["tea_girl_meilin.json"], "priority": 10 ** 20},
        headers=AUTH)
    assert status == 400 and "priority" in answer["error"]["message"], answer
    status, answer, _ = call(guarded.url, "POST", f"{API}/batches", {
        "name": "n", "template": "persona_posts", "personas": [["a list"]]}, headers=AUTH)
    assert status == 400 and "personas[0]" in answer["error"]["message"], answer
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", raw=b"{not json", headers=AUTH)
    assert status == 400 and answer["error"]["type"] == "invalid_request"
    assert count_tasks(guarded) == 0


def test_ui_format_workflows_are_converted_or_refused(guarded):
    ui = {"last_node_id": 3, "last_link_id": 2, "version": 0.4, "links": [[1, 1, 0, 2, 0, "IMAGE"],
                                                                          [2, 2, 0, 3, 0, "IMAGE"]],
          "nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
                     "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [24, 8, 1, 0]},
                    {"id": 2, "type": "TCProbeSlow", "mode": 0,
                     "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
                     "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": [0.1, 2]},
                    {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
                     "outputs": [], "widgets_values": ["ui_converted"]}]}
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"workflow": ui}, headers=AUTH)
    assert status == 202, answer
    result = wait_final(guarded.url, [answer["task_id"]], headers=AUTH)[answer["task_id"]]
    assert result["status"] == "completed" and result["outputs"][0]["filename"].startswith("ui_converted")
    ui["nodes"][1]["mode"] = 4  # bypassed: no safe conversion
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"workflow": ui}, headers=AUTH)
    assert status == 400 and "API" in answer["error"]["message"], answer


def test_idempotency_keys_replay_the_first_answer_and_refuse_another_body(guarded):
    before = count_tasks(guarded)
    body = {"workflow": probe_workflow(seconds=0.05, width=32), "metadata": {"try": 1}}
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = call(guarded.url, "POST", f"{API}/tasks", body, headers=headers)
    again = call(guarded.url, "POST", f"{API}/tasks", body, headers=headers)
    assert first[0] == again[0] == 202 and first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    other = call(guarded.url, "POST", f"{API}/tasks", {**body, "metadata": {"try": 2}}, headers=headers)
    assert other[0] == 409 and other[1]["error"]["type"] == "idempotency_conflict"
    assert count_tasks(guarded) == before + 1
    # ComfyUI also serves every route under /api: the same key there is the same key.
    alias = call(guarded.url, "POST", f"/api{API}/tasks", body, headers=headers)
    assert alias[0] == 202 and alias[1] == first[1]
    assert count_tasks(guarded) == before + 1
    # A refused body with a key is refused again the same way, and still stores nothing.
    bad = {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}
    answers = [call(guarded.url, "POST", f"{API}/tasks", bad, headers={**AUTH, "Idempotency-Key": "bad-1"})
               for _ in range(2)]
    assert answers[0][:2] == answers[1][:2] and answers[0][0] == 400
    wait_final(guarded.url, [first[1]["task_id"]], headers=AUTH)
    assert count_tasks(guarded) == before + 1


def test_size_limits_and_a_full_queue(guarded):
    huge = json.dumps({"workflow": probe_workflow(), "metadata": {"x": "y" * (21 * 1024 * 1024)}}).encode()
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", raw=huge, headers=AUTH)
    assert status == 413 and answer["error"]["type"] == "too_large"
    status, answer, _ = call(guarded.url, "POST", f"{API}/batches",
                             {"name": "too many", "tasks": [{"workflow": probe_workflow()}] * 10_001}, headers=AUTH)
    assert status == 413 and "10000" in answer["error"]["message"]
    status, answer, _ = call(guarded.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(), "metadata":
                                                                  {"x": "y" * 5000}}, headers=AUTH)
    assert status == 413
    # max_inflight 1 and at most 3 waiting: one runs, three wait, the next is refused with Retry-After.
    blocker = call(guarded.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(seconds=4, steps=8, width=40)},
                   headers=AUTH)[1]["task_id"]
    from collectors import wait_for

    assert wait_for(lambda: call(guarded.url, "GET", f"{API}/tasks/{blocker}", headers=AUTH)[1]["status"]
                    == "running", 30)
    status, batch, _ = call(guarded.url, "POST", f"{API}/batches", {
        "name": "fills the queue", "tasks": [{"workflow": probe_workflow(seconds=0.05, width=41 + i)} for i in range(3)]},
        headers=AUTH)
    assert status == 202, batch
    status, answer, headers = call(guarded.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(width=50)},
                                   headers=AUTH)
    assert status == 429 and answer["error"]["type"] == "queue_full" and int(headers["Retry-After"]) > 0
    status, answer, _ = call(guarded.url, "POST", f"{API}/batches/{batch['batch_id']}/cancel", headers=AUTH)
    assert status == 200 and answer["cancelled"] == 3
    call(guarded.url, "POST", f"{API}/tasks/{blocker}/cancel", headers=AUTH)
    final = wait_final(guarded.url, [blocker, *batch["task_ids"]], headers=AUTH)
    assert all(final[t]["status"] == "cancelled" for t in batch["task_ids"])
    status, summary, _ = call(guarded.url, "GET", f"{API}/batches/{batch['batch_id']}", headers=AUTH)
    assert summary["status"] == "finished" and summary["counts"]["cancelled"] == 3


def test_personas_offered_are_the_cards_only(guarded):
    (guarded.input_dir / "second_card.json").write_text(json.dumps({
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {"name": "Second", "description": "d", "personality": "p", "scenario": "", "first_mes": "hi",
                 "mes_example": "", "extensions": {"twitterchat": {"user_id": "second_01"}}}}))
    (guarded.input_dir / "not_a_card.json").write_text("{}")
    status, answer, _ = call(guarded.url, "GET", f"{API}/personas", headers=AUTH)
    assert status == 200, answer
    by_file = {p["file"]: p for p in answer["personas"]}
    assert by_file["tea_girl_meilin.json"]["folder"] == "examples"
    assert by_file["tea_girl_meilin.json"]["user_id"] == "tea_girl_meilin" and by_file["tea_girl_meilin.json"]["name"]
    assert by_file["second_card.json"] == {"file": "second_card.json", "name": "Second", "user_id": "second_01",
                                           "folder": "input"}
    assert not {"not_a_card.json", "workflow.json", "workflow_api.json"} & set(by_file)
    assert call(guarded.url, "GET", f"{API}/personas")[0] == 401


def test_the_store_holds_no_extra_data_and_no_token(guarded):
    store = guarded.work_dir / "user" / "__twitterchat" / "tasks.sqlite3"
    assert store.is_file()
    raw = b"".join(p.read_bytes() for p in store.parent.glob("tasks.sqlite3*"))
    assert b"extra_data" not in raw and b"create_time" not in raw and TOKEN.encode() not in raw
    assert TOKEN not in guarded.log_text()
