"""The seven stages of a generated persona, declared once, as data.

Each stage is one structured LLM call whose JSON schema is named after the
stage (``json_schema.name``), validated here (the full schema, bounds included,
plus the checks a schema cannot say), and asked again at most
``CONTENT_ATTEMPTS`` times on bad output. ``needs`` is the dependency graph:
stage 3 needs 1 and 2; 4 to 7 need only 1, so they run alongside 2 and 3.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..post_text import MAX_WEIGHTED_LENGTH, clean_post, near_duplicate, weighted_length

CONTENT_ATTEMPTS = 3
EXAMPLE_POSTS = 8
MIN_POST_LENGTH = 20  # weighted characters (CJK counts double)


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _list(item: Mapping[str, Any], low: int, high: int) -> dict[str, Any]:
    return {"type": "array", "items": dict(item), "minItems": low, "maxItems": high}


def _object(**properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {k: dict(v) for k, v in properties.items()},
            "required": list(properties), "additionalProperties": False}


TIME = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "core_persona": _object(
        name=_text(60), age={"type": "integer", "minimum": 18, "maximum": 90}, occupation=_text(80),
        location=_object(city=_text(60), country={"type": "string", "pattern": "^[A-Z]{2}$"},
                         timezone=_text(40)),
        personality=_text(600), appearance=_text(600), background=_text(900), speech_style=_text(300)),
    "posting_strategy": _object(
        topics=_list(_text(80), 2, 8), tone=_text(200),
        posts_per_week={"type": "integer", "minimum": 1, "maximum": 28},
        posting_hours=_list(TIME, 1, 4)),
    "example_posts": _object(posts=_list(_text(600), EXAMPLE_POSTS, EXAMPLE_POSTS)),
    "social_network": _object(
        people=_list(_object(name=_text(60), relationship=_text(80), description=_text(300)), 1, 8),
        recurring_interactions=_list(_text(200), 1, 6)),
    "authenticity": _object(
        habits=_list(_text(160), 1, 8), quirks=_list(_text(160), 1, 8), typos=_list(_text(80), 1, 6),
        opinions=_list(_text(200), 1, 8), never_says=_list(_text(160), 1, 8)),
    "visual_profile": _object(
        stable_traits=_list(_text(120), 2, 10), style=_text(300), image_prompt=_text(500),
        lora_trigger=_text(200)),
    "knowledge_book": _object(
        entries=_list(_object(keys=_list(_text(40), 1, 5), content=_text(500)), 2, 10)),
}


@dataclass(frozen=True)
class Stage:
    number: int
    name: str
    needs: tuple[str, ...]
    title: str
    task: str                 # what the model is asked to do, given the stages it needs
    sees_image: bool = False  # the image goes with this stage (to vision profiles)
    max_tokens: int = 700

    @property
    def schema(self) -> dict[str, Any]:
        return SCHEMAS[self.name]

    @property
    def checkpoint_name(self) -> str:
        return f"{self.number:02d}_{self.name}.json"


STAGES: tuple[Stage, ...] = (
    Stage(1, "core_persona", (), "core persona",
          "Invent the core of a believable social media persona: full name, age (adult), occupation, "
          "where they live (city, ISO 3166 country code, IANA time zone such as Europe/Berlin), "
          "personality, appearance, background and speech style.", sees_image=True),
    Stage(2, "posting_strategy", ("core_persona",), "posting strategy",
          "Decide how this persona posts: the topics they post about, their tone, how many posts a "
          "week and the local hours (HH:MM) they usually post at."),
    Stage(3, "example_posts", ("core_persona", "posting_strategy"), "example posts",
          f"Write {EXAMPLE_POSTS} example posts in the persona's own voice, following the posting "
          f"strategy: each one short (at most {MAX_WEIGHTED_LENGTH} characters, CJK counting double), "
          "about a different moment, none repeating another.", max_tokens=1200),
    Stage(4, "social_network", ("core_persona",), "social network",
          "Describe the persona's social network: the people in their life (name, relationship, a "
          "line about them) and recurring interactions with them that could show up in posts."),
    Stage(5, "authenticity", ("core_persona",), "authenticity system",
          "Give the persona an authenticity system: everyday habits, quirks, typical typos or "
          "spellings, opinions they hold, and things they would never say."),
    Stage(6, "visual_profile", ("core_persona",), "visual profile",
          "Describe the persona's stable visual profile for image generation: appearance traits that "
          "never change, their photo style, a reusable image prompt, and a short LoRA-friendly "
          "trigger description.", sees_image=True),
    Stage(7, "knowledge_book", ("core_persona",), "knowledge book",
          "Write lorebook entries about the persona's world (places, people, routines, things they "
          "know): each with a few trigger keywords and one or two sentences of content.",
          max_tokens=1000),
)

STAGE_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
STAGE_GRAPH: dict[str, tuple[str, ...]] = {stage.name: stage.needs for stage in STAGES}


def _check_graph() -> None:
    """Every dependency is an earlier stage: the graph has no cycle and a sequential order exists."""
    seen: set[str] = set()
    for stage in STAGES:
        missing = [need for need in stage.needs if need not in seen]
        if missing:
            raise AssertionError(f"stage {stage.name} needs {missing}, not declared before it")
        seen.add(stage.name)


_check_graph()


class StageContentError(ValueError):
    """A stage's answer cannot be used; the message names what is wrong."""


