"""The real embedded model (llama-cpp-python + the packaged Gemma 3 270M GGUF)."""

from __future__ import annotations

import asyncio
import calendar as month_calendar
from datetime import date

import pytest

from comfyui_twitterchat.nodes.persona import load_persona
from comfyui_twitterchat.tools.calendar_planner import CalendarBook, LINE_FIELDS
from comfyui_twitterchat.tools.context import build_context
from comfyui_twitterchat.tools.tweet_generation import generate_posts
from comfyui_twitterchat.utils.file_lock import atomic_write_json
from comfyui_twitterchat.tools.calendar_planner import LOCAL_FIELDS
from comfyui_twitterchat.utils.llm import LLMRequest, LocalModel
from comfyui_twitterchat.utils.llm.request import LineFields

pytestmark = pytest.mark.slow


def seeded_calendar(tmp_path, persona, day: date):
    """A cached plan for the month, so the test exercises post generation only."""
    days = month_calendar.monthrange(day.year, day.month)[1]
    plan = {"year": day.year, "month": day.month, "user_id": persona.user_id, "persona_name": persona.name,
            "days": {str(d): {"theme": "tea craft", "topic": "a new green tea arrived at the shop",
                              "scene_hint": "a glass teapot with green leaves", "posting_time": "09:00"}
                     for d in range(1, days + 1)}}
    book = CalendarBook(persona, tmp_path, None, "local", lambda y, m: {})
    atomic_write_json(book.path_for(day.year, day.month), plan)
    return book


def test_embedded_model_writes_a_post(local_pool, tmp_path):
    persona = load_persona("file", "tea_girl_meilin.json", "", "meilin_001")
    context = build_context(persona, 0)
    book = seeded_calendar(tmp_path, persona, date.fromisoformat(context["date"]))
    book.pool = local_pool
    (post,) = asyncio.run(generate_posts(local_pool, "local", persona, [context], book.entry_for, seed=3))
    assert post.ok, post.error
    assert post.text.strip() and 0 < post.weighted_length <= 280
    assert local_pool.profile("local").kind == "local" and local_pool.calls >= 1


def test_the_code_lays_the_lines_down_and_the_model_fills_them(local_pool):
    persona = load_persona("file", "tea_girl_meilin.json", "", "meilin_001")
    model = LocalModel.get(local_pool.profile("local"))
    assert LocalModel.get(local_pool.profile("local")) is model  # loaded once
    examples = "\n".join(persona.extension["example_plan"])
    request = LLMRequest(system="", prompt="", completion_prompt=f"Daily post plan:\n{examples}\n",
                         lines=LineFields(("3 Wed", "4 Thu", "5 Fri"), LOCAL_FIELDS,
                                          fallbacks=((), (), (), ("09:00",))), temperature=0.8, seed=1)
    lines = model.generate(request).strip().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["3 Wed", "4 Thu", "5 Fri"]
    for line in lines:
        fields = [f.strip() for f in line.split("|")][1:]
        assert len(fields) == len(LINE_FIELDS) and all(fields)
        for value, (_, limit) in zip(fields, LOCAL_FIELDS):
            assert len(value) <= limit and "@" not in value and "/" not in value
        hours, minutes = fields[3].split(":")
        assert 0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59
