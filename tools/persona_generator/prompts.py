"""One stage's LLM request: the chat prompt for endpoints (with the image on vision
profiles) and, for the embedded base model, a short completion prompt with a
tighter schema for its grammar (short strings, few items, a list of time zones),
so a 270M model on a CPU finishes a card in about a minute. Whatever the model
answers is checked against the stage's full schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from ...utils.llm import ImagePart, LLMRequest
from ..post_text import clean_post, near_duplicate, weighted_length
from .stages import EXAMPLE_POSTS, MIN_POST_LENGTH, Stage

SYSTEM = ("You design believable, consistent social media personas and write them as parts of a "
          "character card (chara_card_v2). Answer with JSON that matches the schema, nothing else. "
          "Write every text value in {language}. Never include real people's private data.")

# The embedded model picks its time zone (and country) from these, through its grammar.
LOCAL_ZONES = {"America/New_York": "US", "America/Los_Angeles": "US", "America/Chicago": "US",
               "America/Toronto": "CA", "America/Mexico_City": "MX", "America/Sao_Paulo": "BR",
               "Europe/London": "GB", "Europe/Paris": "FR", "Europe/Berlin": "DE", "Europe/Madrid": "ES",
               "Europe/Rome": "IT", "Europe/Stockholm": "SE", "Africa/Lagos": "NG", "Africa/Cairo": "EG",
               "Asia/Kolkata": "IN", "Asia/Shanghai": "CN", "Asia/Tokyo": "JP", "Asia/Seoul": "KR",
               "Asia/Singapore": "SG", "Australia/Sydney": "AU"}
LOCAL_STRING_CAP = 48
LOCAL_POST_CAP = 72
LOCAL_ITEMS_CAP = 2
LOCAL_TOKENS = 260
PROSE_CHAR = r'[^{}\[\]<>=|\\"\n\t#*_~`^]'
FIRST_CHAR = r'[^{}\[\]<>=|\\"\n\t#*_~`^0-9,.:;!?() -]'  # a text starts with a word


# A worked example for the embedded base model, which follows a pattern far better than an
# instruction: one fictional persona, each stage within the tighter local schema. Not for the
# example posts: a base model copies example posts nearly word for word.
LOCAL_EXAMPLE_CONCEPT = "A bike mechanic in Berlin who restores old racing bikes and loves techno."
LOCAL_EXAMPLES: dict[str, dict[str, Any]] = {
    "core_persona": {"name": "Tomas Keller", "age": 34, "occupation": "bike mechanic",
                     "location": {"city": "Berlin", "timezone": "Europe/Berlin"},
                     "personality": "calm, dry humour, patient with beginners",
                     "appearance": "tall, short beard, oil-stained blue overalls",
                     "background": "left engineering school to open a repair shop",
                     "speech_style": "short sentences, workshop slang"},
    "posting_strategy": {"topics": ["bike restorations", "Berlin rides"], "tone": "relaxed and wry",
                         "posts_per_week": 4, "posting_hours": ["19:30"]},
    "social_network": {"people": [{"name": "Jana", "relationship": "sister",
                                   "description": "rides with him every Sunday"}],
                       "recurring_interactions": ["Sunday canal rides with Jana"]},
    "authenticity": {"habits": ["drinks coffee black"], "quirks": ["names every bike he fixes"],
                     "typos": ["teh"], "opinions": ["steel beats carbon"], "never_says": ["lol"]},
    "visual_profile": {"stable_traits": ["short beard", "blue overalls"], "style": "warm workshop light",
                       "image_prompt": "bearded mechanic in blue overalls, bike shop",
                       "lora_trigger": "tomas keller, short beard"},
    "knowledge_book": {"entries": [{"keys": ["shop"], "content": "His shop is a tiny garage in Kreuzberg."},
                                   {"keys": ["Jana"], "content": "Jana is his older sister, a nurse."}]},
}


@dataclass(frozen=True)
class PersonaBrief:
    """What the operator gave: a concept text and/or an image, the language to write in."""

    concept: str
    language: str
    image: ImagePart | None = None   # set only when the profile can see


def local_schema(schema: Mapping[str, Any], string_cap: int = LOCAL_STRING_CAP) -> dict[str, Any]:
    """``schema`` tightened for the embedded model's grammar; still valid under ``schema``."""
    def tighten(node: Any, key: str = "") -> Any:
        if not isinstance(node, Mapping):
            return node
        out = dict(node)
        if out.get("type") == "object":
            out["properties"] = {name: tighten(sub, name) for name, sub in out["properties"].items()}
            if key == "location":  # a zone from the list; its country is filled in from it (parse_local_answer)
                out["properties"] = {"city": out["properties"]["city"],
                                     "timezone": {"type": "string", "enum": list(LOCAL_ZONES)}}
                out["required"] = ["city", "timezone"]
        elif out.get("type") == "array":
            low = out.get("minItems", 0)
            out["maxItems"] = max(low, min(out.get("maxItems", LOCAL_ITEMS_CAP), LOCAL_ITEMS_CAP))
            out["items"] = tighten(out["items"], key)
        elif out.get("type") == "string" and "pattern" not in out and "enum" not in out:
            cap = min(out.get("maxLength", string_cap), LOCAL_POST_CAP if key == "posts" else string_cap)
            # Prose only: a small model otherwise drifts into markup and JSON debris inside strings.
            least = MIN_POST_LENGTH if key == "posts" else 1
            out = {"type": "string",
                   "pattern": "^" + FIRST_CHAR + PROSE_CHAR + "{" + f"{least - 1},{cap - 1}" + "}$"}
        elif out.get("type") == "integer" and "minimum" in out and "maximum" in out:
            # llama.cpp's schema grammar has no numeric bounds: an enum holds the model to them
            out = {"type": "integer", "enum": list(range(out["minimum"], out["maximum"] + 1))}
        return out

    return tighten(schema)


