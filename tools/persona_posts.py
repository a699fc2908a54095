"""Posts for many personas at once, headless (the ``twitterchat posts`` command).

The same tools as the nodes: ``build_context`` (ContextGatherer), ``CalendarBook``
(CalendarManager), ``generate_posts`` (BatchTweetGenerator) and ``save_day``
(OutputManager). Every persona runs at once; the pool's one bound decides how
many LLM calls are in flight, so calendar plans and posts of all personas keep
it saturated (no persona waits on another). Days already written
(``<output>/<user_id>/<date>/metadata.json``) are skipped, so a run resumes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..utils.llm import LLMClientPool
from ..utils.safe_paths import safe_join
from .calendar_planner import CalendarBook
from .context import build_context, month_holidays
from .persona_card import Persona
from .post_output import build_metadata, save_day
from .tweet_generation import DayPost, generate_posts

logger = logging.getLogger("twitterchat.persona_posts")


@dataclass
class PersonaPostsReport:
    user_id: str
    name: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # date -> error

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        line = (f"{self.user_id} ({self.name}): {len(self.written)} written, {len(self.skipped)} already there, "
                f"{len(self.failed)} failed")
        return line + "".join(f"\n  {day}: {error}" for day, error in sorted(self.failed.items()))


def day_written(output_root: Path, user_id: str, day: str) -> bool:
    """A finished day: ``<date>/metadata.json`` (written last by ``save_day``) or a later run's ``<date>_N``."""
    user_dir = safe_join(output_root, user_id)
    return any((folder / "metadata.json").is_file() for folder in
               [user_dir / day, *user_dir.glob(f"{day}_*")])


async def posts_for_persona(pool: LLMClientPool, profile: str, persona: Persona, offsets: list[int],
                            output_root: Path, *, seed: int | None = None, weather_url: str = "",
                            on_day: Callable[[str, bool | None], None] | None = None) -> PersonaPostsReport:
    """Posts for one persona's days (skipping those already written), saved as OutputManager saves them.
    ``on_day(date, ok)`` is called once per day (``ok`` is None for a day skipped)."""
    report = PersonaPostsReport(persona.user_id, persona.name)
    contexts = await asyncio.to_thread(
        lambda: [build_context(persona, offset, weather_url) for offset in offsets])
    todo = []
    for context in contexts:
        if day_written(output_root, persona.user_id, context["date"]):
            report.skipped.append(context["date"])
            if on_day is not None:
                on_day(context["date"], None)
        else:
            todo.append(context)
    if not todo:
        return report
    book = CalendarBook(persona, output_root, pool, profile, partial(month_holidays, persona), seed=seed)

    def done(post: DayPost) -> None:
        if on_day is not None:
            on_day(post.date, post.ok)

    posts = await generate_posts(pool, profile, persona, todo, book.entry_for, max_concurrent=len(todo),
                                 seed=seed, on_day_done=done, plan_days=book.plan_days)
    for post in posts:
        if not post.ok:
            report.failed[post.date] = post.error or "unknown error"
            continue
        metadata = build_metadata(persona.user_id, persona.name, post.date, None, post.text, post.scene_hint,
                                  "", 0.0)
        try:
            await asyncio.to_thread(save_day, output_root, metadata)
            report.written.append(post.date)
        except OSError as exc:
            report.failed[post.date] = f"could not save: {exc}"
    return report


async def posts_for_personas(pool: LLMClientPool, profile: str, personas: list[Persona], offsets: list[int],
                             output_root: Path, *, seed: int | None = None, weather_url: str = "",
                             on_day: Callable[[str, str, bool | None], None] | None = None
                             ) -> list[PersonaPostsReport]:
    """Every persona at once; one persona's unexpected error is its report's, never the others'."""

    async def one(persona: Persona) -> PersonaPostsReport:
        try:
            return await posts_for_persona(
                pool, profile, persona, offsets, output_root, seed=seed, weather_url=weather_url,
                on_day=None if on_day is None else partial(on_day, persona.user_id))
        except Exception as exc:  # a persona's boundary: the others still finish
            logger.exception("posts for %s failed", persona.user_id)
            report = PersonaPostsReport(persona.user_id, persona.name)
            report.failed["all days"] = f"{type(exc).__name__}: {exc}"
            return report

    return list(await asyncio.gather(*(one(persona) for persona in personas)))
