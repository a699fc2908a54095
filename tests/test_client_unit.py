"""The client's pure parts: SSE decoding, request building, wait bookkeeping, persona files,
the command line's parsing, and error mapping.

No server here: the task service is tested for real, with this client, in the
integration tests. httpx.MockTransport appears only to turn canned error
responses into exceptions (the mapping itself is what is under test).
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from comfyui_twitterchat.client import (AsyncTwitterChatClient, TwitterChatClient,
                                        TwitterChatConnectionError, TwitterChatError)
from comfyui_twitterchat.client import calls, cli
from comfyui_twitterchat.client.config import display_url, http_headers, resolve_base_url, resolve_token
from comfyui_twitterchat.client.follow import (STREAM_ATTEMPTS, BatchWatch, Deadline, FollowPolicy,
                                               TaskWatch)
from comfyui_twitterchat.client.formatting import describe_task, summarize_tasks
from comfyui_twitterchat.client.personas import (PersonaFileError, expand_patterns, read_persona,
                                                 read_personas)
from comfyui_twitterchat.client.sse import ServerEvent, SSEDecoder

from pack_paths import PACK_ROOT, PERSONAS_DIR

TOKEN = "tc-unit-secret-4f9a1c"


def decode_in_chunks(data: bytes, size: int) -> tuple[list[ServerEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(data), size):
        events += decoder.feed(data[start:start + size])
    return events + decoder.close(), decoder


# -- SSE ---------------------------------------------------------------------------------------

STREAM = (
    ": connected\r\n"
    "retry: 2500\r\n"
    "\r\n"
    "id: 7\r\n"
    "event: task\r\n"
    'data: {"task_id": "t1",\r\n'
    'data:  "status": "running", "text": "tea\u2028time \u65e9\u5b89"}\r\n'
    "\r\n"
    ": ping\r\n"
    "\r\n"
    "event: batch\r\n"
    'data:{"batch_id": "b1", "status": "finished"}\r\n'
    "\r\n"
).encode("utf-8")


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_sse_events_survive_any_chunking(size):
    events, decoder = decode_in_chunks(STREAM, size)
    assert events == [
        ServerEvent(id="7", event="task",
                    data={"task_id": "t1", "status": "running", "text": "tea\u2028time \u65e9\u5b89"}),
        ServerEvent(id="7", event="batch", data={"batch_id": "b1", "status": "finished"}),
    ]
    assert decoder.retry_ms == 2500
    assert decoder.last_event_id == "7"


def test_sse_multi_line_data_is_joined_with_newlines():
    events, _ = decode_in_chunks(b'data: [1,\ndata:\ndata: 2]\n\n', 4)
    assert events[0].data == [1, 2]
    events, _ = decode_in_chunks(b'data: "a\ndata: b"\n\n', 1)
    assert events == []  # a JSON string cannot hold a raw newline: the joined text is invalid


def test_sse_line_endings_cr_lf_and_crlf_mix():
    stream = b'id: 1\rdata: {"a": 1}\r\rid: 2\ndata: {"a": 2}\n\nid: 3\r\ndata: 3\r\n\r\n'
    events, _ = decode_in_chunks(stream, 1)
    assert [(e.id, e.data) for e in events] == [("1", {"a": 1}), ("2", {"a": 2}), ("3", 3)]


def test_sse_final_cr_dispatches_at_close_but_an_unfinished_event_does_not():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r\r") == []  # the last CR may be half of a CRLF
    assert [e.data for e in decoder.close()] == [1]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.close() == []


def test_sse_field_rules():
    stream = (b"\xef\xbb\xbfdata: 1\n\n"          # a byte order mark is dropped
              b"id: 5\nevent: task\n\n"            # no data: nothing dispatched, the id stays
              b"data: 2\n\n"                       # the event type resets, the id does not
              b"id: bad\x00id\nretry: 1x\ndata:  3\n\n"  # NUL id and non-numeric retry ignored
              b"event:  spaced\ndata:4\n\n"         # only one space after the colon is dropped
              b"data\n\n")                         # a field without a colon: empty value
    events, decoder = decode_in_chunks(stream, 5)
    assert [(e.id, e.event, e.data) for e in events[:4]] == [
        (None, "message", 1), ("5", "message", 2), ("5", "message", 3), ("5", " spaced", 4)]
    assert len(events) == 4  # "data" alone makes an empty string: not JSON, skipped
    assert decoder.retry_ms is None


def test_sse_non_json_data_is_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="twitterchat.client"):
        events, _ = decode_in_chunks(b"id: 9\nevent: task\ndata: not json\n\ndata: {}\n\n", 3)
    assert [e.data for e in events] == [{}]
    assert "not JSON" in caplog.text and "9" in caplog.text


def test_sse_utf8_character_split_between_chunks():
    data = 'data: {"t": "\u5bc6\u6797 \U0001f375"}\n\n'.encode("utf-8")
    events, _ = decode_in_chunks(data, 1)
    assert events[0].data == {"t": "\u5bc6\u6797 \U0001f375"}


# -- configuration and requests --------------------------------------------------------------

def test_base_url_and_token_come_from_arguments_then_environment(monkeypatch):
    monkeypatch.delenv("TWITTERCHAT_URL", raising=False)
    monkeypatch.delenv("TWITTERCHAT_API_TOKEN", raising=False)
    assert resolve_base_url() == "http://127.0.0.1:8188"
    assert resolve_token() is None
    monkeypatch.setenv("TWITTERCHAT_URL", "http://gpu-box:8190/")
    monkeypatch.setenv("TWITTERCHAT_API_TOKEN", " env-token ")
    assert resolve_base_url() == "http://gpu-box:8190"
    assert resolve_base_url("https://example.org/comfy/") == "https://example.org/comfy"
    assert resolve_token() == "env-token"
    assert resolve_token("") is None  # an explicit empty token switches auth off
    with pytest.raises(ValueError, match="http://host:port"):
        resolve_base_url("127.0.0.1:8188")


def test_token_travels_only_as_a_bearer_header_and_never_in_reprs():
    assert http_headers(TOKEN)["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in http_headers(None)
    client = TwitterChatClient("http://127.0.0.1:8188", token=TOKEN)
    async_client = AsyncTwitterChatClient("http://127.0.0.1:8188", token=TOKEN)
    try:
        for text in (repr(client), str(client), repr(async_client), repr(vars(client))):
            assert TOKEN not in text
        assert "token=set" in repr(client)
    finally:
        client.close()
    assert display_url("http://user:pw@host:1/x") == "http://host:1/x"


def test_task_bodies():
    workflow = {"1": {"class_type": "PersonaLoader", "inputs": {}}}
    call = calls.submit_task(workflow, priority=3, metadata={"run": 1}, idempotency_key="k-1")
    assert (call.method, call.path) == ("POST", "/twitterchat/api/v1/tasks")
    assert call.json == {"workflow": workflow, "priority": 3, "metadata": {"run": 1}}
    assert call.headers == {"Idempotency-Key": "k-1"}
    call = calls.submit_task(template="persona_posts", params={"num_days": 2}, webhook_url="http://h/x")
    assert call.json == {"template": "persona_posts", "params": {"num_days": 2}, "webhook_url": "http://h/x"}
    assert call.headers is None
    with pytest.raises(ValueError, match="exactly one"):
        calls.submit_task(workflow, template="persona_posts")
    with pytest.raises(ValueError, match="exactly one"):
        calls.submit_task()
    with pytest.raises(ValueError, match="params go with a template"):
        calls.submit_task(workflow, params={"num_days": 1})


def test_batch_bodies():
    call = calls.submit_batch("posts", template="persona_posts", personas=["a.json"],
                              params={"num_days": 10}, priority=1)
    assert call.json == {"name": "posts", "template": "persona_posts", "personas": ["a.json"],
                         "params": {"num_days": 10}, "priority": 1}
    body = calls.task_body(template="persona_posts", params={"user_id": "u"})
    assert calls.submit_batch("b", tasks=[body]).json == {"name": "b", "tasks": [body]}
    with pytest.raises(ValueError, match="exactly one"):
        calls.submit_batch("b", tasks=[body], template="persona_posts", personas=["a"])
    with pytest.raises(ValueError, match="at least one persona"):
        calls.submit_batch("b", template="persona_posts", personas=[])
    with pytest.raises(ValueError, match="needs a name"):
        calls.submit_batch("", tasks=[body])


def test_paths_quote_ids_and_queries_drop_unset_filters():
    assert calls.get_task("a/b c").path == "/twitterchat/api/v1/tasks/a%2Fb%20c"
    assert calls.cancel("t1").path == "/twitterchat/api/v1/tasks/t1/cancel"
    assert calls.cancel_batch("b1").path == "/twitterchat/api/v1/batches/b1/cancel"
    assert calls.list_tasks(batch_id="b1").params == {"batch_id": "b1"}
    assert calls.list_tasks("failed", None, 5, "c2").params == {"status": "failed", "limit": 5,
                                                               "cursor": "c2"}
    with pytest.raises(ValueError, match="non-empty"):
        calls.get_task("")
    events = calls.events(batch_id="b1", last_event_id="41")
    assert events.params == {"batch_id": "b1"}
    assert events.headers["Last-Event-ID"] == "41"
    assert "Last-Event-ID" not in calls.events(task_id="t").headers


def test_pages_stop_at_the_limit_or_the_last_cursor():
    page = {"tasks": [{"task_id": "a"}, {"task_id": "b"}], "next_cursor": "c1"}
    assert calls.page_of_tasks(page, None) == (page["tasks"], "c1")
    assert calls.page_of_tasks(page, 1) == ([{"task_id": "a"}], None)
    assert calls.page_of_tasks(page, 5) == (page["tasks"], "c1")
    assert calls.page_of_tasks({"tasks": [], "next_cursor": None}, None) == ([], None)
    with pytest.raises(TwitterChatError, match="no 'tasks' list"):
        calls.page_of_tasks({"items": []}, None)


# -- following tasks -------------------------------------------------------------------------

def task(task_id, status, batch_id="b1", progress=0.0):
    return {"task_id": task_id, "batch_id": batch_id, "status": status, "progress": progress}


def test_task_watch_takes_only_its_own_task_and_remembers_the_stream_position():
    seen = []
    watch = TaskWatch("t1", on_update=seen.append)
    watch.on_event(ServerEvent("3", "task", task("t2", "completed")))
    watch.on_event(ServerEvent("4", "batch", {"task_id": "t1", "status": "completed"}))
    assert not watch.done and seen == []
    watch.on_event(ServerEvent("5", "task", task("t1", "running")))
    watch.update(task("t1", "running"))  # the same state again is not a new update
    watch.on_event(ServerEvent("6", "task", task("t1", "failed")))
    assert watch.done and watch.last_event_id == "6"
    assert [t["status"] for t in seen] == ["running", "failed"]


def test_batch_watch_is_done_when_every_task_is_final():
    reports = []
    watch = BatchWatch("b1", on_progress=reports.append)
    watch.set_batch({"batch_id": "b1", "status": "active", "total": 3})
    watch.set_tasks([task("t3", "queued"), task("t2", "running", progress=0.5), task("t1", "completed")])
    assert not watch.done
    assert reports[-1].counts == {"completed": 1, "running": 1, "queued": 1}
    assert reports[-1].fraction == pytest.approx(0.5)
    watch.on_event(ServerEvent("8", "task", task("t2", "failed")))
    watch.on_event(ServerEvent("9", "task", task("x9", "completed", batch_id="other")))
    assert reports[-1].finished == 2 and "x9" not in watch.tasks
    watch.on_event(ServerEvent("10", "batch", {"batch_id": "b1", "status": "finished", "total": 3}))
    assert watch.needs_refresh  # the server says finished, but t3's final state has not arrived
    watch.on_event(ServerEvent("11", "task", task("t3", "cancelled")))
    assert watch.done and not watch.needs_refresh
    assert [t["task_id"] for t in watch.results()] == ["t1", "t2", "t3"]  # oldest first
    assert watch.last_event_id == "11"


def test_batch_watch_counts_tasks_not_listed_yet_as_queued():
    watch = BatchWatch("b1")
    watch.set_batch({"batch_id": "b1", "status": "active", "total": 4})
    watch.set_tasks([task("t1", "completed")])
    progress = watch.progress()
    assert (progress.total, progress.finished, progress.counts["queued"]) == (4, 1, 3)
    assert not watch.done


def test_deadline_uses_its_clock():
    now = [100.0]
    deadline = Deadline(10, clock=lambda: now[0])
    assert deadline.cap(30) == 10 and deadline.read_timeout() == 10
    now[0] = 109.5
    deadline.check("task t1 not final")
    now[0] = 110.0
    with pytest.raises(TimeoutError, match="task t1 not final after 10 s"):
        deadline.check("task t1 not final")
    assert Deadline(None).cap(7) == 7 and not Deadline(None).expired


def connection_failure():
    return TwitterChatConnectionError("http://127.0.0.1:8188", "refused")


def test_policy_fails_at_once_until_the_server_has_answered():
    policy = FollowPolicy(poll_interval=1, max_retries=2)
    with pytest.raises(TwitterChatConnectionError):
        policy.request_failed(connection_failure())  # a wrong URL: no retries


def test_policy_retries_a_server_that_answered_before_then_gives_up():
    policy = FollowPolicy(poll_interval=1, max_retries=2)
    policy.request_ok()
    policy.request_failed(connection_failure())
    assert policy.delay() == 2
    policy.request_failed(TwitterChatError(503, "service_unavailable", "restarting"))
    assert policy.delay() == 4
    with pytest.raises(TwitterChatConnectionError):
        policy.request_failed(connection_failure())
    policy = FollowPolicy(poll_interval=1, max_retries=2)
    policy.request_ok()
    with pytest.raises(TwitterChatError, match="unauthorized"):
        policy.request_failed(TwitterChatError(401, "unauthorized", "no token"))
    policy.request_failed(TwitterChatError(429, "queue_full", "busy", retry_after=30))
    assert policy.delay() == 30  # the server's Retry-After beats the backoff


def test_policy_settles_for_polling_after_repeated_or_refused_streams():
    policy = FollowPolicy(poll_interval=0.5)
    for _ in range(STREAM_ATTEMPTS - 1):
        policy.stream_failed(connection_failure())
    assert policy.use_stream
    policy.stream_delivered()
    for _ in range(STREAM_ATTEMPTS):
        policy.stream_failed(connection_failure())
    assert not policy.use_stream and policy.delay() == 0.5
    refused = FollowPolicy()
    refused.stream_failed(TwitterChatError(404, "not_found", "no /events here"))
    assert not refused.use_stream


# -- error mapping (canned responses through httpx.MockTransport) ----------------------------

def client_answering(handler) -> TwitterChatClient:
    return TwitterChatClient("http://127.0.0.1:8188", token=TOKEN, transport=httpx.MockTransport(handler))


def test_server_errors_become_twitterchat_errors_with_the_servers_type_and_message():
    node_errors = {"3": {"errors": [{"message": "Required input is missing"}]}}

    def handler(request):
        return httpx.Response(400, json={"error": {"type": "invalid_workflow", "message": "bad prompt",
                                                   "node_errors": node_errors}})

    with client_answering(handler) as client, pytest.raises(TwitterChatError) as caught:
        client.submit_task({"1": {}})
    error = caught.value
    assert (error.status, error.type, error.message) == (400, "invalid_workflow", "bad prompt")
    assert error.node_errors == node_errors and error.body["error"]["type"] == "invalid_workflow"
    assert str(error) == ("HTTP 400 invalid_workflow: bad prompt "
                          "(POST http://127.0.0.1:8188/twitterchat/api/v1/tasks)")
    assert TOKEN not in str(error) and TOKEN not in repr(error) and not error.transient


def test_queue_full_carries_retry_after_and_is_transient():
    def handler(request):
        return httpx.Response(429, headers={"Retry-After": "7"},
                              json={"error": {"type": "queue_full", "message": "queue is full"}})

    with client_answering(handler) as client, pytest.raises(TwitterChatError) as caught:
        client.get_task("t1")
    assert (caught.value.type, caught.value.retry_after, caught.value.transient) == ("queue_full", 7.0, True)


def test_answers_that_are_not_the_services_still_map_to_one_error():
    def handler(request):
        if request.url.path.endswith("/t1"):
            return httpx.Response(502, text="<html><body>Bad   gateway</body></html>")
        return httpx.Response(200, text="<html>ComfyUI</html>")

    with client_answering(handler) as client:
        with pytest.raises(TwitterChatError) as caught:
            client.get_task("t1")
        assert (caught.value.status, caught.value.type) == (502, "http_error")
        assert "Bad gateway" in caught.value.message and caught.value.transient
        with pytest.raises(TwitterChatError, match="not JSON") as caught:
            client.get_batch("b1")
        assert caught.value.type == "invalid_response"


def test_transport_failures_name_the_url_not_the_token():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    with client_answering(handler) as client, pytest.raises(TwitterChatConnectionError) as caught:
        client.cancel("t1")
    assert caught.value.status is None and caught.value.transient
    assert "http://127.0.0.1:8188" in str(caught.value) and TOKEN not in str(caught.value)


# -- persona files ---------------------------------------------------------------------------

def write_card(path: Path, user_id: str | None = None, name: str = "Mei") -> Path:
    card = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text(encoding="utf-8"))
    card["data"]["name"] = name
    if user_id is not None:
        card["data"]["extensions"]["twitterchat"]["user_id"] = user_id
    path.write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    return path


def test_user_id_is_the_cards_own_else_the_file_stem(tmp_path):
    own = read_persona(write_card(tmp_path / "first.json", user_id="meilin_001"))
    stem = read_persona(write_card(tmp_path / "tea.girl-2.json"))
    assert (own.user_id, stem.user_id) == ("meilin_001", "tea.girl-2")
    assert own.persona_json == (tmp_path / "first.json").read_text(encoding="utf-8")
    assert own.as_batch_entry() == {"persona_json": own.persona_json, "user_id": "meilin_001"}
    assert "persona_json" not in repr(own)


def test_png_cards_are_sent_as_their_json(tmp_path):
    from PIL import Image, PngImagePlugin

    card = json.loads(write_card(tmp_path / "src.json", user_id="png_user").read_text(encoding="utf-8"))
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps(card).encode()).decode())
    Image.new("RGB", (4, 4)).save(tmp_path / "card.png", pnginfo=info)
    entry = read_persona(tmp_path / "card.png")
    assert entry.user_id == "png_user" and json.loads(entry.persona_json) == card


def test_bad_persona_files_are_refused_naming_the_file(tmp_path):
    with pytest.raises(PersonaFileError, match=r"my card\.json.*rename the file"):
        read_persona(write_card(tmp_path / "my card.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(PersonaFileError, match=r"broken\.json: invalid JSON"):
        read_persona(broken)


def test_globs_are_expanded_locally_once_per_file(tmp_path):
    (tmp_path / "cards").mkdir()
    for name in ("b", "a", "c"):
        write_card(tmp_path / "cards" / f"{name}.json")
    (tmp_path / "cards" / "notes.txt").write_text("x")
    same_file = tmp_path / "cards" / ".." / "cards" / "a.json"
    found = expand_patterns([str(tmp_path / "cards" / "*.json"), str(same_file)])
    assert [p.name for p in found] == ["a.json", "b.json", "c.json"]
    with pytest.raises(PersonaFileError, match="no persona file matches"):
        expand_patterns([str(tmp_path / "none" / "*.json")])


def test_two_cards_for_one_user_are_refused(tmp_path):
    write_card(tmp_path / "one.json", user_id="same")
    write_card(tmp_path / "two.json", user_id="same")
    with pytest.raises(PersonaFileError, match="both user 'same'"):
        read_personas([str(tmp_path / "*.json")])


# -- the command line ------------------------------------------------------------------------

def test_global_options_work_before_and_after_the_subcommand():
    args = cli.parse_args(["--url", "http://a:1", "status", "t1", "--json"])
    assert (args.command, args.id, args.url, args.json) == ("status", "t1", "http://a:1", True)
    assert args.token is None
    args = cli.parse_args(["watch", "b1", "--token", "x", "--timeout", "90"])
    assert (args.batch_id, args.token, args.timeout, args.json, args.url) == ("b1", "x", 90.0, False, None)


def test_batch_arguments_become_the_batch_request(tmp_path):
    write_card(tmp_path / "a.json", user_id="ua")
    write_card(tmp_path / "b.json", user_id="ub")
    args = cli.parse_args(["batch", "--personas", str(tmp_path / "a.json"),
                           "--personas", str(tmp_path / "b.json"), "--days", "10", "--start-offset", "2",
                           "--llm-profile", "openai", "--name", "spring",
                           "--metadata", '{"campaign": "spring"}', "--watch"])
    request = cli.batch_request(args)
    assert request["name"] == "spring" and request["template"] == "persona_posts"
    assert request["params"] == {"num_days": 10, "start_day_offset": 2, "llm_profile": "openai"}
    assert [p["user_id"] for p in request["personas"]] == ["ua", "ub"]
    assert request["metadata"] == {"campaign": "spring"} and args.watch
    glob_args = cli.parse_args(["batch", "--personas", str(tmp_path / "*.json"), "--days", "1"])
    minimal = cli.batch_request(glob_args)
    assert minimal["params"] == {"num_days": 1} and minimal["name"].startswith("personas-")


@pytest.mark.parametrize("argv", [
    ["batch", "--personas", "x.json", "--days", "0"],
    ["batch", "--personas", "x.json", "--days", "32"],
    ["batch", "--days", "3"],
    ["submit", "wf.json", "--metadata", "[1, 2]"],
    ["submit", "wf.json", "--metadata", "{bad"],
    ["watch", "b1", "--timeout", "0"],
    ["status"],
])
def test_bad_arguments_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.parse_args(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_local_mistakes_exit_with_status_2_before_any_request(tmp_path, capsys):
    unreachable = "http://127.0.0.1:9"  # nothing is sent: each fails while reading local input
    no_cards = str(tmp_path / "*.json")
    assert cli.main(["--url", unreachable, "batch", "--personas", no_cards, "--days", "3"]) == 2
    assert "no persona file matches" in capsys.readouterr().err
    not_json = tmp_path / "broken.json"
    not_json.write_text("{nope")
    assert cli.main(["--url", unreachable, "submit", str(not_json)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert cli.main(["--url", "ftp://host", "--token", TOKEN, "status", "t1"]) == 2
    err = capsys.readouterr().err
    assert "http://host:port" in err and TOKEN not in err


def test_exit_status_follows_the_final_tasks():
    assert cli._final_status([task("a", "completed"), task("b", "completed")]) == cli.EXIT_OK
    assert cli._final_status([task("a", "completed"), task("b", "cancelled")]) == cli.EXIT_FAILED
    assert cli._final_status([task("a", "failed")]) == cli.EXIT_FAILED


def test_human_output_shows_errors_and_posts():
    failed = {**task("t1", "failed"), "user_id": "meilin_001",
              "error": {"type": "ValueError", "message": "boom", "node_id": "4",
                        "node_type": "OutputManager"}}
    done = {**task("t2", "completed"), "outputs": [
        {"kind": "post", "user_id": "u", "date": "2026-11-23", "text": "first\nflush"},
        {"node_id": "9", "filename": "a.png", "subfolder": "", "type": "output", "url": "http://h/view?a"}]}
    assert describe_task(failed) == ["task t1 (meilin_001): failed",
                                     "  error in node 4 (OutputManager): ValueError: boom"]
    assert describe_task(done)[1:] == ["  post u 2026-11-23: first flush", "  file a.png: http://h/view?a"]
    assert summarize_tasks([done, failed])[:2] == [
        "2 tasks: 1 completed, 1 failed, 0 cancelled, 0 running, 0 queued", "task t2: completed, 1 post"]


# -- packaging -------------------------------------------------------------------------------

IMPORT_PROBE = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("comfyui_twitterchat", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
before = set(sys.modules)
import comfyui_twitterchat.client.cli
new = sorted(set(sys.modules) - before)
print(json.dumps(new))
"""


