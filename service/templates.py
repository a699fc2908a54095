"""Task templates: the pack's own workflows with a few values filled in.

``persona_posts`` is ``examples/api/workflow_api.json`` (persona -> context ->
month plan -> posts -> saved per user and date). A task stores only the
template name and its parameters (a 10,000-task batch stays small); the
workflow is built when the task is handed to ComfyUI.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from ..tools.persona_card import PersonaError, card_from_file, card_from_json_text
from ..utils.safe_paths import UnsafePathError, resolve_inside, validate_user_id

PACK_ROOT = Path(__file__).resolve().parent.parent
PERSONA_POSTS = "persona_posts"
TEMPLATES = (PERSONA_POSTS,)
PARAMS = {"persona_file", "persona_json", "user_id", "num_days", "start_day_offset", "llm_profile"}
PERSONA_JSON_LIMIT = 256 * 1024


class TemplateError(ValueError):
    """Template parameters that cannot make a workflow; the message names the parameter."""


def _base_workflow() -> dict[str, Any]:
    return json.loads((PACK_ROOT / "examples" / "api" / "workflow_api.json").read_text(encoding="utf-8"))


_BASE: dict[str, Any] | None = None


def _int(params: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TemplateError(f"params.{key} must be a whole number from {low} to {high}, got {value!r}")
    return value


def known_profiles() -> set[str]:
    """LLM profile names a task may name (``auto`` and the configured ones)."""
    from ..utils.llm import LLMSettings
    from ..utils.settings import ConfigError

    try:
        return {"auto", *LLMSettings.load().profiles}
    except ConfigError:
        return {"auto"}


def check_params(params: Any, folders: Callable[[], list[Path]],
                 profiles: Callable[[], set[str]] = known_profiles,
                 found_files: set[str] | None = None) -> dict[str, Any]:
    """Validated, normalised ``persona_posts`` parameters (raises ``TemplateError``).

    ``found_files``: persona file names already found during this request (a
    10,000-persona batch names a few files many times).
    """
    if not isinstance(params, Mapping):
        raise TemplateError("params must be an object")
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise TemplateError(f"unknown params for {PERSONA_POSTS}: {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(PARAMS))})")
    has_file, has_json = bool(params.get("persona_file")), bool(params.get("persona_json"))
    if has_file == has_json:
        raise TemplateError("give exactly one of params.persona_file or params.persona_json")
    out: dict[str, Any] = {}
    try:
        out["user_id"] = validate_user_id(params.get("user_id", ""))
    except UnsafePathError as exc:
        raise TemplateError(f"params.user_id: {exc}") from None
    if has_file:
        name = params["persona_file"]
        if not isinstance(name, str):
            raise TemplateError("params.persona_file must be a file name")
        if found_files is None or name not in found_files:
            try:
                resolve_inside(name, folders(), what="persona_file")
            except (UnsafePathError, FileNotFoundError) as exc:
                raise TemplateError(f"params.persona_file: {exc}") from None
            if found_files is not None:
                found_files.add(name)
        out["persona_file"] = name
    else:
        text = params["persona_json"]
        if not isinstance(text, str):
            text = json.dumps(text, ensure_ascii=False)  # an object given inline
        if len(text) > PERSONA_JSON_LIMIT:
            raise TemplateError(f"params.persona_json is over {PERSONA_JSON_LIMIT // 1024} KiB")
        try:
            card_from_json_text(text)
        except PersonaError as exc:
            raise TemplateError(f"params.persona_json: {exc}") from None
        out["persona_json"] = text
    out["num_days"] = _int(params, "num_days", 3, 1, 31)
    out["start_day_offset"] = _int(params, "start_day_offset", 0, -365, 365)
    profile = params.get("llm_profile", "auto")
    if not isinstance(profile, str) or not profile.strip() or len(profile) > 64:
        raise TemplateError("params.llm_profile must be a profile name (never a key)")
    names = profiles()
    if profile.strip() not in names:
        # never echo the value: a pasted key must not come back in an answer or a log
        raise TemplateError(f"params.llm_profile is not a configured profile; configured: {', '.join(sorted(names))}")
    out["llm_profile"] = profile.strip()
    return out


def persona_user_id(name: str, folders: Callable[[], list[Path]]) -> str:
    """A bare persona file's user id: the card's ``extensions.twitterchat.user_id``, else the file stem."""
    try:
        path = resolve_inside(name, folders(), what="persona_file")
        card = card_from_file(path)
    except (UnsafePathError, FileNotFoundError, PersonaError) as exc:
        raise TemplateError(f"persona {name!r}: {exc}") from None
    data = card.get("data") if isinstance(card, Mapping) else None
    extension = ((data or {}).get("extensions") or {}).get("twitterchat") or {}
    user_id = extension.get("user_id") if isinstance(extension, Mapping) else None
    return str(user_id) if user_id else Path(name).stem


PERSONA_LIST_LIMIT = 500


def list_personas(folders: list[Path]) -> list[dict[str, Any]]:
    """Character cards (``.json``/``.png`` that read as a card) at the top of each folder, and in
    ComfyUI's ``input/personas/`` (where the node's upload button puts them, named ``personas/<file>``),
    by name; a name in an earlier folder hides the same name in a later one, as ``persona_file`` resolves."""
    found: dict[str, dict[str, Any]] = {}
    examples = (PACK_ROOT / "examples" / "personas").resolve()
    places = []
    for folder in folders:
        places.append((Path(folder), ""))
        if Path(folder).resolve() != examples:
            places.append((Path(folder) / "personas", "personas/"))
    for folder, prefix in places:
        try:
            paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".json", ".png"))
        except OSError:
            continue
        for path in paths:
            name = prefix + path.name
            if name in found or len(found) >= PERSONA_LIST_LIMIT or not path.is_file():
                continue
            try:
                card = card_from_file(path)
            except (PersonaError, OSError):
                continue  # a workflow or another JSON file, not a card
            data = card.get("data") or {}
            extension = ((data.get("extensions") or {}).get("twitterchat") or {})
            found[name] = {"file": name, "name": data.get("name") or path.stem,
                           "user_id": str(extension.get("user_id") or path.stem),
                           "folder": "examples" if Path(folder).resolve() == examples else "input"}
    return list(found.values())


def build_workflow(template: str, params: Mapping[str, Any]) -> dict[str, Any]:
    if template != PERSONA_POSTS:
        raise TemplateError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    global _BASE
    if _BASE is None:
        _BASE = _base_workflow()
    workflow = copy.deepcopy(_BASE)
    by_type = {node["class_type"]: node["inputs"] for node in workflow.values()}
    loader = by_type["PersonaLoader"]
    if params.get("persona_file"):
        loader.update(input_mode="file", persona_file=params["persona_file"], persona_json="")
    else:
        loader.update(input_mode="json_string", persona_json=params["persona_json"])
    loader["user_id"] = params["user_id"]
    by_type["ContextGatherer"]["day_offset"] = params["start_day_offset"]
    by_type["CalendarManager"]["llm_profile"] = params["llm_profile"]
    generator = by_type["BatchTweetGenerator"]
    generator.update(num_days=params["num_days"], start_day_offset=params["start_day_offset"],
                     llm_profile=params["llm_profile"])
    return workflow
