"""Character cards v2/v3 (JSON and PNG), the system prompt, and unsafe names."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfyui_twitterchat.nodes import persona as persona_node
from comfyui_twitterchat.nodes.persona import PersonaLoader
from comfyui_twitterchat.tools import persona_card as pc
from comfyui_twitterchat.utils.safe_paths import UnsafePathError, validate_user_id
from pack_paths import PACK_ROOT

MEILIN = json.loads((PACK_ROOT / "examples" / "personas" / "tea_girl_meilin.json").read_text())


def v3_card(**data):
    return {"spec": "chara_card_v3", "spec_version": "3.0",
            "data": {"name": "Kai", "description": "{{char}} surfs.", "personality": "calm",
                     "scenario": "", "first_mes": "", "mes_example": "", "creator_notes": "secret note",
                     "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
                     "tags": [], "creator": "", "character_version": "1", "extensions": {},
                     "group_only_greetings": [], "assets": [{"type": "icon", "uri": "ccdefault:",
                                                             "name": "main", "ext": "png"}],
                     **data}}


def png_card(path, chunks):
    info = PngInfo()
    for key, card in chunks.items():
        info.add_text(key, base64.b64encode(json.dumps(card).encode()).decode())
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


def load_json(card, user_id="u1"):
    return PersonaLoader().load("json_string", "", json.dumps(card), user_id)


def test_v2_example_card_loads_with_prompt_rules():
    persona, summary, system_prompt, user_id = PersonaLoader().load(
        "file", "tea_girl_meilin.json", "", "meilin_001")
    assert persona.name == "Meilin" and user_id == "meilin_001"
    assert summary.startswith("Meilin (chara_card_v2, user meilin_001)")
    # system_prompt override with {{original}} standing for the default prompt
    assert system_prompt.startswith("You are Meilin.")
    assert "Description: Meilin is a 26-year-old tea shop owner" in system_prompt
    # the override replaces only the main instruction: the persona's fields still follow it
    assert system_prompt.index("no hashtags spam.") < system_prompt.index("Description:")
    assert "{{" not in system_prompt
    assert "never reach a prompt" not in system_prompt  # creator_notes


def test_unknown_fields_survive_untouched():
    persona = load_json(MEILIN)[0]
    assert persona.card == MEILIN
    assert persona.data["character_book"] == MEILIN["data"]["character_book"]
    assert persona.data["core_info"]["location"]["timezone"] == "Asia/Shanghai"
    assert persona.data["extensions"]["talkativeness"] == "0.6"


def test_v3_card_and_default_prompt_without_override():
    persona, _, system_prompt, _ = load_json(v3_card())
    assert persona.spec == "chara_card_v3"
    assert system_prompt == "You are Kai. Write as Kai, in the first person.\n\n" \
                            "Description: Kai surfs.\n\nPersonality: calm"
    assert persona.data["assets"][0]["uri"] == "ccdefault:"


def test_an_override_without_original_replaces_only_the_main_instruction():
    _, _, system_prompt, _ = load_json(v3_card(system_prompt="Only {{char}} talking to {{user}}."))
    assert system_prompt == (f"Only Kai talking to {pc.DEFAULT_USER_NAME}.\n\n"
                             "Description: Kai surfs.\n\nPersonality: calm")


def test_lore_post_history_depth_prompt_dialogue_and_narration_follow_the_card(monkeypatch):
    card = v3_card(
        description="{{char}} surfs at dawn.\n{{user}}: do you ever sleep?\n{{char}} shapes her own boards.",
        mes_example="<START>\n{{user}}: hi\n{{char}}: *waves from the water* Swell is clean today!\n"
                    "{{char}}: *nods*",
        post_history_instructions="Keep it under two sentences. {{original}}",
        extensions={"depth_prompt": {"prompt": "{{char}} never mentions prices.", "depth": 4, "role": "system"}},
        character_book={"name": "Kai's world", "extensions": {}, "entries": [
            {"keys": ["Point Reyes"], "content": "Point Reyes is Kai's home break.", "enabled": True,
             "insertion_order": 2, "extensions": {}},
            {"keys": ["board"], "content": "Kai rides a 9'2 log.", "enabled": True, "insertion_order": 1,
             "constant": True, "extensions": {}},
            {"keys": ["SHARK"], "content": "A shark scare closed the beach in 2024.", "enabled": True,
             "insertion_order": 0, "case_sensitive": True, "extensions": {}},
            {"keys": ["dawn"], "content": "Disabled entry.", "enabled": False, "insertion_order": 0,
             "extensions": {}}]})
    persona = load_json(card)[0]
    prompt = pc.build_system_prompt(persona, scan="a morning at point reyes, shark talk")
    assert "Description: Kai surfs at dawn.\nKai shapes her own boards." in prompt  # no '{{user}}:' chat line
    assert "do you ever sleep" not in prompt and "your followers:" not in prompt
    lore = prompt.split("What you know:\n", 1)[1]
    assert lore.splitlines() == ["- Kai rides a 9'2 log.", "- Point Reyes is Kai's home break."]  # order, case
    assert "Disabled entry" not in prompt
    # insertion_order: lower first (higher numbers sit closer to the end, as in SillyTavern)
    assert pc.lore_entries(persona, "SHARK sighting") == ["A shark scare closed the beach in 2024.",
                                                         "Kai rides a 9'2 log."]
    assert pc.lore_entries(persona, "", budget_tokens=3) == []  # over the budget: left out
    assert pc.closing_instructions(persona) == "Kai never mentions prices.\n\nKeep it under two sentences."
    assert persona.example_posts() == ["Swell is clean today!"]  # narration is not a post


def test_the_shipped_card_passes_strict_v2_validation():
    from pack_paths import PERSONAS_DIR

    card = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text())
    assert card["spec"] == "chara_card_v2" and card["spec_version"] == "2.0"
    data = card["data"]
    for key in ("name", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
                "system_prompt", "post_history_instructions", "creator", "character_version"):
        assert isinstance(data[key], str), key
    assert isinstance(data["alternate_greetings"], list) and isinstance(data["tags"], list)
    assert isinstance(data["extensions"], dict)
    book = data["character_book"]
    assert isinstance(book["extensions"], dict) and isinstance(book["entries"], list)
    for entry in book["entries"]:  # the V2 spec makes extensions mandatory on every entry ({} by default)
        assert isinstance(entry["keys"], list) and isinstance(entry["content"], str)
        assert isinstance(entry["extensions"], dict), entry
        assert isinstance(entry["enabled"], bool) and isinstance(entry["insertion_order"], (int, float))


def test_example_posts_come_from_extension_or_mes_example():
    meilin = load_json(MEILIN)[0]
    assert len(meilin.example_posts()) == 3
    plain = copy.deepcopy(MEILIN)
    del plain["data"]["extensions"]["twitterchat"]
    posts = load_json(plain)[0].example_posts()
    assert posts[0].startswith("First Longjing of the spring")
    assert len(posts) == 2


def test_png_card_prefers_ccv3_over_chara(tmp_path, monkeypatch):
    monkeypatch.setattr(persona_node, "input_directory", lambda: tmp_path)
    png_card(tmp_path / "both.png", {"chara": MEILIN, "ccv3": v3_card()})
    png_card(tmp_path / "v2.png", {"chara": MEILIN})
    assert PersonaLoader().load("file", "both.png", "", "u1")[0].name == "Kai"
    assert PersonaLoader().load("file", "v2.png", "", "u1")[0].name == "Meilin"


@pytest.mark.parametrize("content, message", [
    ("{not json", "invalid JSON"),
    ('{"spec": "chara_card_v9", "data": {"name": "x"}}', "unsupported card spec 'chara_card_v9'"),
    ('{"name": "old", "description": "v1"}', "looks like a v1 card"),
    ('{"spec": "chara_card_v2", "data": {"name": "  "}}', "no name"),
    ('{"spec": "chara_card_v2", "data": {"description": "x"}}', "no name"),
    ('{"spec": "chara_card_v2"}', "'data' must be an object"),
    ('[1, 2]', "must be a JSON object"),
    ('{"spec": "chara_card_v2", "data": {"name": "x", "description": 5}}', "data.description must be text"),
    ("", "empty"),
])
def test_bad_json_names_the_problem(content, message):
    with pytest.raises(ValueError, match="PersonaLoader: .*" + message.replace("(", r"\(")):
        PersonaLoader().load("json_string", "", content, "u1")


def test_bad_png_names_the_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(persona_node, "input_directory", lambda: tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (2, 2)).save(tmp_path / "plain.png")
    info = PngInfo()
    info.add_text("chara", "%%% not base64 json %%%")
    Image.new("RGB", (2, 2)).save(tmp_path / "garbled.png", pnginfo=info)
    with pytest.raises(ValueError, match="broken.png: unreadable PNG"):
        PersonaLoader().load("file", "broken.png", "", "u1")
    with pytest.raises(ValueError, match="no 'ccv3' or 'chara' text chunk"):
        PersonaLoader().load("file", "plain.png", "", "u1")
    with pytest.raises(ValueError, match="garbled.png"):
        PersonaLoader().load("file", "garbled.png", "", "u1")


@pytest.mark.parametrize("user_id", [
    "..", "../etc", "a/b", "a\\b", "/abs", "x\x00y", "", " padded", "a" * 65, ".hidden", "a..b", "名字",
])
def test_unsafe_user_ids_are_refused(user_id):
    with pytest.raises(UnsafePathError):
        validate_user_id(user_id)
    with pytest.raises(ValueError, match="user_id"):
        PersonaLoader().load("file", "tea_girl_meilin.json", "", user_id)


def test_safe_user_ids_pass():
    for user_id in ("meilin_001", "a", "tea.girl-7@x", "A" * 64):
        assert validate_user_id(user_id) == user_id


@pytest.mark.parametrize("name", [
    "../README.md", "../../etc/passwd", "/etc/passwd", "~/x.json", "sub/../../config.json", "a\x00.json",
])
def test_persona_file_cannot_escape_its_folders(name, tmp_path, monkeypatch):
    monkeypatch.setattr(persona_node, "input_directory", lambda: tmp_path)
    with pytest.raises(ValueError, match="PersonaLoader: .*(outside|absolute|NUL)"):
        PersonaLoader().load("file", name, "", "u1")


def test_symlink_out_of_the_input_folder_is_refused(tmp_path, monkeypatch):
    inputs = tmp_path / "input"
    inputs.mkdir()
    (tmp_path / "private.json").write_text(json.dumps(MEILIN))
    (inputs / "link.json").symlink_to(tmp_path / "private.json")
    monkeypatch.setattr(persona_node, "input_directory", lambda: inputs)
    with pytest.raises(ValueError, match="outside"):
        PersonaLoader().load("file", "link.json", "", "u1")


def test_missing_file_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(persona_node, "input_directory", lambda: tmp_path)
    with pytest.raises(ValueError, match="'nobody.json' not found in: .*examples"):
        PersonaLoader().load("file", "nobody.json", "", "u1")


def png_bytes(chunks):
    """A PNG assembled chunk by chunk (what other tools write: zTXt, iTXt, huge dimensions)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = b"\x89PNG\r\n\x1a\n"
    for kind, data in chunks:
        out += chunk(kind, data)
    return out + chunk(b"IEND", b"")


