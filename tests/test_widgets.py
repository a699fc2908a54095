"""The nodes' widgets as ComfyUI sees them: lists instead of free text, a tooltip on every
input, validation that names the problem (and never repeats a pasted key), IS_CHANGED
that follows the card file and 'regenerate', and no node changing another node's
cached output."""

from __future__ import annotations

import asyncio
import copy
import json
import math
from datetime import date
from functools import partial

import pytest

from comfyui_twitterchat.nodes import NODE_CLASSES
from comfyui_twitterchat.nodes import persona as persona_node
from comfyui_twitterchat.nodes import generation as generation_node
from comfyui_twitterchat.nodes.calendar import CalendarManager
from comfyui_twitterchat.nodes.generation import BatchTweetGenerator, TweetGenerator
from comfyui_twitterchat.nodes.persona import PersonaLoader, load_persona
from comfyui_twitterchat.service.templates import known_profiles
from comfyui_twitterchat.tools.calendar_planner import CalendarBook
from comfyui_twitterchat.tools.context import build_context, month_holidays
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMProfile, LLMSettings
from openai_double import Faults, FakeOpenAIServer
from pack_paths import PERSONAS_DIR

PASTED_KEY = "sk-proj-pasted-into-a-widget-0123456789abcdef"
CARD = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text(encoding="utf-8"))


