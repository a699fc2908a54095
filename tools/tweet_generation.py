"""Posts for many days at once.

Days run concurrently (bounded by ``max_concurrent`` here and by the process-wide
LLM pool). One day's failure, after the SDK's own retries, is recorded on that
day and the others still return. An answer that is unusable (empty, over X's
280 weighted characters, carrying a link, e-mail address or @handle the card
does not have, or a near-duplicate of another day's post) is asked for again, a
bounded number of times, with the reason in the prompt. The embedded base model
continues a few-shot list of the card's own posts (each with its topic) on one
line; a post cut off by its token budget ends at its last full sentence.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Awaitable, Callable

from ..utils.llm import LLMClientPool, LLMContentError, LLMError, LLMRequest
from ..utils.structured_logger import log_generation
from .context import describe_day
from .persona_card import Persona, build_system_prompt, closing_instructions
from .post_text import MAX_WEIGHTED_LENGTH, clean_post, near_duplicate, unwanted_link, weighted_length

logger = logging.getLogger("twitterchat.generation")

CONTENT_ATTEMPTS = 3
DUPLICATE_ROUNDS = 2
_SENTENCE_END = re.compile(r"[.!?。！？…](?:[\"'”’)）]*)")


@dataclass
class DayPost:
    date: str
    weekday: str
    text: str = ""
    scene_hint: str = ""
    posting_time: str = ""
    theme: str = ""
    topic: str = ""
    weighted_length: int = 0
    attempts: int = 0
    error: str | None = None
    warning: str | None = None  # e.g. a near-duplicate kept because every rewrite was unusable
    context: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("context")
        return data


def post_request(persona: Persona, context: dict[str, Any], entry: dict[str, Any], seed: int | None,
                 avoid: list[str], problem: str | None) -> LLMRequest:
    day = describe_day(context)
    instructions = (f"Write {persona.name}'s post for {day}. Theme: {entry['theme']}. "
                    f"Topic: {entry['topic']}. Posting at {entry['posting_time']} local time. "
                    f"One short post in {persona.name}'s own voice, at most {MAX_WEIGHTED_LENGTH} characters, "
                    "no hashtags beyond one, reply with the post text only.")
    if context.get("weather") or context.get("holidays"):
        instructions += " Let the day's weather and holiday show where they fit."
    if avoid:
        instructions += " Do not repeat these earlier posts: " + " | ".join(a[:120] for a in avoid)
    if problem:
        instructions += f" The previous answer was unusable ({problem}); write a different one."
    closing = closing_instructions(persona)
    if closing:
        instructions += "\n\n" + closing
    # The embedded model continues the card's own posts, each after its topic (the example plan's
    # topics where the card has them), so it writes one post in the card's voice and language.
    shots = persona.example_posts()[:4]
    plan = persona.extension.get("example_plan")
    topics = [line.split("|")[1].strip() for line in plan if isinstance(line, str) and line.count("|") == 3] \
        if isinstance(plan, list) else []
    examples = "\n".join(f"Topic: {topics[i] if i < len(topics) else 'a day in my life'}\nPost: {shot}\n"
                         for i, shot in enumerate(shots))
    completion = (f"{persona.summary()}\n{persona.name}'s posts, one per day.\n\n{examples}\n"
                  f"Topic: {entry['topic']}\nPost:")
    scan = " ".join(str(v) for v in (day, entry.get("theme"), entry.get("topic"), entry.get("scene_hint")) if v)
    return LLMRequest(system=build_system_prompt(persona, scan=scan), prompt=instructions,
                      completion_prompt=completion, max_tokens=120, temperature=0.9, seed=seed, stop=("\n",),
                      tag=f"post {context['date']}")


def whole_sentences(text: str) -> str:
    """A post over X's limit (a small model ran out of tokens mid-thought) ends at its last full
    sentence within the limit; a post that fits is left as it is."""
    if weighted_length(text) <= MAX_WEIGHTED_LENGTH:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if weighted_length(text[:m.end()]) <= MAX_WEIGHTED_LENGTH]
    return text[:ends[-1]].strip() if ends and ends[-1] >= 20 else text


async def write_post(pool: LLMClientPool, profile: str, persona: Persona, post: DayPost,
                     entry: dict[str, Any], seed: int | None, avoid: list[str]) -> DayPost:
    """Fill ``post`` with text, retrying unusable answers; errors are recorded, not raised."""
    problem = None
    allowed = persona.card_text()
    for attempt in range(1, CONTENT_ATTEMPTS + 1):
        post.attempts += 1
        request = post_request(persona, post.context, entry,
                               None if seed is None else seed + attempt * 1000, avoid, problem)
        try:
            text = whole_sentences(clean_post(await pool.complete(profile, request)))
        except LLMContentError as exc:
            problem = str(exc)
            continue
        except LLMError as exc:  # configuration or transient after the SDK's retries: final for this day
            post.error = f"{type(exc).__name__}: {exc}"
            break
        length = weighted_length(text)
        if not text:
            problem = "empty post"
        elif length > MAX_WEIGHTED_LENGTH:
            problem = f"{length} weighted characters, over {MAX_WEIGHTED_LENGTH}"
        elif (link := unwanted_link(text, allowed)) is not None:
            problem = f"it carries {link}, which the card does not have; no links, e-mail addresses or handles"
        elif (twin := near_duplicate(text, avoid)) is not None:
            problem = f"nearly repeats an earlier post: {twin[:60]}"
        else:
            post.text, post.weighted_length, post.error = text, length, None
            break
    else:
        post.error = f"LLMContentError: no usable post after {CONTENT_ATTEMPTS} attempts ({problem})"
    if post.error:
        post.text, post.weighted_length = "", 0
    log_generation(logger, persona.user_id, post.date, post.weighted_length, success=post.ok,
                   attempts=post.attempts, error=post.error)
    return post


def _is_interrupt(exc: BaseException) -> bool:
    """ComfyUI's Cancel (its InterruptProcessingException) ends the whole node, not one day."""
    return type(exc).__name__ == "InterruptProcessingException"


