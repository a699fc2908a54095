"""Scale-out with real processes on loopback: three ComfyUI instances from the harness pull
tasks from one Redis Streams consumer group on one real redis-server (AOF on).

In one run, because three ComfyUI start-ups are the expensive part:
1. 60 probe tasks of 0.5 s submitted to instance A: all complete, each instance ran at
   least 10 (counted in each ComfyUI's own history), the runs add up to the tasks plus
   the re-runs the tasks report; C's /events and B's websocket saw every task end (once);
   each task
   names its worker and its output URL points at that instance.
2. kill -9 instance B while it runs a task: another instance takes the task over after
   the lease and completes it (attempts 2); nothing is lost.
3. kill -9 redis-server mid-run and start it again: submissions answer 503 with a clear
   message meanwhile, ComfyUI keeps serving its own pages, and no task is lost.
4. A task running on A, cancelled through C, ends cancelled (A interrupted only it).
"""

from __future__ import annotations

import threading
import time

import pytest

from ci_policy import need
from collectors import WebsocketCollector
from service_harness import API, SSECollector, call, probe_workflow, wait_final

LEASE = 3


@pytest.fixture
def cluster(comfyui_server_factory, tmp_path):
    from redis_harness import RedisServer, redis_binary

    need(redis_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    redis_server = RedisServer(tmp_path / "redis", appendonly=True).start()
    servers: dict[str, object] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            servers[name] = comfyui_server_factory(env={
                "TWITTERCHAT_SERVICE_BACKEND": "redis", "TWITTERCHAT_REDIS_URL": redis_server.url,
                "TWITTERCHAT_SERVICE_LEASE_SECONDS": str(LEASE), "TWITTERCHAT_INSTANCE_NAME": name,
                "TWITTERCHAT_SERVICE_MAX_INFLIGHT": "2", "TWITTERCHAT_SERVICE_MAX_ATTEMPTS": "3"})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in "ABC"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    yield redis_server, servers
    for server in servers.values():
        server.stop()
    redis_server.stop()


def submit(base_url: str, n: int, seconds: float, first_width: int) -> list[str]:
    tasks = [{"workflow": probe_workflow(seconds=seconds, steps=2, width=first_width + i)} for i in range(n)]
    status, answer, _ = call(base_url, "POST", f"{API}/batches", {"name": f"probe-{first_width}", "tasks": tasks})
    assert status == 202, answer
    return answer["task_ids"]


def runs_in_history(server, task_ids: set[str]) -> int:
    history = server.get_json("/history?max_items=10000")
    return sum(1 for prompt_id in history if prompt_id in task_ids)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"not seen within {timeout:.0f}s: {what}")


def running_on(base_url: str, worker: str) -> str | None:
    _, page, _ = call(base_url, "GET", f"{API}/tasks?status=running&limit=50")
    return next((t["task_id"] for t in page["tasks"] if t["worker"] == worker), None)


