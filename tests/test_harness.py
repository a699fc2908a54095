"""The harness's own real parts: redis-server on a free port, persistence off."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.redis


def test_redis_server_round_trip_and_no_persistence(redis_server):
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5)
    pubsub = client.pubsub()
    pubsub.subscribe("twitterchat.test")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert client.publish("twitterchat.test", b'{"ok": true}') == 1
    message = pubsub.get_message(timeout=5)
    assert message["data"] == b'{"ok": true}'
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    pubsub.close()
    pid = redis_server.process.pid
    redis_server.stop()
    assert not redis_server.ping()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
