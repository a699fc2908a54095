"""Character cards (``chara_card_v2`` / ``chara_card_v3``) -> a persona.

Plain Python: no ComfyUI import. Cards come from a JSON string, a ``.json``
file or a PNG card (``ccv3`` tEXt chunk first, then ``chara``; both hold
base64-encoded JSON). The card is kept whole, so fields this pack does not know
(extensions, lorebooks, assets) survive untouched.

The system prompt follows the card spec: a non-empty ``system_prompt`` replaces
the default one, with ``{{original}}`` standing for the default; ``{{char}}``
and ``{{user}}`` macros are filled in; ``creator_notes`` never reach a prompt.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_SPECS = ("chara_card_v2", "chara_card_v3")
PNG_CHUNK_KEYS = ("ccv3", "chara")  # v3 first, as the v3 spec asks
EXTENSION_KEY = "twitterchat"       # data.extensions.twitterchat: this pack's own fields
DEFAULT_USER_NAME = "your followers"
MAX_CARD_BYTES = 8 * 1024 * 1024

_MACRO = re.compile(r"\{\{\s*(char|user|original)\s*\}\}", re.IGNORECASE)


class PersonaError(ValueError):
    """A card that cannot be used, with a message that names the problem."""


@dataclass(frozen=True)
class Persona:
    """TC_PERSONA: what PersonaLoader hands to the other nodes.

    ``card`` is the full original card (``{"spec", "spec_version", "data"}``),
    ``user_id`` the validated owner id used for output folders and caches.
    """

    user_id: str
    card: dict[str, Any] = field(repr=False)

    @property
    def data(self) -> dict[str, Any]:
        return self.card["data"]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def spec(self) -> str:
        return self.card["spec"]

    def field(self, key: str) -> str:
        value = self.data.get(key)
        return value if isinstance(value, str) else ""

    @property
    def extension(self) -> dict[str, Any]:
        extensions = self.data.get("extensions")
        ext = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
        return ext if isinstance(ext, dict) else {}

    def card_text(self) -> str:
        """Every text of the card, for checks like 'was this handle or link in the card?'."""
        return json.dumps(self.card, ensure_ascii=False)

    def example_posts(self) -> list[str]:
        """Example posts for few-shot prompting: the pack's extension list, else ``mes_example`` lines."""
        posts = self.extension.get("example_posts")
        if isinstance(posts, list) and all(isinstance(p, str) for p in posts):
            return [p.strip() for p in posts if p.strip()]
        examples = []
        for block in re.split(r"<START>", self.field("mes_example"), flags=re.IGNORECASE):
            for line in block.splitlines():
                line = line.strip()
                if line.lower().startswith("{{char}}:"):
                    # roleplay narration (*smiles*) is not part of a post
                    spoken = " ".join(_NARRATION.sub(" ", line.split(":", 1)[1]).split())
                    if spoken:
                        examples.append(fill_macros(spoken, self.name))
        return examples

    def locale(self) -> dict[str, Any]:
        """Where the persona lives: ``data.core_info.location`` first, then this pack's extension."""
        core = self.data.get("core_info")
        location = core.get("location") if isinstance(core, dict) else None
        location = location if isinstance(location, dict) else {}
        ext = self.extension

        def pick(*keys: str) -> Any:
            for source in (location, ext):
                for key in keys:
                    value = source.get(key)
                    if value not in (None, ""):
                        return value
            return None

        return {"timezone": pick("timezone"), "utc_offset": pick("utc_offset"), "country": pick("country"),
                "subdivision": pick("subdivision", "state", "province"), "city": pick("city"),
                "holiday_language": ext.get("holiday_language") or "en_US",
                "latitude": pick("latitude", "lat"), "longitude": pick("longitude", "lon")}

    def summary(self) -> str:
        tags = self.data.get("tags") or []
        tag_text = ", ".join(str(t) for t in tags[:8]) if isinstance(tags, list) else ""
        description = " ".join(fill_macros(self.field("description"), self.name).split())
        if len(description) > 160:
            description = description[:157].rstrip() + "..."
        parts = [f"{self.name} ({self.spec}, user {self.user_id})"]
        if description:
            parts.append(description)
        if tag_text:
            parts.append(f"tags: {tag_text}")
        return " | ".join(parts)


def fill_macros(text: str, char_name: str, user_name: str = DEFAULT_USER_NAME,
                original: str = "") -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1).lower()
        return {"char": char_name, "user": user_name, "original": original}[key]
    return _MACRO.sub(replace, text)


_USER_DIALOGUE = re.compile(r"^\s*\{\{\s*user\s*\}\}\s*:.*$", re.IGNORECASE | re.MULTILINE)
_NARRATION = re.compile(r"\*[^*\n]+\*")
LORE_TOKEN_BUDGET = 400  # about 1,600 characters of lore per prompt