async def generate_posts(pool: LLMClientPool, profile: str, persona: Persona,
                         contexts: list[dict[str, Any]],
                         entry_for: Callable[[date], Awaitable[dict[str, Any]]],
                         max_concurrent: int = 5, seed: int | None = None,
                         on_day_done: Callable[[DayPost], None] | None = None,
                         plan_days: Callable[[list[date]], Awaitable[None]] | None = None) -> list[DayPost]:
    """Posts for every context; ``on_day_done(post)`` is called as each day's first attempt ends
    (progress), not again for near-duplicates written anew. ``plan_days(dates)``: plans the days
    not planned yet in one go (``CalendarBook.plan_days``) before ``entry_for`` reads each."""
    posts = [DayPost(date=c["date"], weekday=c["weekday"], context=c) for c in contexts]
    if plan_days is not None:
        try:
            await plan_days([date.fromisoformat(p.date) for p in posts])
        except Exception as exc:  # each day's entry_for tries again, and fails only that day
            if _is_interrupt(exc):
                raise
            logger.warning("planning the days asked for failed (%s); trying day by day", exc)
    entries: list[dict[str, Any] | None] = []
    for post in posts:  # months are planned (or read from the cache) one at a time, in order
        try:
            entries.append(await entry_for(date.fromisoformat(post.date)))
        except Exception as exc:  # a day's boundary: a lock timeout or a damaged cache fails that day only
            if _is_interrupt(exc):
                raise
            if not isinstance(exc, LLMError):
                logger.exception("no calendar entry for %s", post.date)
            post.error = f"no calendar entry: {type(exc).__name__}: {exc}"
            entries.append(None)
    for post, entry in zip(posts, entries):
        if entry is not None:
            post.theme, post.topic = entry["theme"], entry["topic"]
            post.scene_hint, post.posting_time = entry["scene_hint"], entry["posting_time"]

    limit = asyncio.Semaphore(max(1, max_concurrent))

    async def run(index: int, avoid: list[str], report: bool = False) -> None:
        post = posts[index]
        earlier = (post.text, post.weighted_length) if post.ok and post.text else None
        async with limit:
            day_seed = None if seed is None else seed + index
            try:
                await write_post(pool, profile, persona, post, entries[index], day_seed, avoid)
            except Exception as exc:  # a day's boundary: one day's unexpected error fails that day only
                if _is_interrupt(exc):
                    raise
                logger.exception("post for %s failed", post.date)
                post.error, post.text, post.weighted_length = f"{type(exc).__name__}: {exc}", "", 0
        if earlier is not None and not post.ok:
            # A rewrite to avoid a near-duplicate failed: the day keeps the post it had.
            logger.warning("kept the earlier post for %s: the rewrite failed (%s)", post.date, post.error)
            post.warning = f"kept the earlier post; the rewrite failed: {post.error}"
            post.text, post.weighted_length, post.error = earlier[0], earlier[1], None
        if report and on_day_done is not None:
            on_day_done(post)

    pending = [i for i, e in enumerate(entries) if e is not None]
    if on_day_done is not None:
        for index, entry in enumerate(entries):
            if entry is None:  # no plan for that day: done, as failed
                on_day_done(posts[index])
    await asyncio.gather(*(run(i, [], report=True) for i in pending))
    for _ in range(DUPLICATE_ROUNDS):
        repeats = [i for i in pending if posts[i].ok and near_duplicate(
            posts[i].text, [p.text for p in posts[:i] if p.ok])]
        if not repeats:
            break
        logger.info("regenerating %d near-duplicate post(s)", len(repeats))
        await asyncio.gather(*(run(i, [p.text for p in posts if p.ok and p is not posts[i]])
                               for i in repeats))
    return posts
