"""Long nodes honour ComfyUI's Cancel and show progress, on a real ComfyUI with a
slow OpenAI-compatible test double: a running persona_posts task cancelled
through the task service (and a prompt interrupted with ComfyUI's own
/interrupt, as its Cancel button does) stops between LLM calls, abandons the
calls in flight, and ends ``cancelled`` long before its last day."""

from __future__ import annotations

import time

import pytest

from collectors import wait_for
from openai_double import Faults, FakeOpenAIServer
from service_harness import API, call, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

LATENCY = 1.5
PLAN_LATENCY = 8.0  # a month plan is one long call: Cancel must not wait for it
DAYS = 20


@pytest.fixture(scope="module")
def slow_llm():
    server = FakeOpenAIServer(Faults(latency=LATENCY, calendar_latency=PLAN_LATENCY)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(comfyui_server_factory, slow_llm):
    return comfyui_server_factory(env={"OPENAI_BASE_URL": slow_llm.base_url, "OPENAI_API_KEY": "sk-cancel-test-0",
                                       "TWITTERCHAT_WEATHER_URL": ""})


def post_requests(llm) -> int:
    return sum(1 for r in llm.requests if "content_calendar" not in str(r.get("response_format")))


def persona_task(server, user_id):
    status, answer, _ = call(server.url, "POST", f"{API}/tasks", {"template": "persona_posts", "params": {
        "persona_file": "tea_girl_meilin.json", "user_id": user_id, "num_days": DAYS, "llm_profile": "openai"}})
    assert status == 202, answer
    return answer["task_id"]


def test_a_running_persona_task_is_cancelled_between_llm_calls_with_progress_shown(server, slow_llm):
    task_id = persona_task(server, "cancel_me")
    seen = []

    def generating_with_progress():
        task = call(server.url, "GET", f"{API}/tasks/{task_id}")[1]
        seen.append(task)
        node = task["current_node"] or {}
        return node.get("type") == "BatchTweetGenerator" and 0.6 < task["progress"] < 0.8

    # 5 nodes: BatchTweetGenerator is the 4th, so its days done show as progress between 0.6 and 0.8.
    assert wait_for(generating_with_progress, 60 + PLAN_LATENCY, 0.2), seen[-1]
    asked_before = post_requests(slow_llm)
    assert 0 < asked_before < DAYS
    cancelled_at = time.monotonic()
    status, answer, _ = call(server.url, "POST", f"{API}/tasks/{task_id}/cancel")
    assert status == 200 and answer["cancelled"], answer
    final = wait_final(server.url, [task_id], timeout=30)[task_id]
    took = time.monotonic() - cancelled_at
    assert final["status"] == "cancelled" and final["error"]["type"] == "cancelled", final
    # Without Cancel support the node would run on for about 20 days x 1.5 s / 5 at a time = 6 s more.
    assert took < 2 * LATENCY + 1.5, took
    time.sleep(LATENCY + 0.5)
    assert post_requests(slow_llm) <= asked_before + 5  # at most the calls already in flight
    history = server.get_json(f"/history/{task_id}")[task_id]
    assert any(event == "execution_interrupted" for event, _ in history["status"]["messages"])
    assert not (server.output_dir / "cancel_me").exists() or not any(
        p.name[:4].isdigit() for p in (server.output_dir / "cancel_me").iterdir())


def test_comfyuis_own_interrupt_stops_a_month_plan_and_the_next_prompt_runs(server, slow_llm):
    task_id = persona_task(server, "interrupt_plan")  # a new user: its month is planned first
    assert wait_for(lambda: (call(server.url, "GET", f"{API}/tasks/{task_id}")[1]["current_node"] or {})
                    .get("type") == "CalendarManager", 60, 0.1)
    started = time.monotonic()
    server.post_json("/interrupt", {})  # what ComfyUI's Cancel button sends
    final = wait_final(server.url, [task_id], timeout=30)[task_id]
    assert final["status"] == "cancelled" and final["error"]["type"] == "interrupted", final
    assert time.monotonic() - started < PLAN_LATENCY / 2, "Cancel waited for the month plan's LLM call"
    assert final["progress"] < 0.6
    # The process-wide LLM bound and ComfyUI's worker are free again: the next task runs to the end.
    quick = call(server.url, "POST", f"{API}/tasks", {"template": "persona_posts", "params": {
        "persona_file": "tea_girl_meilin.json", "user_id": "after_cancel", "num_days": 1,
        "llm_profile": "openai"}})[1]["task_id"]
    assert wait_final(server.url, [quick], timeout=60 + PLAN_LATENCY)[quick]["status"] == "completed"