def test_three_instances_share_one_queue_and_survive_kills(cluster):
    redis_server, servers = cluster
    a, b, c = servers["A"], servers["B"], servers["C"]
    for server, name in ((a, "A"), (b, "B"), (c, "C")):
        status, health, _ = call(server.url, "GET", "/twitterchat/health")
        assert status == 200 and health["backend"] == "redis" and health["worker"] == name, health

    # 1. Sixty tasks submitted to A are shared by the three; C's event stream sees them all end.
    watcher = SSECollector(c.url)
    socket = WebsocketCollector(b.url, "twitterchat.task")
    ids = submit(a.url, 60, 0.5, first_width=8)
    final = wait_final(a.url, ids, timeout=240)
    assert {t["status"] for t in final.values()} == {"completed"}, \
        {t["task_id"]: t["error"] for t in final.values() if t["status"] != "completed"}
    runs = {name: runs_in_history(server, set(ids)) for name, server in servers.items()}
    assert all(count >= 10 for count in runs.values()), runs
    reruns = sum(t["attempts"] - 1 for t in final.values())
    assert sum(runs.values()) == len(ids) + reruns, (runs, reruns)
    by_worker = {name: sum(1 for t in final.values() if t["worker"] == name) for name in servers}
    assert sum(by_worker.values()) == 60 and all(by_worker[name] >= 1 for name in servers), by_worker
    for task in final.values():
        files = [o for o in task["outputs"] if o.get("filename")]
        assert files and files[0]["url"].startswith(servers[task["worker"]].url + "/view?"), task
    wait_for(lambda: all("completed" in watcher.task_statuses(t) for t in ids), 30,
             "C's /events carries every task's completion, whichever instance ran it")
    ended = lambda: [m["task_id"] for m in socket.messages if m["status"] == "completed" and m["task_id"] in ids]
    wait_for(lambda: len(set(ended())) == len(ids), 30, "B's websocket carries every task's completion")
    assert len(ended()) == len(ids)  # once each: an instance's own events are not sent twice
    socket.stop()
    # Any instance answers for any task.
    assert call(b.url, "GET", f"{API}/tasks/{ids[0]}")[1]["status"] == "completed"

    # 2. kill -9 B while it runs a task: another instance takes it over after the lease.
    more = submit(c.url, 12, 1.0, first_width=200)
    victim = wait_for(lambda: running_on(c.url, "B"), 60, "a task running on B")
    b.process.kill()
    b.process.wait(10)
    killed_at = time.monotonic()
    final = wait_final(c.url, more, timeout=120)
    taken_over = final[victim]
    assert taken_over["status"] == "completed" and taken_over["worker"] in ("A", "C"), taken_over
    assert taken_over["attempts"] == 2
    assert {t["status"] for t in final.values()} == {"completed"}
    print(f"claim + completion after kill -9: {time.monotonic() - killed_at:.1f}s (lease {LEASE}s)")

    # 3. kill -9 redis-server mid-run, start it again: nothing lost.
    batch = submit(a.url, 16, 0.5, first_width=400)
    wait_for(lambda: running_on(a.url, "A") or running_on(a.url, "C"), 60, "a task running")
    redis_server.kill()
    status, answer, headers = call(a.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(width=999)})
    assert status == 503 and answer["error"]["type"] == "store_unavailable", answer
    assert "Redis at redis://127.0.0.1:" in answer["error"]["message"] and headers.get("Retry-After")
    assert a.get_json("/system_stats")["system"]  # ComfyUI itself keeps serving
    time.sleep(2)  # running prompts finish while Redis is away
    redis_server.start()
    final = wait_final(a.url, batch, timeout=180)
    assert {t["status"] for t in final.values()} == {"completed"}, \
        {t["task_id"]: (t["status"], t["error"]) for t in final.values()}

    # 4. A task running on A, cancelled through C.
    long_ids = submit(c.url, 4, 8.0, first_width=600)
    target = wait_for(lambda: running_on(c.url, "A"), 60, "a long task running on A")
    status, answer, _ = call(c.url, "POST", f"{API}/tasks/{target}/cancel")
    assert status == 200 and answer["cancelled"] is True, answer
    cancelled = wait_final(c.url, [target], timeout=30)[target]
    assert cancelled["status"] == "cancelled" and cancelled["worker"] == "A", cancelled
    assert cancelled["error"]["type"] == "cancelled"
    others = [t for t in long_ids if t != target]
    assert all(call(c.url, "GET", f"{API}/tasks/{t}")[1]["status"] != "cancelled" for t in others)  # only it
    for task_id in others:  # not needed any more
        call(c.url, "POST", f"{API}/tasks/{task_id}/cancel")
    watcher.stop()


def test_an_instance_started_before_redis_joins_when_redis_answers(comfyui_server_factory, tmp_path):
    """ComfyUI starts without its Redis: ComfyUI serves, the API answers 503 saying why, and the
    service starts by itself once Redis is up (no restart of ComfyUI)."""
    from redis_harness import RedisServer, redis_binary

    need(redis_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    redis_server = RedisServer(tmp_path / "redis", appendonly=True)  # its port is chosen, nothing listens yet
    server = comfyui_server_factory(env={"TWITTERCHAT_SERVICE_BACKEND": "redis",
                                         "TWITTERCHAT_REDIS_URL": redis_server.url,
                                         "TWITTERCHAT_INSTANCE_NAME": "early"})
    try:
        status, answer, _ = call(server.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(width=11)})
        assert status == 503 and answer["error"]["type"] == "service_unavailable", answer
        assert server.get_json("/system_stats")["system"]
        assert "task service waits for Redis" in server.log_text()
        redis_server.start()
        wait_for(lambda: call(server.url, "GET", "/twitterchat/health")[1].get("service_running"), 30,
                 "the service started once Redis answered")
        status, answer, _ = call(server.url, "POST", f"{API}/tasks", {"workflow": probe_workflow(width=12)})
        assert status == 202, answer
        assert wait_final(server.url, [answer["task_id"]], timeout=60)[answer["task_id"]]["status"] == "completed"
    finally:
        server.stop()
        redis_server.stop()
