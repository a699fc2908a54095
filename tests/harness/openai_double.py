"""TEST DOUBLE: a local OpenAI-compatible server (POST /v1/chat/completions) for
deterministic LLM behaviour and fault injection: fixed latency, 429s, 5xx for
chosen dates, malformed JSON, hung requests. It also counts requests in flight
(peak concurrency) and records each request's messages and headers.

Answers: a request with ``response_format.json_schema.name == "content_calendar"``
gets a valid plan (as many days as the prompt asks for); any other
request gets a short, distinct post mentioning the date found in the prompt.
It refuses, with the real service's 400 messages, what the real service
refuses: strict JSON schemas outside the structured-outputs subset, and
``max_tokens``/``temperature``/``stop`` on reasoning models (o-series, gpt-5).

Persona stages: a request whose ``json_schema.name`` is one of PersonaGenerator's
seven stages (``core_persona`` ... ``knowledge_book``) gets a valid answer for
that stage, built from the concept in the prompt. ``calls`` records every
request's schema name, start and end (``time.monotonic``) and its image parts,
so tests can check order, overlap and what was sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field

from comfyui_harness import free_port

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DAYS_ASKED = re.compile(r"for exactly these (\d+) day")
REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)
# JSON Schema keywords OpenAI's strict structured outputs refuse (some on every model, some on
# older ones): a schema sent with "strict": true may use none of them.
STRICT_REFUSED = ("minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
                  "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties",
                  "maxProperties", "default")


def refusal(body: dict) -> str | None:
    """The 400 message the real chat.completions endpoint gives this request, if it refuses it."""
    model = str(body.get("model", ""))
    if REASONING_MODEL.match(model):
        if "max_tokens" in body:
            return ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.")
        for name in ("temperature", "top_p", "stop", "presence_penalty", "frequency_penalty"):
            if name in body:
                return f"Unsupported parameter: '{name}' is not supported with this model."
    json_schema = (body.get("response_format") or {}).get("json_schema") or {}
    if json_schema.get("strict"):
        return _strict_problem(json_schema.get("name"), json_schema.get("schema") or {}, ())
    return None


def _strict_problem(name, node, where) -> str | None:
    if isinstance(node, list):
        for item in node:
            problem = _strict_problem(name, item, where)
            if problem:
                return problem
        return None
    if not isinstance(node, dict):
        return None
    prefix = f"Invalid schema for response_format '{name}': In context={where!r}, "
    for key in STRICT_REFUSED:
        if key in node:
            return prefix + f"'{key}' is not permitted."
    if node.get("type") == "object":
        if node.get("additionalProperties") is not False:
            return prefix + "'additionalProperties' is required to be supplied and to be false."
        missing = sorted(set(node.get("properties", {})) - set(node.get("required", [])))
        if missing:
            return prefix + f"'required' is required to be supplied and to be an array including every key in " \
                            f"properties. Missing '{missing[0]}'."
    for key, value in node.items():
        if key == "properties":
            for prop, sub in value.items():
                problem = _strict_problem(name, sub, (*where, "properties", prop))
                if problem:
                    return problem
        elif key in ("items", "anyOf", "$defs"):
            problem = _strict_problem(name, value if key != "$defs" else list(value.values()), (*where, key))
            if problem:
                return problem
    return None
VOCABULARY = ("tea leaves steam morning rain lake bicycle market dumplings lantern garden friends class "
              "oolong jasmine roast kettle window sunrise noodles festival quiet laughter teacup breeze "
              "moss willow bridge poem letter ginger honey chestnut pastry umbrella shadow river").split()


@dataclass
class Faults:
    latency: float = 0.0
    calendar_latency: float | None = None                 # month plans take this long instead (None: latency)
    fail_dates: set[str] = field(default_factory=set)   # always HTTP 500 for posts about these dates
    rate_limit_first: int = 0                             # the first N requests get HTTP 429
    bad_calendar_json: int = 0                            # the first N calendar answers are not JSON
    bad_post_json_body: int = 0                           # the first N post answers are an unparsable body
    hang_dates: set[str] = field(default_factory=set)     # never answer posts about these dates
    post_text: str | None = None                          # answer every post with this text
    stage_latency: dict[str, float] = field(default_factory=dict)  # per json_schema name, instead of latency
    bad_stage_json: dict[str, int] = field(default_factory=dict)   # the first N answers of that stage: not JSON


class FakeOpenAIServer:
    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.port = free_port()
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.statuses: list[int] = []
        self.calls: list[dict] = []   # per request: schema, started, ended, image_parts (see module doc)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(request.headers.get("Authorization", ""))
            number = len(self.requests)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            call = {"number": number, "schema": _schema_name(body), "started": time.monotonic(),
                    "ended": None, "image_parts": _image_parts(body)}
            self.calls.append(call)
        try:
            status, payload = await self._answer(body, number)
        finally:
            with self._lock:
                self.in_flight -= 1
                call["ended"] = time.monotonic()
        with self._lock:
            self.statuses.append(status)
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, content_type="application/json")
        headers = {"retry-after": "0"} if status == 429 else {}
        return web.json_response(payload, status=status, headers=headers)

    async def _answer(self, body: dict, number: int):
        refused = refusal(body)
        if refused is not None:  # what the real service answers 400 to, answered 400 here too
            return 400, {"error": {"message": refused, "type": "invalid_request_error", "param": None,
                                   "code": None}}
        faults = self.faults
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        dates = DATE.findall(text)
        is_calendar = (body.get("response_format") or {}).get("json_schema", {}).get("name") == "content_calendar"
        delay = faults.calendar_latency if is_calendar and faults.calendar_latency is not None else faults.latency
        stage = _schema_name(body) if _schema_name(body) in PERSONA_STAGES else None
        if stage is not None:
            delay = faults.stage_latency.get(stage, faults.latency)
        if delay:
            await asyncio.sleep(delay)
        if stage is not None:
            with self._lock:
                stage_number = sum(1 for call in self.calls if call["schema"] == stage)
            if stage_number <= faults.bad_stage_json.get(stage, 0):
                return 200, completion("{\"%s\": [ this is not json" % stage, number)
            return 200, completion(json.dumps(persona_stage_answer(stage, _message_text(body))), number)
        if number <= faults.rate_limit_first:
            return 429, {"error": {"message": "rate limited (test double)", "type": "rate_limit"}}
        if not is_calendar and dates and dates[0] in faults.hang_dates:
            await asyncio.sleep(3600)
        if not is_calendar and dates and dates[0] in faults.fail_dates:
            return 500, {"error": {"message": "injected permanent failure (test double)"}}
        if is_calendar:
            calendar_number = sum(1 for r in self.requests if (r.get("response_format") or {})
                                  .get("json_schema", {}).get("name") == "content_calendar")
            if calendar_number <= faults.bad_calendar_json:
                return 200, completion("{\"days\": [ this is not json", number)
            # as many days as the prompt asks for (a strict schema carries no minItems)
            days = int(DAYS_ASKED.search(text).group(1))
            plan = {"days": [{"day": d, "theme": f"theme {d % 7}", "topic": f"topic for day {d}",
                              "scene_hint": f"a cozy scene number {d} with warm light",
                              "posting_time": f"{8 + d % 12:02d}:30"} for d in range(1, days + 1)]}
            return 200, completion(json.dumps(plan), number)
        post_number = sum(1 for r in self.requests if not r.get("response_format"))
        if post_number <= faults.bad_post_json_body:
            return 200, "{ not a json body"
        if faults.post_text is not None:
            return 200, completion(faults.post_text, number)
        day = dates[0] if dates else "someday"
        words = random.Random(number).sample(VOCABULARY, 9)
        return 200, completion(f"{day}: " + " ".join(words).capitalize() + ".", number)


def completion(content: str, number: int) -> dict:
    return {"id": f"chatcmpl-test-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": "test-double", "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}


def _schema_name(body: dict) -> str | None:
    return ((body.get("response_format") or {}).get("json_schema") or {}).get("name")


def _message_text(body: dict) -> str:
    """The messages' text, content parts included (not their repr)."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            texts += [part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        else:
            texts.append(str(content or ""))
    return "\n".join(texts)


