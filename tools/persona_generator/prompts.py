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
from .stages import EXAMPLE_POSTS, Stage

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
            if key == "location":
                out["properties"]["timezone"] = {"type": "string", "enum": list(LOCAL_ZONES)}
                out["properties"]["country"] = {"type": "string", "enum": sorted(set(LOCAL_ZONES.values()))}
        elif out.get("type") == "array":
            low = out.get("minItems", 0)
            out["maxItems"] = max(low, min(out.get("maxItems", LOCAL_ITEMS_CAP), LOCAL_ITEMS_CAP))
            out["items"] = tighten(out["items"], key)
        elif out.get("type") == "string" and "pattern" not in out and "enum" not in out:
            cap = LOCAL_POST_CAP if key == "posts" else string_cap
            out["maxLength"] = min(out.get("maxLength", cap), cap)
        elif out.get("type") == "integer" and "minimum" in out and "maximum" in out:
            # llama.cpp's schema grammar has no numeric bounds: an enum holds the model to them
            out = {"type": "integer", "enum": list(range(out["minimum"], out["maximum"] + 1))}
        return out

    return tighten(schema)


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
    schema_for_grammar = None
    max_tokens = stage.max_tokens
    if local:
        # A base model continues text: a short sheet of what is known, then the stage's JSON.
        known = "\n".join(f"{name}: {json.dumps(done[name], ensure_ascii=False)}" for name in stage.needs)
        completion = (f"Social media persona sheet ({brief.language}).\nConcept: {brief.concept}\n"
                      + (known + "\n" if known else "")
                      + f"{stage.title.capitalize()} (JSON"
                      + (f", {EXAMPLE_POSTS} different short posts" if stage.name == "example_posts" else "")
                      + "):\n")
        schema_for_grammar = local_schema(stage.schema)
        max_tokens = LOCAL_TOKENS * (2 if stage.name == "example_posts" else 1)
    return LLMRequest(system=SYSTEM.format(language=brief.language), prompt=prompt,
                      completion_prompt=completion, json_schema=stage.schema, schema_name=stage.name,
                      local_json_schema=schema_for_grammar, max_tokens=max_tokens,
                      temperature=0.8, seed=seed,
                      images=(brief.image,) if stage.sees_image and brief.image is not None else (),
                      tag=f"persona stage {stage.number} {stage.name}")
