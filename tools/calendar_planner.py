"""Monthly content calendars, planned by the LLM and cached per user and month.

TC_CALENDAR is a ``CalendarBook``: the persona's plan, month by month, cached at
``<cache_dir>/<user_id>/calendars/<YYYY-MM>.json``. Only the days asked for are
planned: a 3-day batch plans 3 days, and a later request plans the days it needs
next to the ones already there (shown to the model, so themes do not repeat and
the month's arc holds); cached days never change unless ``regenerate``. An
OpenAI-compatible endpoint plans every missing day of the month in one call
(a JSON schema in ``response_format``, validated here). The embedded model
plans in labelled lines held by a grammar to exactly the days asked, each field
within the schema's bounds, so its structure cannot fail; what can still fail is
content (a URL, an e-mail address or a handle), which is asked for again.

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
from ..utils.llm.request import LineFields
from ..utils.safe_paths import safe_join
from .persona_card import Persona, build_system_prompt, closing_instructions
from .post_text import unwanted_link

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


def validate_month(raw: str, year: int, month: int, wanted: list[int] | None = None,
                   allowed: str = "") -> dict[str, Any]:
    """Parse and check a model's plan of the ``wanted`` days (all of the month by default), in
    order; LLMContentError names what is wrong. ``allowed``: text whose links may be repeated."""
    import jsonschema  # only when a plan is checked: keeps the pack's import light

    wanted = wanted or list(range(1, month_calendar.monthrange(year, month)[1] + 1))
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LLMContentError(f"calendar is not JSON ({exc.msg} at column {exc.colno})") from None
    try:
        jsonschema.validate(data, month_schema(len(wanted)))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise LLMContentError(f"calendar does not match the schema at {where}: {exc.message}") from None
    for entry in data["days"]:
        for key in LINE_FIELDS[:3]:
            link = unwanted_link(entry[key], allowed)
            if link:
                raise LLMContentError(f"day {entry['day']}'s {key} carries {link}, which the card does not have")
    # Small models number days loosely: the list order is the plan, so the days are taken in order.
    return {"year": year, "month": month, "days": {str(day): {k: v for k, v in e.items() if k != "day"}
                                                   for day, e in zip(wanted, data["days"])}}


# The embedded 270M base model plans in the few-shot line format below. The code
# lays the lines down (``LineFields``): one line per day asked, starting with that
# day's label, then four fields the model fills one by one, each cut to its bound
# (within DAY_SCHEMA's maxLength), without line breaks, pipes, '@' or '/', and a
# posting time read as HH:MM; so the structure cannot fail. JSON would cost it three
# times the tokens. Chat endpoints answer with the JSON schema.
LINE_FIELDS = ("theme", "topic", "scene_hint", "posting_time")
LOCAL_FIELDS = (("theme", 32), ("topic", 56), ("scene_hint", 64), ("posting_time", 5))
DEFAULT_EXAMPLE_PLAN = (
    "morning routine | what I drink first thing today | a steaming cup by a sunny window | 08:30",
    "weekend | a small plan with friends | friends laughing around a table | 15:00",
    "local life | a walk through my neighbourhood | a quiet street in soft evening light | 19:10",
)


def parse_plan_lines(raw: str, year: int, month: int, wanted: list[int] | None = None,
                     allowed: str = "", labelled: bool = False) -> dict[str, Any]:
    """The plan lines of the ``wanted`` days, in order (``labelled``: each starts with its day label)."""
    rows = []
    for line in raw.strip().splitlines():
        parts = [part.strip() for part in line.split("|")]
        if labelled:
            parts = parts[1:]
        if len(parts) == 4:
            rows.append(dict(zip(LINE_FIELDS, parts), day=len(rows) + 1))
    return validate_month(json.dumps({"days": rows}), year, month, wanted, allowed)


def day_label(day: date, holidays: list[str] = (), weather: str = "") -> str:
    """How a plan line names its day: '25 Thu', with its holidays and weather when known."""
    notes = [", ".join(holidays)] if holidays else []
    if weather:
        notes.append(weather)
    label = f"{day.day} {day.strftime('%a')}"
    label = f"{label} ({'; '.join(notes)})"[:90] if notes else label
    return label.replace("|", "/")


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
                 seed: int | None, known_day: dict[str, Any] | None = None, wanted: list[int] | None = None,
                 planned: dict[str, dict[str, Any]] | None = None, problem: str | None = None) -> LLMRequest:
    """The plan of the ``wanted`` days (all of the month by default), next to the ``planned`` ones.
    ``known_day``: a ContextGatherer's context; its holidays and weather go into that day's line."""
    wanted = wanted or list(range(1, month_calendar.monthrange(year, month)[1] + 1))
    planned = planned or {}
    first = date(year, month, 1)
    known, known_holidays, known_weather = _known_notes(known_day, year, month)

    def notes(number: int) -> tuple[list[str], str]:
        names = list(holidays.get(number) or [])
        if number == known:
            names += [h for h in known_holidays if h not in names]
        return names, known_weather if number == known else ""

    lines = []
    for number in wanted:
        day = first.replace(day=number)
        names, weather = notes(number)
        note = f" (holiday: {', '.join(names)})" if names else ""
        if weather:
            note += f" (weather: {weather})"
        lines.append(f"{day.day}: {day.strftime('%A')}{note}")
    already = [f"{n}: {e['theme']} | {e['topic']}" for n, e in sorted(planned.items(), key=lambda i: int(i[0]))]
    prompt = (f"Plan {persona.name}'s social media posts for {first.strftime('%B %Y')}: one entry per day, "
              f"for exactly these {len(wanted)} day(s), in order. For each day give a short theme, a concrete "
              "topic, a scene hint describing the photo that goes with the post, and a local posting time "
              "(HH:MM). Vary themes across the week and use the holidays and the weather given. No links, "
              "e-mail addresses or @handles.\n" + "\n".join(lines))
    if already:
        prompt += ("\n\nAlready planned this month (keep the month coherent; do not repeat these themes):\n"
                   + "\n".join(already))
    if problem:
        prompt += f"\n\nThe previous answer was unusable ({problem}); plan again."
    closing = closing_instructions(persona)
    if closing:
        prompt += "\n\n" + closing
    # The embedded model continues a labelled list: examples (labels of a neutral week), the days
    # already planned, then the grammar writes each wanted day's label and the model its fields.
    examples = persona.extension.get("example_plan")
    if not (isinstance(examples, list) and all(isinstance(e, str) and e.count("|") == 3 for e in examples)):
        examples = DEFAULT_EXAMPLE_PLAN
    sample_week = [date(2024, 1, 1) + timedelta(days=i) for i in range(len(examples))]
    shown = [f"{day_label(d)} | {line}" for d, line in zip(sample_week, examples)]
    earlier = [f"{day_label(first.replace(day=int(n)))} | {e['theme']} | {e['topic']} | {e['scene_hint']} | "
               f"{e['posting_time']}" for n, e in sorted(planned.items(), key=lambda i: int(i[0]))][-6:]
    labels = [day_label(first.replace(day=n), *notes(n)) for n in wanted]
    completion = (f"{persona.summary()}\n{persona.name}'s daily post plan. Each line: day | theme | topic | "
                  "photo scene | posting time.\nExample week:\n" + "\n".join(shown) +
                  f"\n\n{first.strftime('%B %Y')}:\n" + "".join(line + "\n" for line in earlier))
    fallbacks = tuple(tuple(line.split("|")[i].strip() for line in examples) for i in range(len(LINE_FIELDS)))
    return LLMRequest(system=build_system_prompt(persona, scan=prompt), prompt=prompt, completion_prompt=completion,
                      json_schema=month_schema(len(wanted)), schema_name="content_calendar",
                      lines=LineFields(tuple(labels), LOCAL_FIELDS, fallbacks),
                      max_tokens=PLAN_TOKENS_PER_DAY * len(wanted) + 200,
                      temperature=0.8, seed=seed, tag=f"calendar {year}-{month:02d} ({len(wanted)} day(s))")


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
        """The whole month's plan (planning the days not planned yet)."""
        return await self._ensure(year, month, None, regenerate)

    async def plan_days(self, days: list[date], regenerate: bool = False) -> None:
        """Plan the given days that are not planned yet: one call per month for all of them."""
        months: dict[tuple[int, int], set[int]] = {}
        for day in days:
            months.setdefault((day.year, day.month), set()).add(day.day)
        for (year, month), numbers in sorted(months.items()):
            await self._ensure(year, month, numbers, regenerate)

    async def entry_for(self, day: date) -> dict[str, Any]:
        plan = await self._ensure(day.year, day.month, {day.day}, False)
        return plan["days"][str(day.day)]

    def planned(self, year: int, month: int) -> dict[str, Any] | None:
        """What this book holds of a month (planned or read so far), without planning."""
        return self.months.get(f"{year:04d}-{month:02d}")

    async def _ensure(self, year: int, month: int, wanted: set[int] | None, regenerate: bool) -> dict[str, Any]:
        """The month's plan with at least the ``wanted`` days (None: all of them) planned."""
        key = f"{year:04d}-{month:02d}"
        wanted = set(range(1, month_calendar.monthrange(year, month)[1] + 1)) if wanted is None else wanted

        def complete(plan: dict[str, Any] | None) -> bool:
            return plan is not None and all(str(n) in plan.get("days", {}) for n in wanted)

        if not regenerate and complete(self.months.get(key)):
            return self.months[key]
        path = self.path_for(year, month)
        loop = asyncio.get_running_loop()
        cached = None if regenerate else await loop.run_in_executor(None, self._read, path)
        if not complete(cached):
            # One planner per month across workflows and processes: the others wait for its plan
            # (a lock of its own: the cache file's lock is taken again to store the plan).
            planning = FileLock(path.with_name(f"{path.name}.planning"), timeout=PLANNING_WAIT_SECONDS)
            await _acquire(planning)
            try:
                cached = None if regenerate else await loop.run_in_executor(None, self._read, path)
                if not complete(cached):
                    have = dict((cached or {}).get("days") or {})
                    missing = sorted(n for n in wanted if str(n) not in have)
                    if self.pool.profile(self.profile).kind != "local":
                        # A chat endpoint plans every missing day of the month in one call.
                        days_in_month = month_calendar.monthrange(year, month)[1]
                        missing = [n for n in range(1, days_in_month + 1) if str(n) not in have]
                    planned = await self._plan(year, month, missing, have)
                    cached = await loop.run_in_executor(None, self._store, path, planned, regenerate)
            finally:
                planning.release()
        self.months[key] = cached
        return cached

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return read_json(path)
        except ValueError as exc:  # a damaged cache is replaced, and said so
            logger.warning("calendar cache %s is damaged (%s); planning again", path.name, exc)
            return None

    @staticmethod
    def _store(path: Path, planned: dict[str, Any], replace: bool) -> dict[str, Any]:
        """Add the planned days to the month's file (atomically, under its lock); days already in
        the file are kept as they are, unless ``replace`` (regenerate) starts the month over."""
        with file_lock(path, timeout=60):
            merged = planned
            if not replace and path.exists():
                try:
                    existing = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    existing = None
                if isinstance(existing, dict) and isinstance(existing.get("days"), dict):
                    merged = {**existing, "days": {**planned["days"], **existing["days"]}}
            merged["days"] = dict(sorted(merged["days"].items(), key=lambda item: int(item[0])))
            atomic_write_json(path, merged)
        return merged

    async def _plan(self, year: int, month: int, wanted: list[int], planned: dict[str, Any]) -> dict[str, Any]:
        """The ``wanted`` days' plan, the ``planned`` ones given to the model for coherence."""
        local = self.pool.profile(self.profile).kind == "local"
        allowed = self.persona.card_text()
        holidays = self.holidays_for(year, month)
        last_error: LLMContentError | None = None
        for attempt in range(1, CONTENT_ATTEMPTS + 1):
            seed = None if self.seed is None else self.seed + (attempt - 1) * 1000
            request = plan_request(self.persona, year, month, holidays, seed, self.known_day, wanted, planned,
                                   None if last_error is None else str(last_error))
            raw = await self.pool.complete(self.profile, request)
            try:
                plan = (parse_plan_lines(raw, year, month, wanted, allowed, labelled=True) if local
                        else validate_month(raw, year, month, wanted, allowed))
                plan["user_id"] = self.persona.user_id
                plan["persona_name"] = self.persona.name
                return plan
            except LLMContentError as exc:
                last_error = exc
                logger.warning("calendar %d-%02d attempt %d unusable: %s", year, month, attempt, exc)
        raise LLMContentError(f"no usable calendar after {CONTENT_ATTEMPTS} attempts: {last_error}")
