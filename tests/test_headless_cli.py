"""``twitterchat persona generate`` and ``twitterchat posts``: the pack's tools in the
command's own process, no ComfyUI, against the OpenAI-compatible test server over
real HTTP, with real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from comfyui_twitterchat.client import cli
from comfyui_twitterchat.tools.context import build_context
from comfyui_twitterchat.tools.persona_card import Persona, card_from_file
from openai_double import Faults, FakeOpenAIServer
from pack_paths import EXAMPLES_DIR, PACK_ROOT

CARD = EXAMPLES_DIR / "personas" / "tea_girl_meilin.json"


@pytest.fixture
def llm(monkeypatch):
    servers = []

    def start(**faults):
        server = FakeOpenAIServer(Faults(**faults)).start()
        servers.append(server)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-headless-0123456789abcdef")
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        monkeypatch.delenv("OPENAI_VISION", raising=False)
        return server

    yield start
    for server in servers:
        server.stop()


def picture(path, color):
    Image.new("RGB", (300, 400), color).save(path)
    return path


def test_persona_generate_from_an_image(llm, tmp_path, capsys):
    server = llm()
    image = picture(tmp_path / "face.png", (180, 140, 120))
    code = cli.main(["persona", "generate", "--image", str(image), "--concept", "A surfer who teaches math.",
                     "--user-id", "surfer_01", "--output", str(tmp_path / "out"), "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    folder = tmp_path / "out" / "surfer_01" / "persona"
    card = card_from_file(folder / "surfer_01.png")
    assert card == card_from_file(folder / "surfer_01.json")
    assert f"surfer_01: {card['data']['name']} -> {folder / 'surfer_01.json'}" in out
    assert sorted(c["schema"] for c in server.calls if c["image_parts"]) == ["core_persona", "visual_profile"]


def test_persona_generate_many_images_at_once(llm, tmp_path, capsys):
    server = llm(latency=0.3)
    folder = tmp_path / "faces"
    folder.mkdir()
    for name, color in (("ann", (200, 0, 0)), ("bo", (0, 200, 0)), ("cy", (0, 0, 200))):
        picture(folder / f"{name}.png", color)
    (folder / "notes.txt").write_text("not an image")
    code = cli.main(["persona", "generate", "--images", str(folder), "--concept", "A street musician.",
                     "--output", str(tmp_path / "out"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["user_id"] for r in result] == ["ann", "bo", "cy"]
    for entry in result:
        assert card_from_file(tmp_path / "out" / entry["user_id"] / "persona" / f"{entry['user_id']}.png")
    assert len(server.calls) == 21
    # three personas at once: their first stages overlap, and then up to 5 stages each
    first = [c for c in server.calls if c["schema"] == "core_persona"]
    starts = [c["started"] for c in server.calls if c["schema"] == "core_persona"]
    ends = [c["ended"] for c in server.calls if c["schema"] == "core_persona"]
    assert len(first) == 3 and max(starts) < min(ends)
    assert server.peak_in_flight >= 10


def test_persona_generate_usage_errors(llm, tmp_path, capsys):
    llm()
    assert cli.main(["persona", "generate", "--images", str(tmp_path), "--user-id", "x"]) == 2
    assert "--user-id goes with --image" in capsys.readouterr().err
    assert cli.main(["persona", "generate", "--image", str(tmp_path / "missing.png"), "--user-id", "x"]) == 2
    assert "image not found" in capsys.readouterr().err
    (tmp_path / "bad.png").write_text("not a png")
    assert cli.main(["persona", "generate", "--image", str(tmp_path / "bad.png"), "--user-id", "x"]) == 2
    assert "bad.png: not a readable image" in capsys.readouterr().err
    assert cli.main(["persona", "generate", "--concept", "someone", "--user-id", "../up"]) == 2
    assert "user_id '../up'" in capsys.readouterr().err


def cards(folder, count):
    """``count`` copies of the example card, each its own user (the file name's stem)."""
    folder.mkdir()
    for index in range(count):
        card = json.loads(CARD.read_text())
        card["data"]["extensions"]["twitterchat"].pop("user_id", None)
        card["data"]["name"] = f"Meilin {index}"
        (folder / f"tea_{index}.json").write_text(json.dumps(card))
    return str(folder / "*.json")


def post_requests(server):
    return [r for r in server.requests if not r.get("response_format")]


def test_posts_for_many_personas_resume_and_bound(llm, tmp_path, capsys):
    server = llm(latency=0.05)
    pattern = cards(tmp_path / "cards", 4)
    out = tmp_path / "out"
    code = cli.main(["posts", "--personas", pattern, "--days", "3", "--max-concurrent", "4",
                     "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    persona = Persona("tea_0", card_from_file(tmp_path / "cards" / "tea_0.json"))
    days = [build_context(persona, offset)["date"] for offset in range(3)]
    for index in range(4):
        for day in days:
            metadata = json.loads((out / f"tea_{index}" / day / "metadata.json").read_text())
            assert metadata["user_id"] == f"tea_{index}" and metadata["persona_name"] == f"Meilin {index}"
            assert (out / f"tea_{index}" / day / "tweet.txt").read_text().strip() == \
                metadata["content"]["tweet_text"]
        assert f"tea_{index} (Meilin {index}): 3 written, 0 already there, 0 failed" in text
    assert server.peak_in_flight == 4  # the one bound, reached and kept
    assert len(post_requests(server)) == 12

    before = len(server.requests)
    assert cli.main(["posts", "--personas", pattern, "--days", "3", "--output", str(out)]) == 0
    assert "tea_2 (Meilin 2): 0 written, 3 already there, 0 failed" in capsys.readouterr().out
    assert len(server.requests) == before  # nothing asked again
    assert not list(out.glob("*/*_2"))      # and nothing written twice


def test_a_failed_day_fails_the_command_and_a_rerun_finishes_it(llm, tmp_path, capsys):
    pattern = cards(tmp_path / "cards", 2)
    persona = Persona("tea_0", card_from_file(tmp_path / "cards" / "tea_0.json"))
    bad_day = build_context(persona, 1)["date"]
    server = llm(fail_dates={bad_day})
    out = tmp_path / "out"
    code = cli.main(["posts", "--personas", pattern, "--days", "2", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    assert "tea_0 (Meilin 0): 1 written, 0 already there, 1 failed" in text
    assert f"  {bad_day}: LLMTransientError" in text
    assert not (out / "tea_0" / bad_day).exists()

    server.faults.fail_dates = set()
    before = len(post_requests(server))
    assert cli.main(["posts", "--personas", pattern, "--days", "2", "--output", str(out)]) == 0
    assert "tea_1 (Meilin 1): 1 written, 1 already there, 0 failed" in capsys.readouterr().out
    assert len(post_requests(server)) - before == 2  # only the failed day of each persona


def test_posts_usage_errors(tmp_path, capsys):
    assert cli.main(["posts", "--personas", str(tmp_path / "none*.json"), "--days", "2",
                     "--output", str(tmp_path)]) == 2
    assert "no persona file matches" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["posts", "--personas", "x.json", "--days", "40", "--output", str(tmp_path)])


NO_COMFYUI = r"""
import sys
sys.path.insert(0, sys.argv[1] + "/tests/harness")
from pack_paths import load_pack
load_pack()
from comfyui_twitterchat.client import cli
code = cli.main(sys.argv[2:])
leaked = sorted(m for m in ("comfy", "folder_paths", "server", "nodes", "torch", "execution") if m in sys.modules)
print("LEAKED", leaked, "CODE", code)
"""


def test_posts_runs_without_comfyui_in_its_own_process(llm, tmp_path):
    llm()
    pattern = cards(tmp_path / "cards", 2)
    done = subprocess.run([sys.executable, "-c", NO_COMFYUI, str(PACK_ROOT), "posts", "--personas", pattern,
                           "--days", "2", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert "LEAKED [] CODE 0" in done.stdout, done.stdout + done.stderr
    assert len(list((tmp_path / "out").glob("tea_*/*/metadata.json"))) == 4
