"""Monitor settings: config.json's ``monitor`` section, then ``KY_MONITOR_*``
environment variables (the environment wins).

An invalid value never stops ComfyUI: it is logged once, naming the key, and
only the part it belongs to is switched off (one channel, or the whole monitor
for the monitor's own keys). Passwords come from the environment only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..utils.settings import ConfigError, as_bool, as_float, as_int, load_config, section

logger = logging.getLogger("twitterchat.monitor.config")

PREFIX = "KY_MONITOR_"


@dataclass(frozen=True)
class PromptServerSettings:
    enabled: bool = True
    event_name: str = "twitterchat.monitor"


@dataclass(frozen=True)
class RedisSettings:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6379
    password: str | None = field(default=None, repr=False)
    db: int = 0
    channel_name: str = "twitterchat:monitor"


@dataclass(frozen=True)
class RocketMQSettings:
    enabled: bool = False
    namesrv_addr: str = "127.0.0.1:8081"
    topic: str = "twitterchat_monitor"
    group_id: str = "twitterchat_monitor"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = True
    frequency_seconds: float = 1.0
    history_max_items: int = 64
    progress_step: float = 0.05
    snapshot_interval_seconds: float = 0.0
    buffer_size: int = 1000
    prompt_server: PromptServerSettings = PromptServerSettings()
    redis: RedisSettings = RedisSettings()
    rocketmq: RocketMQSettings = RocketMQSettings()


class _Reader:
    """Looks a key up in the environment first, then in its config.json section."""

    def __init__(self, values: Mapping[str, Any], env: Mapping[str, str], env_prefix: str,
                 config_prefix: str) -> None:
        self.values, self.env = values, env
        self.env_prefix, self.config_prefix = env_prefix, config_prefix

    def get(self, key: str, default: Any, convert: Callable[[str, Any], Any]) -> Any:
        env_key = f"{self.env_prefix}{key.upper()}"
        if env_key in self.env:
            return convert(env_key, self.env[env_key])
        if key in self.values:
            return convert(f"config.json {self.config_prefix}{key}", self.values[key])
        return default


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected non-empty text, got {value!r}")
    return value.strip()


def _monitor_section(config: Mapping[str, Any]) -> dict[str, Any]:
    return section(config, "monitor", {"enabled", "frequency_seconds", "history_max_items",
                                       "progress_step", "snapshot_interval_seconds", "buffer_size",
                                       "prompt_server", "redis", "rocketmq"})


def _sub(values: Mapping[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    sub = values.get(name)
    if isinstance(sub, dict) and ({"password", "secret_key", "access_key"} & set(sub)):
        raise ConfigError(f"config.json monitor.{name}: secrets do not belong in config.json; "
                          f"set {PREFIX}{name.upper()}_PASSWORD (or _ACCESS_KEY/_SECRET_KEY) "
                          "in the environment")
    return section(values, name, known, parent="monitor")


def _prompt_server(values, env) -> PromptServerSettings:
    r = _Reader(_sub(values, "prompt_server", {"enabled", "event_name"}), env,
                f"{PREFIX}PROMPT_SERVER_", "monitor.prompt_server.")
    d = PromptServerSettings()
    return PromptServerSettings(enabled=r.get("enabled", d.enabled, as_bool),
                                event_name=r.get("event_name", d.event_name, _text))


def _redis(values, env) -> RedisSettings:
    r = _Reader(_sub(values, "redis", {"enabled", "host", "port", "db", "channel_name"}), env,
                f"{PREFIX}REDIS_", "monitor.redis.")
    d = RedisSettings()
    enabled = r.get("enabled", d.enabled, as_bool)
    return RedisSettings(
        enabled=enabled, host=r.get("host", d.host, _text),
        port=r.get("port", d.port, lambda k, v: as_int(k, v, 1, 65535)),
        password=env.get(f"{PREFIX}REDIS_PASSWORD") or None,
        db=r.get("db", d.db, lambda k, v: as_int(k, v, 0, 10_000)),
        channel_name=r.get("channel_name", d.channel_name, _text))


def _rocketmq(values, env) -> RocketMQSettings:
    r = _Reader(_sub(values, "rocketmq", {"enabled", "namesrv_addr", "topic", "group_id"}), env,
                f"{PREFIX}ROCKETMQ_", "monitor.rocketmq.")
    d = RocketMQSettings()
    return RocketMQSettings(
        enabled=r.get("enabled", d.enabled, as_bool),
        namesrv_addr=r.get("namesrv_addr", d.namesrv_addr, _text),
        topic=r.get("topic", d.topic, _text), group_id=r.get("group_id", d.group_id, _text),
        access_key=env.get(f"{PREFIX}ROCKETMQ_ACCESS_KEY") or None,
        secret_key=env.get(f"{PREFIX}ROCKETMQ_SECRET_KEY") or None)


def load_monitor_settings(config: Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> MonitorSettings:
    """Never raises: bad values are logged and switch off what they belong to."""
    env = os.environ if env is None else env
    try:
        config = load_config() if config is None else config
        values = _monitor_section(config)
        r = _Reader(values, env, PREFIX, "monitor.")
        d = MonitorSettings()
        base = dict(
            enabled=r.get("enabled", d.enabled, as_bool),
            frequency_seconds=r.get("frequency_seconds", d.frequency_seconds,
                                    lambda k, v: as_float(k, v, 0.05, 3600)),
            history_max_items=r.get("history_max_items", d.history_max_items,
                                    lambda k, v: as_int(k, v, 1, 10_000)),
            progress_step=r.get("progress_step", d.progress_step, lambda k, v: as_float(k, v, 0.0, 1.0)),
            snapshot_interval_seconds=r.get("snapshot_interval_seconds", d.snapshot_interval_seconds,
                                            lambda k, v: as_float(k, v, 0.0, 86_400)),
            buffer_size=r.get("buffer_size", d.buffer_size, lambda k, v: as_int(k, v, 1, 1_000_000)),
        )
    except ConfigError as exc:
        logger.error("monitor disabled: %s", exc)
        return MonitorSettings(enabled=False)
    channels = {}
    for name, parse, fallback in (("prompt_server", _prompt_server, PromptServerSettings(enabled=False)),
                                  ("redis", _redis, RedisSettings(enabled=False)),
                                  ("rocketmq", _rocketmq, RocketMQSettings(enabled=False))):
        try:
            channels[name] = parse(values, env)
        except ConfigError as exc:
            logger.error("monitor channel '%s' disabled: %s", name, exc)
            channels[name] = fallback
    return MonitorSettings(**base, **channels)