def inputs_of(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def test_every_input_of_every_node_has_a_tooltip():
    missing = [f"{cls.NODE_ID}.{name}" for cls in NODE_CLASSES for name, spec in inputs_of(cls).items()
               if len(spec) < 2 or not str(spec[1].get("tooltip", "")).strip()]
    assert missing == []


def test_llm_profile_is_the_list_of_configured_profiles_everywhere():
    nodes = [cls for cls in NODE_CLASSES if "llm_profile" in inputs_of(cls)]
    assert {cls.NODE_ID for cls in nodes} >= {"CalendarManager", "BatchTweetGenerator", "TweetGenerator"}
    for cls in nodes:
        choices, options = inputs_of(cls)["llm_profile"]
        assert choices == ["auto", "local", "openai"] and options["default"] == "auto"
        assert set(choices) == known_profiles()  # what the task service accepts


@pytest.mark.parametrize("cls", [CalendarManager, BatchTweetGenerator, TweetGenerator])
def test_a_free_text_profile_from_an_old_workflow_fails_validation_without_being_repeated(cls):
    assert cls.VALIDATE_INPUTS(llm_profile="openai") is True
    assert cls.VALIDATE_INPUTS() is True  # linked: nothing to check before it runs
    message = cls.VALIDATE_INPUTS(llm_profile=PASTED_KEY)
    assert isinstance(message, str) and "not a configured LLM profile" in message
    assert "auto, local, openai" in message
    assert PASTED_KEY not in message and "sk-" not in message


def card_with(description: str) -> str:
    card = copy.deepcopy(CARD)
    card["data"]["description"] = description
    return json.dumps(card)


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    folder = tmp_path / "input"
    (folder / "personas").mkdir(parents=True)
    monkeypatch.setattr(persona_node, "input_directory", lambda: folder)
    return folder


def test_persona_file_lists_the_example_cards_and_the_input_folders_cards(input_dir):
    (input_dir / "mine.json").write_text(card_with("Mine."), encoding="utf-8")
    (input_dir / "notes.json").write_text("{\"not\": \"a card\"}", encoding="utf-8")
    (input_dir / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # an input image is not read
    (input_dir / "personas" / "uploaded.json").write_text(card_with("Uploaded."), encoding="utf-8")
    from comfyui_twitterchat.tools.persona_choices import cards_in
    from pack_paths import PACK_ROOT

    shipped = cards_in(PACK_ROOT / "examples" / "personas")
    assert "tea_girl_meilin.json" in shipped
    choices, options = inputs_of(PersonaLoader)["persona_file"]
    assert choices == [*shipped, "mine.json", "personas/uploaded.json"]
    assert options["default"] == "tea_girl_meilin.json"
    # each choice loads
    for name in choices:
        assert load_persona("file", name, "", "u1").name
    for name in ("mine.json", "personas/uploaded.json"):
        assert load_persona("file", name, "", "u1").name == "Meilin"
    # a card added later is offered on the next look (the folder changed)
    (input_dir / "personas" / "later.json").write_text(card_with("Later."), encoding="utf-8")
    assert "personas/later.json" in inputs_of(PersonaLoader)["persona_file"][0]


def test_persona_file_validation_names_a_missing_card_and_accepts_an_old_name_that_resolves(input_dir):
    assert PersonaLoader.VALIDATE_INPUTS("file", "tea_girl_meilin.json") is True
    (input_dir / "deep").mkdir()
    (input_dir / "deep" / "old.json").write_text(card_with("Old."), encoding="utf-8")
    assert PersonaLoader.VALIDATE_INPUTS("file", "deep/old.json") is True  # not listed, still loads
    message = PersonaLoader.VALIDATE_INPUTS("file", "gone.json")
    assert isinstance(message, str) and "'gone.json' not found" in message and "upload" in message
    assert "absolute path" in PersonaLoader.VALIDATE_INPUTS("file", "/etc/passwd")
    assert PersonaLoader.VALIDATE_INPUTS("json_string", "gone.json") is True  # the file is not used
    assert "input_mode" in PersonaLoader.VALIDATE_INPUTS("url", "tea_girl_meilin.json")


def test_a_card_read_from_a_file_is_read_again_when_the_file_changes(input_dir):
    card = input_dir / "personas" / "edited.json"
    card.write_text(card_with("First."), encoding="utf-8")
    first = PersonaLoader.IS_CHANGED(input_mode="file", persona_file="personas/edited.json", user_id="u1")
    assert first == PersonaLoader.IS_CHANGED(input_mode="file", persona_file="personas/edited.json")
    card.write_text(card_with("Second."), encoding="utf-8")
    assert PersonaLoader.IS_CHANGED(input_mode="file", persona_file="personas/edited.json") != first
    # pasted JSON is a widget value: ComfyUI's own input signature covers it
    assert PersonaLoader.IS_CHANGED(input_mode="json_string", persona_file="x") == ""


def test_regenerate_makes_every_queue_a_new_plan():
    changed = CalendarManager.IS_CHANGED(regenerate=True, llm_profile="auto", seed=0)
    assert math.isnan(changed) and changed != CalendarManager.IS_CHANGED(regenerate=True)
    assert CalendarManager.IS_CHANGED(regenerate=False) == CalendarManager.IS_CHANGED(regenerate=False)


@pytest.fixture
def llm_double():
    server = FakeOpenAIServer(Faults()).start()
    yield server
    server.stop()


def test_the_generator_never_changes_the_calendar_managers_cached_output(llm_double, tmp_path, monkeypatch):
    """A batch running into next month plans that month in a book of its own: the book ComfyUI
    keeps as CalendarManager's output (and hands to the next run) is left as it was."""
    monkeypatch.setenv("TWITTERCHAT_WEATHER_URL", "")
    profile = LLMProfile(name="openai", base_url=llm_double.base_url, model="m", api_key_env="TC_WIDGET_TEST_KEY")
    pool = LLMClientPool(max_concurrent=4, settings=LLMSettings(default_profile="openai", profiles={"openai": profile}))
    monkeypatch.setattr(generation_node, "get_pool", lambda: pool)
    persona = load_persona("file", "tea_girl_meilin.json", "", "cache_user")
    first_day = date.fromisoformat(build_context(persona, 0)["date"])
    book = CalendarBook(persona, tmp_path, pool, "openai", partial(month_holidays, persona), seed=1)
    asyncio.run(book.month(first_day.year, first_day.month))
    before_months, before_card = copy.deepcopy(book.months), copy.deepcopy(persona.card)

    answer = asyncio.run(BatchTweetGenerator().generate(persona, book, 31, 0, 4, "openai", 1, False))
    posts, _, dates, _ = answer["result"]

    assert len(dates) == 31 and len({d[:7] for d in dates}) == 2  # the batch did run into next month
    assert book.months == before_months and list(book.months) == list(before_months)
    assert persona.card == before_card


def test_a_linked_value_that_is_not_a_profile_fails_the_node_without_being_repeated(tmp_path):
    """A value arriving through a link skips validation; the node checks it when it runs."""
    persona = load_persona("file", "tea_girl_meilin.json", "", "linked_user")
    with pytest.raises(ValueError) as raised:
        asyncio.run(BatchTweetGenerator().generate(persona, None, 1, 0, 1, PASTED_KEY, 1, False))
    assert "not a configured LLM profile" in str(raised.value) and PASTED_KEY not in str(raised.value)
    with pytest.raises(ValueError) as raised:
        asyncio.run(CalendarManager().plan(persona, {"date": "2026-11-25"}, False, PASTED_KEY, 1))
    assert "not a configured LLM profile" in str(raised.value) and PASTED_KEY not in str(raised.value)
