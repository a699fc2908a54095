"""PersonaGenerator in a real ComfyUI: a LoadImage picture and a concept become a card
whose TC_PERSONA feeds the rest of the pipeline, with the LLM behind the
OpenAI-compatible test double."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from comfyui_twitterchat.tools.persona_card import card_from_file
from collectors import WebsocketCollector, wait_for
from openai_double import Faults, FakeOpenAIServer
from pack_paths import EXAMPLES_DIR
from service_harness import API, call, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

KEY = "sk-e2e-persona-abcdefghijklmnopqrstuvwxyz01"
PIPELINE = json.loads((EXAMPLES_DIR / "api" / "workflow_api.json").read_text())


def generator_workflow(concept: str, user_id: str = "gen_001") -> dict:
    workflow = json.loads(json.dumps(PIPELINE))
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "face.png"}}
    workflow["1"] = {"class_type": "PersonaGenerator", "inputs": {
        "user_id": user_id, "language": "English", "llm_profile": "auto", "seed": 1, "regenerate": False,
        "image": ["10", 0], "concept": concept}}
    workflow["4"]["inputs"]["num_days"] = 2
    return workflow


@pytest.fixture(scope="module")
def llm_double():
    server = FakeOpenAIServer(Faults(latency=0.1)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(comfyui_server_factory, llm_double):
    comfy = comfyui_server_factory(env={"OPENAI_BASE_URL": llm_double.base_url, "OPENAI_API_KEY": KEY,
                                        "TWITTERCHAT_WEATHER_URL": ""})
    comfy.input_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1280, 1600), (120, 160, 200)).save(comfy.input_dir / "face.png")
    return comfy


def test_generated_persona_feeds_the_pipeline(server, llm_double):
    prompt_id = server.queue_prompt(generator_workflow("A lighthouse keeper who knits."))
    entry = server.wait_for_history(prompt_id, 180)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    folder = server.output_dir / "gen_001" / "persona"
    card = card_from_file(folder / "gen_001.png")
    assert card == card_from_file(folder / "gen_001.json")
    assert sorted(p.name for p in (folder / "stages").glob("*.json")) == [
        "01_core_persona.json", "02_posting_strategy.json", "03_example_posts.json", "04_social_network.json",
        "05_authenticity.json", "06_visual_profile.json", "07_knowledge_book.json"]
    days = [p for p in (server.output_dir / "gen_001").iterdir() if p.is_dir() and p.name[:2] == "20"]
    assert len(days) == 2
    for day in days:
        assert json.loads((day / "metadata.json").read_text())["persona_name"] == card["data"]["name"]
    # the IMAGE tensor reached the model as one downscaled image part, on the two stages that look
    seen = [c for c in llm_double.calls if c["image_parts"]]
    assert sorted(c["schema"] for c in seen) == ["core_persona", "visual_profile"]
    assert card["data"]["extensions"]["twitterchat"]["visual_profile"]["source"] == "image"
    assert KEY not in json.dumps(card) and KEY not in server.log_text()


SLOW_POSTS = 8.0  # the example posts stage answers this late: Cancel must not wait for it


def test_cancel_stops_between_stages_shows_stage_progress_and_the_rerun_resumes(server, llm_double):
    llm_double.faults.stage_latency = {"example_posts": SLOW_POSTS}
    workflow = generator_workflow("A ferry captain who paints seagulls.", user_id="gen_cancel")
    progress = WebsocketCollector(server.url, "progress")  # ComfyUI's own progress messages
    try:
        status, answer, _ = call(server.url, "POST", f"{API}/tasks", {"workflow": workflow})
        assert status == 202, answer
        task_id = answer["task_id"]

        def waiting_for_posts():
            steps = [(m["value"], m["max"]) for m in progress.messages
                     if m.get("node") == "1" and m.get("prompt_id") == task_id]
            return any(c["schema"] == "example_posts" and c["ended"] is None for c in llm_double.calls) and \
                steps[-1:] == [(6, 7)]

        # the node's bar counts stages: 6 of 7 done while the example posts are being written
        assert wait_for(waiting_for_posts, 60, 0.1), progress.messages[-5:]
        assert [m["value"] for m in progress.messages if m.get("node") == "1"
                and m.get("prompt_id") == task_id] == [1, 2, 3, 4, 5, 6]
    finally:
        progress.stop()
    started = time.monotonic()
    server.post_json("/interrupt", {})  # ComfyUI's Cancel button
    final = wait_final(server.url, [task_id], timeout=30)[task_id]
    assert final["status"] == "cancelled", final
    assert time.monotonic() - started < SLOW_POSTS / 2, "Cancel waited for the stage's LLM call"
    stages = server.output_dir / "gen_cancel" / "persona" / "stages"
    assert sorted(p.name for p in stages.glob("*.json")) == [
        "01_core_persona.json", "02_posting_strategy.json", "04_social_network.json", "05_authenticity.json",
        "06_visual_profile.json", "07_knowledge_book.json"]

    llm_double.faults.stage_latency = {}
    before = len(llm_double.calls)
    entry = server.wait_for_history(server.queue_prompt(workflow), 180)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    asked = [c["schema"] for c in llm_double.calls[before:] if c["schema"] != "content_calendar"
             and c["schema"] is not None]
    assert asked == ["example_posts"]  # the other six stages came from their checkpoints
    assert (server.output_dir / "gen_cancel" / "persona" / "gen_cancel.png").is_file()
