"""Webhooks: signed per Standard Webhooks, sent from an outbox stored in SQLite.

The signature is ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``
with the key behind ``whsec_<base64>``; ``webhook-id`` is the same on every
retry (receivers use it to drop duplicates). A delivery is retried with
backoff and jitter until the schedule ends; 410 Gone stops it at once;
redirects are not followed. Only hosts the configuration allows are sent to:
``TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS`` when set, else any host whose every
address is public (checked at submit time for literal addresses and again
before each send, after resolving the name).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from ..utils.structured_logger import redact_text

logger = logging.getLogger("twitterchat.service.webhooks")

# Seconds after the first attempt (Standard Webhooks' suggested schedule, shortened at the end).
BACKOFF = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
TIMEOUT_SECONDS = 15.0


class WebhookURLError(ValueError):
    """A webhook URL that may not be used; the message says why."""


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, msg_id: str, body: str, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body), "content-type": "application/json",
            "user-agent": "comfyui-twitterchat-webhooks/1"}


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def _host_key(parts) -> tuple[str, str]:
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError as exc:  # "host:abc", "host:99999"
        raise WebhookURLError(f"webhook_url has a bad port: {exc}") from None
    try:
        host.encode("idna")
    except UnicodeError:  # "a..b.com", a label over 63 characters: no lookup could ever succeed
        raise WebhookURLError(f"webhook host {host!r} is not a valid host name") from None
    return host, f"{host}:{port}" if port else host


def check_url(url: Any, allowed_hosts: tuple[str, ...]) -> str:
    """Checks that need no network (at submit time)."""
    if not isinstance(url, str) or len(url) > 2000:
        raise WebhookURLError("webhook_url must be an http(s) URL of at most 2000 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookURLError("webhook_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise WebhookURLError("webhook_url must not carry credentials; verify the signature instead")
    host, host_port = _host_key(parts)
    if allowed_hosts:
        if host not in allowed_hosts and host_port not in allowed_hosts:
            raise WebhookURLError(f"webhook host {host!r} is not in TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS")
        return url
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise WebhookURLError(f"webhook host {host!r} is not public; allow it in TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS")
    try:
        public = _is_public(host.strip("[]"))
    except ValueError:
        return url  # a name: resolved and checked before each send
    if not public:
        raise WebhookURLError(f"webhook address {host} is not public (private, loopback or link-local); "
                              "allow it in TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS")
    return url


async def check_resolved(url: str, allowed_hosts: tuple[str, ...]) -> str | None:
    """Before a send without an allow-list: every address of the host must be public. Returns the
    address checked, which the send then connects to (no second lookup a DNS rebinding could
    answer differently); ``None`` with an allow-list."""
    check_url(url, allowed_hosts)
    if allowed_hosts:
        return None
    parts = urlsplit(url)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                         type=socket.SOCK_STREAM)
    for info in infos:
        if not _is_public(info[4][0]):
            raise WebhookURLError(f"webhook host {parts.hostname!r} resolves to a non-public address")
    if not infos:
        raise WebhookURLError(f"webhook host {parts.hostname!r} has no address")
    return infos[0][4][0]


def pinned_request(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL, extra headers, httpx extensions) that reach ``address`` while naming the host, for
    the Host header, TLS SNI and certificate checks."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts._replace(netloc=f"{host}:{port}").geturl()
    return target, {"host": parts.netloc.rpartition("@")[2]}, {"sni_hostname": parts.hostname}


def retry_delay(attempt: int) -> float | None:
    """Seconds until the next try after ``attempt`` failed tries; None when the schedule is over."""
    if attempt > len(BACKOFF):
        return None
    base = BACKOFF[attempt - 1]
    return base * random.uniform(0.8, 1.2)


class WebhookSender:
    """An asyncio task that sends due outbox rows; a dead endpoint never slows tasks."""

    def __init__(self, service: Any, key: bytes | None, allowed_hosts: tuple[str, ...]) -> None:
        self.service = service
        self.key = key
        self.allowed_hosts = allowed_hosts
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0

    async def run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
            while True:
                try:
                    await self._send_due(client)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("webhook sender failed; it keeps going")
                next_at = await self.service.run(self.service.store.next_webhook_at)
                delay = 60.0 if next_at is None else max(0.05, min(60.0, next_at - time.time()))
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()

    async def _send_due(self, client: Any) -> None:
        store = self.service.store
        while True:
            rows = await self.service.run(store.due_webhooks, time.time())
            if not rows:
                return
            for failure in await asyncio.gather(*(self._deliver(client, row) for row in rows),
                                                return_exceptions=True):
                if isinstance(failure, Exception):
                    logger.error("webhook delivery failed unexpectedly: %r", failure)

    async def _deliver(self, client: Any, row: Any) -> None:
        store, run = self.service.store, self.service.run
        attempt = row["attempts"] + 1
        if self.key is None:
            await run(store.webhook_result, row["id"], delivered=False,
                      error="TWITTERCHAT_WEBHOOK_SECRET is not set; webhooks are not sent unsigned")
            return
        body = row["payload"]
        try:
            address = await check_resolved(row["url"], self.allowed_hosts)
            target, host_header, extensions = pinned_request(row["url"], address)
            response = await client.post(target, content=body.encode(), extensions=extensions,
                                         headers={**signed_headers(self.key, row["msg_id"], body), **host_header})
            status = response.status_code
        except WebhookURLError as exc:
            self.failed += 1
            await run(store.webhook_result, row["id"], delivered=False, error=str(exc))
            logger.warning("webhook %s not sent: %s", row["msg_id"], exc)
            return
        except Exception as exc:  # every failure counts as an attempt: a row must never stay stuck
            status, error = None, f"{type(exc).__name__}: {redact_text(str(exc))[:200]}"
        else:
            error = f"HTTP {status}"
        if status is not None and 200 <= status < 300:
            self.sent += 1
            await run(store.webhook_result, row["id"], delivered=True)
            return
        self.failed += 1
        delay = None if status == 410 else retry_delay(attempt)
        if status in (429, 503) and delay is not None:
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                delay = max(delay, min(float(retry_after), 86400.0))
        await run(store.webhook_result, row["id"], delivered=False, error=error,
                  retry_at=None if delay is None else time.time() + delay)
        logger.warning("webhook %s to %s failed (%s, attempt %d); %s", row["msg_id"],
                       urlsplit(row["url"]).hostname, error, attempt,
                       "given up" if delay is None else f"retrying in {delay:.0f}s")


