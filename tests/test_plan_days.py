"""Planning only the days asked for, and the checks that keep links and handles out of plans
and posts: unit rules, and the chat-endpoint path against the OpenAI-compatible test double
(the embedded model's own path is tests/test_embedded_plan.py)."""

from __future__ import annotations

import asyncio
import calendar as month_calendar
import json
from datetime import date
from functools import partial

import pytest

from comfyui_twitterchat.nodes.persona import load_persona
from comfyui_twitterchat.tools.calendar_planner import CalendarBook, validate_month
from comfyui_twitterchat.tools.context import build_context, month_holidays
from comfyui_twitterchat.tools.post_text import unwanted_link
from comfyui_twitterchat.tools.tweet_generation import generate_posts, whole_sentences
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMContentError, LLMProfile, LLMSettings
from comfyui_twitterchat.utils.llm.local_provider import clean_field
from openai_double import Faults, FakeOpenAIServer

KEY = "sk-test-plan-days-0123456789abcdefghij"


@pytest.mark.parametrize("text, found", [
    ("by k & c [e-mailing or t ] at http://chuanjiang-", "a link (http://chuanjiang-)"),
    ("new menu on www.teahouse.cn tonight", "a link (www.teahouse.cn)"),
    ("details at meilin-tea.com/menu", "a link (meilin-tea.com/menu)"),
    ("write to shop@meilin.cn", "a link (meilin.cn)"),
    ("thanks @westlake_walks for the photo", "an @handle (@westlake_walks)"),
    ("e-mailing [me] soon", "a broken link or address (e-mailing [)"),
    ("Rain on the windows at 5 p.m., 3.5 cups of oolong, version 2.0 of my blend", None),
    ("今天的龙井很香。", None),
])
def test_links_addresses_and_handles_the_card_lacks_are_found(text, found):
    assert unwanted_link(text, "") == found


def test_a_handle_or_link_the_card_has_is_allowed():
    card = json.dumps({"description": "Follow @meilin_tea, shop site meilin-tea.com"})
    assert unwanted_link("thanks @meilin_tea! menu on meilin-tea.com", card) is None
    assert unwanted_link("thanks @someone_else", card) == "an @handle (@someone_else)"


@pytest.mark.parametrize("raw, name, limit, expected", [
    (" tea craft at dawn ", "theme", 32, "tea craft at dawn"),
    ("a walk to @westlake via http://x", "topic", 56, ""),
    ("roasting leaves / in a #wok **now**", "topic", 56, "roasting leaves in a wok now"),
    ("a very long scene description that keeps going well past the bound", "scene_hint", 30,
     "a very long scene description"),
    ("around 8.30 in the morning", "posting_time", 5, "08:30"),
    ("21h05", "posting_time", 5, "21:05"),
    ("sometime", "posting_time", 5, ""),
    ("  ", "theme", 32, ""),
])
def test_a_generated_field_is_usable_as_it_is_or_empty(raw, name, limit, expected):
    assert clean_field(raw, name, limit) == expected


def test_a_post_over_the_limit_ends_at_its_last_full_sentence():
    long = "First cup of the day. " * 14 + "And then the"
    trimmed = whole_sentences(long)
    assert trimmed.endswith("day.") and len(trimmed) <= 280
    assert whole_sentences("Short one, no end") == "Short one, no end"
    assert whole_sentences("x" * 300) == "x" * 300  # no sentence to end at: left to the length check


def test_a_plan_field_with_a_link_is_refused_by_name():
    raw = json.dumps({"days": [{"day": 1, "theme": "tea", "topic": "see www.tea.io", "scene_hint": "a cup",
                                "posting_time": "09:00"}]})
    with pytest.raises(LLMContentError, match="day 1's topic carries a link"):
        validate_month(raw, 2026, 11, [5])


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("TWITTERCHAT_TEST_KEY", KEY)
    server = FakeOpenAIServer(Faults()).start()
    profile = LLMProfile(name="test", base_url=server.base_url, model="test-model", timeout=10,
                         max_retries=1, api_key_env="TWITTERCHAT_TEST_KEY")
    pool = LLMClientPool(max_concurrent=5, settings=LLMSettings(default_profile="test", profiles={"test": profile}))
    yield server, pool
    server.stop()


def calendar_requests(server):
    return [r for r in server.requests if (r.get("response_format") or {}).get("json_schema", {})
            .get("name") == "content_calendar"]


def test_a_chat_endpoint_plans_the_whole_month_in_one_call_once(fake, tmp_path):
    server, pool = fake
    persona = load_persona("file", "tea_girl_meilin.json", "", "meilin_001")
    book = CalendarBook(persona, tmp_path, pool, "test", partial(month_holidays, persona), seed=1)
    contexts = [build_context(persona, offset) for offset in range(3)]
    posts = asyncio.run(generate_posts(pool, "test", persona, contexts, book.entry_for, seed=1,
                                       plan_days=book.plan_days))
    assert all(p.ok for p in posts)
    first = date.fromisoformat(contexts[0]["date"])
    months = {(date.fromisoformat(c["date"]).year, date.fromisoformat(c["date"]).month) for c in contexts}
    assert len(calendar_requests(server)) == len(months)  # one call per month touched, never per day
    stored = json.loads(book.path_for(first.year, first.month).read_text())
    assert len(stored["days"]) == month_calendar.monthrange(first.year, first.month)[1]
    again = CalendarBook(persona, tmp_path, pool, "test", partial(month_holidays, persona), seed=1)
    asyncio.run(again.plan_days([first]))
    assert len(calendar_requests(server)) == len(months)  # read from the cache


def test_days_planned_by_one_book_are_kept_when_another_plans_more(fake, tmp_path):
    """A month file with some days (the embedded model's partial plan) gains the missing ones
    from a later request; the days already there never change."""
    server, pool = fake
    persona = load_persona("file", "tea_girl_meilin.json", "", "meilin_001")
    book = CalendarBook(persona, tmp_path, pool, "test", partial(month_holidays, persona))
    path = book.path_for(2027, 2)
    path.parent.mkdir(parents=True)
    kept = {"theme": "kept theme", "topic": "kept topic", "scene_hint": "kept scene", "posting_time": "07:45"}
    path.write_text(json.dumps({"year": 2027, "month": 2, "user_id": "meilin_001", "persona_name": "Meilin",
                                "days": {"3": kept, "4": kept}}))
    plan = asyncio.run(book.month(2027, 2))
    assert sorted(int(d) for d in plan["days"]) == list(range(1, 29))
    assert plan["days"]["3"] == kept and plan["days"]["4"] == kept
    (request,) = calendar_requests(server)
    prompt = request["messages"][-1]["content"]
    assert "for exactly these 26 day(s)" in prompt and "3: kept theme | kept topic" in prompt
    assert json.loads(path.read_text())["days"]["4"] == kept
