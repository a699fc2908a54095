"""Structured logging for the pack, on the standard library.

``get_logger(name, log_dir, level)`` returns a logger under ``twitterchat.*``.
The first call configures the ``twitterchat`` parent once: a readable coloured
console line on stderr and, when ``log_dir`` is given, a JSON-lines file
(``twitterchat.jsonl``: one object per line with timestamp, level, logger,
message, context and error {type, message, traceback}). The root logger is
never touched, and ``twitterchat`` does not propagate to it, so ComfyUI does
not print our lines twice.

Every record passes a redaction filter first: values that look like
credentials (``sk-...`` keys, bearer and basic authorization, ``password=...``,
``?key=...``, ``user:password@`` in URLs, ``whsec_...``) and the values of every
configured secret (the secret environment variables, each LLM profile's
``api_key_env``, everything in ``secrets.json``) are replaced by ``***`` in the
message, the context and the traceback, on every handler. A malformed logging
call is logged as it is, never raised.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

ROOT_LOGGER_NAME = "twitterchat"
LOG_FILE_NAME = "twitterchat.jsonl"
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
REDACTED = "***"

# Environment variables whose values are secrets wherever they show up.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "KY_MONITOR_REDIS_PASSWORD", "TWITTERCHAT_WEATHER_API_KEY",
                   "ROCKETMQ_ACCESS_KEY", "ROCKETMQ_SECRET_KEY", "KY_MONITOR_ROCKETMQ_ACCESS_KEY",
                   "KY_MONITOR_ROCKETMQ_SECRET_KEY", "TWITTERCHAT_API_TOKEN", "TWITTERCHAT_WEBHOOK_SECRET",
                   "TWITTERCHAT_REDIS_PASSWORD")
_SECRET_KEY_NAME = re.compile(r"(api[_-]?key|password|passwd|secret|token|authorization|credential)",
                              re.IGNORECASE)
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),                      # OpenAI-style keys
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-+/=]{8,}"),        # Authorization headers
    re.compile(r"(?i)\b(api[_-]?key|password|passwd|secret|token)(\s*[=:]\s*)(['\"]?)[^\s'\",;&]+"),
    re.compile(r"(?i)(redis|rediss|amqp|https?)://([^:/@\s]*):([^@\s]+)@"),  # credentials in URLs
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"),                    # webhook signing secrets
    re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/=]{8,}"),              # Authorization: Basic
    re.compile(r"(?i)([?&](?:key|api[_-]?key|apikey|token|access[_-]?token|secret|password|sig|signature)=)"
               r"[^&\s#'\"]+"),                                   # credentials in query strings
)

_configure_lock = threading.Lock()
_LEVEL_COLOURS = {"DEBUG": "\x1b[36m", "INFO": "\x1b[32m", "WARNING": "\x1b[33m",
                  "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
_RESET = "\x1b[0m"


_PACK_ROOT = Path(__file__).resolve().parent.parent
_file_secrets_cache: dict[str, Any] = {"stamp": None, "values": (), "names": ()}


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)


def _configured_secrets() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(values from secrets.json, environment variable names the LLM profiles read keys from),
    re-read only when config.json or secrets.json changes."""
    config_path = Path(os.environ.get("TWITTERCHAT_CONFIG") or _PACK_ROOT / "config.json")
    secrets_path = _PACK_ROOT / "secrets.json"
    stamp = (str(config_path), _stamp(config_path), str(secrets_path), _stamp(secrets_path))
    cache = _file_secrets_cache
    if cache["stamp"] == stamp:
        return cache["values"], cache["names"]
    values: list[str] = []
    names: list[str] = []
    try:
        secrets = json.loads(secrets_path.read_text(encoding="utf-8"))
        _collect_strings(secrets, values)
    except (OSError, ValueError):
        pass
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for profile in ((config.get("llm") or {}).get("profiles") or {}).values():
            if isinstance(profile, dict) and isinstance(profile.get("api_key_env"), str):
                names.append(profile["api_key_env"])
    except (OSError, ValueError, AttributeError):
        pass
    cache.update(stamp=stamp, values=tuple(values), names=tuple(names))
    return cache["values"], cache["names"]


def _collect_strings(value: Any, into: list[str], depth: int = 0) -> None:
    if depth > 6:
        return
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, into, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, into, depth + 1)