def _image_parts(body: dict) -> list[str]:
    """The ``image_url`` URLs of the request's messages."""
    urls = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            urls += [part["image_url"]["url"] for part in content
                     if isinstance(part, dict) and part.get("type") == "image_url"]
    return urls


PERSONA_STAGES = ("core_persona", "posting_strategy", "example_posts", "social_network", "authenticity",
                  "visual_profile", "knowledge_book")
CONCEPT = re.compile(r"Concept from the operator: (.*)")
NAMES = ("Aiko Tanabe", "Lena Vogel", "Marco Rossi", "Priya Nair", "Sofia Lind", "Tomas Novak", "Wen Li",
         "Nadia Haddad", "Jonas Berg", "Clara Duarte")
ZONES = (("Tokyo", "JP", "Asia/Tokyo"), ("Berlin", "DE", "Europe/Berlin"), ("Rome", "IT", "Europe/Rome"),
         ("Kochi", "IN", "Asia/Kolkata"), ("Stockholm", "SE", "Europe/Stockholm"))


def persona_stage_answer(stage: str, text: str) -> dict:
    """A valid answer for one PersonaGenerator stage, varied by the concept in the prompt."""
    found = CONCEPT.search(text)
    concept = found.group(1).strip() if found else "a persona"
    pick = sum(concept.encode()) % len(NAMES)
    city, country, zone = ZONES[pick % len(ZONES)]
    name = NAMES[pick]
    words = random.Random(concept + stage).sample(VOCABULARY, 30)
    if stage == "core_persona":
        return {"name": name, "age": 24 + pick, "occupation": "barista and film photographer",
                "location": {"city": city, "country": country, "timezone": zone},
                "personality": f"curious, warm, a little stubborn; {concept[:200]}",
                "appearance": "short dark hair, round glasses, a green raincoat",
                "background": f"grew up near the sea, moved to {city} for work",
                "speech_style": "short sentences, dry jokes, one emoji at most"}
    if stage == "posting_strategy":
        return {"topics": [f"{w} stories" for w in words[:4]], "tone": "warm and wry",
                "posts_per_week": 5, "posting_hours": ["08:30", "19:00"]}
    if stage == "example_posts":
        return {"posts": [f"Post {i + 1}: " + " ".join(words[i * 3:i * 3 + 3]).capitalize()
                          + f" again today, and the {words[29 - i]} agrees." for i in range(8)]}
    if stage == "social_network":
        return {"people": [{"name": "Mika", "relationship": "best friend", "description": "runs the bakery next door"},
                           {"name": "Grandma Ren", "relationship": "grandmother", "description": "calls every Sunday"}],
                "recurring_interactions": ["Sunday calls with Grandma Ren", "coffee runs with Mika"]}
    if stage == "authenticity":
        return {"habits": ["photographs every cup"], "quirks": ["hums while typing"], "typos": ["teh"],
                "opinions": ["film beats digital"], "never_says": ["anything about politics"]}
    if stage == "visual_profile":
        return {"stable_traits": ["short dark hair", "round glasses"], "style": "soft natural light, 35mm film",
                "image_prompt": f"{name}, short dark hair, round glasses, green raincoat, film photo",
                "lora_trigger": "tc_persona woman, short dark hair, round glasses"}
    return {"entries": [{"keys": [city], "content": f"{name} lives in a small flat in {city}."},
                        {"keys": ["Mika", "bakery"], "content": "Mika's bakery opens at six; the first loaf is hers."}]}
