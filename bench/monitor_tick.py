"""Monitor cost: an idle tick against the original design's rebuild-everything tick,
both on ComfyUI's real PromptQueue holding 10,000 finished 50-node prompts.

Part 1 (CPU share) starts a real ComfyUI with the pack, runs 100 quick prompts
and reports the monitor's CPU time (its own threads, measured with
``time.thread_time``) as a share of the ComfyUI process's CPU time.

Part 2 (idle tick) fills a real ``execution.PromptQueue`` and times, in the same
run, this monitor's idle tick and a baseline tick as the original design did it:
``get_current_queue()`` (deep copy), ``get_history(max_items=...)``, rebuild
every info, serialise and resend every one. Last line: ``speedup: X``
(baseline time / monitor time; target >= 100).

Run after ``tests/setup_env.sh`` (it provides the virtualenv and ComfyUI):
``$TC_PYTHON bench/monitor_tick.py`` or ``bash bench/run.sh monitor_tick``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test harness

from comfyui_harness import ComfyUIServer, provision  # noqa: E402
from pack_paths import PROBE_NODES, load_pack  # noqa: E402

load_pack()  # this checkout, as comfyui_twitterchat

FINISHED = 10_000
NODES = 50
PENDING = 3
HISTORY_MAX_ITEMS = 64


def quick_prompt() -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": 0.01, "steps": 1}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(comfy_dir: Path) -> float:
    with tempfile.TemporaryDirectory() as work:
        env = {"KY_MONITOR_FREQUENCY_SECONDS": "0.25", "KY_MONITOR_REDIS_ENABLED": "false"}
        server = ComfyUIServer(comfy_dir, Path(work), {"comfyui-twitterchat": ROOT,
                                                       "twitterchat_test_probes": PROBE_NODES},
                               env=env, extra_args=("--disable-api-nodes",)).start()
        try:
            before_stats = server.get_json("/twitterchat/monitor/stats")
            before_cpu = process_cpu_seconds(server.process.pid)
            started = time.monotonic()
            ids = [server.queue_prompt(quick_prompt()) for _ in range(100)]
            for prompt_id in ids:
                server.wait_for_history(prompt_id, 120)
            time.sleep(0.6)  # let the last final infos go out
            elapsed = time.monotonic() - started
            after_stats = server.get_json("/twitterchat/monitor/stats")
            process_cpu = process_cpu_seconds(server.process.pid) - before_cpu
        finally:
            server.stop()

    def monitor_cpu(stats):
        return stats["cpu_seconds"] + sum(c["cpu_seconds"] for c in stats["channels"].values())

    spent = monitor_cpu(after_stats) - monitor_cpu(before_stats)
    share = spent / process_cpu if process_cpu > 0 else 0.0
    print(f"cpu_share_run: 100 prompts in {elapsed:.1f}s, ComfyUI process CPU {process_cpu:.2f}s, "
          f"monitor threads CPU {spent:.4f}s, infos published {after_stats['published'] - before_stats['published']}")
    print(f"monitor_cpu_share_percent: {share * 100:.3f}")
    return share


def workflow(seed: int) -> dict:
    prompt = {}
    for n in range(1, NODES + 1):
        inputs = {"seed": seed + n, "steps": 20, "cfg": 7.5, "text": f"node {n} of prompt {seed} " * 4}
        if n > 1:
            inputs["model"] = [str(n - 1), 0]
        prompt[str(n)] = {"class_type": f"Node{n % 12}", "inputs": inputs, "_meta": {"title": f"Node {n}"}}
    return prompt


def filled_queue(comfy_dir: Path):
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no GPU here; main.py would set this from --cpu
    import execution  # ComfyUI's own module: the real PromptQueue

    class Server:
        number = 0

        def queue_updated(self):
            pass

    server = Server()
    queue = execution.PromptQueue(server)
    extra = {"client_id": "bench", "create_time": 1_795_000_000_000,
             "extra_pnginfo": {"workflow": {"nodes": [{"id": i} for i in range(NODES)]}}}
    for number in range(FINISHED):
        item = (number, f"prompt-{number:05d}", workflow(number), extra, [str(NODES)], {})
        queue.put(item)
        _, item_id = queue.get()
        messages = [("execution_start", {"prompt_id": item[1], "timestamp": 1_795_000_000_000 + number}),
                    ("execution_cached", {"nodes": [], "prompt_id": item[1], "timestamp": 1_795_000_000_001 + number}),
                    ("execution_success", {"prompt_id": item[1], "timestamp": 1_795_000_000_900 + number})]
        queue.task_done(item_id, {"outputs": {str(NODES): {"images": [{"filename": f"{number}.png"}]}},
                                  "meta": {}},
                        status=execution.PromptQueue.ExecutionStatus("success", True, messages))
        server.number += 1
    for number in range(FINISHED, FINISHED + PENDING):
        queue.put((number, f"prompt-{number:05d}", workflow(number), extra, [str(NODES)], {}))
        server.number += 1
    server.prompt_queue = queue
    return server, queue


def baseline_tick(queue, query) -> int:
    """The original design: copy everything, rebuild every info, resend every one."""
    running, pending = queue.get_current_queue()
    history = queue.get_history(max_items=HISTORY_MAX_ITEMS)
    infos = []
    for position, item in enumerate(sorted(pending, key=lambda i: i[0]), start=1):
        infos.append(query.make_info(item[1], "queue", "pending", queue_position=position))
    for prompt_id, entry in history.items():
        infos.append(query.history_info(prompt_id, query.summarize_history_entry(entry)))
    sent = [json.dumps(info) for info in infos]
    return len(sent)


def time_per_call(fn, min_seconds: float = 1.0) -> float:
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and calls >= 20:
            return elapsed / calls


def tick_speedup(comfy_dir: Path) -> float:
    from comfyui_twitterchat.monitor import query
    from comfyui_twitterchat.monitor.comfy_source import ComfySource
    from comfyui_twitterchat.monitor.config import MonitorSettings
    from comfyui_twitterchat.monitor.service import PromptMonitor

    started = time.perf_counter()
    server, queue = filled_queue(comfy_dir)
    print(f"filled a real PromptQueue: {FINISHED} finished + {PENDING} pending {NODES}-node prompts "
          f"in {time.perf_counter() - started:.1f}s")
    monitor = PromptMonitor(MonitorSettings(history_max_items=HISTORY_MAX_ITEMS), ComfySource(server), [])
    first = monitor.tick()  # start-up tick: reads history once and publishes what is new
    assert len(first) == HISTORY_MAX_ITEMS + PENDING, len(first)
    assert monitor.tick() == []  # idle from here on
    assert baseline_tick(queue, query) == HISTORY_MAX_ITEMS + PENDING
    monitor_time = time_per_call(monitor.tick)
    baseline_time = time_per_call(lambda: baseline_tick(queue, query))
    print(f"idle_tick_us: {monitor_time * 1e6:.1f}")
    print(f"baseline_tick_us: {baseline_time * 1e6:.1f}")
    return baseline_time / monitor_time


def main() -> int:
    comfy_dir = provision()
    if "--skip-cpu-share" not in sys.argv:
        cpu_share(comfy_dir)
    speedup = tick_speedup(comfy_dir)
    print(f"speedup: {speedup:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