def test_png_cards_are_read_from_their_text_chunks_only(tmp_path, monkeypatch):
    import struct
    import zlib

    monkeypatch.setattr(persona_node, "input_directory", lambda: tmp_path)
    encoded = base64.b64encode(json.dumps(MEILIN).encode())
    # 40,000 x 40,000 pixels declared: decoding them would be a decompression bomb; never decoded.
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(png_bytes([(b"IHDR", header), (b"tEXt", b"chara\0" + encoded),
                                                   (b"IDAT", zlib.compress(b"\0" * 1000))]))
    assert PersonaLoader().load("file", "bomb.png", "", "u1")[0].name == "Meilin"
    (tmp_path / "z.png").write_bytes(png_bytes([(b"IHDR", header), (b"zTXt", b"chara\0\0" + zlib.compress(encoded))]))
    assert PersonaLoader().load("file", "z.png", "", "u1")[0].name == "Meilin"
    (tmp_path / "i.png").write_bytes(png_bytes([(b"IHDR", header),
                                                (b"iTXt", b"ccv3\0\x01\0en\0\0" + zlib.compress(encoded))]))
    assert PersonaLoader().load("file", "i.png", "", "u1")[0].name == "Meilin"
    # A text chunk that inflates without end is refused by name, after a bounded amount of work.
    bomb_text = zlib.compress(b"A" * (20 * 1024 * 1024), 9)
    (tmp_path / "textbomb.png").write_bytes(png_bytes([(b"IHDR", header), (b"zTXt", b"chara\0\0" + bomb_text)]))
    with pytest.raises(ValueError, match="textbomb.png: the 'chara' chunk inflates beyond"):
        PersonaLoader().load("file", "textbomb.png", "", "u1")
