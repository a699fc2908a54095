"""The monitor inside a real ComfyUI, configured only through the environment,
publishing to a real Redis and to the websocket."""

from __future__ import annotations

import json

import pytest

from comfyui_twitterchat.monitor.query import iso_utc

from collectors import RedisCollector, WebsocketCollector, wait_for
from ci_policy import need

pytestmark = [pytest.mark.comfyui, pytest.mark.redis, pytest.mark.slow]

FREQUENCY = 0.25
CHANNEL = "twitterchat-test:monitor"
EVENT = "twitterchat.monitor"
SECRET = "sk-extra-data-SECRET-0123456789abcdef"
FINAL = ("completed", "failed", "cancelled")
BUFFER = 100  # KY_MONITOR_BUFFER_SIZE for every channel
WAVE = 60


def probe_prompt(kind: str, seconds: float = 2.0) -> dict:
    graph = {"1": {"class_type": "EmptyImage",
                   "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    if kind == "slow":
        graph["2"] = {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": 10}}
    else:
        graph["2"] = {"class_type": "TCProbeFail", "inputs": {"image": ["1", 0], "message": "probe failure"}}
    graph["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    return graph


@pytest.fixture(scope="module")
def redis_for_monitor(tmp_path_factory):
    from redis_harness import RedisServer, redis_binary

    need(redis_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monitored_comfyui(comfyui_server_factory, redis_for_monitor):
    env = {"KY_MONITOR_ENABLED": "true", "KY_MONITOR_FREQUENCY_SECONDS": str(FREQUENCY),
           "KY_MONITOR_PROMPT_SERVER_ENABLED": "true", "KY_MONITOR_PROMPT_SERVER_EVENT_NAME": EVENT,
           "KY_MONITOR_REDIS_ENABLED": "true", "KY_MONITOR_REDIS_HOST": "127.0.0.1",
           "KY_MONITOR_REDIS_PORT": str(redis_for_monitor.port), "KY_MONITOR_REDIS_DB": "0",
           "KY_MONITOR_REDIS_CHANNEL_NAME": CHANNEL, "KY_MONITOR_BUFFER_SIZE": str(BUFFER), "TWITTERCHAT_LOG_LEVEL": "DEBUG"}
    return comfyui_server_factory(env=env)


def final_info(collector, prompt_id):
    finals = [i for i in collector.infos(prompt_id) if i["status"] in FINAL]
    return finals[-1] if finals else None


def why_missing(server, collector, prompt_ids) -> str:
    """Everything known about prompts whose final info never arrived (in full: pytest would clip it)."""
    log = server.log_text().splitlines()
    lines = ["final infos missing for %d prompt(s); monitor stats: %s"
             % (len(prompt_ids), json.dumps(server.get_json("/twitterchat/monitor/stats")))]
    for prompt_id in prompt_ids:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id, {})
        lines.append(f"{prompt_id}: history {entry.get('status', {}).get('status_str')}, "
                     f"received {json.dumps(collector.infos(prompt_id))}")
        lines.extend("  log: " + line for line in log if prompt_id in line)
    lines.append("log tail:")
    lines.extend(log[-40:])
    return "\n".join(lines)


def test_lifecycle_reaches_redis_and_websocket(monitored_comfyui, redis_for_monitor):
    server = monitored_comfyui
    redis_sub = RedisCollector(redis_for_monitor.port, CHANNEL)
    ws = WebsocketCollector(server.url, EVENT)
    try:
        extra = {"extra_data": {"api_key_comfy_org": SECRET,
                                "extra_pnginfo": {"workflow": {"note": SECRET}}}}
        slow = server.queue_prompt(probe_prompt("slow", 3.0), **extra)
        failing = server.queue_prompt(probe_prompt("fail"), **extra)
        quick = server.queue_prompt(probe_prompt("slow", 0.2))
        ids = (slow, failing, quick)
        assert wait_for(lambda: all(final_info(redis_sub, p) for p in ids), 90), \
            f"final infos missing: {redis_sub.messages}\n{server.log_text()[-3000:]}"
        assert wait_for(lambda: all(final_info(ws, p) for p in ids), 10), ws.messages
    finally:
        redis_sub.stop()
        ws.stop()

    # slow: running with partial progress and its current node, then completed
    slow_infos = redis_sub.infos(slow)
    running = [i for i in slow_infos if i["status"] == "running"]
    assert any(0 < i["progress"] < 1 and i["current_node"] == {"id": "2", "type": "TCProbeSlow"}
               for i in running), slow_infos
    progresses = [i["progress"] for i in running]
    assert progresses == sorted(progresses)
    done = final_info(redis_sub, slow)
    assert (done["status"], done["result"], done["progress"]) == ("completed", "success", 1.0)
    assert done["start_time"] < done["end_time"]

    # the other two waited in order, then failed / completed
    assert redis_sub.infos(failing)[0]["status"] == "pending"
    assert redis_sub.infos(failing)[0]["queue_position"] < redis_sub.infos(quick)[0]["queue_position"]
    failed = final_info(redis_sub, failing)
    assert (failed["status"], failed["result"]) == ("failed", "failure")
    error = failed["error_info"]
    assert error["message"] == "probe failure" and error["type"] == "ValueError"
    assert error["node_type"] == "TCProbeFail" and error["node_id"] == "2"
    assert len(error["traceback"]) == 2
    assert "twitterchat_test_probes" in error["traceback"][-1] and "in innermost" in error["traceback"][-1]
    assert final_info(redis_sub, quick)["status"] == "completed"

    # the final info carries the real end, and arrives after it (how soon: bench/task_service.py's
    # completion-to-SSE delay; a wall-clock bound here would flake on a loaded machine)
    history = server.get_json(f"/history/{slow}")[slow]
    end_ms = [d for e, d in history["status"]["messages"] if e == "execution_success"][0]["timestamp"]
    final = final_info(redis_sub, slow)
    assert final["end_time"] == iso_utc(end_ms)
    received = [t for t, i in redis_sub.messages if i["id"] == slow and i["status"] == "completed"][0]
    assert received >= end_ms / 1000 - 0.05  # never before the prompt ended (50 ms of clock rounding)

    # websocket subscribers see the same final states
    assert {p: final_info(ws, p)["status"] for p in ids} == {p: final_info(redis_sub, p)["status"] for p in ids}

    # the secret in extra_data, the workflow and node inputs reach no subscriber and no log
    published = b"".join(redis_sub.raw).decode() + "".join(ws.raw)
    for forbidden in (SECRET, "extra_pnginfo", "api_key_comfy_org", "inputs"):
        assert forbidden not in published
    assert SECRET not in server.log_text()


def test_redis_outage_delays_nothing_and_the_monitor_recovers(monitored_comfyui, redis_for_monitor):
    server = monitored_comfyui
    ws = WebsocketCollector(server.url, EVENT)
    before = server.get_json("/twitterchat/monitor/stats")
    assert before["running"] is True
    redis_for_monitor.stop()
    try:
        # Two waves of WAVE prompts. A tick publishes at most one info per prompt,
        # so a healthy channel never holds more than one wave (< BUFFER), while
        # dead Redis keeps everything: at least 2 * WAVE final infos > BUFFER.
        during = []
        for _ in range(2):
            wave = [server.queue_prompt(probe_prompt("slow", 0.02)) for _ in range(WAVE)]
            during += wave
            # every prompt still runs and reaches the websocket while Redis is down
            missing = lambda: [p for p in wave if not final_info(ws, p)]
            if not wait_for(lambda: not missing(), 90):
                pytest.fail(why_missing(server, ws, missing()), pytrace=False)
        for prompt_id in during:
            assert server.wait_for_history(prompt_id, 30)["status"]["status_str"] == "success"

        def redis_struggles():
            channel = server.get_json("/twitterchat/monitor/stats")["channels"]["redis"]
            return channel["failures"] > 0 and channel["dropped"] > 0

        assert wait_for(redis_struggles, 30), json.dumps(server.get_json("/twitterchat/monitor/stats"))
        stats = server.get_json("/twitterchat/monitor/stats")
        assert stats["ticks"] > before["ticks"] and stats["tick_errors"] == 0
        assert stats["never_seen"] == 0  # every prompt the server numbered was accounted for
        assert stats["channels"]["websocket"]["sent"] >= before["channels"]["websocket"]["sent"] + 2 * WAVE
        assert stats["channels"]["websocket"]["dropped"] == 0
    finally:
        redis_for_monitor.start()
    subscriber = RedisCollector(redis_for_monitor.port, CHANNEL)
    try:
        after = server.queue_prompt(probe_prompt("slow", 0.05))
        # the sender backs off up to 30 s between attempts; allow for one full wait
        assert wait_for(lambda: final_info(subscriber, after), 60), server.get_json("/twitterchat/monitor/stats")
    finally:
        subscriber.stop()
        ws.stop()
    stats = server.get_json("/twitterchat/monitor/stats")
    assert stats["channels"]["redis"]["sent"] > before["channels"]["redis"]["sent"]
    assert json.dumps(stats).count("password") == 0


def test_redis_channel_sends_a_backlog_in_order_in_pipelines(redis_for_monitor):
    """A backlog (as after an outage) goes out in pipelines of batch_size, in order, none lost."""
    from comfyui_twitterchat.monitor.channel import BufferedSender, Envelope, RedisChannel

    channel_name = "twitterchat-test:backlog"
    subscriber = RedisCollector(redis_for_monitor.port, channel_name)
    channel = RedisChannel("127.0.0.1", redis_for_monitor.port, 0, channel_name)
    sender = BufferedSender(channel, maxsize=1000)
    batches = []
    send_batch = channel.send_batch
    channel.send_batch = lambda messages: (batches.append(len(messages)), send_batch(messages))
    try:
        for n in range(450):  # buffered before the sender starts, like a backlog after a reconnect
            sender.offer(Envelope.of({"id": f"p{n}", "status": "completed", "n": n}))
        sender.start()
        assert wait_for(lambda: len(subscriber.messages) == 450, 30), len(subscriber.messages)
    finally:
        sender.stop()
        subscriber.stop()
    assert [info["n"] for _, info in subscriber.messages] == list(range(450))
    assert batches == [100, 100, 100, 100, 50]
    assert sender.stats()["sent"] == 450 and sender.pending == 0
