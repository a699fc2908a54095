"""The task service against ComfyUI's own queue, on real ComfyUI servers.

(a) Throughput. One ComfyUI with the pack and the probe nodes runs rounds of
PROMPTS quick prompts (EmptyImage -> TCProbeSlow -> PreviewImage, each one
distinct so ComfyUI really executes it) sent three ways: straight to
``POST /prompt``, one ``POST /twitterchat/api/v1/tasks`` per prompt, and one
``POST /twitterchat/api/v1/batches`` holding all of them. A round lasts from
the first submit to the moment the client sees the last prompt finished
(``/history/{id}``, ``GET /tasks/{id}`` or the batch's ``finished``, all
polled every POLL_SECONDS). Rounds run in the order ROUND_ORDER
(direct, tasks, batch, batch, tasks, direct): each way's mean position is the
same, which cancels the slow drift of a growing history.

    api_throughput_ratio   = direct round time / POST /tasks round time
    batch_throughput_ratio = direct round time / POST /batches round time

1.0 means the service costs nothing; the target is >= 0.95. The same ratios
from the server's own clocks (ComfyUI's create_time and execution_success,
the tasks' created_at and finished_at) are printed too, free of polling.
The service keeps at most ``max_inflight`` (2) of its prompts in ComfyUI and
refills them once per feeder poll (25 ms), which adds a floor of about 15 ms
per task on 2 cores: prompts that run for less than about 20 ms go slower
through the API than straight to ``/prompt``; the 50 ms prompts here do not.

(b) Latency of ``POST /tasks`` and ``GET /tasks/{id}`` (one persistent HTTP
connection per server, LATENCY_REQUESTS of each) on a fresh ComfyUI with an
empty store and on one whose store already holds STORED finished tasks,
written beforehand with the pack's own ``Store``. Both servers run at once
and the requests alternate between them in blocks, so other load on the
machine falls on both alike. ``post_latency_ratio`` and ``get_latency_ratio``
are 100k / empty medians (target <= 1.5); the p99 ratios are printed too.

(c) Completion-to-SSE delay: for SSE_TASKS tasks, the time from the task's
``finished_at`` (ComfyUI's own execution_success time) to the arrival of its
final event on ``GET /twitterchat/api/v1/events?task_id=...`` (same clock).

Every server listens on 127.0.0.1 only and runs the service's documented
defaults (config.json); only its store path is set (``TWITTERCHAT_*`` and
``KY_MONITOR_*`` variables in the caller's environment would still reach it:
the bench prints any it finds). Last line:
``api_throughput_ratio: X``. Run: ``bash bench/run.sh task_service``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test harness

from comfyui_harness import ComfyUIServer, provision  # noqa: E402
from pack_paths import PROBE_NODES, load_pack  # noqa: E402

load_pack()  # this checkout, as comfyui_twitterchat

from comfyui_twitterchat.service.store import NewTask, Store, parse_iso  # noqa: E402

API = "/twitterchat/api/v1"
FINAL = ("completed", "failed", "cancelled")

PROMPTS = 200
SLOW_SECONDS = 0.05      # TCProbeSlow's sleep per prompt (in 2 steps)
WARM_UP = 20             # prompts each way before the measured rounds
ROUND_ORDER = ("direct", "tasks", "batch", "batch", "tasks", "direct")
POLL_SECONDS = 0.05      # how often the client looks for completions (the same for every way)
ROUND_TIMEOUT = 90.0

STORED = 100_000
STORE_CHUNK = 10_000
LATENCY_REQUESTS = 1000   # p99 is then the 10th slowest
LATENCY_WARM_UP = 20
LATENCY_BLOCK = 50       # requests to one server before switching to the other
DRAIN_TIMEOUT = 90.0

SSE_TASKS = 20
SSE_TASK_SECONDS = 0.3   # long enough for the stream to be open before the task ends
SSE_SPREAD = 0.03        # task lengths spread over more than the feeder's 25 ms poll (see sse_delays)
SSE_BUDGET = 60.0

_colors = itertools.count(1)


def quick_prompt(seconds: float | None = None, steps: int = 2) -> dict:
    """A prompt no other prompt in the run equals (ComfyUI would serve it from its cache)."""
    seconds = SLOW_SECONDS if seconds is None else seconds
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": next(_colors)}},
            "2": {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def comfyui(comfy_dir: Path, work: Path, db_path: Path) -> ComfyUIServer:
    return ComfyUIServer(comfy_dir, work, {"comfyui-twitterchat": ROOT, "twitterchat_test_probes": PROBE_NODES},
                         env={"TWITTERCHAT_SERVICE_DB_PATH": str(db_path)},
                         extra_args=("--disable-api-nodes",)).start()


def client_for(server: ComfyUIServer) -> httpx.Client:
    """One persistent connection to the server (keep-alive), as a real client would hold."""
    return httpx.Client(base_url=server.url, timeout=30.0, limits=httpx.Limits(max_connections=1))


def expect(response: httpx.Response, status: int) -> dict:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} answered "
                           f"{response.status_code}: {response.text[:2000]}")
    return response.json()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(POLL_SECONDS)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def log(message: str) -> None:
    print(f"[task_service] {message}", file=sys.stderr, flush=True)


# -- (a) throughput ----------------------------------------------------------
class Rounds:
    """The three ways of sending PROMPTS prompts to one server; each returns
    (client-observed seconds, seconds on the server's own clocks)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def direct(self, count: int) -> tuple[float, float]:
        prompts = [quick_prompt() for _ in range(count)]
        started = time.monotonic()
        ids = [expect(self.client.post("/prompt", json={"prompt": p}), 200)["prompt_id"] for p in prompts]
        entries = {}

        def done(prompt_id: str) -> Callable[[], bool]:
            def check() -> bool:
                entry = expect(self.client.get(f"/history/{prompt_id}"), 200).get(prompt_id)
                if entry is None or entry.get("status", {}).get("completed") is None:
                    return False
                entries[prompt_id] = entry
                return True
            return check

        deadline = time.monotonic() + ROUND_TIMEOUT
        for prompt_id in ids:  # ComfyUI runs them in order: once one is done, the earlier ones are
            wait_until(done(prompt_id), deadline - time.monotonic(), f"prompt {prompt_id}")
        elapsed = time.monotonic() - started
        for prompt_id, entry in entries.items():
            if entry["status"].get("status_str") != "success":
                raise RuntimeError(f"prompt {prompt_id} failed: {entry['status']}")
        first = entries[ids[0]]["prompt"][3]["create_time"] / 1000
        last = max(data["timestamp"] for entry in entries.values()
                   for event, data in entry["status"]["messages"] if event == "execution_success") / 1000
        return elapsed, last - first

    def tasks(self, count: int) -> tuple[float, float]:
        prompts = [quick_prompt() for _ in range(count)]
        started = time.monotonic()
        ids = [expect(self.client.post(f"{API}/tasks", json={"workflow": p}), 202)["task_id"] for p in prompts]
        return self._wait_tasks(ids, started)

    def batch(self, count: int) -> tuple[float, float]:
        body = {"name": "bench", "tasks": [{"workflow": quick_prompt()} for _ in range(count)]}
        started = time.monotonic()
        answer = expect(self.client.post(f"{API}/batches", json=body), 202)
        batch_id, ids = answer["batch_id"], answer["task_ids"]

        def finished() -> bool:
            return expect(self.client.get(f"{API}/batches/{batch_id}"), 200)["status"] == "finished"

        wait_until(finished, ROUND_TIMEOUT, f"batch {batch_id}")
        elapsed = time.monotonic() - started
        batch = expect(self.client.get(f"{API}/batches/{batch_id}"), 200)
        if batch["counts"]["completed"] != count:
            raise RuntimeError(f"batch {batch_id} finished with {batch['counts']}")
        return elapsed, self._server_span([self.task(i) for i in ids])

    def task(self, task_id: str) -> dict:
        return expect(self.client.get(f"{API}/tasks/{task_id}"), 200)

    def _wait_tasks(self, ids: list[str], started: float) -> tuple[float, float]:
        final = {}

        def done(task_id: str) -> Callable[[], bool]:
            def check() -> bool:
                task = self.task(task_id)
                if task["status"] not in FINAL:
                    return False
                final[task_id] = task
                return True
            return check

        deadline = time.monotonic() + ROUND_TIMEOUT
        for task_id in ids:  # fed in submission order: once one is final, most earlier ones are too
            wait_until(done(task_id), deadline - time.monotonic(), f"task {task_id}")
        elapsed = time.monotonic() - started
        bad = [t for t in final.values() if t["status"] != "completed"]
        if bad:
            raise RuntimeError(f"{len(bad)} task(s) did not complete, e.g. {json.dumps(bad[0])[:1500]}")
        return elapsed, self._server_span(list(final.values()))

    @staticmethod
    def _server_span(tasks: list[dict]) -> float:
        return (max(parse_iso(t["finished_at"]) for t in tasks)
                - min(parse_iso(t["created_at"]) for t in tasks))


def throughput(server: ComfyUIServer) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {way: [] for way in ROUND_ORDER}
    with client_for(server) as client:
        rounds = Rounds(client)
        for way in dict.fromkeys(ROUND_ORDER):  # warm-up: first-use imports, caches, the store's first writes
            getattr(rounds, way)(WARM_UP)
        for way in ROUND_ORDER:
            times[way].append(getattr(rounds, way)(PROMPTS))
            log(f"round {way}: {times[way][-1][0]:.2f}s ({times[way][-1][1]:.2f}s on the server's clocks)")
    return times


# -- (b) latency with 100,000 stored tasks -----------------------------------
def fill_store(path: Path, count: int) -> None:
    """``count`` finished tasks written with the pack's own Store; the server recounts them on open."""
    store = Store(path)
    try:
        workflow = quick_prompt(0.0, 1)
        for start in range(0, count, STORE_CHUNK):
            tasks = [NewTask(spec={"workflow": workflow}) for _ in range(min(STORE_CHUNK, count - start))]
            store.add_tasks(tasks, build=lambda ids, batch_id: {})
        store.db.execute("UPDATE tasks SET state = 'completed', progress = 1, attempts = 1, "
                         "started_at = created_at, finished_at = created_at WHERE state = 'waiting'")
        stored = store.db.execute("SELECT count(*) FROM tasks WHERE state = 'completed'").fetchone()[0]
    finally:
        store.close()
    if stored != count:
        raise RuntimeError(f"the prepared store holds {stored} finished tasks, not {count}")


class Prober:
    """Timed requests to one server over one persistent connection."""

    def __init__(self, server: ComfyUIServer) -> None:
        self.client = client_for(server)
        self.ids: list[str] = []
        self.times: dict[str, list[float]] = {"post": [], "get": [], "get_stored": []}

    def post(self, record: bool = True) -> None:
        body = {"workflow": quick_prompt(0.0, 1)}
        started = time.perf_counter()
        response = self.client.post(f"{API}/tasks", json=body)
        elapsed = time.perf_counter() - started
        self.ids.append(expect(response, 202)["task_id"])
        if record:
            self.times["post"].append(elapsed)

    def get(self, task_id: str, kind: str | None = "get") -> None:
        started = time.perf_counter()
        response = self.client.get(f"{API}/tasks/{task_id}")
        elapsed = time.perf_counter() - started
        expect(response, 200)
        if kind is not None:
            self.times[kind].append(elapsed)

    def drained(self) -> bool:
        """The tasks run in submission order: the last one final means all are."""
        return expect(self.client.get(f"{API}/tasks/{self.ids[-1]}"), 200)["status"] in FINAL

    def counts(self) -> dict[str, int]:
        return expect(self.client.get("/twitterchat/health"), 200)["tasks"]


def interleaved(probers: list[Prober], requests: int, send: Callable[[Prober, int], None]) -> None:
    """``requests`` calls to each server in blocks of LATENCY_BLOCK, alternating which goes first,
    so load from anything else on the machine falls on both alike."""
    for block in range(math.ceil(requests / LATENCY_BLOCK)):
        order = probers if block % 2 == 0 else probers[::-1]
        for prober in order:
            for n in range(block * LATENCY_BLOCK, min(requests, (block + 1) * LATENCY_BLOCK)):
                send(prober, n)


def latency(empty: ComfyUIServer, full: ComfyUIServer, stored_ids: list[str]) -> tuple[Prober, Prober]:
    """POST /tasks on both servers, then (once the posted tasks ran) GET /tasks/{id} of them;
    on the full one also GETs of tasks from the prepared store."""
    probers = [Prober(empty), Prober(full)]
    try:
        for prober in probers:  # warm-up: first-use imports, the first validation and store writes
            for _ in range(LATENCY_WARM_UP):
                prober.post(record=False)
        interleaved(probers, LATENCY_REQUESTS, lambda prober, n: prober.post())
        drain_started = time.monotonic()
        wait_until(lambda: all(prober.drained() for prober in probers), DRAIN_TIMEOUT, "the posted tasks finishing")
        log(f"latency: the posted tasks ran {time.monotonic() - drain_started:.1f}s after the last post")
        for prober in probers:
            for task_id in prober.ids[:LATENCY_WARM_UP]:
                prober.get(task_id, None)
        interleaved(probers, LATENCY_REQUESTS,
                    lambda prober, n: prober.get(prober.ids[LATENCY_WARM_UP + n % LATENCY_REQUESTS]))
        for task_id in stored_ids:
            probers[1].get(task_id, "get_stored")
        log(f"latency: task counts, empty store {probers[0].counts()}, full store {probers[1].counts()}")
    finally:
        for prober in probers:
            prober.client.close()
    return probers[0], probers[1]


def stored_sample(path: Path, count: int) -> list[str]:
    store = Store(path)
    try:
        rows = store.db.execute("SELECT task_id FROM tasks ORDER BY random() LIMIT ?", (count,)).fetchall()
    finally:
        store.close()
    return [row[0] for row in rows]


# -- (c) completion-to-SSE delay ---------------------------------------------
def sse_delays(server: ComfyUIServer) -> tuple[list[float], int]:
    """Seconds from finished_at to the final event's arrival, per task; and how many were skipped
    because the stream opened after the task had already finished (a replay, not a live event).

    The service learns that a prompt ended at its feeder's next poll, which starts when the task
    is handed to ComfyUI; with tasks of one length every task would end at the same point of
    that cycle, so their lengths are spread over more than one poll interval."""
    delays, replays = [], 0
    budget = time.monotonic() + SSE_BUDGET
    timeout = httpx.Timeout(10.0, read=20.0)  # the server pings every 15 s
    with client_for(server) as client, httpx.Client(base_url=server.url, timeout=timeout) as stream_client:
        for n in range(SSE_TASKS):
            if time.monotonic() > budget:
                log(f"SSE: budget of {SSE_BUDGET:.0f}s spent after {len(delays)} tasks")
                break
            seconds = SSE_TASK_SECONDS + SSE_SPREAD * n / SSE_TASKS
            body = {"workflow": quick_prompt(seconds, 3)}
            task_id = expect(client.post(f"{API}/tasks", json=body), 202)["task_id"]
            with stream_client.stream("GET", f"{API}/events", params={"task_id": task_id}) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"GET {API}/events answered {response.status_code}")
                opened = time.time()
                arrived, task = final_event(response, time.monotonic() + 30.0)
            finished = parse_iso(task["finished_at"])
            if finished is None or task["status"] != "completed":
                raise RuntimeError(f"task {task_id} ended {task['status']}: {task.get('error')}")
            if opened >= finished:
                replays += 1
                continue
            delays.append(arrived - finished)
    log("SSE delays ms: " + ", ".join(f"{d * 1000:.1f}" for d in delays))
    return delays, replays


