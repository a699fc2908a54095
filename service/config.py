"""Service settings: config.json's ``service`` section, then ``TWITTERCHAT_*``
environment variables (the environment wins).

A bad value never stops ComfyUI: ``load_service_settings`` logs it once, naming
the key, and the service (only the service) stays off. Secrets (the API token,
the webhook secret) come from the environment only.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..utils.settings import ConfigError, as_bool, as_float, as_int, load_config, section

logger = logging.getLogger("twitterchat.service.config")

KNOWN_KEYS = {"enabled", "max_inflight", "max_attempts", "max_waiting", "db_path", "poll_seconds",
              "webhook_allowed_hosts", "event_retention", "backend", "redis_url", "redis_prefix", "lease_seconds",
              "public_url"}
SECRET_KEYS = {"api_token", "token", "webhook_secret", "secret", "redis_password", "password"}
BACKENDS = ("sqlite", "redis")


@dataclass(frozen=True)
class ServiceSettings:
    enabled: bool = True
    max_inflight: int = 2
    max_attempts: int = 2
    max_waiting: int = 100_000
    db_path: str = ""            # empty: ComfyUI's system user directory (never served over HTTP)
    poll_seconds: float = 0.025  # how often the feeder looks at ComfyUI's queue while it has work
    webhook_allowed_hosts: tuple[str, ...] = ()  # empty: any public host
    event_retention: int = 500_000  # events kept for SSE replay
    backend: str = "sqlite"      # "redis": many instances share one store and queue
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # from the environment it may hold a password
    redis_prefix: str = "twitterchat"
    lease_seconds: float = 60.0  # Redis mode: a task whose instance stops renewing is taken over after this
    public_url: str = ""         # Redis mode: this instance's URL for output links (default http://<host>:<port>)
    redis_password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)

    @property
    def webhook_key(self) -> bytes | None:
        """The HMAC key behind ``whsec_<base64>`` (Standard Webhooks)."""
        if not self.webhook_secret:
            return None
        return base64.b64decode(self.webhook_secret.removeprefix("whsec_"))


def _hosts(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise ConfigError(f"{key}: expected a comma-separated text or a list of host names, got {value!r}")
    return tuple(sorted({item.strip().lower() for item in items if item.strip()}))


def _secret(key: str, value: str) -> str:
    value = value.strip()
    if not value.startswith("whsec_"):
        raise ConfigError(f"{key}: must look like whsec_<base64 of 24 to 64 random bytes>")
    try:
        raw = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{key}: the part after whsec_ is not base64") from None
    if not 24 <= len(raw) <= 64:
        raise ConfigError(f"{key}: the key is {len(raw)} bytes; use 24 to 64 random bytes")
    return value


def _backend(key: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in BACKENDS:
        raise ConfigError(f"{key}: must be one of {', '.join(BACKENDS)}, got {value!r}")
    return text


def _redis_url(from_env: bool):
    def convert(key: str, value: Any) -> str:
        from urllib.parse import urlsplit

        text = str(value).strip()
        parts = urlsplit(text)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"{key}: expected redis://host:port/db, got a {parts.scheme or 'schemeless'} URL")
        if parts.password and not from_env:
            raise ConfigError(f"{key}: a password does not belong in config.json; set TWITTERCHAT_REDIS_PASSWORD "
                              "in the environment")
        return text
    return convert


def _url(key: str, value: Any) -> str:
    text = str(value or "").strip().rstrip("/")
    if text and not text.startswith(("http://", "https://")):
        raise ConfigError(f"{key}: expected http(s)://host:port, got {value!r}")
    return text


def _get(values: Mapping[str, Any], env: Mapping[str, str], key: str, env_key: str, default: Any,
         convert) -> Any:
    if env_key in env:
        return convert(env_key, env[env_key])
    if key in values:
        return convert(f"config.json service.{key}", values[key])
    return default


def parse_service_settings(config: Mapping[str, Any], env: Mapping[str, str]) -> ServiceSettings:
    """Raises ``ConfigError`` naming the first bad key."""
    values = section(config, "service", KNOWN_KEYS | SECRET_KEYS)
    found = sorted(SECRET_KEYS & set(values))
    if found:
        raise ConfigError(f"config.json service.{found[0]}: secrets do not belong in config.json; set "
                          "TWITTERCHAT_API_TOKEN / TWITTERCHAT_WEBHOOK_SECRET / TWITTERCHAT_REDIS_PASSWORD in "
                          "the environment")
    d = ServiceSettings()
    p = "TWITTERCHAT_SERVICE_"
    token = (env.get("TWITTERCHAT_API_TOKEN") or "").strip() or None
    if token is not None and len(token) < 16:
        raise ConfigError("TWITTERCHAT_API_TOKEN: use at least 16 random characters")
    secret = env.get("TWITTERCHAT_WEBHOOK_SECRET")
    return ServiceSettings(
        enabled=_get(values, env, "enabled", p + "ENABLED", d.enabled, as_bool),
        max_inflight=_get(values, env, "max_inflight", p + "MAX_INFLIGHT", d.max_inflight,
                          lambda k, v: as_int(k, v, 1, 64)),
        max_attempts=_get(values, env, "max_attempts", p + "MAX_ATTEMPTS", d.max_attempts,
                          lambda k, v: as_int(k, v, 1, 100)),
        max_waiting=_get(values, env, "max_waiting", p + "MAX_WAITING", d.max_waiting,
                         lambda k, v: as_int(k, v, 1, 100_000_000)),
        db_path=_get(values, env, "db_path", p + "DB_PATH", d.db_path, lambda k, v: str(v or "")),
        poll_seconds=_get(values, env, "poll_seconds", p + "POLL_SECONDS", d.poll_seconds,
                          lambda k, v: as_float(k, v, 0.005, 5.0)),
        webhook_allowed_hosts=_get(values, env, "webhook_allowed_hosts", "TWITTERCHAT_WEBHOOK_ALLOWED_HOSTS",
                                   d.webhook_allowed_hosts, _hosts),
        event_retention=_get(values, env, "event_retention", p + "EVENT_RETENTION", d.event_retention,
                             lambda k, v: as_int(k, v, 1000, 100_000_000)),
        backend=_get(values, env, "backend", p + "BACKEND", d.backend, _backend),
        redis_url=(_redis_url(True)("TWITTERCHAT_REDIS_URL", env["TWITTERCHAT_REDIS_URL"])
                   if "TWITTERCHAT_REDIS_URL" in env else
                   _redis_url(False)("config.json service.redis_url", values.get("redis_url", d.redis_url))),
        redis_prefix=_get(values, env, "redis_prefix", p + "REDIS_PREFIX", d.redis_prefix,
                          lambda k, v: str(v).strip() or d.redis_prefix),
        lease_seconds=_get(values, env, "lease_seconds", p + "LEASE_SECONDS", d.lease_seconds,
                           lambda k, v: as_float(k, v, 1.0, 86400.0)),
        public_url=_get(values, env, "public_url", "TWITTERCHAT_PUBLIC_URL", d.public_url, _url),
        redis_password=(env.get("TWITTERCHAT_REDIS_PASSWORD") or "").strip() or None,
        api_token=token,
        webhook_secret=_secret("TWITTERCHAT_WEBHOOK_SECRET", secret) if secret else None,
    )


def load_service_settings(config: Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> ServiceSettings:
    """Never raises: a bad value is logged and the service is switched off."""
    env = os.environ if env is None else env
    try:
        return parse_service_settings(load_config() if config is None else config, env)
    except ConfigError as exc:
        logger.error("task service disabled: %s", exc)
        return ServiceSettings(enabled=False)
