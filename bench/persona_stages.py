"""PersonaGenerator's stage scheduling: one persona against the OpenAI-compatible test
server (its own process) answering every call after a fixed 0.5 s, the seven stages
in strict sequence versus the dependency graph's schedule (3 after 2; 4-7 alongside
2-3; the critical path is three stages, so the ideal is 7/3 = 2.33).

    stage_speedup = wall time in sequence / wall time scheduled

Target >= 2.0. Last line: ``stage_speedup: X``. Run: ``bash bench/run.sh persona_stages``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test doubles

from openai_double import Faults, FakeOpenAIServer  # noqa: E402
from pack_paths import load_pack  # noqa: E402

load_pack()  # this checkout, as comfyui_twitterchat

from comfyui_twitterchat.tools.persona_generator import PersonaJob, generate_persona  # noqa: E402
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMProfile, LLMSettings  # noqa: E402

LATENCY = 0.5
CONCEPT = "A night-shift nurse who bakes sourdough and writes haiku on her breaks."


def serve(connection, latency: float) -> None:
    server = FakeOpenAIServer(Faults(latency=latency)).start()
    connection.send(server.base_url)
    connection.recv()
    server.stop()
    connection.send(len(server.requests))


def timed(pool: LLMClientPool, folder: Path, sequential: bool) -> float:
    job = PersonaJob(user_id="bench_persona", concept=CONCEPT, seed=1, regenerate=True)
    started = time.perf_counter()
    asyncio.run(generate_persona(pool, "bench", job, folder, sequential=sequential))
    return time.perf_counter() - started


def main() -> int:
    logging.getLogger("twitterchat").setLevel(logging.WARNING)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=serve, args=(child, LATENCY), daemon=True)
    process.start()
    try:
        base_url = parent.recv()
        profile = LLMProfile(name="bench", base_url=base_url, model="bench", timeout=30, max_retries=0,
                             api_key_env="TWITTERCHAT_BENCH_KEY")
        pool = LLMClientPool(max_concurrent=20, settings=LLMSettings(profiles={"bench": profile}))
        with tempfile.TemporaryDirectory() as folder:
            timed(pool, Path(folder), sequential=False)  # warm-up: imports the openai SDK, opens connections
            sequential = timed(pool, Path(folder), sequential=True)
            scheduled = timed(pool, Path(folder), sequential=False)
    finally:
        parent.send("stop")
        requests = parent.recv()
        process.join(10)
    print(f"one persona, 7 stages, latency {LATENCY}s per call: in sequence {sequential:.2f}s "
          f"(ideal {7 * LATENCY:.1f}s), scheduled {scheduled:.2f}s (ideal {3 * LATENCY:.1f}s); "
          f"{requests} requests in all")
    print(f"stage_speedup: {sequential / scheduled:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