def _known_secret_values() -> list[str]:
    """The values of every configured secret: the secret environment variables, the variables
    the LLM profiles name (``api_key_env``), and everything in ``secrets.json``."""
    file_values, names = _configured_secrets()
    values = [os.environ.get(name, "") for name in (*SECRET_ENV_VARS, *names)] + list(file_values)
    # Short values would redact ordinary words; real keys are long.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def redact_text(text: str) -> str:
    """Replace anything that looks like a credential in ``text`` with ``***``."""
    if not text:
        return text
    for secret in _known_secret_values():
        text = text.replace(secret, REDACTED)
    text = _SECRET_PATTERNS[0].sub(REDACTED, text)
    text = _SECRET_PATTERNS[1].sub(f"Bearer {REDACTED}", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{REDACTED}", text)
    text = _SECRET_PATTERNS[3].sub(lambda m: f"{m.group(1)}://{m.group(2)}:{REDACTED}@", text)
    text = _SECRET_PATTERNS[4].sub(REDACTED, text)
    text = _SECRET_PATTERNS[5].sub(f"Basic {REDACTED}", text)
    text = _SECRET_PATTERNS[6].sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Redact a context value: secret-named keys lose their value, strings are scrubbed."""
    if _depth > 8:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _SECRET_KEY_NAME.search(str(k)) and v not in (None, "")
                         else redact_value(v, _depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [redact_value(v, _depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_text(repr(value))


class RedactingFilter(logging.Filter):
    """Scrubs the message, its context and its exception before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_twitterchat_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed call (log.warning("%d", "x")) must never raise into the caller
            message = f"{record.msg} (log arguments did not fit the message: {record.args!r})"
        record.msg = redact_text(message)
        record.args = None
        context = getattr(record, "context", None)
        if context is not None:
            record.context = redact_value(context)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            record.error = {
                "type": exc_type.__name__,
                "message": redact_text(str(exc)),
                "traceback": redact_text("".join(traceback.format_exception(exc_type, exc, tb))),
            }
            # The formatted traceback above replaces the raw exception, which
            # could print an unredacted value if a handler formatted it again.
            record.exc_info = None
            record.exc_text = None
        record._twitterchat_redacted = True
        return True


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (ComfyUI and pytest both replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "context": getattr(record, "context", None) or {},
        }
        error = getattr(record, "error", None)
        if error:
            entry["error"] = error
        return json.dumps(entry, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = record.levelname
        if self.colour:
            level = f"{_LEVEL_COLOURS.get(level, '')}{level}{_RESET}"
        line = f"{stamp} {level} [{record.name}] {record.getMessage()}"
        context = getattr(record, "context", None)
        if context:
            line += " " + " ".join(f"{k}={v}" for k, v in context.items())
        error = getattr(record, "error", None)
        if error:
            line += "\n" + error["traceback"].rstrip()
        return line


def _full_name(name: str) -> str:
    if name == ROOT_LOGGER_NAME or name.startswith(ROOT_LOGGER_NAME + "."):
        return name
    return f"{ROOT_LOGGER_NAME}.{name}"


def _has_handler(logger: logging.Logger, kind: str, target: str = "") -> bool:
    return any(getattr(h, "_twitterchat_kind", None) == (kind, target) for h in logger.handlers)


def _add_handler(logger: logging.Logger, handler: logging.Handler, kind: str, target: str = "") -> None:
    handler._twitterchat_kind = (kind, target)  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)


def configure(log_dir: str | os.PathLike | None = None, level: str | int = "INFO",
              console: bool = True) -> logging.Logger:
    """Configure the ``twitterchat`` parent logger once; later calls only add a new log_dir."""
    parent = logging.getLogger(ROOT_LOGGER_NAME)
    with _configure_lock:
        parent.setLevel(level if isinstance(level, int) else level.upper())
        parent.propagate = False
        if console and not _has_handler(parent, "console"):
            stream = sys.stderr
            colour = hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
            handler = _CurrentStderrHandler()
            handler.setFormatter(ConsoleFormatter(colour))
            _add_handler(parent, handler, "console")
        if log_dir:
            path = Path(log_dir).expanduser().resolve() / LOG_FILE_NAME
            if not _has_handler(parent, "jsonl", str(path)):
                path.parent.mkdir(parents=True, exist_ok=True)
                # 10 MB a file, the 5 newest kept: a long-running ComfyUI never fills the disk
                handler = logging.handlers.RotatingFileHandler(path, encoding="utf-8", delay=True,
                                                               maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS)
                handler.setFormatter(JsonLinesFormatter())
                _add_handler(parent, handler, "jsonl", str(path))
    return parent


def get_logger(name: str, log_dir: str | os.PathLike | None = None,
               level: str | int | None = None) -> logging.Logger:
    """A logger named ``twitterchat.<name>``, with the parent configured on first use."""
    configure(log_dir=log_dir, level=level or logging.getLevelName(
        logging.getLogger(ROOT_LOGGER_NAME).level or logging.INFO))
    return logging.getLogger(_full_name(name))


def _log(logger: logging.Logger, level: int, message: str, context: dict[str, Any],
         exc_info: Any = None) -> None:
    logger.log(level, message, extra={"context": context}, exc_info=exc_info)


def log_workflow_start(logger: logging.Logger, workflow_id: str, **context: Any) -> None:
    _log(logger, logging.INFO, f"workflow {workflow_id} started",
         {"event": "workflow_start", "workflow_id": workflow_id, **context})


def log_workflow_end(logger: logging.Logger, workflow_id: str, success: bool,
                     duration_s: float | None = None, error: BaseException | None = None,
                     **context: Any) -> None:
    ctx = {"event": "workflow_end", "workflow_id": workflow_id, "success": success, **context}
    if duration_s is not None:
        ctx["duration_s"] = round(duration_s, 3)
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    _log(logger, logging.INFO if success else logging.ERROR,
         f"workflow {workflow_id} {'finished' if success else 'failed'}", ctx, exc_info)


def log_api_call(logger: logging.Logger, provider: str, endpoint: str, duration_s: float,
                 status: str | int = "ok", **context: Any) -> None:
    ok = status in ("ok", "success") or (isinstance(status, int) and status < 400)
    _log(logger, logging.INFO if ok else logging.WARNING, f"{provider} {endpoint} -> {status}",
         {"event": "api_call", "provider": provider, "endpoint": endpoint,
          "duration_s": round(duration_s, 3), "status": status, **context})


def log_generation(logger: logging.Logger, user_id: str, date: str, length: int,
                   success: bool = True, **context: Any) -> None:
    _log(logger, logging.INFO if success else logging.WARNING,
         f"post for {user_id} on {date}: {'generated' if success else 'failed'}",
         {"event": "generation", "user_id": user_id, "date": date, "length": length,
          "success": success, **context})