LOCAL_SPARE_POSTS = 3  # the embedded model writes a few more, so a repeat or two need not cost a retry


def posts_grammar(count: int = EXAMPLE_POSTS + LOCAL_SPARE_POSTS) -> str:
    """The embedded model writes its example posts as a numbered list (as a base model would),
    one line each, held to prose: cheaper and far steadier than eight strings inside JSON."""
    first, prose = FIRST_CHAR, PROSE_CHAR  # the same escapes in GBNF as in the regex
    return ("root ::= " + " ".join(f'"{n}. " post' for n in range(1, count + 1)) + "\n"
            f'post ::= {first} {prose}{{{MIN_POST_LENGTH - 2},{LOCAL_POST_CAP - 2}}} [.!?] "\\n"\n')


def parse_local_answer(stage: Stage, raw: str) -> str:
    """The embedded model's answer as the stage's JSON: its example posts come as a numbered list,
    and its core persona's country is the one of the time zone it picked."""
    if stage.name == "core_persona":
        try:
            data = json.loads(raw, strict=False)
        except json.JSONDecodeError:
            return raw  # validation names the problem
        location = data.get("location") if isinstance(data, dict) else None
        if isinstance(location, dict) and location.get("timezone") in LOCAL_ZONES:
            location["country"] = LOCAL_ZONES[location["timezone"]]
        return json.dumps(data, ensure_ascii=False)
    if stage.name != "example_posts":
        return raw
    posts: list[str] = []
    for line in raw.strip().splitlines():
        post = clean_post(line.split(". ", 1)[1]) if ". " in line else ""
        if weighted_length(post) >= MIN_POST_LENGTH and near_duplicate(post, posts) is None:
            posts.append(post)
    # the first eight distinct ones; fewer fail the stage's check, which names the repeat
    kept = posts[:EXAMPLE_POSTS] if len(posts) >= EXAMPLE_POSTS else [
        line.split(". ", 1)[-1] for line in raw.strip().splitlines()][:EXAMPLE_POSTS]
    return json.dumps({"posts": kept}, ensure_ascii=False)


def _given(done: Mapping[str, Mapping[str, Any]], stage: Stage) -> str:
    return "\n".join(f"{name}: {json.dumps(done[name], ensure_ascii=False)}" for name in stage.needs)


def stage_request(stage: Stage, brief: PersonaBrief, done: Mapping[str, Mapping[str, Any]], *,
                  local: bool, seed: int | None, problem: str | None = None) -> LLMRequest:
    parts = [stage.task]
    if brief.concept:
        parts.append(f"Concept from the operator: {brief.concept}")
    if stage.sees_image and brief.image is not None:
        parts.append("The attached image shows the persona: base the persona's looks on it.")
    if stage.needs:
        parts.append("Stages already decided (keep to them):\n" + _given(done, stage))
    if problem:
        parts.append(f"Your previous answer was unusable ({problem}); answer again, fixing that.")
    prompt = "\n\n".join(parts)
    completion = ""
    grammar = None
    schema_for_grammar = None
    max_tokens = stage.max_tokens
    if local:
        # A base model continues text: a short sheet of what is known, then the stage's JSON.
        def sheet(concept: str, stages: Mapping[str, Any]) -> str:
            known = "".join(f"{name}: {json.dumps(stages[name], ensure_ascii=False)}\n" for name in stage.needs)
            return f"Concept: {concept}\n{known}{stage.name}:"

        example = LOCAL_EXAMPLES.get(stage.name)
        if stage.name == "example_posts":
            core, strategy = done["core_persona"], done["posting_strategy"]
            completion = (f"{core['name']}, {core['age']}, {core['occupation']} in {core['location']['city']}. "
                          f"{core['personality']}. Posts about {', '.join(strategy['topics'])}; tone: "
                          f"{strategy['tone']}. Concept: {brief.concept}\n"
                          f"{EXAMPLE_POSTS} of {core['name']}'s social media posts ({brief.language}), each "
                          "about a different moment:\n")
            grammar = posts_grammar()
        completion = completion or ("Social media persona sheets, one JSON object per part.\n\n"
                      + (f"{sheet(LOCAL_EXAMPLE_CONCEPT, LOCAL_EXAMPLES)} "
                         f"{json.dumps(example, ensure_ascii=False)}\n\n" if example else "")
                      + f"Written in {brief.language}"
                      + (f", {EXAMPLE_POSTS} different short posts" if stage.name == "example_posts" else "")
                      + f".\n{sheet(brief.concept, done)} ")
        schema_for_grammar = local_schema(stage.schema)
        max_tokens = LOCAL_TOKENS * (3 if stage.name == "example_posts" else 1)
    return LLMRequest(system=SYSTEM.format(language=brief.language), prompt=prompt,
                      completion_prompt=completion, json_schema=stage.schema, schema_name=stage.name,
                      local_json_schema=schema_for_grammar, grammar=grammar, max_tokens=max_tokens,
                      temperature=0.8, seed=seed,
                      images=(brief.image,) if stage.sees_image and brief.image is not None else (),
                      tag=f"persona stage {stage.number} {stage.name}")
