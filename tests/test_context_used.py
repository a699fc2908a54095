"""ContextGatherer's output reaches the prompts: the generators use a connected context's
weather and holidays for its day (no second look-up), and the month plan's request names
them, as seen at the OpenAI test double."""

from __future__ import annotations

import asyncio
import copy
from functools import partial

import pytest

from comfyui_twitterchat.nodes import generation as generation_node
from comfyui_twitterchat.nodes import calendar as calendar_node
from comfyui_twitterchat.nodes.calendar import CalendarManager
from comfyui_twitterchat.nodes.generation import BatchTweetGenerator, TweetGenerator
from comfyui_twitterchat.nodes.persona import load_persona
from comfyui_twitterchat.tools.calendar_planner import CalendarBook
from comfyui_twitterchat.tools.context import build_context, month_holidays
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMProfile, LLMSettings
from openai_double import Faults, FakeOpenAIServer

WEATHER = {"summary": "light snow showers", "temp_min_c": -3.0, "temp_max_c": 1.0}
HOLIDAY = "Festival of Test Lanterns"


@pytest.fixture
def llm_double():
    server = FakeOpenAIServer(Faults()).start()
    yield server
    server.stop()


@pytest.fixture
def pool(llm_double, monkeypatch):
    monkeypatch.setenv("TWITTERCHAT_WEATHER_URL", "")
    profile = LLMProfile(name="openai", base_url=llm_double.base_url, model="m", api_key_env="TC_CONTEXT_TEST_KEY")
    pool = LLMClientPool(max_concurrent=4, settings=LLMSettings(default_profile="openai", profiles={"openai": profile}))
    monkeypatch.setattr(generation_node, "get_pool", lambda: pool)
    monkeypatch.setattr(calendar_node, "get_pool", lambda: pool)
    return pool


@pytest.fixture
def persona():
    return load_persona("file", "tea_girl_meilin.json", "", "context_user")


def gathered(persona, offset=0) -> dict:
    context = build_context(persona, offset)
    context.update(weather=dict(WEATHER), holidays=[HOLIDAY], is_holiday=True)
    return context


def prompts(server, date=None) -> list[str]:
    """The text of every post request (for one date) the double received."""
    texts = [" ".join(m["content"] for m in r["messages"]) for r in server.requests if not r.get("response_format")]
    return [t for t in texts if date is None or date in t]


def test_the_batch_uses_the_gathered_days_weather_and_holiday(pool, persona, llm_double, tmp_path, monkeypatch):
    looked_up = []
    real = generation_node.build_context
    monkeypatch.setattr(generation_node, "build_context",
                        lambda p, offset, *a, **k: looked_up.append(offset) or real(p, offset, *a, **k))
    context = gathered(persona, 0)
    kept = copy.deepcopy(context)
    book = CalendarBook(persona, tmp_path, pool, "openai", partial(month_holidays, persona), seed=1)
    answer = asyncio.run(BatchTweetGenerator().generate(persona, book, 2, 0, 2, "openai", 1, True, context=context))
    assert len(answer["result"][0]) == 2
    first, second = (build_context(persona, o)["date"] for o in (0, 1))
    day_one = prompts(llm_double, first)
    assert day_one and all("light snow showers, -3-1 C" in t and HOLIDAY in t for t in day_one)
    assert all("light snow" not in t and HOLIDAY not in t for t in prompts(llm_double, second))
    assert looked_up == [1]  # the gathered day is not looked up again
    assert context == kept  # the gatherer's (cached) output is unchanged


def test_the_single_day_generator_uses_it_too(pool, persona, llm_double, tmp_path):
    book = CalendarBook(persona, tmp_path, pool, "openai", partial(month_holidays, persona), seed=1)
    asyncio.run(TweetGenerator().generate(persona, book, 0, "openai", 1, False, context=gathered(persona, 0)))
    assert any("light snow showers" in t and HOLIDAY in t for t in prompts(llm_double))


def test_the_month_plan_is_asked_with_the_gathered_days_weather_and_holiday(pool, persona, llm_double, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(calendar_node, "output_root", lambda: tmp_path)
    context = gathered(persona, 0)
    asyncio.run(CalendarManager().plan(persona, context, True, "openai", 1))
    plans = [r for r in llm_double.requests if r.get("response_format")]
    assert len(plans) == 1
    text = " ".join(m["content"] for m in plans[0]["messages"])
    day = int(context["date"][8:])
    line = next(l for l in text.splitlines() if l.startswith(f"{day}: "))
    assert HOLIDAY in line and "weather: light snow showers, -3-1 C" in line
