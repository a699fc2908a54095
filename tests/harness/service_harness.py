"""Talking to the task service the way its users do: JSON over HTTP, Server-Sent
Events (with a reconnect that resumes from Last-Event-ID), and a local webhook
receiver that records every delivery (and can fail the first ones)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from comfyui_harness import free_port

API = "/twitterchat/api/v1"


def call(base_url: str, method: str, path: str, body: Any = None, headers: dict | None = None,
         raw: bytes | None = None, timeout: float = 60.0) -> tuple[int, Any, dict]:
    """(status, JSON body, headers); HTTP errors are answers, not exceptions."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else None, dict(response.headers)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return exc.code, parsed, dict(exc.headers)


def probe_workflow(seconds: float = 0.2, steps: int = 4, width: int = 8, fail: str | None = None,
                   save: bool = True) -> dict:
    """EmptyImage -> TCProbeSlow (progress) [-> TCProbeFail] -> SaveImage; ``width`` keeps it uncached."""
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 8, "batch_size": 1,
                                                              "color": 0}},
                "2": {"class_type": "TCProbeSlow", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps}}}
    last = "2"
    if fail is not None:
        workflow["3"] = {"class_type": "TCProbeFail", "inputs": {"image": ["2", 0], "message": fail}}
        last = "3"
    if save:
        workflow["9"] = {"class_type": "SaveImage", "inputs": {"images": [last, 0], "filename_prefix": "svc"}}
    else:
        workflow["9"] = {"class_type": "PreviewImage", "inputs": {"images": [last, 0]}}
    return workflow


def wait_final(base_url: str, task_ids: list[str], timeout: float = 120.0, headers: dict | None = None
               ) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    while time.monotonic() < deadline and len(final) < len(task_ids):
        for task_id in task_ids:
            if task_id in final:
                continue
            status, task, _ = call(base_url, "GET", f"{API}/tasks/{task_id}", headers=headers)
            if status == 200 and task["status"] in ("completed", "failed", "cancelled"):
                final[task_id] = task
        time.sleep(0.2)
    missing = [t for t in task_ids if t not in final]
    if missing:
        raise TimeoutError(f"{len(missing)} task(s) not final after {timeout:.0f}s, e.g. "
                           f"{call(base_url, 'GET', f'{API}/tasks/{missing[0]}', headers=headers)[1]}")
    return final


class SSECollector:
    """Follows ``/events`` in a thread; ``cut()`` drops the connection, and the next
    connection resumes with ``Last-Event-ID`` like a browser's EventSource."""

    def __init__(self, base_url: str, query: str = "", headers: dict | None = None) -> None:
        self.url = f"{base_url}{API}/events{query}"
        self.headers = dict(headers or {})
        self.events: list[tuple[int, str, dict, float]] = []   # (id, event, data, received at)
        self.connections = 0
        self.last_id: int | None = None
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._connected.wait(15):
            raise TimeoutError(f"SSE {self.url} did not connect")

    def _run(self) -> None:
        import httpx

        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(5.0, read=30.0)) as response:
                    self.connections += 1
                    self._connected.set()
                    self._read(response)
            except httpx.HTTPError:
                time.sleep(0.2)
            self._cut.clear()

    def _read(self, response: Any) -> None:
        event_id, kind, data = None, "message", []
        for line in response.iter_lines():
            if self._stop.is_set() or self._cut.is_set():
                return
            if not line:
                if data:
                    self.events.append((event_id, kind, json.loads("\n".join(data)), time.time()))
                    self.last_id = event_id
                event_id, kind, data = None, "message", []
            elif line.startswith("id:"):
                event_id = int(line[3:].strip())
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())

    def cut(self) -> None:
        """Drop the connection at the next line; the collector reconnects with Last-Event-ID."""
        self._cut.set()

    def task_statuses(self, task_id: str) -> list[str]:
        return [d["status"] for _, k, d, _ in self.events if k == "task" and d["task_id"] == task_id]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(35)


class WebhookReceiver:
    """A local HTTP server on 127.0.0.1 recording webhook deliveries; the first
    ``fail_first`` requests get HTTP 500 (to exercise retries)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.port = free_port()
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("webhook receiver did not start")
        return self

    async def _serve(self) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.requests.append({"headers": dict(request.headers), "body": body.decode(), "at": time.time()})
            if len(self.requests) <= self.fail_first:
                return web.Response(status=500, text="failing on purpose")
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