def final_event(response: httpx.Response, deadline: float) -> tuple[float, dict]:
    kind = data = None
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            break
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "":
            if kind == "task" and data:
                task = json.loads(data)
                if task["status"] in FINAL:
                    return time.time(), task
            kind = data = None
    raise TimeoutError("no final task event on the stream in time")


# -- report ------------------------------------------------------------------
def inherited_settings() -> list[str]:
    """Settings in this environment that the servers inherit (the harness passes os.environ on)."""
    return sorted(f"{k}={v}" for k, v in os.environ.items()
                  if k.startswith(("TWITTERCHAT_SERVICE_", "KY_MONITOR_", "TWITTERCHAT_API_TOKEN")))


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.2f}, p99 {percentile(values, 0.99) * 1000:.2f} "
            f"({len(values)} requests)")


def main() -> int:
    comfy_dir = provision()
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as work:
        work = Path(work)
        server = comfyui(comfy_dir, work / "throughput", work / "throughput.sqlite3")
        try:
            log(f"throughput server up after {time.monotonic() - began:.0f}s")
            times = throughput(server)
            delays, replays = sse_delays(server)
        finally:
            server.stop()

        full_db = work / "full.sqlite3"
        started = time.monotonic()
        fill_store(full_db, STORED)
        fill_seconds = time.monotonic() - started
        stored_ids = stored_sample(full_db, LATENCY_REQUESTS)
        log(f"wrote {STORED} finished tasks in {fill_seconds:.1f}s")
        servers: list[ComfyUIServer] = []
        try:  # both at once, so their requests can alternate
            servers.append(comfyui(comfy_dir, work / "empty", work / "empty.sqlite3"))
            servers.append(comfyui(comfy_dir, work / "full", full_db))
            at_empty, at_full = latency(servers[0], servers[1], stored_ids)
        finally:
            for server in servers:
                server.stop()

    def mean(way: str, clock: int) -> float:
        return statistics.mean(t[clock] for t in times[way])

    inherited = inherited_settings()
    print("server_settings: " + (", ".join(k.split("=")[0] + "=..." if "TOKEN" in k else k for k in inherited)
                                 if inherited else "config.json defaults (store path only)"))
    print(f"load_average_1min: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({os.cpu_count()} CPUs; anything else running shows here)")
    for way in dict.fromkeys(ROUND_ORDER):
        print(f"{way}_round_seconds: " + ", ".join(f"{t[0]:.2f}" for t in times[way])
              + " (server clocks: " + ", ".join(f"{t[1]:.2f}" for t in times[way]) + ")")
    for way in dict.fromkeys(ROUND_ORDER):
        print(f"{way}_prompts_per_second: {PROMPTS / mean(way, 0):.1f}")
    print(f"api_throughput_ratio_server_clocks: {mean('direct', 1) / mean('tasks', 1):.3f}")
    print(f"batch_throughput_ratio_server_clocks: {mean('direct', 1) / mean('batch', 1):.3f}")
    print(f"batch_throughput_ratio: {mean('direct', 0) / mean('batch', 0):.3f}")
    k = f"{STORED // 1000}k"
    print(f"stored_tasks: {STORED} (written in {fill_seconds:.1f}s)")
    for kind in ("post", "get"):
        print(f"{kind}_latency_ms_empty: {summary(at_empty.times[kind])}")
        print(f"{kind}_latency_ms_{k}: {summary(at_full.times[kind])}")
    print(f"get_stored_task_latency_ms_{k}: {summary(at_full.times['get_stored'])}")
    for kind in ("post", "get"):
        empty_values, full_values = at_empty.times[kind], at_full.times[kind]
        print(f"{kind}_latency_p99_ratio: {percentile(full_values, 0.99) / percentile(empty_values, 0.99):.3f}")
    for kind in ("post", "get"):
        empty_values, full_values = at_empty.times[kind], at_full.times[kind]
        print(f"{kind}_latency_ratio: {statistics.median(full_values) / statistics.median(empty_values):.3f}")
    if delays:
        print(f"sse_delay_ms: median {statistics.median(delays) * 1000:.1f}, "
              f"p90 {percentile(delays, 0.9) * 1000:.1f}, max {max(delays) * 1000:.1f} "
              f"({len(delays)} tasks, {replays} skipped as replays)")
    else:
        print(f"sse_delay_ms: no live measurement ({replays} streams opened after their task finished)")
    print(f"bench_seconds: {time.monotonic() - began:.0f}")
    print(f"api_throughput_ratio: {mean('direct', 0) / mean('tasks', 0):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