def main_instruction(persona: Persona) -> str:
    return f"You are {persona.name}. Write as {persona.name}, in the first person."


def _persona_text(persona: Persona, key: str, user_name: str) -> str:
    """A card field for a prompt: chat lines spoken by ``{{user}}`` (example dialogue written into a
    description) are left out, and the macros filled."""
    text = _USER_DIALOGUE.sub("", persona.field(key))
    return fill_macros("\n".join(line for line in text.splitlines() if line.strip()), persona.name, user_name).strip()


def default_system_prompt(persona: Persona, user_name: str = DEFAULT_USER_NAME) -> str:
    """The prompt built from the card's own fields (never ``creator_notes``)."""
    return build_system_prompt(persona, user_name, use_override=False)


def lore_entries(persona: Persona, scan: str = "", budget_tokens: int = LORE_TOKEN_BUDGET) -> list[str]:
    """The character book's entries for a prompt, as SillyTavern picks them: enabled entries,
    constant ones always and keyed ones when a key (and, for ``selective`` entries, a secondary
    key) appears in ``scan`` (``case_sensitive`` respected), in ``insertion_order``, within a
    token budget (the book's ``token_budget`` when smaller; a token counted as 4 characters)."""
    book = persona.data.get("character_book")
    if not isinstance(book, dict) or not isinstance(book.get("entries"), list):
        return []
    budget = budget_tokens
    if isinstance(book.get("token_budget"), int) and book["token_budget"] > 0:
        budget = min(budget, book["token_budget"])

    def matches(keys: Any, sensitive: bool) -> bool:
        words = [k for k in keys if isinstance(k, str) and k.strip()] if isinstance(keys, list) else []
        hay = scan if sensitive else scan.lower()
        return any((k if sensitive else k.lower()) in hay for k in words)

    chosen = []
    for index, entry in enumerate(book["entries"]):
        if not isinstance(entry, dict) or entry.get("enabled") is False:
            continue
        content = entry.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        sensitive = bool(entry.get("case_sensitive"))
        if not entry.get("constant"):
            if not matches(entry.get("keys"), sensitive):
                continue
            if entry.get("selective") and entry.get("secondary_keys") and \
                    not matches(entry.get("secondary_keys"), sensitive):
                continue
        order = entry.get("insertion_order")
        chosen.append((order if isinstance(order, (int, float)) else 0, index, content.strip()))
    lore, used = [], 0
    for _, _, content in sorted(chosen):
        cost = max(1, len(content) // 4)
        if used + cost > budget:
            continue
        used += cost
        lore.append(fill_macros(content, persona.name))
    return lore


def build_system_prompt(persona: Persona, user_name: str = DEFAULT_USER_NAME, scan: str = "",
                        use_override: bool = True) -> str:
    """The system prompt, as SillyTavern builds it from a card: the card's ``system_prompt``
    replaces only the main instruction (``{{original}}`` stands for the default one); the
    description, personality, scenario and the lore that ``scan`` selects always follow."""
    instruction = main_instruction(persona)
    override = persona.field("system_prompt").strip() if use_override else ""
    if override:
        instruction = fill_macros(override, persona.name, user_name, original=instruction)
    sections = [instruction]
    for label, key in (("Description", "description"), ("Personality", "personality"),
                       ("Scenario", "scenario")):
        text = _persona_text(persona, key, user_name)
        if text:
            sections.append(f"{label}: {text}")
    lore = lore_entries(persona, scan)
    if lore:
        sections.append("What you know:\n" + "\n".join(f"- {item}" for item in lore))
    return "\n\n".join(sections)


def closing_instructions(persona: Persona, user_name: str = DEFAULT_USER_NAME) -> str:
    """What a card asks to come last, after the request: ``extensions.depth_prompt`` (at depth 0
    it sits at the end of the chat; with no chat history every depth lands there) and
    ``post_history_instructions`` (``{{original}}`` empty: this pack has no global one)."""
    parts = []
    extensions = persona.data.get("extensions")
    depth = extensions.get("depth_prompt") if isinstance(extensions, dict) else None
    if isinstance(depth, dict) and isinstance(depth.get("prompt"), str) and depth["prompt"].strip():
        parts.append(fill_macros(depth["prompt"].strip(), persona.name, user_name))
    history = persona.field("post_history_instructions").strip()
    if history:
        parts.append(fill_macros(history, persona.name, user_name, original="").strip())
    return "\n\n".join(p for p in parts if p)


def parse_card(raw: Any, source: str = "card") -> dict[str, Any]:
    """Validate a decoded card and return a deep copy of it."""
    if not isinstance(raw, dict):
        raise PersonaError(f"{source}: a character card must be a JSON object, got {type(raw).__name__}")
    spec = raw.get("spec")
    if spec not in SUPPORTED_SPECS:
        if spec is None and "name" in raw and "data" not in raw:
            raise PersonaError(f"{source}: this looks like a v1 card (no 'spec'); "
                               f"convert it to {' or '.join(SUPPORTED_SPECS)}")
        raise PersonaError(f"{source}: unsupported card spec {spec!r}; "
                           f"expected one of {', '.join(SUPPORTED_SPECS)}")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise PersonaError(f"{source}: 'data' must be an object holding the card's fields")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PersonaError(f"{source}: the card has no name (data.name is missing or empty)")
    for key in ("description", "personality", "scenario", "system_prompt", "mes_example",
                "first_mes", "creator_notes", "post_history_instructions"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise PersonaError(f"{source}: data.{key} must be text, got {type(data[key]).__name__}")
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise PersonaError(f"{source}: data.extensions must be an object")
    return copy.deepcopy(raw)


def card_from_json_text(text: str, source: str = "persona_json") -> dict[str, Any]:
    if not text or not text.strip():
        raise PersonaError(f"{source}: empty; paste a chara_card_v2/v3 JSON object")
    if len(text.encode("utf-8")) > MAX_CARD_BYTES:
        raise PersonaError(f"{source}: larger than {MAX_CARD_BYTES // (1024 * 1024)} MiB")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PersonaError(f"{source}: invalid JSON ({exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno})") from None
    return parse_card(raw, source)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK_BYTES = MAX_CARD_BYTES * 2  # a compressed text chunk may not inflate beyond this


def _inflate(data: bytes, name: str, key: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_CHUNK_BYTES)
    except zlib.error as exc:
        raise PersonaError(f"{name}: the '{key}' chunk is not valid compressed text ({exc})") from None
    if inflater.unconsumed_tail:
        raise PersonaError(f"{name}: the '{key}' chunk inflates beyond {MAX_TEXT_CHUNK_BYTES // (1024 * 1024)} MiB; "
                           "not a character card")
    return out


def png_text_chunks(path: Path) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG, read chunk by chunk: the pixels are never
    decoded, so an image bomb costs nothing, and compressed text is capped."""
    name = path.name
    chunks: dict[str, str] = {}
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if handle.read(8) != PNG_SIGNATURE:
            raise PersonaError(f"{name}: unreadable PNG (no PNG signature)")
        while True:
            header = handle.read(8)
            if len(header) < 8:
                break  # truncated after the last complete chunk: use what was read
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                break
            if not kind.isalpha() or handle.tell() + length + 4 > size:
                raise PersonaError(f"{name}: unreadable PNG (a damaged or truncated chunk)")
            if kind not in (b"tEXt", b"zTXt", b"iTXt"):
                handle.seek(length + 4, 1)  # skip the data (pixels included) and its CRC
                continue
            if length > MAX_TEXT_CHUNK_BYTES:
                raise PersonaError(f"{name}: a text chunk of {length} bytes is too large for a card")
            data = handle.read(length)
            handle.seek(4, 1)
            key, _, rest = data.partition(b"\0")
            key_text = key.decode("latin-1")
            if kind == b"tEXt":
                text = rest.decode("latin-1")
            elif kind == b"zTXt":
                text = _inflate(rest[1:], name, key_text).decode("latin-1")
            else:  # iTXt: flag, method, language\0, translated keyword\0, text
                flag, body = rest[:1], rest[2:]
                body = body.split(b"\0", 2)[-1]
                text = (_inflate(body, name, key_text) if flag == b"\x01" else body).decode("utf-8", "replace")
            chunks.setdefault(key_text, text)
    return chunks


def card_from_png(path: Path) -> dict[str, Any]:
    try:
        chunks = png_text_chunks(path)
    except OSError as exc:
        raise PersonaError(f"{path.name}: unreadable PNG ({exc})") from None
    lowered = {key.lower(): value for key, value in chunks.items()}
    for key in PNG_CHUNK_KEYS:
        value = chunks.get(key, lowered.get(key))
        if value is not None:
            try:
                decoded = base64.b64decode(value, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise PersonaError(f"{path.name}: the '{key}' chunk is not base64 JSON ({exc})") from None
            return card_from_json_text(decoded, f"{path.name} ({key} chunk)")
    raise PersonaError(f"{path.name}: PNG has no character card (no 'ccv3' or 'chara' text chunk)")


def card_from_file(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PersonaError(f"persona file not found: {path.name}") from None
    if size > MAX_CARD_BYTES * 4:
        raise PersonaError(f"{path.name}: file too large for a character card ({size} bytes)")
    if path.suffix.lower() == ".png":
        return card_from_png(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PersonaError(f"{path.name}: not UTF-8 text; use a .json or .png card") from None
    return card_from_json_text(text, path.name)
