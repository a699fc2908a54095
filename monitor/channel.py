"""Where info objects go: ComfyUI's websocket, Redis pub/sub, RocketMQ.

Channels only send. Each one sits behind its own ``BufferedSender``: a bounded
buffer and a daemon thread, so a slow or dead channel never delays the
monitor's tick or the other channels. When the buffer is full one message
is dropped and counted, the one that loses least: the oldest message already
superseded by a newer one for the same prompt, else the oldest that is not a
final status, else the oldest. Failures are logged at most once per
``LOG_EVERY_SECONDS`` and retried with exponential backoff (the message waits
at the head of the buffer, so a reconnect loses nothing that still fits). A
channel that can send many messages in one round trip (Redis pipelines) is
handed up to its ``batch_size`` at a time.

Optional client libraries (redis, rocketmq) are imported only when their
channel is enabled.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .query import TERMINAL

logger = logging.getLogger("twitterchat.monitor.channel")

LOG_EVERY_SECONDS = 30.0
INITIAL_BACKOFF = 0.2
MAX_BACKOFF = 30.0
DROP_SCAN = 64  # how far from the head a full buffer looks for a message that loses least


@dataclass(frozen=True)
class Envelope:
    """One message: the JSON text (checked once, before any channel) and its routing keys."""

    payload: str
    prompt_id: str
    status: str

    @classmethod
    def of(cls, info: dict[str, Any]) -> "Envelope":
        payload = json.dumps(info, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return cls(payload=payload, prompt_id=str(info["id"]), status=str(info["status"]))


class Channel(Protocol):
    """``send`` one message; a channel with ``batch_size`` > 1 also has ``send_batch``."""

    name: str

    def send(self, message: Envelope) -> None: ...

    def close(self) -> None: ...


class _RateLimitedLog:
    def __init__(self, every: float = LOG_EVERY_SECONDS) -> None:
        self.every = every
        self._last = float("-inf")
        self.suppressed = 0

    def __call__(self, level: int, message: str, *args: Any, exc_info: Any = None) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} similar messages suppressed)"
        self._last, self.suppressed = now, 0
        logger.log(level, message, *args, exc_info=exc_info)


class BufferedSender:
    """A bounded buffer and a daemon thread in front of one channel."""

    def __init__(self, channel: Channel, maxsize: int = 1000) -> None:
        self.channel = channel
        self.maxsize = maxsize
        # a channel that sends many messages in one round trip says how many (and has send_batch)
        self._batch_size = max(1, int(getattr(channel, "batch_size", 1)))
        self._buffer: collections.deque[Envelope] = collections.deque()
        self._per_prompt: collections.Counter[str] = collections.Counter()  # messages buffered per prompt
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sending = 0  # how many head messages the sender thread is sending now
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.cpu_seconds = 0.0
        self._drop_log = _RateLimitedLog()
        self._fail_log = _RateLimitedLog()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> "BufferedSender":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"twitterchat-monitor-{self.channel.name}")
            self._thread.start()
        return self

    def offer(self, message: Envelope) -> None:
        """Never blocks: a full buffer drops the message that loses least (``_victim``)."""
        with self._cond:
            if len(self._buffer) >= self.maxsize:
                victim = self._victim()
                self.dropped += 1
                self._drop_log(logging.WARNING, "monitor channel %s: buffer full, dropped %d message(s) so far",
                               self.channel.name, self.dropped)
                if victim is None:  # everything buffered is being sent right now: the newcomer goes
                    return
                self._forget(self._buffer[victim])
                del self._buffer[victim]
            self._buffer.append(message)
            self._per_prompt[message.prompt_id] += 1
            self._cond.notify()

    def _victim(self) -> int | None:
        """Index of the message to drop from a full buffer (called with the lock held); ``None``
        when every buffered message is being sent (then the new one is dropped), so a message is
        counted either sent or dropped, never both.

        Subscribers need each prompt's latest state, above all its final one:
        a message followed by a newer one for the same prompt says nothing the
        newer one does not, and a pending/running update matters less than a
        completed/failed/cancelled one. Only the oldest ``DROP_SCAN`` messages
        are looked at, so a drop costs the same whatever the buffer size.
        """
        first_not_final = None
        start = self._sending  # the head messages on their way to the channel are not dropped
        if start >= len(self._buffer):
            return None
        for index, queued in enumerate(itertools.islice(self._buffer, start, start + DROP_SCAN), start=start):
            if self._per_prompt[queued.prompt_id] > 1:
                return index
            if first_not_final is None and queued.status not in TERMINAL:
                first_not_final = index
        return first_not_final if first_not_final is not None else start

    def _forget(self, message: Envelope) -> None:
        left = self._per_prompt[message.prompt_id] - 1
        if left:
            self._per_prompt[message.prompt_id] = left
        else:
            del self._per_prompt[message.prompt_id]

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.channel.close()
        except Exception:  # closing a broken client must not break shutdown
            logger.debug("closing monitor channel %s failed", self.channel.name, exc_info=True)

    def _next(self) -> list[Envelope]:
        """The oldest messages, up to the channel's batch size; they stay buffered until sent."""
        with self._cond:
            while not self._buffer and not self._stop.is_set():
                self._cond.wait(0.5)
            batch = list(itertools.islice(self._buffer, self._batch_size))
            self._sending = len(batch)
            return batch

    def _run(self) -> None:
        backoff = INITIAL_BACKOFF
        while not self._stop.is_set():
            batch = self._next()
            if not batch:
                continue
            started = time.thread_time()
            try:
                if len(batch) == 1:
                    self.channel.send(batch[0])
                else:
                    self.channel.send_batch(batch)
            except Exception as exc:  # a sink must never raise into the monitor
                self.failures += 1
                self._fail_log(logging.WARNING, "monitor channel %s: send failed (%s: %s); retrying in %.1fs",
                               self.channel.name, type(exc).__name__, exc, backoff)
                self.cpu_seconds += time.thread_time() - started
                with self._cond:
                    self._sending = 0  # still buffered, sent again later (or dropped meanwhile)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self.cpu_seconds += time.thread_time() - started
            backoff = INITIAL_BACKOFF
            with self._cond:
                for _ in batch:  # the sent messages are still the head: nothing drops what is being sent
                    self._forget(self._buffer.popleft())
                self._sending = 0
                self.sent += len(batch)

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent, "dropped": self.dropped, "failures": self.failures,
                "pending": self.pending, "cpu_seconds": round(self.cpu_seconds, 6)}


