"""The monitor's daemon thread and its hook into ComfyUI's start-up.

Shaped like redis-py's pub/sub worker thread: a factory validates settings
before anything starts, one daemon thread waits on a stop ``Event`` with a
timeout (the tick), cleanup runs after the loop, and ``start`` is idempotent.
Nothing starts at import time: ``register`` appends a coroutine to
``PromptServer.instance.app.on_startup``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any, Callable

from .channel import BufferedSender, Envelope, PromptServerChannel, RedisChannel, RocketMQChannel
from .config import MonitorSettings, load_monitor_settings
from .query import PromptTracker, UnseenPrompts

logger = logging.getLogger("twitterchat.monitor")

UNSEEN_EXPIRE_SECONDS = 30.0  # a numbered prompt not seen by then failed validation
MAX_HISTORY_READ = 10_000  # ComfyUI keeps at most this many history entries


class PromptMonitor:
    """Each tick: read the queue and progress, finish what left the queue, publish changes."""

    def __init__(self, settings: MonitorSettings, source: Any, senders: list[BufferedSender],
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.source = source
        self.senders = senders
        self.clock = clock
        self.tracker = PromptTracker(progress_step=settings.progress_step)
        self.ticks = 0
        self.published = 0
        self.tick_errors = 0
        self.cpu_seconds = 0.0  # CPU time this monitor's thread spent in ticks
        self.unseen = UnseenPrompts(UNSEEN_EXPIRE_SECONDS, MAX_HISTORY_READ)
        self.history_reads = 0
        self._last_started: str | None = None
        self._read_history_once = False
        self._last_snapshot = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self.listener_errors = 0

    # -- one tick ----------------------------------------------------------
    def tick(self) -> list[dict[str, Any]]:
        """One pass; what it built is published even when a later step raises,
        since the tracker already counts those prompts as reported."""
        infos: list[dict[str, Any]] = []
        try:
            self._collect(infos)
        finally:
            self.publish(infos)
            self.ticks += 1
        return infos

    def _collect(self, infos: list[dict[str, Any]]) -> None:
        now_ms = self.clock() * 1000.0
        now = now_ms / 1000.0
        # Read the server's counters before the queue: every prompt they count
        # is then in this queue read, already in history, or still on its way.
        counter = self.source.queued_counter()
        started = self.source.started_prompt_id()
        running, pending = self.source.read_queue()
        unseen, tracker = self.unseen, self.tracker
        unseen.expect_counter(counter, now, tracker.finished_count)
        if started is not None and started != self._last_started:
            self._last_started = started
            if not tracker.knows(started):
                unseen.expect_id(started, now, tracker.finished_count)
        for entry in (*running, *pending):
            unseen.saw(entry.prompt_id, entry.number)
        progress = self.source.read_progress() if running else None
        changed, vanished = tracker.observe_queue(running, pending, progress, now_ms)
        infos.extend(changed)
        for prompt_id in vanished:
            summary = self.source.history_summary(prompt_id)
            if summary is not None:
                unseen.saw(prompt_id, summary.number)
            final = tracker.finish(prompt_id, summary, now_ms)
            if final is not None:
                infos.append(final)
        span = unseen.history_span(tracker.finished_count)
        # The first read picks up what finished before the monitor started; a
        # ComfyUI build without PromptServer.number gives nothing to account
        # for, so its history is read every tick.
        if span or not self._read_history_once or counter is None:
            history = self.source.recent_history(min(self.settings.history_max_items + span, MAX_HISTORY_READ))
            for prompt_id, summary in history.items():
                unseen.saw(prompt_id, summary.number)
            infos.extend(tracker.observe_history(history, now_ms))
            self.history_reads += 1
            self._read_history_once = True
        unseen.expire(now)
        interval = self.settings.snapshot_interval_seconds
        if interval > 0 and now - self._last_snapshot >= interval:
            self._last_snapshot = now
            sent = {info["id"] for info in infos}
            infos.extend(info for info in tracker.snapshot() if info["id"] not in sent)

    def publish(self, infos: list[dict[str, Any]]) -> None:
        for info in infos:
            try:
                message = Envelope.of(info)
            except (TypeError, ValueError) as exc:  # never hand ComfyUI a value it cannot serialise
                logger.error("monitor: info for prompt %s is not JSON (%s); not sent", info.get("id"), exc)
                continue
            for sender in self.senders:
                sender.offer(message)
            self.published += 1
            logger.debug("published %s %s", message.prompt_id, message.status)
        if infos:
            for listener in self._listeners:
                try:
                    listener(infos)
                except Exception:  # a listener (the task service) must not stop the monitor
                    self.listener_errors += 1
                    logger.exception("monitor listener failed; the monitor keeps going")

    def add_listener(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call ``listener(infos)`` in the monitor's thread with every tick's published infos."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Tick now instead of at the next interval (e.g. a prompt just left the queue)."""
        self._wake.set()

    # -- thread ------------------------------------------------------------
    def start(self) -> "PromptMonitor":
        with self._lock:
            if self._thread is not None:
                return self
            for sender in self.senders:
                sender.start()
            self._thread = threading.Thread(target=self._run, daemon=True, name="twitterchat-monitor")
            self._thread.start()
        logger.info("prompt monitor started: every %.2fs to %s", self.settings.frequency_seconds,
                    ", ".join(s.channel.name for s in self.senders) or "no channel")
        return self

    def _run(self) -> None:
        failures = 0
        while True:
            self._wake.wait(self.settings.frequency_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            started = time.thread_time()
            try:
                self.tick()
                failures = 0
            except Exception:  # the monitor must never take ComfyUI down
                self.tick_errors += 1
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.exception("monitor tick failed (%d in a row); the monitor keeps going", failures)
            finally:
                self.cpu_seconds += time.thread_time() - started

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        for sender in self.senders:
            sender.stop(timeout)

    def stats(self) -> dict[str, Any]:
        return {"ticks": self.ticks, "published": self.published, "tick_errors": self.tick_errors,
                "listener_errors": self.listener_errors,
                "history_reads": self.history_reads, "never_seen": self.unseen.expired,
                "cpu_seconds": round(self.cpu_seconds, 6),
                "channels": {s.channel.name: s.stats() for s in self.senders}}


def build_senders(settings: MonitorSettings, server: Any) -> list[BufferedSender]:
    senders = []
    if settings.prompt_server.enabled:
        senders.append(PromptServerChannel(server, settings.prompt_server.event_name))
    if settings.redis.enabled:
        r = settings.redis
        try:
            senders.append(RedisChannel(r.host, r.port, r.db, r.channel_name, password=r.password))
        except ImportError:
            logger.error("monitor channel 'redis' disabled: the redis package is not installed")
    if settings.rocketmq.enabled:
        q = settings.rocketmq
        senders.append(RocketMQChannel(q.namesrv_addr, q.topic, q.group_id, q.access_key, q.secret_key))
    return [BufferedSender(channel, settings.buffer_size) for channel in senders]


_monitor: PromptMonitor | None = None
_monitor_lock = threading.Lock()


def start_monitor(server: Any, settings: MonitorSettings | None = None, *,
                  required: bool = False) -> PromptMonitor | None:
    """Start the process-wide monitor once; ``None`` when it is disabled.

    ``required`` (the task service needs the monitor's tracking): a monitor
    disabled by configuration still runs, with every channel off.
    """
    global _monitor
    with _monitor_lock:
        if _monitor is not None:
            return _monitor
        settings = settings or load_monitor_settings()
        if not settings.enabled and not required:
            logger.info("prompt monitor disabled by configuration")
            return None
        from .comfy_source import ComfySource

        senders = build_senders(settings, server) if settings.enabled else []
        _monitor = PromptMonitor(settings, ComfySource(server), senders).start()
        atexit.register(stop_monitor)
        return _monitor


def current_monitor() -> PromptMonitor | None:
    return _monitor


def stop_monitor() -> None:
    global _monitor
    with _monitor_lock:
        monitor, _monitor = _monitor, None
    if monitor is not None:
        monitor.stop()
        logger.info("prompt monitor stopped: %s", monitor.stats())


def register(server: Any) -> None:
    """Hook the monitor into ComfyUI's app start-up and shutdown signals."""

    async def on_startup(app: Any) -> None:
        try:
            start_monitor(server)
        except Exception:
            logger.exception("prompt monitor failed to start; ComfyUI continues without it")

    async def on_shutdown(app: Any) -> None:
        stop_monitor()

    server.app.on_startup.append(on_startup)
    server.app.on_shutdown.append(on_shutdown)

    from aiohttp import web

    @server.routes.get("/twitterchat/monitor/stats")
    async def monitor_stats(request: Any) -> Any:
        """Counters for operators: ticks, published infos, per-channel sent/dropped/failures."""
        monitor = _monitor
        if monitor is None:
            return web.json_response({"running": False})
        event = monitor.settings.prompt_server.event_name if monitor.settings.prompt_server.enabled else None
        return web.json_response({"running": True, "event_name": event, **monitor.stats()})