def test_client_import_stays_clear_of_comfyui_and_the_service():
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(PACK_ROOT)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert "comfyui_twitterchat.client.sync_client" in loaded and "httpx" in loaded
    forbidden = ("server", "folder_paths", "comfy", "nodes", "torch", "openai", "aiohttp", "tqdm",
                 "comfyui_twitterchat.service")
    assert [m for m in loaded if m.split(".")[0] in forbidden or m.startswith(forbidden[-1])] == []


def test_replayed_events_never_move_a_followed_task_backwards():
    from comfyui_twitterchat.client.follow import TaskWatch

    seen = []
    watch = TaskWatch("t1", on_update=lambda task: seen.append((task["status"], task["progress"])))
    for status, progress in (("running", 0.6), ("queued", 0.0), ("running", 0.2), ("running", 0.6),
                             ("running", 0.8), ("completed", 1.0), ("running", 0.9)):
        watch.update({"task_id": "t1", "status": status, "progress": progress, "attempts": 1})
    assert seen == [("running", 0.6), ("running", 0.8), ("completed", 1.0)]
    retried = TaskWatch("t2", on_update=lambda task: seen.append(task["status"]))
    retried.update({"task_id": "t2", "status": "running", "progress": 0.5, "attempts": 1})
    retried.update({"task_id": "t2", "status": "queued", "progress": 0.0, "attempts": 2})  # run again after a restart
    assert retried.task["attempts"] == 2 and retried.task["status"] == "queued"


def test_a_list_limit_over_one_page_asks_for_full_pages():
    from comfyui_twitterchat.client import calls

    assert calls.page_size(1000) == 500 and calls.page_size(20) == 20 and calls.page_size(None) is None
