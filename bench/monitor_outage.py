"""ComfyUI's throughput while a monitor channel is dead.

A real ComfyUI runs the pack's monitor (tick 0.25 s) publishing to the
websocket and to a real redis-server. The same batch of PROMPTS quick,
uncached prompts (each distinct, so ComfyUI really executes it) is run with
Redis up, with Redis stopped, and with Redis up again; the outage figure
compares the Redis-down batch with the mean of the two Redis-up batches, all
in one run (the mean of the batches before and after cancels the slow drift
of a growing history). A second ComfyUI with the monitor disabled runs the
same sequence of batches and gives the monitor's own overhead, compared at the
same positions.

    outage_throughput_ratio = prompts/s with Redis down / prompts/s with Redis up
    monitor_throughput_ratio = prompts/s with the monitor / prompts/s without it

1.0 means unaffected. Last line: ``outage_throughput_ratio: X``.
Run: ``bash bench/run.sh monitor_outage``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test harness

from comfyui_harness import ComfyUIServer, provision  # noqa: E402
from pack_paths import PROBE_NODES  # noqa: E402
from redis_harness import RedisServer, redis_binary  # noqa: E402

PROMPTS = 300
_batch = 0


def quick_prompt(color: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": 0.01, "steps": 2}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


def batch_rate(server: ComfyUIServer) -> float:
    """Prompts per second for one batch, from the first post to the last prompt's history entry."""
    global _batch
    _batch += 1
    started = time.monotonic()
    ids = [server.queue_prompt(quick_prompt(_batch * 1000 + n)) for n in range(PROMPTS)]
    for prompt_id in ids:
        entry = server.wait_for_history(prompt_id, 300)
        if entry["status"]["status_str"] != "success":
            raise RuntimeError(f"prompt {prompt_id} failed: {entry['status']}")
    return PROMPTS / (time.monotonic() - started)


def comfyui(comfy_dir: Path, work: Path, env: dict[str, str]) -> ComfyUIServer:
    return ComfyUIServer(comfy_dir, work, {"comfyui-twitterchat": ROOT, "twitterchat_test_probes": PROBE_NODES},
                         env=env, extra_args=("--disable-api-nodes",)).start()


def main() -> int:
    if redis_binary() is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    comfy_dir = provision()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        redis = RedisServer(work / "redis").start()
        env = {"KY_MONITOR_ENABLED": "true", "KY_MONITOR_FREQUENCY_SECONDS": "0.25",
               "KY_MONITOR_REDIS_ENABLED": "true", "KY_MONITOR_REDIS_HOST": "127.0.0.1",
               "KY_MONITOR_REDIS_PORT": str(redis.port)}
        server = comfyui(comfy_dir, work / "monitored", env)
        try:
            batch_rate(server)  # warm-up: first-use imports and caches
            up_before = batch_rate(server)
            redis.stop()
            stopped = time.monotonic()
            down = batch_rate(server)
            outage = time.monotonic() - stopped
            redis.start()
            up_after = batch_rate(server)
            stats = server.get_json("/twitterchat/monitor/stats")
        finally:
            server.stop()
            redis.stop()
        bare = comfyui(comfy_dir, work / "bare", {"KY_MONITOR_ENABLED": "false"})
        try:
            # the same sequence of batches, so both servers are compared at the same history size
            # (ComfyUI itself slows down a little as its history grows)
            rates = [batch_rate(bare) for _ in range(5)]
            without_monitor = (rates[1] + rates[4]) / 2
        finally:
            bare.stop()
    up = (up_before + up_after) / 2
    redis_stats = stats["channels"]["redis"]
    print(f"prompts/s: redis up {up_before:.1f} and {up_after:.1f}, redis down {down:.1f}, "
          f"monitor disabled {rates[1]:.1f} and {rates[4]:.1f} ({PROMPTS} prompts a batch)")
    print(f"redis down for {outage:.1f}s; redis channel: sent {redis_stats['sent']}, "
          f"dropped {redis_stats['dropped']}, failures {redis_stats['failures']}; "
          f"monitor tick errors {stats['tick_errors']}")
    print(f"monitor CPU over the run: ticks {stats['cpu_seconds']:.2f}s, "
          + ", ".join(f"{name} sender {c['cpu_seconds']:.2f}s" for name, c in stats["channels"].items())
          + f"; infos published {stats['published']}")
    print(f"monitor_throughput_ratio: {up / without_monitor:.3f}")
    print(f"outage_throughput_ratio: {down / up:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
