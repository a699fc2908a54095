"""JSON-lines log file, console line, redaction and the root logger left alone."""

from __future__ import annotations

import json
import logging

import pytest

from comfyui_twitterchat.utils import structured_logger as sl

SECRET = "sk-test-abcdefghijklmnopqrstuvwxyz012345"


@pytest.fixture
def parent_handlers():
    """Undo the handlers a test adds to the shared 'twitterchat' logger."""
    parent = logging.getLogger(sl.ROOT_LOGGER_NAME)
    before = list(parent.handlers)
    yield parent
    for handler in parent.handlers[:]:
        if handler not in before:
            parent.removeHandler(handler)
            handler.close()


def read_lines(log_dir):
    return [json.loads(line) for line in (log_dir / sl.LOG_FILE_NAME).read_text().splitlines()]


def test_json_lines_file_has_one_object_per_record(tmp_path, parent_handlers):
    log = sl.get_logger("nodes.test", log_dir=tmp_path, level="DEBUG")
    assert log.name == "twitterchat.nodes.test"
    log.info("calendar cached", extra={"context": {"user_id": "u1", "days": 30}})
    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        log.exception("could not save")
    first, second = read_lines(tmp_path)
    assert first["level"] == "INFO" and first["logger"] == "twitterchat.nodes.test"
    assert first["message"] == "calendar cached"
    assert first["context"] == {"user_id": "u1", "days": 30}
    assert first["timestamp"].endswith("+00:00")
    assert second["error"]["type"] == "RuntimeError"
    assert second["error"]["message"] == "disk full"
    assert "raise RuntimeError" in second["error"]["traceback"]


def test_root_logger_is_left_alone(tmp_path, parent_handlers):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    sl.get_logger("x", log_dir=tmp_path)
    sl.get_logger("x", log_dir=tmp_path)  # idempotent: no second file handler
    assert (list(root.handlers), root.level) == before
    assert parent_handlers.propagate is False
    kinds = [getattr(h, "_twitterchat_kind", None) for h in parent_handlers.handlers]
    assert kinds.count(("jsonl", str(tmp_path.resolve() / sl.LOG_FILE_NAME))) == 1
    assert kinds.count(("console", "")) == 1


def test_credentials_never_reach_file_or_console(tmp_path, parent_handlers, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "plainsecretvalue123")
    log = sl.get_logger("llm", log_dir=tmp_path)
    log.warning("calling with key %s and header Bearer abcdefghijk123 via redis://:pw0rd1@host:6379",
                SECRET, extra={"context": {"api_key": "whatever", "nested": {"password": "hunter22"},
                                           "note": "env key plainsecretvalue123 leaked?"}})
    try:
        raise ValueError(f"bad auth api_key={SECRET}")
    except ValueError:
        log.exception("request failed")
    written = (tmp_path / sl.LOG_FILE_NAME).read_text()
    console = capsys.readouterr().err
    for text in (written, console):
        for secret in (SECRET, "plainsecretvalue123", "abcdefghijk123", "pw0rd1", "hunter22", "whatever"):
            assert secret not in text
        assert sl.REDACTED in text
    entry = read_lines(tmp_path)[0]
    assert entry["context"]["api_key"] == sl.REDACTED
    assert entry["context"]["nested"]["password"] == sl.REDACTED
    assert "calling with key ***" in console


def test_event_helpers_write_structured_context(tmp_path, parent_handlers):
    log = sl.get_logger("pipeline", log_dir=tmp_path)
    sl.log_workflow_start(log, "wf-1", user_id="u1")
    sl.log_api_call(log, "openai", "chat.completions", 0.25, status=429, attempt=2)
    sl.log_generation(log, "u1", "2026-11-23", 131)
    sl.log_workflow_end(log, "wf-1", success=False, duration_s=1.23456, error=KeyError("day 3"))
    start, api, gen, end = read_lines(tmp_path)
    assert start["context"] == {"event": "workflow_start", "workflow_id": "wf-1", "user_id": "u1"}
    assert api["level"] == "WARNING" and api["context"]["status"] == 429
    assert gen["context"]["length"] == 131 and gen["context"]["date"] == "2026-11-23"
    assert end["level"] == "ERROR" and end["context"]["duration_s"] == 1.235
    assert end["error"]["type"] == "KeyError"


def test_console_line_is_readable(parent_handlers, capsys):
    sl.get_logger("monitor").info("tick done", extra={"context": {"infos": 3}})
    err = capsys.readouterr().err
    assert "INFO [twitterchat.monitor] tick done infos=3" in err


def test_every_configured_secret_and_the_common_patterns_are_redacted(tmp_path, monkeypatch):
    from comfyui_twitterchat.utils import structured_logger as sl

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"llm": {"profiles": {"corp": {"kind": "openai", "api_key_env": "CORP_LLM_KEY"}}}}))
    monkeypatch.setenv("TWITTERCHAT_CONFIG", str(config))
    monkeypatch.setenv("CORP_LLM_KEY", "corp-key-0123456789abcdef")
    monkeypatch.setenv("KY_MONITOR_ROCKETMQ_SECRET_KEY", "rocket-secret-98765")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"profiles": {"openai": {"api_key": "from-secrets-file-abcdef"}}}))
    monkeypatch.setattr(sl, "_PACK_ROOT", tmp_path)
    text = ("corp-key-0123456789abcdef | rocket-secret-98765 | from-secrets-file-abcdef | "
            "Authorization: Basic dXNlcjpwYXNzd29yZA== | https://maps.example/api?key=AIzaSyA1b2c3&lang=zh")
    redacted = sl.redact_text(text)
    for secret in ("corp-key-0123456789abcdef", "rocket-secret-98765", "from-secrets-file-abcdef",
                   "dXNlcjpwYXNzd29yZA==", "AIzaSyA1b2c3"):
        assert secret not in redacted, (secret, redacted)
    assert "?key=***&lang=zh" in redacted and "Basic ***" in redacted


def test_a_malformed_logging_call_never_raises(capsys):
    from comfyui_twitterchat.utils.structured_logger import get_logger

    log = get_logger("twitterchat.test.malformed")
    log.warning("%d days", "x")  # would raise TypeError in a plain logging.Formatter
    assert "days" in capsys.readouterr().err


def test_the_json_lines_file_rotates(tmp_path, parent_handlers, monkeypatch):
    monkeypatch.setattr(sl, "LOG_FILE_MAX_BYTES", 2000)
    log = sl.get_logger("nodes.rotating", log_dir=tmp_path, level="INFO")
    for i in range(200):
        log.info("line %d %s", i, "x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert sl.LOG_FILE_NAME in files and f"{sl.LOG_FILE_NAME}.1" in files
    assert len(files) <= 1 + sl.LOG_FILE_BACKUPS
    assert all(p.stat().st_size <= 2000 + 500 for p in tmp_path.iterdir())

