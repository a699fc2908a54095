"""Subscribers that collect monitor events the way users receive them:
Redis pub/sub and ComfyUI's websocket, each in its own thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid


class RedisCollector:
    def __init__(self, port: int, channel: str) -> None:
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.messages: list[tuple[float, dict]] = []
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.2)
            except Exception:
                return
            if message and message["type"] == "message":
                self.raw.append(message["data"])
                self.messages.append((time.time(), json.loads(message["data"])))

    def infos(self, prompt_id: str) -> list[dict]:
        return [info for _, info in self.messages if info["id"] == prompt_id]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


class WebsocketCollector:
    """Connects to ``/ws`` like a browser tab and keeps every message of one event type."""

    def __init__(self, base_url: str, event_name: str) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/ws?clientId={uuid.uuid4()}"
        self.event_name = event_name
        self.messages: list[dict] = []
        self.raw: list[str] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError(f"websocket {self.url} did not connect")

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url, heartbeat=10) as ws:
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        message = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            return
                        continue
                    self.raw.append(message.data)
                    data = json.loads(message.data)
                    if data.get("type") == self.event_name:
                        self.messages.append(data["data"])

    def infos(self, prompt_id: str) -> list[dict]:
        return [info for info in self.messages if info["id"] == prompt_id]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_for(condition, timeout: float = 60.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False
