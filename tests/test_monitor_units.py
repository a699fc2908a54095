"""Monitor settings, buffered channels and the tick, without ComfyUI."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from comfyui_twitterchat.monitor import channel as ch
from comfyui_twitterchat.monitor.config import load_monitor_settings
from comfyui_twitterchat.monitor.query import QueueEntry, summarize_history_entry
from comfyui_twitterchat.monitor.service import PromptMonitor
from pack_paths import PACK_ROOT

CONFIG = json.loads((PACK_ROOT / "config.json").read_text())


# -- settings ----------------------------------------------------------------

def test_defaults_come_from_config_json():
    settings = load_monitor_settings(CONFIG, env={})
    assert settings.enabled and settings.prompt_server.enabled
    assert settings.prompt_server.event_name == "twitterchat.monitor"
    assert not settings.redis.enabled and not settings.rocketmq.enabled
    assert settings.frequency_seconds == CONFIG["monitor"]["frequency_seconds"]


def test_environment_wins_and_password_comes_from_it():
    env = {"KY_MONITOR_FREQUENCY_SECONDS": "0.25", "KY_MONITOR_HISTORY_MAX_ITEMS": "7",
           "KY_MONITOR_REDIS_ENABLED": "true", "KY_MONITOR_REDIS_PORT": "6390",
           "KY_MONITOR_REDIS_PASSWORD": "s3cret-pass", "KY_MONITOR_REDIS_CHANNEL_NAME": "ops",
           "KY_MONITOR_PROMPT_SERVER_EVENT_NAME": "ops.monitor", "KY_MONITOR_ROCKETMQ_ENABLED": "1",
           "KY_MONITOR_ROCKETMQ_TOPIC": "t1"}
    s = load_monitor_settings(CONFIG, env=env)
    assert (s.frequency_seconds, s.history_max_items) == (0.25, 7)
    assert (s.redis.enabled, s.redis.port, s.redis.password, s.redis.channel_name) == (True, 6390, "s3cret-pass", "ops")
    assert s.prompt_server.event_name == "ops.monitor"
    assert s.rocketmq.enabled and s.rocketmq.topic == "t1"
    assert "s3cret-pass" not in repr(s)


def test_bad_channel_value_disables_that_channel_only(caplog):
    with caplog.at_level(logging.ERROR, logger="twitterchat.monitor.config"):
        s = load_monitor_settings(CONFIG, env={"KY_MONITOR_REDIS_ENABLED": "true",
                                               "KY_MONITOR_REDIS_PORT": "not-a-port"})
    assert s.enabled and s.prompt_server.enabled and not s.redis.enabled
    assert len(caplog.records) == 1 and "KY_MONITOR_REDIS_PORT" in caplog.text


def test_bad_monitor_value_disables_the_monitor(caplog):
    with caplog.at_level(logging.ERROR, logger="twitterchat.monitor.config"):
        s = load_monitor_settings(CONFIG, env={"KY_MONITOR_FREQUENCY_SECONDS": "-1"})
    assert not s.enabled
    assert "KY_MONITOR_FREQUENCY_SECONDS" in caplog.text and "monitor disabled" in caplog.text
    assert not load_monitor_settings(CONFIG, env={"KY_MONITOR_ENABLED": "false"}).enabled


def test_password_in_config_json_is_refused(caplog):
    config = json.loads(json.dumps(CONFIG))
    config["monitor"]["redis"]["password"] = "in-the-repo"
    s = load_monitor_settings(config, env={"KY_MONITOR_REDIS_ENABLED": "true"})
    assert not s.redis.enabled
    assert "KY_MONITOR_REDIS_PASSWORD" in caplog.text


# -- buffered channels --------------------------------------------------------

class Recording:
    def __init__(self, name="rec", fail_first=0, block: threading.Event | None = None):
        self.name, self.fail_first, self.block = name, fail_first, block
        self.got: list[str] = []
        self.calls = 0

    def send(self, message):
        self.calls += 1
        if self.block is not None:
            self.block.wait()
        if self.calls <= self.fail_first:
            raise ConnectionError("down")
        self.got.append(message.prompt_id)

    def close(self):
        pass


def envelope(i):
    return ch.Envelope.of({"id": f"p{i}", "status": "running"})


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_blocked_channel_delays_nothing_and_counts_drops(monkeypatch):
    release = threading.Event()
    stuck, healthy = Recording("stuck", block=release), Recording("healthy")
    senders = [ch.BufferedSender(stuck, maxsize=3).start(), ch.BufferedSender(healthy, maxsize=3).start()]
    for i in range(50):
        for sender in senders:
            sender.offer(envelope(i))
        time.sleep(0.002)
    # every offer returned while the stuck channel was still inside its first send: offer never waits
    assert not release.is_set() and stuck.calls == 1
    assert wait_until(lambda: len(healthy.got) >= 47)
    assert senders[0].dropped >= 46 and senders[0].pending == 3
    release.set()
    assert wait_until(lambda: len(stuck.got) >= 3)
    assert stuck.got[-1] == "p49"  # the newest survived, the oldest were dropped
    for sender in senders:
        sender.stop()


def test_every_offered_message_is_counted_once_sent_or_dropped():
    release = threading.Event()
    slow = Recording("slow", block=release)
    sender = ch.BufferedSender(slow, maxsize=2).start()
    sender.offer(envelope(0))
    assert wait_until(lambda: slow.calls == 1)  # p0 is on its way to the channel
    for i in range(1, 30):
        sender.offer(envelope(i))
    assert [m.prompt_id for m in sender._buffer][0] == "p0"  # what is being sent is never dropped
    release.set()
    assert wait_until(lambda: sender.pending == 0)
    sender.stop()
    assert slow.got[0] == "p0" and slow.got[-1] == "p29"
    assert sender.sent == len(slow.got) and sender.sent + sender.dropped == 30


def test_a_full_buffer_drops_superseded_updates_before_final_states():
    sender = ch.BufferedSender(Recording("unstarted"), maxsize=4)  # never started: nothing drains

    def offer(prompt_id, status):
        sender.offer(ch.Envelope.of({"id": prompt_id, "status": status}))

    def buffered():
        return [(m.prompt_id, m.status) for m in sender._buffer]

    offer("a", "pending"), offer("b", "pending"), offer("a", "completed"), offer("b", "running")
    offer("c", "completed")  # full: a's pending is superseded by its completed
    assert buffered() == [("b", "pending"), ("a", "completed"), ("b", "running"), ("c", "completed")]
    offer("d", "pending")  # b's pending is superseded by its running update
    assert buffered() == [("a", "completed"), ("b", "running"), ("c", "completed"), ("d", "pending")]
    offer("e", "failed")  # nothing superseded: the oldest update that is not final goes
    assert buffered() == [("a", "completed"), ("c", "completed"), ("d", "pending"), ("e", "failed")]
    offer("f", "cancelled")
    offer("g", "completed")  # only final states left: the oldest goes
    assert buffered() == [("c", "completed"), ("e", "failed"), ("f", "cancelled"), ("g", "completed")]
    assert sender.dropped == 5 and dict(sender._per_prompt) == {"c": 1, "e": 1, "f": 1, "g": 1}


def test_failing_channel_retries_with_backoff_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(ch, "INITIAL_BACKOFF", 0.01)
    flaky = Recording(fail_first=4)
    sender = ch.BufferedSender(flaky, maxsize=100).start()
    for i in range(5):
        sender.offer(envelope(i))
    assert wait_until(lambda: len(flaky.got) == 5)
    assert flaky.got == [f"p{i}" for i in range(5)]
    assert sender.failures == 4 and sender.dropped == 0
    sender.stop()


def test_envelope_refuses_values_that_are_not_json():
    with pytest.raises(TypeError):
        ch.Envelope.of({"id": "x", "status": "running", "bad": object()})
    with pytest.raises(ValueError):
        ch.Envelope.of({"id": "x", "status": "running", "progress": float("nan")})


def test_prompt_server_channel_hands_over_plain_types():
    sent = []

    class Server:
        def send_sync(self, event, data, sid=None):
            sent.append((event, data, sid))

    ch.PromptServerChannel(Server(), "twitterchat.monitor").send(envelope(1))
    assert sent == [("twitterchat.monitor", {"id": "p1", "status": "running"}, None)]


# -- the tick -----------------------------------------------------------------

class FakeSource:
    """Queue/history in the shapes ComfySource returns, with call counts."""

    def __init__(self):
        self.running, self.pending, self.history = [], [], {}
        self.counter = 0
        self.started = None
        self.recent_calls = 0

    def read_queue(self):
        return list(self.running), list(self.pending)

    def read_progress(self):
        return None

    def history_summary(self, prompt_id):
        return self.history.get(prompt_id)

    def recent_history(self, max_items):
        self.recent_calls += 1
        return dict(list(self.history.items())[-max_items:])

    def queued_counter(self):
        return self.counter

    def started_prompt_id(self):
        return self.started


def finished(number):
    return summarize_history_entry({"prompt": (number, f"p{number}", {}, {}, []),
                                    "status": {"status_str": "success", "completed": True,
                                               "messages": [("execution_start", {"timestamp": 1000}),
                                                            ("execution_success", {"timestamp": 2000})]}})


def watched(source, env=None, clock=None):
    """A monitor on ``source`` whose published infos land in the returned list."""
    kwargs = {} if clock is None else {"clock": clock}
    monitor = PromptMonitor(load_monitor_settings(CONFIG, env=env or {}), source, [], **kwargs)
    published = []
    monitor.publish = published.extend
    return monitor, published


def test_idle_ticks_never_read_history_and_missed_prompts_are_caught():
    source = FakeSource()
    monitor, published = watched(source)
    monitor.tick()
    assert source.recent_calls == 1  # the start-up read
    for _ in range(20):
        monitor.tick()
    assert source.recent_calls == 1  # idle: no history walk at all
    source.pending = [QueueEntry(0, "p0", {}, ())]
    source.counter = 1
    monitor.tick()
    assert source.recent_calls == 1 and published[-1]["status"] == "pending"
    source.pending = []
    source.history["p0"] = finished(0)
    monitor.tick()  # p0 left the queue: one history look-up by id, still no walk
    assert source.recent_calls == 1 and published[-1]["status"] == "completed"
    source.history["p1"] = finished(1)  # queued and done between two ticks
    source.counter = 2
    monitor.tick()
    assert source.recent_calls == 2 and published[-1]["id"] == "p1"
    assert [i["id"] for i in published].count("p0") == 2  # pending, completed: never repeated


def test_prompt_numbered_before_it_reaches_the_queue_is_not_missed():
    """ComfyUI bumps PromptServer.number before validating and queueing a prompt."""
    source = FakeSource()
    now = [1000.0]
    monitor, published = watched(source, clock=lambda: now[0])
    monitor.tick()
    source.counter = 1  # numbered, still being validated: not in the queue yet
    now[0] += 1
    monitor.tick()
    source.history["p0"] = finished(0)  # then queued, run and finished between two ticks
    now[0] += 1
    monitor.tick()
    assert [(i["id"], i["status"]) for i in published] == [("p0", "completed")]
    calls = source.recent_calls
    for _ in range(5):
        now[0] += 1
        monitor.tick()
    assert source.recent_calls == calls  # found: nothing outstanding, no more history reads


def test_a_prompt_that_fails_validation_stops_the_history_reads_after_a_while():
    source = FakeSource()
    now = [1000.0]
    monitor, _ = watched(source, clock=lambda: now[0])
    monitor.tick()
    source.counter = 1  # numbered, then refused by validation: never queued, never in history
    for _ in range(40):
        now[0] += 1
        monitor.tick()
    assert monitor.stats()["never_seen"] == 1
    calls = source.recent_calls
    for _ in range(5):
        now[0] += 1
        monitor.tick()
    assert source.recent_calls == calls


def test_a_prompt_run_under_an_explicit_number_is_caught_through_the_worker():
    """A client may post its own ``number``: the counter does not move, last_prompt_id does."""
    source = FakeSource()
    monitor, published = watched(source)
    monitor.tick()
    source.history["px"] = finished(0.5)
    source.started = "px"
    monitor.tick()
    assert [(i["id"], i["status"]) for i in published] == [("px", "completed")]


def test_without_a_prompt_counter_history_is_read_every_tick():
    """A ComfyUI build without PromptServer.number leaves nothing to account for."""
    source = FakeSource()
    source.counter = None
    monitor, published = watched(source)
    for _ in range(3):
        monitor.tick()
    assert source.recent_calls == 3
    source.history["p0"] = finished(0)
    monitor.tick()
    assert [(i["id"], i["status"]) for i in published] == [("p0", "completed")]


def test_a_tick_that_fails_half_way_still_publishes_the_finals_it_built():
    source = FakeSource()
    monitor, published = watched(source)
    monitor.tick()
    source.pending = [QueueEntry(0, "p0", {}, ())]
    source.counter = 1
    monitor.tick()
    source.pending = []
    source.history["p0"] = finished(0)
    source.counter = 2  # another prompt numbered: this tick will read history, and that read fails

    def broken(max_items):
        raise RuntimeError("history unreadable")

    source.recent_history = broken
    with pytest.raises(RuntimeError):
        monitor.tick()
    assert [(i["id"], i["status"]) for i in published] == [("p0", "pending"), ("p0", "completed")]
    assert monitor.ticks == 3


def test_a_late_tick_reads_as_many_entries_as_prompts_were_numbered():
    source = FakeSource()
    monitor, published = watched(source, env={"KY_MONITOR_HISTORY_MAX_ITEMS": "4"})
    monitor.tick()
    for number in range(30):  # 30 prompts ran while the monitor thread was starved
        source.history[f"p{number}"] = finished(number)
    source.counter = 30
    monitor.tick()
    assert sorted(i["id"] for i in published) == sorted(f"p{n}" for n in range(30))


def test_the_last_prompt_of_a_long_burst_is_not_missed():
    """A regression seen in CI: every tick, one prompt was posted just after the
    monitor's queue read and showed up in the queue a tick later. The last one of
    the burst ran unseen between two ticks, and counting numbered against newly
    seen prompts (the earlier design) balanced out and never looked for it."""

    class Burst(FakeSource):
        def __init__(self):
            super().__init__()
            self.posting = True
            self.next = 0
            self.posted = None

        def read_queue(self):
            if self.posted is not None:  # last tick's post has reached the queue
                self.pending.append(self.posted)
                self.posted = None
            snapshot = super().read_queue()
            if self.posting:  # a prompt is numbered while the monitor is mid-tick
                self.posted = QueueEntry(self.next, f"p{self.next}", {}, ())
                self.next += 1
                self.counter += 1
            return snapshot

    source = Burst()
    now = [1000.0]
    monitor, published = watched(source, clock=lambda: now[0])
    for _ in range(60):  # 15 s of ticks, each pending prompt runs and finishes in turn
        now[0] += 0.25
        monitor.tick()
        for entry in list(source.pending):
            source.pending.remove(entry)
            source.history[entry.prompt_id] = finished(entry.number)
    source.posting = False
    last = source.posted  # the burst's last prompt: queued, run and finished between two ticks
    source.posted = None
    source.history[last.prompt_id] = finished(last.number)
    for _ in range(4):
        now[0] += 0.25
        monitor.tick()
    finals = [i["id"] for i in published if i["status"] == "completed"]
    assert sorted(finals) == sorted(f"p{n}" for n in range(source.next))


class SimulatedComfy(FakeSource):
    """ComfyUI's order of events, advanced a random number of steps before every read
    the monitor makes, so ticks land at every possible point of a prompt's life:
    number (``PromptServer.number += 1``) -> validate -> queue -> worker takes it
    (``last_prompt_id``) -> history entry, one prompt running at a time."""

    def __init__(self, rng, prompts, reject_rate):
        super().__init__()
        self.rng, self.to_submit, self.reject_rate = rng, prompts, reject_rate
        self.validating, self.queued, self.rejected = [], [], set()
        self.frozen = True  # the monitor's first tick sees the server before any prompt

    def step(self):
        choices = ["submit"] * bool(self.to_submit) + ["validate"] * bool(self.validating) \
            + ["work"] * bool(self.running or self.pending)
        if not choices:
            return False
        choice = self.rng.choice(choices)
        if choice == "submit":
            self.to_submit -= 1
            self.validating.append(self.counter)
            self.counter += 1
        elif choice == "validate":
            number = self.validating.pop(self.rng.randrange(len(self.validating)))
            if self.rng.random() < self.reject_rate:
                self.rejected.add(number)
            else:
                self.pending.append(QueueEntry(number, f"p{number}", {}, ()))
                self.queued.append(f"p{number}")
        elif self.running:
            entry = self.running.pop()
            self.history[entry.prompt_id] = finished(entry.number)
        else:
            entry = min(self.pending, key=lambda e: e.number)
            self.pending.remove(entry)
            self.running.append(entry)
            self.started = entry.prompt_id
        return True

    def advance(self):
        if self.frozen:
            return
        for _ in range(self.rng.choice((0, 0, 1, 2, 5, 12))):
            self.step()

    def queued_counter(self):
        self.advance()
        return super().queued_counter()

    def started_prompt_id(self):
        self.advance()
        return super().started_prompt_id()

    def read_queue(self):
        self.advance()
        return super().read_queue()

    def history_summary(self, prompt_id):
        self.advance()
        return super().history_summary(prompt_id)

    def recent_history(self, max_items):
        self.advance()
        return super().recent_history(max_items)


@pytest.mark.parametrize("seed", range(40))
def test_every_queued_prompt_gets_exactly_one_final_info_whenever_the_ticks_land(seed):
    import random

    rng = random.Random(seed)
    source = SimulatedComfy(rng, prompts=120, reject_rate=0.05)
    now = [1000.0]
    monitor, published = watched(source, clock=lambda: now[0])
    monitor.tick()
    source.frozen = False
    while source.to_submit or source.validating or source.pending or source.running:
        now[0] += 0.25
        monitor.tick()
    for _ in range(200):  # idle: ticks until every expectation is met or given up
        now[0] += 0.25
        monitor.tick()
    finals = [i["id"] for i in published if i["status"] in ("completed", "failed", "cancelled")]
    assert sorted(finals) == sorted(source.queued), seed
    assert monitor.stats()["never_seen"] == len(source.rejected)
    reads = source.recent_calls
    for _ in range(20):
        now[0] += 0.25
        monitor.tick()
    assert source.recent_calls == reads  # idle again: no history reads


def test_optional_full_snapshot_resends_active_prompts():
    source = FakeSource()
    now = [1000.0]
    monitor, published = watched(source, env={"KY_MONITOR_SNAPSHOT_INTERVAL_SECONDS": "5"},
                                 clock=lambda: now[0])
    source.pending = [QueueEntry(0, "p0", {}, ()), QueueEntry(1, "p1", {}, ())]
    source.counter = 2
    monitor.tick()
    assert sorted(i["id"] for i in published) == ["p0", "p1"]
    now[0] += 1
    monitor.tick()
    assert len(published) == 2  # nothing changed, no snapshot due yet
    now[0] += 5
    monitor.tick()
    assert sorted(i["id"] for i in published[2:]) == ["p0", "p1"]  # the periodic full snapshot
    assert load_monitor_settings(CONFIG, env={}).snapshot_interval_seconds == 0


def test_published_errors_are_redacted_like_the_log(monkeypatch):
    from comfyui_twitterchat.monitor.query import error_info_from

    monkeypatch.setenv("TWITTERCHAT_API_TOKEN", "tok-abcdefghijklmnop-0123")
    info = error_info_from({
        "exception_message": "cannot reach redis://:hunter2pass@cache:6379/0 with tok-abcdefghijklmnop-0123\n",
        "exception_type": "ConnectionError", "node_id": "3", "node_type": "X",
        "traceback": ["  File a.py, line 1\n", "    connect(api_key='sk-live-abcdefghijklmnopqrstu')\n"]})
    text = repr(info)
    assert "hunter2pass" not in text and "tok-abcdefghijklmnop-0123" not in text and "sk-live-abc" not in text
    assert info["message"].startswith("cannot reach redis://:***@cache") and info["node_type"] == "X"
