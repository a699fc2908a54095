"""config.json (committed defaults, no secrets) plus environment overrides.

Each section is validated into a frozen dataclass; a bad value raises
``ConfigError`` naming the key, and unknown keys are reported in the log.
``TWITTERCHAT_CONFIG`` may point at another config file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PACK_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PACK_ROOT / "config.json"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger("twitterchat.settings")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TWITTERCHAT_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole config file as a dict ({} when it does not exist)."""
    path = Path(path) if path is not None else config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    return data


def section(config: Mapping[str, Any], name: str, known: set[str], parent: str = "") -> dict[str, Any]:
    """``config[name]`` as a dict; unknown keys are reported, not fatal."""
    label = f"{parent}.{name}" if parent else name
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config.json: '{label}' must be an object")
    unknown = sorted(set(value) - known)
    if unknown:
        logger.warning("config.json: unknown key(s) in '%s' ignored: %s", label, ", ".join(unknown))
    return dict(value)


def sources(config: Mapping[str, Any] | None, env: Mapping[str, str] | None, name: str,
            known: set[str]) -> tuple[dict[str, Any], Mapping[str, str]]:
    """A settings class's two inputs: its config.json section (the file when ``config``
    is None) and the environment (``os.environ`` when ``env`` is None)."""
    values = section(config if config is not None else load_config(), name, known)
    return values, os.environ if env is None else env


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}: expected true/false, got {value!r}")


def as_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise ConfigError(f"{key}: {number} is outside {minimum}..{maximum}")
    return number


def as_float(key: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if number != number or minimum is not None and number < minimum \
            or maximum is not None and number > maximum:
        raise ConfigError(f"{key}: {number} is outside {minimum}..{maximum}")
    return number


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    log_dir: str = ""

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> "LoggingSettings":
        values, env = sources(config, env, "logging", {"level", "log_dir"})
        level = str(env.get("TWITTERCHAT_LOG_LEVEL", values.get("level", cls.level))).upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"logging.level / TWITTERCHAT_LOG_LEVEL: {level!r} is not one of "
                              f"{', '.join(LOG_LEVELS)}")
        log_dir = str(env.get("TWITTERCHAT_LOG_DIR", values.get("log_dir", cls.log_dir)) or "")
        return cls(level=level, log_dir=log_dir)


@dataclass(frozen=True)
class ContextSettings:
    weather_url: str = ""
    weather_timeout_seconds: float = 3.0

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> "ContextSettings":
        values, env = sources(config, env, "context", {"weather_url", "weather_timeout_seconds"})
        url = env.get("TWITTERCHAT_WEATHER_URL", values.get("weather_url", cls.weather_url)) or ""
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"context.weather_url / TWITTERCHAT_WEATHER_URL: not an http(s) URL: {url!r}")
        timeout = as_float("context.weather_timeout_seconds",
                           values.get("weather_timeout_seconds", cls.weather_timeout_seconds), 0.1, 60)
        return cls(weather_url=url, weather_timeout_seconds=timeout)


@dataclass(frozen=True)
class OutputSettings:
    output_dir: str = ""

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None,
             env: Mapping[str, str] | None = None) -> "OutputSettings":
        values, env = sources(config, env, "output", {"output_dir"})
        return cls(output_dir=str(env.get("OUTPUT_DIR") or values.get("output_dir") or ""))
