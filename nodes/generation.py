"""BatchTweetGenerator and TweetGenerator: posts for one or many days, concurrently."""

from __future__ import annotations

import asyncio
import copy
import json
import logging

from ..tools.context import build_context
from ..tools.tweet_generation import generate_posts
from ..utils.comfy_env import NodeProgress, interruptible
from ..utils.llm import get_pool
from ..utils.settings import ContextSettings
from ..utils.structured_logger import redact_text
from .inputs import (CALENDAR, CONTEXT, DAY_OFFSET, INCLUDE_WEATHER, PERSONA, SEED, llm_profile,
                     require_llm_profile, validate_llm_profile)

logger = logging.getLogger("twitterchat.nodes.generation")


async def _generate(persona, calendar, offsets, max_concurrent, llm_profile, seed, include_weather, given=None):
    """Posts for the days asked, with ComfyUI's progress bar (days done of days asked); Cancel
    stops it between LLM calls and abandons the ones in flight. ``given``: a ContextGatherer's
    context, used as it is (its weather and holidays) for its own day instead of looking again."""
    settings = ContextSettings.load()
    url = settings.weather_url if include_weather else ""
    progress = NodeProgress(len(offsets))
    calendar = calendar.fork()  # the CalendarManager's cached output is never changed from here

    async def context_for(offset):
        if given is not None and given.get("day_offset") == offset:
            return copy.deepcopy(given)  # ComfyUI keeps the gatherer's output cached: never changed here
        # weather look-ups block: keep them off the event loop
        return await asyncio.to_thread(build_context, persona, offset, url, settings.weather_timeout_seconds)

    async def run():
        contexts = await asyncio.gather(*(context_for(offset) for offset in offsets))
        return await generate_posts(get_pool(), llm_profile, persona, contexts, calendar.entry_for,
                                    max_concurrent=max_concurrent, seed=seed,
                                    on_day_done=lambda post: progress.update(1), plan_days=calendar.plan_days)

    return await interruptible(run())


def _shown(posts) -> dict:
    """What the pack's frontend extension draws on the node (the stock frontend ignores ``ui.text``):
    every day asked, its post or why there is none (redacted, like the log)."""
    return {"twitterchat_posts": [{"date": p.date, "text": p.text, "warning": p.warning,
                                   "error": None if p.ok else redact_text(str(p.error))} for p in posts]}


def _report(posts) -> str:
    return json.dumps({"generated": sum(p.ok for p in posts), "failed": sum(not p.ok for p in posts),
                       "days": [p.to_dict() for p in posts]}, ensure_ascii=False, indent=1)


class BatchTweetGenerator:
    NODE_ID = "BatchTweetGenerator"
    DISPLAY_NAME = "Batch Tweet Generator (many days)"
    CATEGORY = "TwitterChat/generation"
    DESCRIPTION = ("Writes posts for num_days days from start_day_offset, concurrently. Outputs are lists "
                   "(one item per successful day), so downstream nodes run once per day. A failed day is "
                   "reported in 'report' and the others still return.")
    RETURN_TYPES = ("STRING", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("posts", "scene_hints", "dates", "report")
    OUTPUT_IS_LIST = (True, True, True, False)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "persona": PERSONA, "calendar": CALENDAR,
            "num_days": ("INT", {"default": 3, "min": 1, "max": 31, "tooltip": "How many days of posts"}),
            "start_day_offset": (DAY_OFFSET[0], {**DAY_OFFSET[1], "tooltip": "The first day: days after today, "
                                                                            "in the persona's zone"}),
            "max_concurrent": ("INT", {"default": 5, "min": 1, "max": 64,
                                       "tooltip": "Days written at once (the process-wide llm.max_concurrent "
                                                  "still bounds every call)"}),
            "llm_profile": llm_profile(), "seed": SEED, "include_weather": INCLUDE_WEATHER,
        }, "optional": {"context": (CONTEXT[0], {"tooltip": "A Context Gatherer's day: its weather and holidays "
                                                            "are used for that day (the others are looked up)"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, llm_profile=None):
        return validate_llm_profile(llm_profile)

    async def generate(self, persona, calendar, num_days, start_day_offset, max_concurrent, llm_profile,
                       seed, include_weather, context=None):
        require_llm_profile("BatchTweetGenerator", llm_profile)
        if not 1 <= num_days <= 31:
            raise ValueError(f"BatchTweetGenerator: num_days must be 1..31, got {num_days}")
        offsets = [start_day_offset + i for i in range(num_days)]
        posts = await _generate(persona, calendar, offsets, max_concurrent, llm_profile, seed, include_weather,
                                context)
        done = [p for p in posts if p.ok]
        for failed in (p for p in posts if not p.ok):
            logger.error("no post for %s on %s: %s", persona.user_id, failed.date, failed.error)
        if not done:
            raise RuntimeError(f"BatchTweetGenerator: every day failed; first error: {posts[0].error}")
        return {"ui": _shown(posts),
                "result": ([p.text for p in done], [p.scene_hint for p in done], [p.date for p in done], _report(posts))}


class TweetGenerator:
    NODE_ID = "TweetGenerator"
    DISPLAY_NAME = "Tweet Generator (one day)"
    CATEGORY = "TwitterChat/generation"
    DESCRIPTION = "Writes the post for one day (today + day_offset), with the same code as the batch node."
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("post", "scene_hint", "date")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"persona": PERSONA, "calendar": CALENDAR, "day_offset": DAY_OFFSET,
                             "llm_profile": llm_profile(), "seed": SEED, "include_weather": INCLUDE_WEATHER},
                "optional": {"context": (CONTEXT[0], {"tooltip": "A Context Gatherer's day: used as it is (its "
                                                                 "weather and holidays) when it is day_offset's day"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, llm_profile=None):
        return validate_llm_profile(llm_profile)

    async def generate(self, persona, calendar, day_offset, llm_profile, seed, include_weather, context=None):
        require_llm_profile("TweetGenerator", llm_profile)
        (post,) = await _generate(persona, calendar, [day_offset], 1, llm_profile, seed, include_weather, context)
        if not post.ok:
            raise RuntimeError(f"TweetGenerator: no post for {post.date}: {post.error}")
        return {"ui": _shown([post]), "result": (post.text, post.scene_hint, post.date)}
