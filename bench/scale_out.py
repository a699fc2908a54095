"""Scale-out: throughput of one and of three ComfyUI instances pulling from one Redis
Streams consumer group, on the same 0.5 s probe tasks.

One redis-server (AOF on, ``appendfsync everysec`` as the README's deployment runs it)
and real ComfyUI servers from the test harness, on 127.0.0.1:

1. Instance A alone: PER_INSTANCE tasks (EmptyImage -> TCProbeSlow 0.5 s -> PreviewImage,
   each distinct so ComfyUI really runs it) submitted as one batch; the round lasts from
   the submit to the batch's ``finished`` (polled every POLL_SECONDS).
2. Instances B and C join the same group: 3 x PER_INSTANCE tasks, the same way.

    scaling_efficiency = throughput(3 instances) / (3 x throughput(1 instance))

Target >= 0.85. Also printed: Redis commands per task during round 2 (``INFO stats``
``total_commands_processed``, everything the three instances sent, idle polling and
lease renewals included) and Redis's own CPU time per task (``INFO cpu``; from it, how
many instances one Redis core carries), the tasks each instance ran, and the claim delay after a
kill -9: B is killed while it runs a task, and the time until another instance holds
that task (its ``worker`` changes) and until it completes is measured (lease
LEASE_SECONDS). Last line: ``scaling_efficiency: X``.
Run: ``bash bench/run.sh scale_out``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test harness

from comfyui_harness import ComfyUIServer, provision  # noqa: E402
from pack_paths import PROBE_NODES  # noqa: E402
from redis_harness import RedisServer  # noqa: E402

API = "/twitterchat/api/v1"
PER_INSTANCE = 40
TASK_SECONDS = 0.5
LEASE_SECONDS = 5
MAX_INFLIGHT = 2
POLL_SECONDS = 0.05


def log(message: str) -> None:
    print(message, flush=True)


def probe(width: int, seconds: float = TASK_SECONDS) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": 2}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def instance(comfy_dir: Path, work: Path, name: str, redis_url: str) -> ComfyUIServer:
    server = ComfyUIServer(comfy_dir, work / name, {"comfyui-twitterchat": ROOT,
                                                    "twitterchat_test_probes": PROBE_NODES},
                           env={"TWITTERCHAT_SERVICE_BACKEND": "redis", "TWITTERCHAT_REDIS_URL": redis_url,
                                "TWITTERCHAT_INSTANCE_NAME": name,
                                "TWITTERCHAT_SERVICE_LEASE_SECONDS": str(LEASE_SECONDS),
                                "TWITTERCHAT_SERVICE_MAX_INFLIGHT": str(MAX_INFLIGHT)},
                           extra_args=("--disable-api-nodes",))
    return server.start()


def start_all(comfy_dir: Path, work: Path, names: str, redis_url: str) -> dict[str, ComfyUIServer]:
    servers, errors = {}, []

    def one(name: str) -> None:
        try:
            servers[name] = instance(comfy_dir, work, name, redis_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return servers


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"not within {timeout:.0f}s: {what}")


def round_seconds(client: httpx.Client, count: int, first_width: int) -> tuple[float, list[dict]]:
    tasks = [{"workflow": probe(first_width + i)} for i in range(count)]
    began = time.monotonic()
    response = client.post(f"{API}/batches", json={"name": f"bench-{first_width}", "tasks": tasks})
    response.raise_for_status()
    batch_id = response.json()["batch_id"]
    wait_until(lambda: client.get(f"{API}/batches/{batch_id}").json()["status"] == "finished", 600,
               f"batch of {count} finished")
    seconds = time.monotonic() - began
    listed = client.get(f"{API}/tasks", params={"batch_id": batch_id, "limit": 500}).json()["tasks"]
    failed = [t for t in listed if t["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} task(s) did not complete, e.g. {failed[0]}")
    return seconds, listed


def commands(r: redis.Redis) -> int:
    return int(r.info("stats")["total_commands_processed"])


def cpu_seconds(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> int:
    comfy_dir = provision()
    with tempfile.TemporaryDirectory(prefix="tc-scale-") as work:
        work = Path(work)
        redis_server = RedisServer(work / "redis", appendonly=True, appendfsync="everysec").start()
        r = redis.Redis.from_url(redis_server.url)
        servers: dict[str, ComfyUIServer] = {}
        try:
            servers.update(start_all(comfy_dir, work, "A", redis_server.url))
            client = httpx.Client(base_url=servers["A"].url, timeout=60)
            round_seconds(client, 6, first_width=4000)  # warm-up: first prompt costs, imports
            one, _ = round_seconds(client, PER_INSTANCE, first_width=8)
            log(f"1 instance: {PER_INSTANCE} tasks in {one:.2f}s ({PER_INSTANCE / one:.2f} tasks/s)")

            servers.update(start_all(comfy_dir, work, "BC", redis_server.url))
            for name in "BC":
                warm = httpx.Client(base_url=servers[name].url, timeout=60)
                round_seconds(warm, 4, first_width=5000 + 100 * ord(name))
            before, cpu_before = commands(r), cpu_seconds(r)
            three, listed = round_seconds(client, 3 * PER_INSTANCE, first_width=1000)
            per_task = (commands(r) - before) / (3 * PER_INSTANCE)
            cpu_per_task = (cpu_seconds(r) - cpu_before) / (3 * PER_INSTANCE)
            ran = {name: sum(1 for t in listed if t["worker"] == name) for name in servers}
            log(f"3 instances: {3 * PER_INSTANCE} tasks in {three:.2f}s ({3 * PER_INSTANCE / three:.2f} tasks/s); "
                f"ran per instance {ran}")
            log(f"redis_commands_per_task: {per_task:.1f} (all three instances, idle polling and leases included)")
            rate = 1 / TASK_SECONDS  # tasks per second one instance runs at this task length
            log(f"redis_cpu_ms_per_task: {cpu_per_task * 1000:.2f}; one Redis core at 100% would carry about "
                f"{1 / (cpu_per_task * rate):.0f} instances running {TASK_SECONDS}s tasks "
                f"({1 / cpu_per_task:.0f} tasks/s)")

            # kill -9 B while it runs a long task; measure how soon another instance holds it.
            tasks = [{"workflow": probe(3000 + i, seconds=3.0)} for i in range(6)]
            ids = client.post(f"{API}/batches", json={"name": "kill", "tasks": tasks}).json()["task_ids"]

            def running_on_b() -> str | None:
                page = client.get(f"{API}/tasks", params={"status": "running", "limit": 50}).json()["tasks"]
                return next((t["task_id"] for t in page if t["worker"] == "B" and t["task_id"] in ids), None)

            victim = wait_until(running_on_b, 120, "a task running on B")
            servers["B"].process.kill()
            servers["B"].process.wait(10)
            killed = time.monotonic()
            wait_until(lambda: client.get(f"{API}/tasks/{victim}").json()["worker"] not in ("B", None), 120,
                       "the killed instance's task taken over")
            claimed = time.monotonic() - killed
            wait_until(lambda: client.get(f"{API}/tasks/{victim}").json()["status"] == "completed", 120,
                       "the taken-over task completed")
            completed = time.monotonic() - killed
            log(f"claim_delay_after_kill_seconds: {claimed:.1f} (lease {LEASE_SECONDS}s); completed "
                f"{completed:.1f}s after the kill (the task itself takes 3s)")
        finally:
            for server in servers.values():
                server.stop()
            redis_server.stop()
    efficiency = (3 * PER_INSTANCE / three) / (3 * PER_INSTANCE / one)
    log(f"scaling_efficiency: {efficiency:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
