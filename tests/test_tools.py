"""Weighted post length, the persona's local day, and the per-day output folder."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timezone

import numpy as np
import pytest

from comfyui_twitterchat.tools.datetime_tool import DateTimeTool, parse_timezone
from comfyui_twitterchat.tools.post_output import build_metadata, save_day
from comfyui_twitterchat.tools.post_text import clean_post, near_duplicate, weighted_length
from comfyui_twitterchat.utils.output_paths import new_day_folder
from comfyui_twitterchat.utils.safe_paths import UnsafePathError


@pytest.mark.parametrize("text, expected", [
    ("hello", 5),
    ("你好", 4),                                   # CJK weighs 2
    ("こんにちは世界", 14),
    ("tea https://example.com/a/very/long/path?x=1 time", 4 + 23 + 5),  # a URL is 23
    ("😀", 2), ("👍🏽", 2), ("👩‍👩‍👧", 2), ("🇨🇳", 2),   # one emoji sequence is 2
    ("café", 4), ("cafe\u0301", 4),              # NFC first
    ("—“quotes”—", 10),                          # general punctuation weighs 1
])
def test_weighted_length(text, expected):
    assert weighted_length(text) == expected


def test_limit_and_cleanup():
    assert weighted_length("a" * 280) == 280 and weighted_length("茶" * 140) == 280
    assert clean_post('Post: "A quiet cup."\n\nextra') == "A quiet cup."
    assert near_duplicate("Fresh Longjing today, come early!", ["fresh longjing today - come early"])
    assert near_duplicate("Fresh Longjing today", ["Rainy afternoon with oolong and friends"]) is None


def fixed(iso):
    return lambda: datetime.fromisoformat(iso)


def test_local_day_uses_the_personas_zone_not_the_servers():
    # 2026-11-23 20:30 UTC is already the 24th in Shanghai and still the 23rd in New York.
    shanghai = DateTimeTool(country="CN", timezone="Asia/Shanghai", now=fixed("2026-11-23T20:30:00+00:00"))
    new_york = DateTimeTool(country="US", timezone="America/New_York", subdivision="NY",
                            now=fixed("2026-11-23T20:30:00+00:00"))
    assert shanghai.execute()["date"] == "2026-11-24" and shanghai.execute()["local_time"] == "04:30"
    assert new_york.execute()["date"] == "2026-11-23" and new_york.execute()["utc_offset"] == "-05:00"
    thanksgiving = new_york.execute(day_offset=3)
    assert thanksgiving["date"] == "2026-11-26" and thanksgiving["holidays"] == ["Thanksgiving Day"]
    assert shanghai.execute(day_offset=-54)["holidays"] == ["National Day"]  # 2026-10-01
    assert shanghai.execute()["season"] == "autumn"
    sydney = DateTimeTool(country="AU", timezone="Australia/Sydney", now=fixed("2026-11-23T00:00:00+00:00"))
    assert sydney.execute()["season"] == "spring"


def test_holiday_names_in_the_chosen_language():
    chinese = DateTimeTool(country="CN", timezone="Asia/Shanghai", language="zh_CN",
                           now=fixed("2026-10-01T04:00:00+00:00"))
    assert chinese.execute()["holidays"] == ["国庆节"]


def test_fixed_offsets_and_bad_zones():
    assert DateTimeTool(timezone=None, utc_offset="+08:00", now=fixed("2026-01-01T20:00:00+00:00")
                        ).execute()["date"] == "2026-01-02"
    assert str(parse_timezone("UTC-03:30")) == "UTC-03:30"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        DateTimeTool(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="no public holidays known for country 'XX'"):
        DateTimeTool(country="XX", timezone="UTC").execute()


def test_a_second_run_never_overwrites_the_first(tmp_path):
    meta = build_metadata("u1", "Meilin", "2026-11-23", "prompt-1", "First post", "a scene", "lora.safetensors", 0.7)
    first = save_day(tmp_path, meta, [np.zeros((4, 4, 3), dtype=np.float32)])
    second = save_day(tmp_path, {**meta, "workflow_id": "prompt-2"})
    assert first == tmp_path / "u1" / "2026-11-23" and second.name == "2026-11-23_2"
    assert sorted(p.name for p in first.iterdir()) == ["image.png", "metadata.json", "scene_hint.txt", "tweet.txt"]
    assert json.loads((first / "metadata.json").read_text())["workflow_id"] == "prompt-1"
    assert (first / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_concurrent_saves_of_one_day_get_their_own_folders(tmp_path):
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(new_day_folder(tmp_path, "u1", "2026-11-23")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 8


@pytest.mark.parametrize("user_id, day", [("../x", "2026-11-23"), ("u1", "../../etc"), ("u1", "2026-11-23/../../x"),
                                          ("u1", ""), ("u1", "2026-01-01\n"), ("u1", "２０２６-01-01"),
                                          ("u1", "2026-02-30"), ("u1", "2026-13-01")])
def test_output_folder_cannot_escape(tmp_path, user_id, day):
    with pytest.raises(UnsafePathError):
        new_day_folder(tmp_path, user_id, day)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "u1"])


def test_weather_from_a_reachable_provider_and_none_when_offline():
    import http.server
    import socketserver
    from urllib.parse import parse_qs, urlparse

    from comfyui_twitterchat.nodes.persona import load_persona
    from comfyui_twitterchat.tools.context import build_context, describe_day

    seen = []

    class Provider(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # an Open-Meteo-shaped answer
            query = parse_qs(urlparse(self.path).query)
            seen.append(query)
            body = json.dumps({"daily": {"time": query["start_date"], "weathercode": [61],
                                         "temperature_2m_max": [14.2], "temperature_2m_min": [8.9]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    persona = load_persona("file", "tea_girl_meilin.json", "", "u1")
    with socketserver.TCPServer(("127.0.0.1", 0), Provider) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/forecast"
        context = build_context(persona, 1, weather_url=url)
        server.shutdown()
    assert context["weather"] == {"summary": "light rain", "temp_max_c": 14.2, "temp_min_c": 8.9}
    assert seen[0]["timezone"] == ["Asia/Shanghai"] and seen[0]["start_date"] == [context["date"]]
    assert "weather: light rain, 9-14 C" in describe_day(context)
    closed = f"http://127.0.0.1:{server.server_address[1]}/v1/forecast"  # nothing listens any more
    offline = build_context(persona, 1, weather_url=closed, weather_timeout=0.5)
    assert offline["weather"] is None and offline["date"] == context["date"]


def test_weather_refusals_and_oversized_answers_are_not_retried_and_fixed_offsets_ask_for_auto():
    import http.server
    import socketserver
    from urllib.parse import parse_qs, urlparse

    from comfyui_twitterchat.tools.weather import fetch_weather, provider_timezone

    assert provider_timezone("Asia/Shanghai") == "Asia/Shanghai" and provider_timezone("UTC") == "UTC"
    assert provider_timezone("UTC+08:00") == "auto" and provider_timezone("Etc/GMT-8") == "auto"
    seen = []

    class Provider(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            query = parse_qs(urlparse(self.path).query)
            seen.append((self.path.split("?")[0], query["timezone"][0]))
            if self.path.startswith("/refuse"):
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b'{"error": true, "reason": "Invalid timezone"}')
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"[" + b"1," * (600 * 1024) + b"1]")  # 1.2 MB

        def log_message(self, *args):
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Provider) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        refused = fetch_weather(base + "/refuse", 30.25, 120.17, date(2026, 11, 25), "UTC+08:00", attempts=3)
        huge = fetch_weather(base + "/huge", 30.25, 120.17, date(2026, 11, 25), "Asia/Shanghai", attempts=3)
        server.shutdown()
    assert refused is None and huge is None
    assert seen == [("/refuse", "auto"), ("/huge", "Asia/Shanghai")]  # each asked once, not retried
