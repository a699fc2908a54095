"""RocketMQChannel through the real rocketmq-python-client producer, checked at the
wire against a local gRPC test double (no broker can run here)."""

from __future__ import annotations

import json

import pytest

from ci_policy import need
from collectors import wait_for
from comfyui_twitterchat.monitor.channel import BufferedSender, Envelope, RocketMQChannel


@pytest.fixture
def proxy():
    try:
        import rocketmq.v5  # noqa: F401
    except ImportError:
        need(False, "rocketmq-python-client is not installed (the [rocketmq] extra)")
    from rocketmq_double import FakeRocketMQProxy

    double = FakeRocketMQProxy().start()
    yield double
    double.stop()


def test_infos_arrive_with_topic_body_keys_and_tag(proxy):
    channel = RocketMQChannel(proxy.endpoint, "twitterchat_monitor", "twitterchat_monitor")
    sender = BufferedSender(channel, maxsize=100).start()
    infos = [{"id": f"prompt-{i}", "status": status, "progress": i / 4}
             for i, status in enumerate(("pending", "running", "completed", "failed"))]
    try:
        for info in infos:
            sender.offer(Envelope.of(info))
        assert wait_for(lambda: len(proxy.messages) == 4, 30), (sender.stats(), proxy.messages)
    finally:
        sender.stop()
    assert channel.flavour == "v5"
    assert proxy.route_queries and set(proxy.route_queries) == {"twitterchat_monitor"}
    for info, wire in zip(infos, proxy.messages):
        assert wire.topic == "twitterchat_monitor"
        assert json.loads(wire.body) == info
        assert wire.keys == (info["id"],)
        assert wire.tag == info["status"]
    assert sender.stats()["failures"] == 0 and sender.stats()["dropped"] == 0


def test_unreachable_endpoint_is_retried_without_blocking(proxy):
    endpoint = proxy.endpoint
    proxy.stop()  # nothing listens there now
    sender = BufferedSender(RocketMQChannel(endpoint, "t", "g"), maxsize=2).start()
    try:
        for i in range(5):
            sender.offer(Envelope.of({"id": f"p{i}", "status": "running"}))
        assert sender.dropped == 3  # offer never waits for the dead channel
        assert wait_for(lambda: sender.failures > 0, 30), sender.stats()
    finally:
        sender.stop(timeout=2)


def test_a_producer_that_fails_to_start_is_shut_down_before_the_next_try(monkeypatch):
    try:
        import rocketmq.v5.producer as producer_module
    except ImportError:
        need(False, "rocketmq-python-client is not installed (the [rocketmq] extra)")
    made = []

    class ProducerThatCannotStart:
        """TEST DOUBLE for the client's Producer: startup fails (no proxy), shutdown is recorded."""

        def __init__(self, *args, **kwargs):
            self.shut_down = False
            made.append(self)

        def startup(self):
            raise ConnectionError("no RocketMQ proxy at this endpoint")

        def shutdown(self):
            self.shut_down = True

    monkeypatch.setattr(producer_module, "Producer", ProducerThatCannotStart)
    channel = RocketMQChannel("127.0.0.1:9", "t", "g")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            channel.send(Envelope.of({"id": "p1", "status": "running"}))
    assert len(made) == 3 and all(p.shut_down for p in made)
