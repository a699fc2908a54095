"""Monthly content calendars, planned by the LLM and cached per user and month.

TC_CALENDAR is a ``CalendarBook``: the persona's plan for the month the
CalendarManager node was asked about, able to plan further months when a batch
runs past the end of it. A month is asked for as structured output (a JSON
schema in ``response_format``, or a grammar for the embedded model), validated
here, and cached at ``<cache_dir>/<user_id>/calendars/<YYYY-MM>.json``.

Concurrency: reads take a shared lock, writes an exclusive one and are atomic.
Two workflows that plan the same month at once both generate, but only the
first write lands and both return that one, so the cache is never corrupted,
torn or silently replaced (``regenerate`` replaces it on purpose).
"""

from __future__ import annotations

import asyncio
import calendar as month_calendar
import copy
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any


from ..utils.file_lock import FileLock, atomic_write_json, file_lock, read_json
from ..utils.llm import LLMClientPool, LLMContentError, LLMRequest
from ..utils.safe_paths import safe_join
from .persona_card import Persona, build_system_prompt, closing_instructions

logger = logging.getLogger("twitterchat.calendar")

CONTENT_ATTEMPTS = 3
DAY_SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "integer", "minimum": 1, "maximum": 31},
        "theme": {"type": "string", "minLength": 1, "maxLength": 60},
        "topic": {"type": "string", "minLength": 1, "maxLength": 100},
        "scene_hint": {"type": "string", "minLength": 1, "maxLength": 160},
        "posting_time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
    },
    "required": ["day", "theme", "topic", "scene_hint", "posting_time"],
    "additionalProperties": False,
}


PLANNING_WAIT_SECONDS = 900
_LOCK_WAITERS = ThreadPoolExecutor(4, thread_name_prefix="twitterchat-calendar-lock")  # how long a workflow waits for another one planning the same month

# A day as JSON is about 60 to 90 tokens; 31 days at 60 each left no room to close the answer.
PLAN_TOKENS_PER_DAY = 120


def month_schema(days: int) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"days": {"type": "array", "items": DAY_SCHEMA, "minItems": days, "maxItems": days}},
            "required": ["days"], "additionalProperties": False}


def validate_month(raw: str, year: int, month: int) -> dict[str, Any]:
    """Parse and check a model's calendar; LLMContentError names what is wrong."""
    import jsonschema  # only when a plan is checked: keeps the pack's import light

    days = month_calendar.monthrange(year, month)[1]
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LLMContentError(f"calendar is not JSON ({exc.msg} at column {exc.colno})") from None
    try:
        jsonschema.validate(data, month_schema(days))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise LLMContentError(f"calendar does not match the schema at {where}: {exc.message}") from None
    numbers = sorted(entry["day"] for entry in data["days"])
    if numbers != list(range(1, days + 1)):
        # Small models number days loosely: the list order is the plan, so renumber it.
        for index, entry in enumerate(data["days"], start=1):
            entry["day"] = index
    return {"year": year, "month": month, "days": {str(e["day"]): {k: v for k, v in e.items() if k != "day"}
                                                   for e in data["days"]}}


# The embedded 270M base model plans in the few-shot line format below, held to
# it by a grammar (one line per day, four bounded fields); JSON costs it three
# times the tokens. Chat endpoints answer with the JSON schema instead.
LINE_FIELDS = ("theme", "topic", "scene_hint", "posting_time")
DEFAULT_EXAMPLE_PLAN = (
    "morning routine | what I drink first thing today | a steaming cup by a sunny window | 08:30",
    "weekend | a small plan with friends | friends laughing around a table | 15:00",
    "local life | a walk through my neighbourhood | a quiet street in soft evening light | 19:10",
)


def plan_grammar(days: int) -> str:
    return ("root ::= " + " ".join(["line"] * days) + "\n"
            'line ::= field " | " field " | " field " | " time "\\n"\n'
            "field ::= [^|\\n]{3,48}\n"
            'time ::= [01] [0-9] ":" [0-5] [0-9] | "2" [0-3] ":" [0-5] [0-9]\n')


def parse_plan_lines(raw: str, year: int, month: int) -> dict[str, Any]:
    rows = []
    for line in raw.strip().splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 4:
            rows.append(dict(zip(LINE_FIELDS, parts), day=len(rows) + 1))
    return validate_month(json.dumps({"days": rows}), year, month)


def _known_notes(known_day: dict[str, Any] | None, year: int, month: int) -> tuple[int | None, list[str], str]:
    """A gathered context's day in this month: (day of month, its holidays, its weather as words)."""
    if not known_day or not isinstance(known_day.get("date"), str):
        return None, [], ""
    try:
        day = date.fromisoformat(known_day["date"])
    except ValueError:
        return None, [], ""
    if (day.year, day.month) != (year, month):
        return None, [], ""
    weather = known_day.get("weather") or {}
    words = ""
    if weather.get("summary"):
        words = weather["summary"]
        if isinstance(weather.get("temp_min_c"), (int, float)) and isinstance(weather.get("temp_max_c"), (int, float)):
            words += f", {weather['temp_min_c']:.0f}-{weather['temp_max_c']:.0f} C"
    return day.day, [str(h) for h in known_day.get("holidays") or []], words


