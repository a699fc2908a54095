"""PersonaGenerator in a real ComfyUI: a LoadImage picture and a concept become a card
whose TC_PERSONA feeds the rest of the pipeline, with the LLM behind the
OpenAI-compatible test double."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from comfyui_twitterchat.tools.persona_card import card_from_file
from openai_double import Faults, FakeOpenAIServer
from pack_paths import EXAMPLES_DIR

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

KEY = "sk-e2e-persona-abcdefghijklmnopqrstuvwxyz01"
PIPELINE = json.loads((EXAMPLES_DIR / "api" / "workflow_api.json").read_text())


def generator_workflow(concept: str) -> dict:
    workflow = json.loads(json.dumps(PIPELINE))
    workflow["10"] = {"class_type": "LoadImage", "inputs": {"image": "face.png"}}
    workflow["1"] = {"class_type": "PersonaGenerator", "inputs": {
        "user_id": "gen_001", "language": "English", "llm_profile": "auto", "seed": 1, "regenerate": False,
        "image": ["10", 0], "concept": concept}}
    workflow["4"]["inputs"]["num_days"] = 2
    return workflow


@pytest.fixture(scope="module")
def llm_double():
    server = FakeOpenAIServer(Faults(latency=0.1)).start()
    yield server
    server.stop()


def test_generated_persona_feeds_the_pipeline(comfyui_server_factory, llm_double):
    server = comfyui_server_factory(env={"OPENAI_BASE_URL": llm_double.base_url, "OPENAI_API_KEY": KEY,
                                         "TWITTERCHAT_WEATHER_URL": ""})
    server.input_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1280, 1600), (120, 160, 200)).save(server.input_dir / "face.png")
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
