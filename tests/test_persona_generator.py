"""PersonaGenerator's seven stages against the OpenAI-compatible test server over real
HTTP: order and concurrency, the image only to vision profiles, checkpoints and
resume, the merged card (v2 spec, PersonaLoader reads JSON and PNG back)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from comfyui_twitterchat.tools.persona_card import Persona, card_from_file, lore_entries
from comfyui_twitterchat.tools.persona_generator import (STAGE_GRAPH, STAGES, PersonaGenerationError, PersonaJob,
                                                         generate_persona)
from comfyui_twitterchat.utils.llm import LLMClientPool, LLMProfile, LLMSettings
from comfyui_twitterchat.utils.safe_paths import UnsafePathError
from pack_paths import TESTS_DIR

CONCEPT = "A night-shift nurse who bakes sourdough and writes haiku on her breaks."
SPEC = json.loads((TESTS_DIR / "fixtures" / "chara_card_v2.schema.json").read_text())


def pool_for(server, vision=None, max_concurrent=20):
    profile = LLMProfile(name="test", base_url=server.base_url, model="test-model", timeout=10, max_retries=0,
                         api_key_env="TWITTERCHAT_TEST_KEY", vision=vision)
    return LLMClientPool(max_concurrent=max_concurrent,
                         settings=LLMSettings(default_profile="test", profiles={"test": profile}))


@pytest.fixture
def photo():
    """A 1600 x 900 picture (larger than the 1024 px sent to the model)."""
    image = Image.new("RGB", (1600, 900), (200, 120, 80))
    for x in range(0, 1600, 100):
        image.paste((40, 90, 160), (x, 0, x + 50, 900))
    return image


def generate(pool, tmp_path, **job):
    job.setdefault("user_id", "nurse_01")
    return asyncio.run(generate_persona(pool, "test", PersonaJob(**job), tmp_path))


def by_stage(server):
    calls = {}
    for call in server.calls:
        calls.setdefault(call["schema"], []).append(call)
    return calls


def test_the_dependency_graph_is_declared_once():
    assert [stage.name for stage in STAGES] == ["core_persona", "posting_strategy", "example_posts",
                                                "social_network", "authenticity", "visual_profile",
                                                "knowledge_book"]
    assert STAGE_GRAPH["example_posts"] == ("core_persona", "posting_strategy")
    assert all(STAGE_GRAPH[name] == ("core_persona",) for name in
               ("posting_strategy", "social_network", "authenticity", "visual_profile", "knowledge_book"))


def test_stages_run_in_dependency_order_and_overlap(fake_llm, tmp_path):
    server = fake_llm(latency=0.4)
    result = generate(pool_for(server), tmp_path, concept=CONCEPT)
    calls = by_stage(server)
    assert sorted(calls) == sorted(STAGE_GRAPH) and all(len(c) == 1 for c in calls.values())
    call = {name: found[0] for name, found in calls.items()}
    core, strategy, posts = call["core_persona"], call["posting_strategy"], call["example_posts"]
    assert core["ended"] <= strategy["started"]
    assert strategy["ended"] <= posts["started"]  # stage 3 only after stage 2
    for name in ("social_network", "authenticity", "visual_profile", "knowledge_book"):
        assert call[name]["started"] >= core["ended"]
        # stages 4-7 run while stages 2 and 3 do (not after them)
        assert call[name]["started"] < strategy["ended"], name
    assert server.peak_in_flight >= 5
    assert result.generated and set(result.generated) == set(STAGE_GRAPH) and result.resumed == []


def test_the_one_pool_bound_holds_for_the_stages(fake_llm, tmp_path):
    server = fake_llm(latency=0.2)
    pool = pool_for(server, max_concurrent=2)
    generate(pool, tmp_path, concept=CONCEPT)
    assert server.peak_in_flight == 2 and pool.peak_in_flight == 2


def test_sequential_mode_runs_one_stage_at_a_time(fake_llm, tmp_path):
    server = fake_llm(latency=0.1)
    asyncio.run(generate_persona(pool_for(server), "test", PersonaJob("seq_01", concept=CONCEPT), tmp_path,
                                 sequential=True))
    assert [call["schema"] for call in server.calls] == [stage.name for stage in STAGES]
    assert server.peak_in_flight == 1


def decode_png_part(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_the_image_goes_only_to_a_vision_profile(fake_llm, tmp_path, photo):
    server = fake_llm()
    result = generate(pool_for(server), tmp_path, concept=CONCEPT, image=photo)
    calls = by_stage(server)
    with_image = {name for name, found in calls.items() if found[0]["image_parts"]}
    assert with_image == {"core_persona", "visual_profile"}
    sent = decode_png_part(calls["core_persona"][0]["image_parts"][0])
    assert max(sent.size) == 1024 and sent.size == (1024, 576)  # downscaled, aspect kept
    twitterchat = result.card["data"]["extensions"]["twitterchat"]
    assert twitterchat["visual_profile"]["source"] == "image" and twitterchat["generator"]["image_seen"]
    assert result.notes == []


def test_a_profile_that_cannot_see_never_gets_the_image(fake_llm, tmp_path, photo):
    server = fake_llm()
    result = generate(pool_for(server, vision=False), tmp_path, concept=CONCEPT, image=photo)
    assert len(server.calls) == 7 and all(call["image_parts"] == [] for call in server.calls)
    assert all(isinstance(r["messages"][1]["content"], str) for r in server.requests)
    assert "cannot see images" in result.notes[0] and "concept text only" in result.notes[0]
    twitterchat = result.card["data"]["extensions"]["twitterchat"]
    assert twitterchat["visual_profile"]["source"] == "text" and not twitterchat["generator"]["image_seen"]
    # the image is still the card's picture
    assert Image.open(result.png_path).size == photo.size
    with pytest.raises(PersonaGenerationError, match="cannot see images.*no concept"):
        generate(pool_for(server, vision=False), tmp_path, user_id="nurse_02", image=photo)


def png_chunks(path: Path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


def test_merged_card_is_valid_v2_and_reads_back_from_json_and_png(fake_llm, tmp_path):
    server = fake_llm()
    result = generate(pool_for(server), tmp_path, concept=CONCEPT, language="English", seed=5)
    card = result.card
    jsonschema.validate(card, SPEC)
    folder = tmp_path / "nurse_01" / "persona"
    assert result.json_path == folder / "nurse_01.json" and result.png_path == folder / "nurse_01.png"
    assert card_from_file(result.json_path) == card
    assert card_from_file(result.png_path) == card
    text_chunks = [(kind, body) for kind, body in png_chunks(result.png_path) if kind in (b"tEXt", b"zTXt", b"iTXt")]
    assert [kind for kind, _ in text_chunks] == [b"tEXt"]  # SillyTavern reads only tEXt
    key, _, value = text_chunks[0][1].partition(b"\0")
    assert key == b"chara" and json.loads(base64.b64decode(value)) == card
    # what the other nodes read from it
    persona = Persona(user_id="nurse_01", card=card_from_file(result.png_path))
    core = json.loads((folder / "stages" / "01_core_persona.json").read_text())["result"]
    assert persona.name == core["name"]
    assert persona.locale()["timezone"] == core["location"]["timezone"]
    posts = json.loads((folder / "stages" / "03_example_posts.json").read_text())["result"]["posts"]
    assert persona.example_posts() == posts and len(posts) == 8
    assert card["data"]["mes_example"].count("<START>") == 8
    book = json.loads((folder / "stages" / "07_knowledge_book.json").read_text())["result"]["entries"]
    assert lore_entries(persona, scan=book[1]["keys"][0]) == [book[1]["content"]]
    twitterchat = card["data"]["extensions"]["twitterchat"]
    assert {"timezone", "posting_strategy", "social_network", "authenticity", "visual_profile"} <= set(twitterchat)
    assert twitterchat["user_id"] == "nurse_01"


def test_a_stage_failing_three_times_fails_the_persona_keeps_the_others_and_resumes(fake_llm, tmp_path):
    server = fake_llm(bad_stage_json={"posting_strategy": 3})
    pool = pool_for(server)
    with pytest.raises(PersonaGenerationError) as failure:
        generate(pool, tmp_path, concept=CONCEPT)
    message = str(failure.value)
    assert "stage 2 posting_strategy failed" in message and "after 3 attempts" in message
    assert "not run because of it: example_posts" in message and "run again to resume" in message
    assert len(by_stage(server)["posting_strategy"]) == 3
    stages_dir = tmp_path / "nurse_01" / "persona" / "stages"
    assert sorted(p.name for p in stages_dir.glob("*.json")) == [
        "01_core_persona.json", "04_social_network.json", "05_authenticity.json", "06_visual_profile.json",
        "07_knowledge_book.json"]
    assert not (tmp_path / "nurse_01" / "persona" / "nurse_01.json").exists()

    server.faults.bad_stage_json = {}
    before = len(server.calls)
    result = generate(pool, tmp_path, concept=CONCEPT)
    assert [call["schema"] for call in server.calls[before:]] == ["posting_strategy", "example_posts"]
    assert sorted(result.resumed) == sorted(["core_persona", "social_network", "authenticity",
                                             "visual_profile", "knowledge_book"])
    assert result.json_path.is_file()

    before = len(server.calls)
    again = generate(pool, tmp_path, concept=CONCEPT, regenerate=True)
    assert len(server.calls) - before == 7 and again.resumed == []


def test_checkpoints_of_another_concept_are_not_mixed_in(fake_llm, tmp_path):
    server = fake_llm(bad_stage_json={"example_posts": 3})
    with pytest.raises(PersonaGenerationError, match="stage 3 example_posts"):
        generate(pool_for(server), tmp_path, concept=CONCEPT)
    with pytest.raises(PersonaGenerationError, match="another concept.*set regenerate"):
        generate(pool_for(server), tmp_path, concept="Someone else entirely.")


def test_bad_input_is_named(fake_llm, tmp_path):
    server = fake_llm()
    with pytest.raises(PersonaGenerationError, match="give an image, a concept text, or both"):
        generate(pool_for(server), tmp_path)
    with pytest.raises(UnsafePathError, match="contains '..'|path separator"):
        generate(pool_for(server), tmp_path, user_id="../escape", concept=CONCEPT)
    with pytest.raises(PersonaGenerationError, match="language"):
        generate(pool_for(server), tmp_path, concept=CONCEPT, language="x\ny")
    assert server.calls == [] and not any(tmp_path.iterdir())


def test_answers_are_checked_beyond_their_schema():
    from comfyui_twitterchat.tools.persona_generator.stages import StageContentError, validate_stage

    core = {"name": "Ana", "age": 30, "occupation": "potter", "personality": "calm", "appearance": "tall",
            "background": "grew up by the sea", "speech_style": "short",
            "location": {"city": "Kyoto", "country": "JP", "timezone": "Asia/Tokyo"}}
    assert validate_stage("core_persona", json.dumps(core))["name"] == "Ana"
    for location, problem in (({"city": "Kyoto", "country": "FR", "timezone": "Asia/Tokyo"}, "does not match"),
                              ({"city": "Kyoto", "country": "JP", "timezone": "Mars/Base"}, "not an IANA")):
        with pytest.raises(StageContentError, match=problem):
            validate_stage("core_persona", {**core, "location": location})
    with pytest.raises(StageContentError, match="personality has no words"):
        validate_stage("core_persona", {**core, "personality": "13940687,"})
    with pytest.raises(StageContentError, match="markup or JSON"):
        validate_stage("core_persona", {**core, "background": "<a href=x>my shop</a>"})
    posts = ["Morning light on the kiln, first bowls cooling.", "Rode along the river before opening up.",
             "A customer bought my crooked tea bowl.", "Rain again, so glazing day it is today.",
             "My cat sat in the clay bucket again.", "Tea class tonight, my own bowls on the tray.",
             "New brushes from the market, soft as moss.", "Late night at the wheel, hands grey to the elbow."]
    with pytest.raises(StageContentError, match="posts/7 nearly repeats"):
        validate_stage("example_posts", {"posts": posts[:7] + [posts[6]]})
    with pytest.raises(StageContentError, match="posts/0 is too short"):
        validate_stage("example_posts", {"posts": ["Hi."] + posts[1:]})
    with pytest.raises(StageContentError, match="example_posts does not match its schema at posts"):
        validate_stage("example_posts", {"posts": posts[:7]})


def test_the_embedded_models_answers_are_shaped_into_the_stage():
    from comfyui_twitterchat.tools.persona_generator.prompts import (LOCAL_EXAMPLES, LOCAL_ZONES,
                                                                       local_schema, parse_local_answer)
    from comfyui_twitterchat.tools.persona_generator.stages import SCHEMAS, STAGE_BY_NAME, validate_stage

    for name, example in LOCAL_EXAMPLES.items():  # the worked example fits the grammar's schema...
        jsonschema.validate(example, local_schema(SCHEMAS[name]))
        # ...and, once shaped, the full schema and checks
        validate_stage(name, parse_local_answer(STAGE_BY_NAME[name], json.dumps(example)))
    core = json.loads(parse_local_answer(STAGE_BY_NAME["core_persona"], json.dumps(LOCAL_EXAMPLES["core_persona"])))
    assert core["location"]["country"] == LOCAL_ZONES["Europe/Berlin"] == "DE"
    lines = ["Morning light on the kiln, first bowls cooling.", "Rode along the river before opening up.",
             "Morning light on the kiln, first bowls cooling!", "A customer bought my crooked tea bowl.",
             "Rain again, so glazing day it is today.", "Short.", "My cat sat in the clay bucket again.",
             "Tea class tonight, my own bowls on the tray.", "New brushes from the market, soft as moss.",
             "Late night at the wheel, hands grey to the elbow.", "Packing orders for Osaka this morning."]
    shaped = parse_local_answer(STAGE_BY_NAME["example_posts"], "".join(f"{n}. {line}\n" for n, line in
                                                                        enumerate(lines, 1)))
    posts = validate_stage("example_posts", shaped)["posts"]
    assert posts == [line for index, line in enumerate(lines) if index not in (2, 5)][:8]
