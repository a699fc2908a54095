"""ContextGatherer: the persona's own local day (date, time, season, holidays, weather)."""

from __future__ import annotations

from datetime import datetime, timezone

from ..tools.context import build_context, describe_day
from ..utils.settings import ContextSettings
from .inputs import DAY_OFFSET, INCLUDE_WEATHER, PERSONA


class ContextGatherer:
    NODE_ID = "ContextGatherer"
    DISPLAY_NAME = "Context Gatherer (local day)"
    CATEGORY = "TwitterChat/context"
    DESCRIPTION = ("The persona's local date, weekday, time, season, public holidays and (when a "
                   "provider answers) weather for today + day_offset, in the persona's own time zone.")
    RETURN_TYPES = ("TC_CONTEXT", "STRING", "STRING")
    RETURN_NAMES = ("context", "summary", "date")
    FUNCTION = "gather"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"persona": PERSONA, "day_offset": DAY_OFFSET,
                             "include_weather": INCLUDE_WEATHER}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # The answer depends on today's date: re-run at least every hour.
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H")

    def gather(self, persona, day_offset, include_weather):
        settings = ContextSettings.load()
        try:
            context = build_context(persona, day_offset,
                                    weather_url=settings.weather_url if include_weather else "",
                                    weather_timeout=settings.weather_timeout_seconds)
        except ValueError as exc:
            raise ValueError(f"ContextGatherer: {exc}") from None
        return (context, describe_day(context), context["date"])
