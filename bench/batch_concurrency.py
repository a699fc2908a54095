"""Concurrent post generation: N posts against a local OpenAI-compatible server
with a fixed latency L, at concurrency C (the pool's and the batch's bound).

    efficiency = ceil(N / C) * L / measured wall time      (1.0 = perfect overlap)

Target: efficiency >= 0.9 at N=200, C=20. Also reports posts/second on the
embedded model (llama-cpp-python + Gemma 3 270M) on this machine.
Last line: ``efficiency: X``. Run: ``bash bench/run.sh batch_concurrency``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test doubles

from openai_double import Faults, FakeOpenAIServer  # noqa: E402
from pack_paths import load_pack  # noqa: E402

load_pack()  # this checkout, as comfyui_twitterchat

from comfyui_twitterchat.nodes.persona import load_persona  # noqa: E402
from comfyui_twitterchat.tools.tweet_generation import generate_posts  # noqa: E402
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMProfile, LLMSettings  # noqa: E402

N, C = 200, 20
LATENCY = 1.0        # a fast LLM answer; real endpoints take 1-10 s for a post
SHORT_LATENCY = 0.25  # also reported, to show the fixed per-request client overhead
ENTRY = {"theme": "tea craft", "topic": "the day's tea", "scene_hint": "a teapot by the window",
         "posting_time": "09:00"}


def contexts(count: int) -> list[dict]:
    start = date(2026, 11, 23)
    return [{"date": (start + timedelta(days=i)).isoformat(), "weekday": "Monday", "season": "autumn",
             "city": "Hangzhou", "holidays": [], "weather": None} for i in range(count)]


async def entry_for(day):
    return ENTRY


def run(pool: LLMClientPool, profile: str, count: int, concurrency: int):
    persona = load_persona("file", "tea_girl_meilin.json", "", "bench_user")
    started = time.perf_counter()
    posts = asyncio.run(generate_posts(pool, profile, persona, contexts(count), entry_for,
                                       max_concurrent=concurrency, seed=1))
    return posts, time.perf_counter() - started


def serve(connection, latency: float) -> None:
    """The server runs in its own process, so it does not share the client's GIL."""
    server = FakeOpenAIServer(Faults(latency=latency)).start()
    connection.send(server.base_url)
    connection.recv()  # wait for "stop"
    server.stop()
    connection.send({"peak": server.peak_in_flight, "requests": len(server.requests)})


def measure(latency: float) -> tuple[float, int]:
    """(efficiency, failed posts) for N posts at concurrency C against a server with this latency."""
    parent, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=serve, args=(child, latency), daemon=True)
    process.start()
    try:
        base_url = parent.recv()
        profile = LLMProfile(name="bench", base_url=base_url, model="bench", timeout=30, max_retries=0)
        pool = LLMClientPool(max_concurrent=C, settings=LLMSettings(profiles={"bench": profile}))
        logging.getLogger("twitterchat").setLevel(logging.WARNING)  # 400 INFO lines would be measured too
        run(pool, "bench", 1, 1)  # warm-up: the first call imports the openai SDK (about 1.4 s)
        posts, wall = run(pool, "bench", N, C)
    finally:
        parent.send("stop")
        server_stats = parent.recv()
        process.join(10)
    failed = [p for p in posts if not p.ok]
    ideal = math.ceil(N / C) * latency
    print(f"openai_compatible: {N} posts, concurrency {C}, latency {latency}s: wall {wall:.2f}s, "
          f"ideal {ideal:.2f}s, efficiency {ideal / wall:.3f}, peak in flight {server_stats['peak']}, "
          f"failed {len(failed)}, requests {server_stats['requests']}")
    return ideal / wall, len(failed)


def main() -> int:
    measure(SHORT_LATENCY)
    efficiency, failed = measure(LATENCY)
    if "--skip-embedded" not in sys.argv:
        try:
            local_pool = LLMClientPool(max_concurrent=4, settings=LLMSettings.load(env={}))
            run(local_pool, "local", 1, 1)  # load the model once before timing
            local_posts, local_wall = run(local_pool, "local", 8, 4)
            done = sum(p.ok for p in local_posts)
            print(f"embedded_posts_per_second: {done / local_wall:.2f} ({done}/8 posts in {local_wall:.1f}s)")
        except Exception as exc:  # the headline figure does not depend on the embedded model
            print(f"embedded_posts_per_second: unavailable ({type(exc).__name__}: {exc})")
    print(f"efficiency: {efficiency:.3f}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