class PromptServerChannel:
    """Broadcasts to every websocket client with ``PromptServer.send_sync``."""

    name = "websocket"

    def __init__(self, server: Any, event_name: str) -> None:
        self.server = server
        self.event_name = event_name

    def send(self, message: Envelope) -> None:
        # send_sync serialises later on ComfyUI's loop, where a bad value would
        # kill its publish loop: hand it plain types rebuilt from checked JSON.
        self.server.send_sync(self.event_name, json.loads(message.payload))

    def close(self) -> None:
        pass


class RedisChannel:
    """``PUBLISH`` to one channel; redis-py reconnects and retries with backoff.

    A backlog goes out in pipelines of ``batch_size`` PUBLISH commands (one
    round trip each, no MULTI), in order. A batch that fails part-way is sent
    again whole, so after a reconnect a subscriber may see a message twice
    (delivery is at least once, as with any retried PUBLISH).
    """

    name = "redis"
    batch_size = 100

    def __init__(self, host: str, port: int, db: int, channel_name: str,
                 password: str | None = None, socket_timeout: float = 5.0) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.channel_name = channel_name
        self.client = redis.Redis(
            host=host, port=port, db=db, password=password,
            socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            health_check_interval=30)

    def send(self, message: Envelope) -> None:
        self.client.publish(self.channel_name, message.payload)

    def send_batch(self, messages: list[Envelope]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            pipe.publish(self.channel_name, message.payload)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


def _started(producer: Any, start: Callable[[], Any]) -> None:
    """Start a producer; one whose start fails is shut down before the error goes on (each retry
    builds a new one, and none may be left running with its threads and connections)."""
    try:
        start()
    except BaseException:
        try:
            producer.shutdown()
        except Exception:
            logger.debug("shutting down a RocketMQ producer that failed to start failed too", exc_info=True)
        raise


class RocketMQChannel:
    """Sends each info as a message: keys = prompt id, tag = status.

    Uses the maintained RocketMQ 5 client (``rocketmq-python-client``: gRPC to a
    proxy endpoint, ``namesrv_addr`` holding that endpoint) and falls back to the
    legacy ``rocketmq-client-python`` (native librocketmq, name server) when only
    that one is installed.
    """

    name = "rocketmq"

    def __init__(self, namesrv_addr: str, topic: str, group_id: str,
                 access_key: str | None = None, secret_key: str | None = None) -> None:
        self.namesrv_addr, self.topic, self.group_id = namesrv_addr, topic, group_id
        self._credentials = (access_key or "", secret_key or "")
        self._producer: Any = None
        self.flavour = ""

    def _connect(self) -> None:
        """Runs in the sender thread on first use: connecting is network I/O."""
        access_key, secret_key = self._credentials
        try:
            from rocketmq.v5.client import ClientConfiguration, Credentials
            from rocketmq.v5.model import Message
            from rocketmq.v5.producer import Producer
        except ImportError:
            self._connect_legacy(access_key, secret_key)
            return
        producer = Producer(ClientConfiguration(self.namesrv_addr, Credentials(access_key, secret_key)),
                            (self.topic,))
        _started(producer, producer.startup)
        self._producer, self._message_class, self.flavour = producer, Message, "v5"

    def _connect_legacy(self, access_key: str, secret_key: str) -> None:
        try:
            from rocketmq.client import Message, Producer
        except ImportError as exc:
            raise RuntimeError("RocketMQ channel enabled but no client is installed: "
                               "pip install 'comfyui-twitterchat[rocketmq]'") from exc
        producer = Producer(self.group_id)
        producer.set_name_server_address(self.namesrv_addr)
        if access_key and secret_key:
            producer.set_session_credentials(access_key, secret_key, "")
        _started(producer, producer.start)
        self._producer, self._message_class, self.flavour = producer, Message, "legacy"

    def send(self, message: Envelope) -> None:
        if self._producer is None:
            self._connect()
        if self.flavour == "v5":
            msg = self._message_class()
            msg.topic = self.topic
            msg.body = message.payload.encode("utf-8")
            msg.keys = message.prompt_id
            msg.tag = message.status
            self._producer.send(msg)
        else:
            msg = self._message_class(self.topic)
            msg.set_keys(message.prompt_id)
            msg.set_tags(message.status)
            msg.set_body(message.payload)
            self._producer.send_sync(msg)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.shutdown()
