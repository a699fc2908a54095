"""examples/api/workflow_api.json queued over HTTP on a real ComfyUI, with the LLM
behind the local OpenAI-compatible test double; security checks on the results."""

from __future__ import annotations

import copy
import json

import pytest

from openai_double import Faults, FakeOpenAIServer
from pack_paths import EXAMPLES_DIR

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

KEY = "sk-e2e-secret-abcdefghijklmnopqrstuvwxyz0123"
WORKFLOW = json.loads((EXAMPLES_DIR / "api" / "workflow_api.json").read_text())


@pytest.fixture(scope="module")
def llm_double():
    server = FakeOpenAIServer(Faults(latency=0.2)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pipeline_comfyui(comfyui_server_factory, llm_double, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    server = comfyui_server_factory(env={
        "OPENAI_BASE_URL": llm_double.base_url, "OPENAI_API_KEY": KEY, "TWITTERCHAT_WEATHER_URL": "",
        "TWITTERCHAT_LOG_DIR": str(logs), "TWITTERCHAT_LOG_LEVEL": "DEBUG"})
    server.log_dir = logs
    return server


def all_text_under(folder) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_api_example_writes_one_folder_per_day(pipeline_comfyui, llm_double):
    server = pipeline_comfyui
    prompt_id = server.queue_prompt(WORKFLOW)
    entry = server.wait_for_history(prompt_id, 180)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    user_dir = server.output_dir / "meilin_001"
    days = sorted(p for p in user_dir.iterdir() if p.is_dir() and p.name != "calendars")
    assert len(days) == 3
    for folder in days:
        assert sorted(f.name for f in folder.iterdir()) == ["metadata.json", "scene_hint.txt", "tweet.txt"]
        metadata = json.loads((folder / "metadata.json").read_text())
        assert set(metadata) == {"user_id", "persona_name", "date", "generated_at", "workflow_id", "content", "lora"}
        assert metadata["user_id"] == "meilin_001" and metadata["persona_name"] == "Meilin"
        assert metadata["date"] == folder.name and metadata["workflow_id"] == prompt_id
        tweet = (folder / "tweet.txt").read_text().strip()
        assert metadata["content"]["tweet_text"] == tweet and 0 < metadata["content"]["tweet_length"] <= 280
        assert metadata["content"]["scene_hint"] == (folder / "scene_hint.txt").read_text().strip()
        assert metadata["lora"] == {"model": "meilin_v1.safetensors", "weight": 0.8}
    month = days[0].name[:7]
    assert (user_dir / "calendars" / f"{month}.json").is_file()
    assert llm_double.peak_in_flight > 1  # the three days were written concurrently

    # a second run keeps the first: new folders, calendar from the cache
    calendar_calls = sum(1 for r in llm_double.requests if r.get("response_format"))
    second = server.wait_for_history(server.queue_prompt(copy.deepcopy(WORKFLOW) | {
        "4": {**WORKFLOW["4"], "inputs": {**WORKFLOW["4"]["inputs"], "seed": 7}}}), 180)
    assert second["status"]["status_str"] == "success"
    names = sorted(p.name for p in user_dir.iterdir() if p.is_dir() and p.name != "calendars")
    assert names == sorted([d.name for d in days] + [f"{d.name}_2" for d in days])
    assert sum(1 for r in llm_double.requests if r.get("response_format")) == calendar_calls
    for folder in days:  # untouched
        assert json.loads((folder / "metadata.json").read_text())["workflow_id"] == prompt_id

    # the API key was used, and is nowhere in outputs, logs, history or the workflow
    assert f"Bearer {KEY}" in llm_double.auth_headers
    history = json.dumps(server.get_json("/history"))
    for text in (all_text_under(server.output_dir), server.log_text(), all_text_under(server.log_dir), history):
        assert KEY not in text
    assert "generation" in all_text_under(server.log_dir)  # the JSON-lines log was written


@pytest.mark.parametrize("field, value, message, stage", [
    ("user_id", "../../escaped", "user_id", "run"),
    ("user_id", "/tmp/abs", "user_id", "run"),
    # persona_file is a list: a name outside it is refused when the prompt is validated
    ("persona_file", "../../../../etc/passwd", "outside", "validation"),
    ("persona_file", "/etc/passwd", "absolute", "validation"),
])
def test_path_traversal_is_refused_and_writes_nothing(pipeline_comfyui, field, value, message, stage):
    server = pipeline_comfyui
    before = sorted(str(p) for p in server.work_dir.rglob("*"))
    workflow = copy.deepcopy(WORKFLOW)
    workflow["1"]["inputs"][field] = value
    if stage == "validation":
        with pytest.raises(RuntimeError, match=r"refused \(400\)") as refused:
            server.queue_prompt(workflow)
        assert "PersonaLoader" in str(refused.value) and message in str(refused.value)
    else:
        entry = server.wait_for_history(server.queue_prompt(workflow), 60)
        assert entry["status"]["status_str"] == "error"
        error = [d for e, d in entry["status"]["messages"] if e == "execution_error"][0]
        assert error["node_type"] == "PersonaLoader" and message in error["exception_message"]
    after = sorted(str(p) for p in server.work_dir.rglob("*") if "comfyui.log" not in str(p))
    assert [p for p in after if p not in before] == []
    assert not (server.work_dir.parent / "escaped").exists()


def test_output_manager_saves_the_image_it_is_given(pipeline_comfyui):
    """OutputManager's image path, with a core node making the image (one per day: the single
    image is repeated for each day of the list)."""
    from PIL import Image

    server = pipeline_comfyui
    workflow = copy.deepcopy(WORKFLOW)
    workflow["1"]["inputs"]["user_id"] = "with_image"
    workflow["6"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                           "color": 0xFF8800}}
    workflow["5"]["inputs"]["image"] = ["6", 0]
    entry = server.wait_for_history(server.queue_prompt(workflow), 180)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    days = sorted(p for p in (server.output_dir / "with_image").iterdir() if p.name != "calendars")
    assert len(days) == 3
    for folder in days:
        assert sorted(f.name for f in folder.iterdir()) == ["image.png", "metadata.json", "scene_hint.txt",
                                                            "tweet.txt"]
        with Image.open(folder / "image.png") as image:
            assert image.size == (64, 48) and image.getpixel((10, 10))[:3] == (0xFF, 0x88, 0x00)

