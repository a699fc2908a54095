"""TC_CONTEXT: what one local day looks like for a persona.

A plain dict (JSON-ready) from ``DateTimeTool`` plus the persona's city and,
when a provider answers, the weather: ``date, weekday, local_time, day_offset,
season, timezone, utc_offset, timezone_assumed, country, city, holidays,
is_holiday, is_weekend, weather``.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from .datetime_tool import DateTimeTool
from .persona_card import Persona
from .weather import fetch_weather

logger = logging.getLogger("twitterchat.context")


def datetime_tool_for(persona: Persona) -> tuple[DateTimeTool, bool]:
    """The persona's own clock; UTC (said so in the context) when the card names no zone."""
    locale = persona.locale()
    assumed = not (locale["timezone"] or locale["utc_offset"])
    if assumed:
        logger.warning("persona %s has no time zone (data.core_info.location.timezone or "
                       "data.extensions.twitterchat.timezone); using UTC", persona.name)
    latitude = locale["latitude"]
    tool = DateTimeTool(country=locale["country"], timezone=locale["timezone"] or ("UTC" if assumed else None),
                        utc_offset=locale["utc_offset"], subdivision=locale["subdivision"],
                        language=locale["holiday_language"],
                        latitude=float(latitude) if isinstance(latitude, (int, float)) else None)
    return tool, assumed


def build_context(persona: Persona, day_offset: int, weather_url: str = "", weather_timeout: float = 3.0,
                  tool: DateTimeTool | None = None) -> dict[str, Any]:
    assumed = False
    if tool is None:
        tool, assumed = datetime_tool_for(persona)
    context = tool.execute(day_offset=day_offset)
    locale = persona.locale()
    context["timezone_assumed"] = assumed
    context["city"] = locale["city"]
    context["weather"] = None
    lat, lon = locale["latitude"], locale["longitude"]
    if weather_url and isinstance(lat, (int, float)) and isinstance(lon, (int, float)):
        context["weather"] = fetch_weather(weather_url, float(lat), float(lon),
                                           date.fromisoformat(context["date"]), context["timezone"],
                                           timeout=weather_timeout)
    return context


def describe_day(context: dict[str, Any]) -> str:
    """One line for prompts: 'Tuesday 2026-11-24, autumn, in Hangzhou; holiday: X; weather: rain'."""
    parts = [f"{context['weekday']} {context['date']}", context["season"]]
    if context.get("city"):
        parts.append(f"in {context['city']}")
    text = ", ".join(parts)
    if context.get("holidays"):
        text += f"; public holiday: {', '.join(context['holidays'])}"
    weather = context.get("weather")
    if weather:
        text += f"; weather: {weather['summary']}, {weather['temp_min_c']:.0f}-{weather['temp_max_c']:.0f} C"
    return text


def month_holidays(persona: Persona, year: int, month: int) -> dict[int, list[str]]:
    """{day of month: holiday names} in the persona's country (for calendar planning)."""
    import calendar

    tool, _ = datetime_tool_for(persona)
    days = calendar.monthrange(year, month)[1]
    found = {}
    for day in range(1, days + 1):
        names = tool.holidays_on(date(year, month, day))
        if names:
            found[day] = names
    return found
