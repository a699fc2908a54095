"""``twitterchat posts`` for many personas at once: 100 personas x 10 days at
``--max-concurrent 20`` against the OpenAI-compatible test server (its own
process) answering every call after L = 1 s. Every LLM call counts, the calendar
plans included (a 10-day window that crosses a month end plans two months):

    efficiency = ceil(all LLM calls / 20) * L / wall time      (1.0 = the bound always full)

Target >= 0.9. Last line: ``efficiency: X``. Run: ``bash bench/run.sh multi_persona``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the benchmark reuses the test doubles

from openai_double import Faults, FakeOpenAIServer  # noqa: E402
from pack_paths import EXAMPLES_DIR, load_pack  # noqa: E402

load_pack()  # this checkout, as comfyui_twitterchat

from comfyui_twitterchat.client import cli  # noqa: E402

PERSONAS, DAYS, BOUND, LATENCY = 100, 10, 20, 1.0


def serve(connection, latency: float) -> None:
    """The server runs in its own process, so it does not share the command's GIL."""
    server = FakeOpenAIServer(Faults(latency=latency)).start()
    connection.send(server.base_url)
    connection.recv()
    server.stop()
    connection.send({"requests": len(server.requests), "peak": server.peak_in_flight,
                     "plans": sum(1 for r in server.requests if r.get("response_format"))})


def write_cards(folder: Path) -> str:
    template = json.loads((EXAMPLES_DIR / "personas" / "tea_girl_meilin.json").read_text())
    for index in range(PERSONAS):
        card = json.loads(json.dumps(template))
        card["data"]["name"] = f"Meilin {index}"
        card["data"]["extensions"]["twitterchat"]["user_id"] = f"bench_{index:03d}"
        (folder / f"bench_{index:03d}.json").write_text(json.dumps(card))
    return str(folder / "*.json")


def main() -> int:
    logging.getLogger("twitterchat").setLevel(logging.WARNING)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=serve, args=(child, LATENCY), daemon=True)
    process.start()
    import openai  # noqa: F401  (the SDK's import, about 1.4 s, is not the command's work)

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        (work_dir / "cards").mkdir()
        pattern = write_cards(work_dir / "cards")
        try:
            base_url = parent.recv()
            os.environ.update({"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-bench-not-a-real-key-000000"})
            os.environ.pop("OPENAI_MODEL", None)
            out = io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(out):
                code = cli.main(["posts", "--personas", pattern, "--days", str(DAYS), "--max-concurrent",
                                 str(BOUND), "--output", str(work_dir / "out"), "--llm-profile", "openai"])
            wall = time.perf_counter() - started
        finally:
            parent.send("stop")
            stats = parent.recv()
            process.join(10)
        written = len(list((work_dir / "out").glob("*/*/metadata.json")))
    ideal = math.ceil(stats["requests"] / BOUND) * LATENCY
    print(out.getvalue().strip().splitlines()[-1])
    print(f"{PERSONAS} personas x {DAYS} days at --max-concurrent {BOUND}, latency {LATENCY}s: exit {code}, "
          f"{written} days written, {stats['requests']} LLM calls ({stats['plans']} calendar plans), "
          f"peak in flight {stats['peak']}; wall {wall:.2f}s, ideal {ideal:.0f}s")
    print(f"efficiency: {ideal / wall:.3f}")
    return 0 if code == 0 and written == PERSONAS * DAYS else 1


if __name__ == "__main__":
    sys.exit(main())
