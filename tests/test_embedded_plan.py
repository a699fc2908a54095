"""The embedded model plans exactly the days asked, by construction: whole months of 31 and
28 days, a 3-day request, and later days added next to the first ones, which never change.
Each entry passes the plan schema and carries no link, address or handle."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from functools import partial

import jsonschema
import pytest

from comfyui_twitterchat.nodes.persona import load_persona
from comfyui_twitterchat.tools.calendar_planner import DAY_SCHEMA, CalendarBook
from comfyui_twitterchat.tools.context import month_holidays
from comfyui_twitterchat.tools.post_text import unwanted_link

pytestmark = pytest.mark.slow


def book_for(persona, tmp_path, pool, seed=7):
    return CalendarBook(persona, tmp_path, pool, "local", partial(month_holidays, persona), seed=seed)


def check_entries(persona, plan):
    for number, entry in plan["days"].items():
        jsonschema.validate({"day": int(number), **entry}, DAY_SCHEMA)
        for key in ("theme", "topic", "scene_hint"):
            assert unwanted_link(entry[key], persona.card_text()) is None, entry


@pytest.mark.parametrize("card, user_id, year, month, days", [
    ("tea_girl_meilin.json", "meilin_001", 2026, 12, 31),
    ("chengdu_baker_xiaoyu.json", "xiaoyu_001", 2027, 2, 28),
])
def test_a_whole_month_comes_back_with_exactly_its_days(local_pool, tmp_path, card, user_id, year, month, days):
    persona = load_persona("file", card, "", user_id)
    plan = asyncio.run(book_for(persona, tmp_path, local_pool).month(year, month))
    assert sorted(int(d) for d in plan["days"]) == list(range(1, days + 1))
    check_entries(persona, plan)
    stored = json.loads((tmp_path / user_id / "calendars" / f"{year}-{month:02d}.json").read_text())
    assert stored["days"] == plan["days"]


def test_a_three_day_request_plans_three_days_and_later_days_leave_them_unchanged(local_pool, tmp_path):
    persona = load_persona("file", "tea_girl_meilin.json", "", "meilin_001")
    first = [date(2027, 3, 10) + timedelta(days=i) for i in range(3)]
    asyncio.run(book_for(persona, tmp_path, local_pool).plan_days(first))
    path = tmp_path / "meilin_001" / "calendars" / "2027-03.json"
    planned = json.loads(path.read_text())
    assert sorted(planned["days"]) == ["10", "11", "12"]
    check_entries(persona, planned)
    later = [date(2027, 3, 20) + timedelta(days=i) for i in range(3)]
    book = book_for(persona, tmp_path, local_pool, seed=8)  # another run, reading the cache
    asyncio.run(book.plan_days(later))
    grown = json.loads(path.read_text())
    assert sorted(grown["days"], key=int) == ["10", "11", "12", "20", "21", "22"]
    assert {d: grown["days"][d] for d in ("10", "11", "12")} == planned["days"]
    check_entries(persona, grown)
    assert asyncio.run(book.entry_for(date(2027, 3, 21))) == grown["days"]["21"]
