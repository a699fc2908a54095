"""The main job's work on the embedded model (Gemma 3 270M through llama.cpp), outside ComfyUI.

What the example workflow does, with the same tools as its nodes: the context of the
day, the CalendarManager's plan of that day, then BatchTweetGenerator's 3 days (it
plans the two days not planned yet in one call) and their posts, for RUNS different
start dates (day offsets OFFSETS), each run with an empty cache. The model is loaded
once first (its load time is printed, not counted).

Two personas, a fixed set: the example card (English) and a Chinese-language card
(examples/personas/chengdu_baker_xiaoyu.json). A run succeeds when all 3 posts come
back; a post is clean when it carries no link, e-mail address or @handle the card
does not have, fits X's 280 weighted characters, and is written in the card's
language (mostly CJK for the Chinese card, mostly Latin for the English one).

Prints each run, then ``success_rate:``, ``clean_post_rate:`` (both personas) and
last ``demo_seconds:`` (median over the example card's runs; target <= 45 on 2 idle
cores). Run: ``bash bench/run.sh embedded_pipeline``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))

from pack_paths import load_pack  # noqa: E402

load_pack()

from comfyui_twitterchat.nodes.persona import load_persona  # noqa: E402
from comfyui_twitterchat.tools.calendar_planner import CalendarBook  # noqa: E402
from comfyui_twitterchat.tools.context import build_context, month_holidays  # noqa: E402
from comfyui_twitterchat.tools.post_text import unwanted_link, weighted_length  # noqa: E402
from comfyui_twitterchat.tools.tweet_generation import generate_posts  # noqa: E402
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMSettings, LocalModel  # noqa: E402

PERSONAS = (("tea_girl_meilin.json", "meilin_001", "en"), ("chengdu_baker_xiaoyu.json", "xiaoyu_001", "zh"))
OFFSETS = (0, 4, 9, 15, 23)
DAYS = 3
SEED = 42


def in_language(text: str, language: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    cjk = sum(1 for c in letters if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    share = cjk / len(letters)
    return share >= 0.5 if language == "zh" else share <= 0.1


async def one_run(pool: LLMClientPool, persona, offset: int, cache: Path) -> tuple[float, list]:
    started = time.perf_counter()
    contexts = [build_context(persona, offset + i, "") for i in range(DAYS)]
    book = CalendarBook(persona, cache, pool, "local", partial(month_holidays, persona), seed=SEED,
                        known_day=contexts[0])
    await book.plan_days([date.fromisoformat(contexts[0]["date"])])  # CalendarManager: its context's day
    posts = await generate_posts(pool, "local", persona, contexts, book.entry_for, max_concurrent=5, seed=SEED,
                                 plan_days=book.plan_days)
    return time.perf_counter() - started, posts


def main() -> int:
    pool = LLMClientPool(max_concurrent=5, settings=LLMSettings.load(env={}))
    began = time.perf_counter()
    LocalModel.get(pool.profile("local"))
    print(f"model loaded in {time.perf_counter() - began:.1f}s (not counted)", flush=True)
    seconds: dict[str, list[float]] = {}
    successes = runs = clean = total_posts = 0
    for card, user_id, language in PERSONAS:
        persona = load_persona("file", card, "", user_id)
        for offset in OFFSETS:
            with tempfile.TemporaryDirectory(prefix="tc-embedded-") as cache:
                took, posts = asyncio.run(one_run(pool, persona, offset, Path(cache)))
            runs += 1
            ok = all(p.ok for p in posts)
            successes += ok
            seconds.setdefault(user_id, []).append(took)
            for post in posts:
                total_posts += 1
                good = (post.ok and unwanted_link(post.text, persona.card_text()) is None
                        and 0 < weighted_length(post.text) <= 280 and in_language(post.text, language))
                clean += good
                mark = "ok   " if good else ("FAIL " if not post.ok else "unclean")
                print(f"  {user_id} {post.date} [{mark}] {post.text or post.error}", flush=True)
            print(f"{user_id} offset {offset}: {took:.1f}s, {'success' if ok else 'FAILED'}", flush=True)
    for user_id, values in seconds.items():
        print(f"{user_id}: median {statistics.median(values):.1f}s over {len(values)} runs "
              f"(min {min(values):.1f}, max {max(values):.1f})")
    print(f"success_rate: {successes / runs:.2f}")
    print(f"clean_post_rate: {clean / total_posts:.2f}")
    print(f"demo_seconds: {statistics.median(seconds['meilin_001']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