NOT_PROSE = frozenset("{}[]<>")
CODED_FIELDS = {"posting_hours", "timezone", "country"}  # held to a pattern, not prose


def _check_prose(node: Any, where: str = "") -> None:
    """Every text is prose: a letter at least, and no markup or JSON debris (a small model's drift)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in CODED_FIELDS:
                _check_prose(value, f"{where}/{key}" if where else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_prose(value, f"{where}/{index}")
    elif isinstance(node, str):
        if not any(char.isalpha() for char in node):
            raise StageContentError(f"{where} has no words: {node[:40]!r}")
        if NOT_PROSE & set(node):
            raise StageContentError(f"{where} holds markup or JSON, not prose: {node[:40]!r}")


@functools.lru_cache(maxsize=1)
def zone_countries() -> dict[str, set[str]]:
    """{IANA zone: ISO country codes} from tzdata's zone tables (zone.tab and zone1970.tab)."""
    found: dict[str, set[str]] = {}
    for table in ("zone.tab", "zone1970.tab"):
        try:
            text = importlib.resources.files("tzdata").joinpath("zoneinfo", table).read_text(encoding="utf-8")
        except (ModuleNotFoundError, FileNotFoundError):
            continue
        for line in text.splitlines():
            if line and not line.startswith("#"):
                codes, _, zone = line.split("\t")[:3]
                found.setdefault(zone, set()).update(codes.split(","))
    return found


def _check_core(data: dict[str, Any]) -> None:
    location = data["location"]
    zone, country = location["timezone"], location["country"]
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise StageContentError(f"location.timezone {zone!r} is not an IANA time zone "
                                "(like Europe/Berlin)") from None
    countries = zone_countries().get(zone)
    if countries and country not in countries:
        raise StageContentError(f"location.country {country} does not match the time zone {zone} "
                                f"({', '.join(sorted(countries))})")


def _check_posts(data: dict[str, Any]) -> None:
    posts = [clean_post(post) for post in data["posts"]]
    for index, post in enumerate(posts):
        length = weighted_length(post)
        if length < MIN_POST_LENGTH:
            raise StageContentError(f"posts/{index} is too short to be a post: {post!r}")
        if length > MAX_WEIGHTED_LENGTH:
            raise StageContentError(f"posts/{index} is {length} weighted characters, over {MAX_WEIGHTED_LENGTH}")
        twin = near_duplicate(post, posts[:index])
        if twin is not None:
            raise StageContentError(f"posts/{index} nearly repeats an earlier post: {twin[:60]}")
    data["posts"] = posts


EXTRA_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "core_persona": _check_core,
    "example_posts": _check_posts,
}


def validate_stage(name: str, raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check one stage's answer; ``StageContentError`` names what is wrong."""
    import jsonschema  # only when an answer is checked: keeps the pack's import light

    if isinstance(raw, str):
        try:
            data = json.loads(raw, strict=False)  # a raw newline inside a string is harmless
        except json.JSONDecodeError as exc:
            raise StageContentError(f"{name} is not JSON ({exc.msg} at column {exc.colno})") from None
    else:
        data = json.loads(json.dumps(raw))
    try:
        jsonschema.validate(data, SCHEMAS[name])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise StageContentError(f"{name} does not match its schema at {where}: {exc.message}") from None
    _check_prose(data)
    check = EXTRA_CHECKS.get(name)
    if check is not None:
        check(data)
    return data
