"""Calendar planning and concurrent post generation against the local
OpenAI-compatible test double (deterministic answers, injected faults)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import date
from functools import partial

import pytest

from comfyui_twitterchat.nodes.persona import load_persona
from comfyui_twitterchat.tools.calendar_planner import CalendarBook
from comfyui_twitterchat.tools.context import build_context, month_holidays
from comfyui_twitterchat.tools.tweet_generation import generate_posts
from comfyui_twitterchat.utils.llm import (CrossLoopSemaphore, LLMClientPool, LLMContentError,
                                                  LLMProfile, LLMSettings)

KEY = "sk-test-generation-0123456789abcdefghij"


def pool_for(server, max_concurrent=20, timeout=10.0, max_retries=2):
    profile = LLMProfile(name="test", base_url=server.base_url, model="test-model", timeout=timeout,
                         max_retries=max_retries, api_key_env="TWITTERCHAT_TEST_KEY")
    return LLMClientPool(max_concurrent=max_concurrent,
                         settings=LLMSettings(default_profile="test", profiles={"test": profile}))


@pytest.fixture
def persona():
    return load_persona("file", "tea_girl_meilin.json", "", "meilin_001")


def run_batch(pool, persona, tmp_path, days=5, max_concurrent=5, seed=1):
    book = CalendarBook(persona, tmp_path, pool, "test", partial(month_holidays, persona), seed=seed)
    contexts = [build_context(persona, offset) for offset in range(days)]
    posts = asyncio.run(generate_posts(pool, "test", persona, contexts, book.entry_for,
                                       max_concurrent=max_concurrent, seed=seed))
    return book, posts


def test_days_run_concurrently(fake_llm, persona, tmp_path, monkeypatch):
    monkeypatch.setenv("TWITTERCHAT_TEST_KEY", KEY)
    server = fake_llm(latency=0.3)
    pool = pool_for(server)
    _, posts = run_batch(pool, persona, tmp_path, days=7, max_concurrent=7)
    assert all(p.ok for p in posts), [p.error for p in posts]
    assert server.peak_in_flight > 1 and pool.peak_in_flight > 1
    assert len({p.text for p in posts}) == 7
    assert all(0 < p.weighted_length <= 280 for p in posts)
    assert [p.date for p in posts] == sorted(p.date for p in posts)
    assert all(p.scene_hint and p.posting_time for p in posts)
    assert set(server.auth_headers) == {f"Bearer {KEY}"}  # the key is used, from the environment


def test_one_day_failing_for_good_leaves_the_others_done(fake_llm, persona, tmp_path):
    bad_day = build_context(persona, 2)["date"]
    server = fake_llm(fail_dates={bad_day})
    _, posts = run_batch(pool_for(server, max_retries=1), persona, tmp_path, days=5)
    failed = [p for p in posts if not p.ok]
    assert [p.date for p in failed] == [bad_day]
    assert failed[0].error.startswith("LLMTransientError")
    assert all(p.ok and p.text for p in posts if p.date != bad_day)
    assert server.statuses.count(500) == 2  # the SDK's own retry (max_retries=1), no second layer


def test_rate_limits_are_retried_by_the_sdk(fake_llm, persona, tmp_path):
    server = fake_llm(rate_limit_first=2)
    _, posts = run_batch(pool_for(server, max_retries=3), persona, tmp_path, days=2, max_concurrent=1)
    assert all(p.ok for p in posts)
    assert server.statuses[:2] == [429, 429]


def test_hung_request_times_out_for_that_day_only(fake_llm, persona, tmp_path):
    stuck = build_context(persona, 1)["date"]
    server = fake_llm(hang_dates={stuck})
    _, posts = run_batch(pool_for(server, timeout=1.0, max_retries=0), persona, tmp_path, days=3)
    assert [p.date for p in posts if not p.ok] == [stuck]
    assert "LLMTransientError" in [p for p in posts if not p.ok][0].error


def test_malformed_calendar_json_is_retried_then_reported(fake_llm, persona, tmp_path):
    server = fake_llm(bad_calendar_json=1)
    book, posts = run_batch(pool_for(server), persona, tmp_path, days=1)
    assert posts[0].ok
    calendar_requests = [r for r in server.requests if r.get("response_format")]
    assert len(calendar_requests) == 2
    schema = calendar_requests[0]["response_format"]["json_schema"]
    assert schema["name"] == "content_calendar" and schema["strict"] is True

    hopeless = fake_llm(bad_calendar_json=99)
    book = CalendarBook(load_persona("file", "tea_girl_meilin.json", "", "other_user"), tmp_path,
                        pool_for(hopeless), "test", lambda y, m: {})
    with pytest.raises(LLMContentError, match="no usable calendar after 3 attempts.*not JSON"):
        asyncio.run(book.month(2026, 11))
    assert not book.path_for(2026, 11).exists()


def test_unparsable_response_body_is_a_content_retry(fake_llm, persona, tmp_path):
    server = fake_llm(bad_post_json_body=1)
    _, posts = run_batch(pool_for(server, max_retries=0), persona, tmp_path, days=1)
    assert posts[0].ok and posts[0].attempts == 2


def test_too_long_posts_are_refused(fake_llm, persona, tmp_path):
    server = fake_llm(post_text="茶" * 141)  # 141 CJK characters weigh 282
    _, posts = run_batch(pool_for(server), persona, tmp_path, days=1)
    assert not posts[0].ok and "282 weighted characters, over 280" in posts[0].error
    assert posts[0].attempts == 3


def test_near_duplicates_across_days_are_regenerated(fake_llm, persona, tmp_path):
    server = fake_llm(post_text="Same tea, same cup, same quiet morning at the shop today.")
    _, posts = run_batch(pool_for(server), persona, tmp_path, days=3)
    # Every rewrite repeated the first day again: each day keeps the post it had (a rewrite
    # never turns a day that had a post into a failure), and the report says so.
    assert all(p.ok and p.text for p in posts)
    assert posts[0].warning is None
    assert all("nearly repeats" in p.warning for p in posts[1:])
    post_requests = [r for r in server.requests if not r.get("response_format")]
    assert len(post_requests) > 3
    assert "Do not repeat these earlier posts" in post_requests[-1]["messages"][1]["content"]


def test_calendar_is_cached_per_user_and_month(fake_llm, persona, tmp_path):
    server = fake_llm()
    pool = pool_for(server)
    holidays = partial(month_holidays, persona)
    first = asyncio.run(CalendarBook(persona, tmp_path, pool, "test", holidays).month(2026, 10))
    path = CalendarBook(persona, tmp_path, pool, "test", holidays).path_for(2026, 10)
    assert path == tmp_path / "meilin_001" / "calendars" / "2026-10.json"
    assert json.loads(path.read_text()) == first and len(first["days"]) == 31
    again = asyncio.run(CalendarBook(persona, tmp_path, pool, "test", holidays).month(2026, 10))
    assert again == first and len(server.requests) == 1  # from the cache
    calendar_prompt = server.requests[0]["messages"][1]["content"]
    assert "1: Thursday (holiday: National Day)" in calendar_prompt  # CN holidays, English names
    asyncio.run(CalendarBook(persona, tmp_path, pool, "test", holidays).month(2026, 10, regenerate=True))
    assert len(server.requests) == 2


def test_concurrent_workflows_share_one_intact_calendar(fake_llm, persona, tmp_path):
    server = fake_llm(latency=0.2)
    pool = pool_for(server)
    results, errors = [], []

    def workflow():
        try:
            book = CalendarBook(persona, tmp_path, pool, "test", lambda y, m: {})
            results.append(asyncio.run(book.month(2026, 12)))  # each thread: its own event loop
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=workflow) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    stored = json.loads((tmp_path / "meilin_001" / "calendars" / "2026-12.json").read_text())
    assert all(result == stored for result in results) and len(results) == 4
    calendar_requests = [r for r in server.requests if r.get("response_format")]
    assert len(calendar_requests) == 1  # one workflow planned the month; the others waited for its plan
    assert sorted(p.name for p in (tmp_path / "meilin_001" / "calendars").iterdir()) == [
        ".2026-12.json.lock", ".2026-12.json.planning.lock", "2026-12.json"]


def test_one_bound_across_event_loops_and_threads():
    semaphore = CrossLoopSemaphore(3)
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    async def job():
        async with semaphore:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.02)
            with lock:
                state["now"] -= 1

    def loop_in_thread():
        async def many():
            await asyncio.gather(*(job() for _ in range(10)))
        asyncio.run(many())

    threads = [threading.Thread(target=loop_in_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert state == {"now": 0, "peak": 3}


def test_missing_endpoint_is_a_configuration_error(persona, tmp_path, monkeypatch):
    from comfyui_twitterchat.utils.llm import LLMConfigError, LLMRequest

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    pool = LLMClientPool(settings=LLMSettings(profiles={"openai": LLMProfile(name="openai")}))
    with pytest.raises(LLMConfigError, match="set OPENAI_BASE_URL"):
        asyncio.run(pool.complete("openai", LLMRequest(system="s", prompt="p")))
    with pytest.raises(LLMConfigError, match="unknown LLM profile 'nope'"):
        asyncio.run(pool.complete("nope", LLMRequest(system="s", prompt="p")))


def test_the_test_server_refuses_what_the_real_service_refuses(fake_llm):
    import httpx

    server = fake_llm()
    strict = {"type": "json_schema", "json_schema": {"name": "content_calendar", "strict": True, "schema": {
        "type": "object", "properties": {"topic": {"type": "string", "minLength": 1}}, "required": ["topic"],
        "additionalProperties": False}}}
    answer = httpx.post(server.base_url + "/chat/completions", json={
        "model": "gpt-4o-mini", "messages": [], "response_format": strict}, timeout=10)
    assert answer.status_code == 400 and "'minLength' is not permitted" in answer.json()["error"]["message"]
    answer = httpx.post(server.base_url + "/chat/completions", json={
        "model": "o4-mini", "messages": [], "max_tokens": 100}, timeout=10)
    assert answer.status_code == 400 and "max_completion_tokens" in answer.json()["error"]["message"]


def test_a_full_month_plans_through_strict_structured_outputs_on_a_reasoning_model(fake_llm, persona, tmp_path):
    from comfyui_twitterchat.tools.calendar_planner import month_schema
    from comfyui_twitterchat.utils.llm import strict_schema

    server = fake_llm()
    profile = LLMProfile(name="o4", base_url=server.base_url, model="o4-mini", timeout=10, max_retries=0,
                         api_key_env="TWITTERCHAT_TEST_KEY")
    pool = LLMClientPool(max_concurrent=4, settings=LLMSettings(default_profile="o4", profiles={"o4": profile}))
    month = asyncio.run(CalendarBook(persona, tmp_path, pool, "o4", partial(month_holidays, persona)).month(2026, 10))
    assert len(month["days"]) == 31
    (request,) = server.requests
    assert "max_tokens" not in request and "temperature" not in request and "stop" not in request
    assert request["max_completion_tokens"] >= 31 * 100
    sent = request["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["schema"] == strict_schema(month_schema(31))
    assert "minItems" not in json.dumps(sent) and "pattern" not in json.dumps(sent)


def test_an_unexpected_error_in_one_day_fails_that_day_only(fake_llm, persona, tmp_path, monkeypatch):
    server = fake_llm()
    pool = pool_for(server)
    contexts = [build_context(persona, offset) for offset in range(4)]
    broken_entry, broken_call = contexts[1]["date"], contexts[2]["date"]
    book = CalendarBook(persona, tmp_path, pool, "test", partial(month_holidays, persona), seed=1)

    async def entry_for(day):
        if day.isoformat() == broken_entry:
            raise TimeoutError("could not take the lock on the month's cache")
        return await book.entry_for(day)

    real_complete = pool.complete

    async def complete(profile, request):
        if request.tag == f"post {broken_call}":
            raise KeyError("a bug in one day's prompt")
        return await real_complete(profile, request)

    monkeypatch.setattr(pool, "complete", complete)
    posts = asyncio.run(generate_posts(pool, "test", persona, contexts, entry_for, max_concurrent=4, seed=1))
    by_date = {p.date: p for p in posts}
    assert not by_date[broken_entry].ok and "TimeoutError" in by_date[broken_entry].error
    assert not by_date[broken_call].ok and "KeyError" in by_date[broken_call].error
    assert sum(p.ok for p in posts) == 2



def test_a_posts_prompt_carries_the_lore_its_day_calls_for(persona):
    from comfyui_twitterchat.tools.tweet_generation import post_request

    context = build_context(persona, 0)
    entry = {"theme": "weekend", "topic": "a sunrise ride to West Lake", "scene_hint": "bike by the water",
             "posting_time": "07:30"}
    request = post_request(persona, context, entry, seed=1, avoid=[], problem=None)
    assert "bike ride from the shop" in request.system  # the keyed lorebook entry (keys: West Lake)
    other = post_request(persona, context, dict(entry, topic="a new oolong arrived"), seed=1, avoid=[],
                         problem=None)
    assert "bike ride from the shop" not in other.system
    assert request.system.startswith("You are Meilin.") and "Description:" in request.system