def plan_request(persona: Persona, year: int, month: int, holidays: dict[int, list[str]],
                 seed: int | None, known_day: dict[str, Any] | None = None) -> LLMRequest:
    """``known_day``: a ContextGatherer's context; its holidays and weather go into that day's line."""
    days = month_calendar.monthrange(year, month)[1]
    first = date(year, month, 1)
    known, known_holidays, known_weather = _known_notes(known_day, year, month)
    lines = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        names = list(holidays.get(day.day) or [])
        if day.day == known:
            names += [h for h in known_holidays if h not in names]
        note = f" (holiday: {', '.join(names)})" if names else ""
        if day.day == known and known_weather:
            note += f" (weather: {known_weather})"
        lines.append(f"{day.day}: {day.strftime('%A')}{note}")
    prompt = (f"Plan {persona.name}'s social media posts for {first.strftime('%B %Y')}: one entry per day, "
              f"days 1 to {days}, in order. For each day give a short theme, a concrete topic, a scene hint "
              "describing the photo that goes with the post, and a local posting time (HH:MM). "
              "Vary themes across the week and use the holidays and the weather given.\n" + "\n".join(lines))
    examples = persona.extension.get("example_plan")
    if not (isinstance(examples, list) and all(isinstance(e, str) and e.count("|") == 3 for e in examples)):
        examples = DEFAULT_EXAMPLE_PLAN
    completion = (f"{persona.summary()}\n{persona.name}'s daily post plan. "
                  "Each line: theme | topic | photo scene | posting time.\n" + "\n".join(examples) + "\n")
    closing = closing_instructions(persona)
    if closing:
        prompt += "\n\n" + closing
    return LLMRequest(system=build_system_prompt(persona, scan=prompt), prompt=prompt, completion_prompt=completion,
                      json_schema=month_schema(days), schema_name="content_calendar",
                      grammar=plan_grammar(days), max_tokens=PLAN_TOKENS_PER_DAY * days + 200, temperature=0.8,
                      seed=seed,
                      tag=f"calendar {year}-{month:02d}")


async def _acquire(lock: FileLock) -> None:
    """Take a blocking file lock off the event loop; if the waiting task is cancelled (ComfyUI's
    Cancel), the lock is released as soon as the thread gets it, never left held."""
    pending = _LOCK_WAITERS.submit(lock.acquire)
    try:
        await asyncio.wrap_future(pending)
    except asyncio.CancelledError:
        pending.add_done_callback(lambda done: done.exception() is None and lock.release())
        raise


class CalendarBook:
    """A persona's monthly plans, from the cache or planned on demand."""

    def __init__(self, persona: Persona, cache_dir: Path, pool: LLMClientPool, profile: str,
                 holidays_for, seed: int | None = None, known_day: dict[str, Any] | None = None) -> None:
        self.persona = persona
        self.cache_dir = Path(cache_dir)
        self.pool = pool
        self.profile = profile
        self.holidays_for = holidays_for  # (year, month) -> {day: [names]}
        self.seed = seed
        self.known_day = known_day  # a ContextGatherer's day: its weather and holidays reach the plan
        self.months: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def fork(self) -> "CalendarBook":
        """A book of its own for one node run: months it reads or plans go in it, never into the
        book ComfyUI keeps cached as the CalendarManager's output."""
        twin = copy.copy(self)
        twin.months = dict(self.months)
        twin._lock = threading.Lock()
        return twin

    def path_for(self, year: int, month: int) -> Path:
        return safe_join(self.cache_dir, self.persona.user_id, "calendars", f"{year:04d}-{month:02d}.json")

    async def month(self, year: int, month: int, regenerate: bool = False) -> dict[str, Any]:
        key = f"{year:04d}-{month:02d}"
        if not regenerate and key in self.months:
            return self.months[key]
        path = self.path_for(year, month)
        loop = asyncio.get_running_loop()
        cached = None if regenerate else await loop.run_in_executor(None, self._read, path)
        if cached is None:
            # One planner per month across workflows and processes: the others wait for its plan
            # (a lock of its own: the cache file's lock is taken again to store the plan).
            planning = FileLock(path.with_name(f"{path.name}.planning"), timeout=PLANNING_WAIT_SECONDS)
            await _acquire(planning)
            try:
                cached = None if regenerate else await loop.run_in_executor(None, self._read, path)
                if cached is None:
                    planned = await self._plan(year, month)
                    cached = await loop.run_in_executor(None, self._store, path, planned, regenerate)
            finally:
                planning.release()
        self.months[key] = cached
        return cached

    async def entry_for(self, day: date) -> dict[str, Any]:
        plan = await self.month(day.year, day.month)
        return plan["days"][str(day.day)]

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return read_json(path)
        except ValueError as exc:  # a damaged cache is replaced, and said so
            logger.warning("calendar cache %s is damaged (%s); planning again", path.name, exc)
            return None

    @staticmethod
    def _store(path: Path, planned: dict[str, Any], replace: bool) -> dict[str, Any]:
        with file_lock(path, timeout=60):
            if not replace and path.exists():
                try:
                    existing = json.loads(path.read_text(encoding="utf-8"))
                    logger.info("calendar %s was planned by another workflow meanwhile; using it", path.name)
                    return existing
                except json.JSONDecodeError:
                    pass
            atomic_write_json(path, planned)
        return planned

    async def _plan(self, year: int, month: int) -> dict[str, Any]:
        request = plan_request(self.persona, year, month, self.holidays_for(year, month), self.seed, self.known_day)
        parse = parse_plan_lines if self.pool.profile(self.profile).kind == "local" else validate_month
        last_error: LLMContentError | None = None
        for attempt in range(1, CONTENT_ATTEMPTS + 1):
            raw = await self.pool.complete(self.profile, request)
            try:
                plan = parse(raw, year, month)
                plan["user_id"] = self.persona.user_id
                plan["persona_name"] = self.persona.name
                return plan
            except LLMContentError as exc:
                last_error = exc
                logger.warning("calendar %d-%02d attempt %d unusable: %s", year, month, attempt, exc)
        raise LLMContentError(f"no usable calendar after {CONTENT_ATTEMPTS} attempts: {last_error}")
