"""CalendarManager: the persona's content plan, from the month of the given day.

It plans the context's own day (or the whole month, when asked); generators plan the
other days they need, when they need them, next to the ones already planned."""

from __future__ import annotations

import json
from datetime import date
from functools import partial

from ..tools.calendar_planner import CalendarBook
from ..tools.context import month_holidays
from ..utils.comfy_env import NodeProgress, interruptible
from ..utils.llm import LLMError, get_pool
from ..utils.output_paths import output_root
from .inputs import CONTEXT, PERSONA, REGENERATE, SEED, llm_profile, require_llm_profile, validate_llm_profile


class CalendarManager:
    NODE_ID = "CalendarManager"
    DISPLAY_NAME = "Calendar Manager (monthly plan)"
    CATEGORY = "TwitterChat/planning"
    DESCRIPTION = ("Plans posts per day (theme, topic, scene hint, posting time) with the LLM, cached per user "
                   "and month under the output folder. Only the days needed are planned: the context's day here "
                   "(or the whole month with 'plan_whole_month'), the rest when a generator asks for them. "
                   "'regenerate' starts the month's plan over.")
    RETURN_TYPES = ("TC_CALENDAR", "STRING")
    RETURN_NAMES = ("calendar", "month_plan")
    FUNCTION = "plan"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"persona": PERSONA, "context": CONTEXT, "regenerate": REGENERATE,
                             "llm_profile": llm_profile(), "seed": SEED},
                "optional": {"plan_whole_month": ("BOOLEAN", {
                    "default": False, "tooltip": "Plan every day of the month now (on the embedded model a "
                                                 "whole month takes a minute or more). Off: the context's day "
                                                 "now, the other days when a generator needs them."})}}

    @classmethod
    def IS_CHANGED(cls, regenerate=False, **kwargs):
        # NaN never equals itself: with 'regenerate' on, ComfyUI never answers from its cache.
        return float("nan") if regenerate else False

    @classmethod
    def VALIDATE_INPUTS(cls, llm_profile=None):
        return validate_llm_profile(llm_profile)

    async def plan(self, persona, context, regenerate, llm_profile, seed, plan_whole_month=False):
        require_llm_profile("CalendarManager", llm_profile)
        book = CalendarBook(persona, output_root(), get_pool(), llm_profile,
                            partial(month_holidays, persona), seed=seed, known_day=context)
        day = date.fromisoformat(context["date"])
        progress = NodeProgress(1)
        try:  # Cancel stops the plan and abandons its LLM call
            if plan_whole_month:
                month = await interruptible(book.month(day.year, day.month, regenerate=regenerate))
            else:
                await interruptible(book.plan_days([day], regenerate=regenerate))
                month = book.planned(day.year, day.month)
        except LLMError as exc:
            raise RuntimeError(f"CalendarManager: could not plan {day:%Y-%m} for {persona.user_id}: {exc}") from None
        progress.update(1)
        return (book, json.dumps(month, ensure_ascii=False, indent=1))
