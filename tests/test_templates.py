"""ComfyUI's Templates browser lists every .json at the top of a pack's examples/ folder:
only UI-format workflows live there, each with its .jpg thumbnail; cards and the
API-format workflow are in subfolders. Checked on the files, on what a real ComfyUI
serves, and by loading each template in ComfyUI's page the way the browser opens it."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from comfyui_twitterchat.nodes import NODE_CLASS_MAPPINGS
from comfyui_twitterchat.service.ui_workflow import is_ui_workflow, ui_to_api
from comfyui_twitterchat.tools.persona_card import card_from_file
from browser_harness import chromium, open_comfyui, pack_console_errors, wait_js
from pack_paths import EXAMPLES_DIR, PERSONAS_DIR

TEMPLATES = ["persona_posts", "persona_posts_with_images"]
MODULE = "comfyui-twitterchat"  # the folder name the harness mounts the pack under


def test_only_ui_workflows_with_thumbnails_at_the_top_of_examples():
    tops = sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))
    assert tops == TEMPLATES
    for stem in tops:
        workflow = json.loads((EXAMPLES_DIR / f"{stem}.json").read_text(encoding="utf-8"))
        assert is_ui_workflow(workflow) and workflow.get("version") is not None, stem
        with Image.open(EXAMPLES_DIR / f"{stem}.jpg") as thumbnail:  # the name the frontend asks for
            assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 256
    # what moved out: the cards and the API-format workflow
    names = [card_from_file(p)["data"]["name"] for p in sorted(PERSONAS_DIR.glob("*.json"))]
    assert "Meilin" in names and all(names)  # every JSON there is a character card
    api = json.loads((EXAMPLES_DIR / "api" / "workflow_api.json").read_text(encoding="utf-8"))
    assert not is_ui_workflow(api) and {n["class_type"] for n in api.values()} <= set(NODE_CLASS_MAPPINGS)


def test_the_text_only_template_is_the_api_example():
    def input_types(class_type):
        cls = NODE_CLASS_MAPPINGS.get(class_type)
        return None if cls is None else cls.INPUT_TYPES()

    converted = ui_to_api(json.loads((EXAMPLES_DIR / "persona_posts.json").read_text(encoding="utf-8")),
                          input_types)
    api = json.loads((EXAMPLES_DIR / "api" / "workflow_api.json").read_text(encoding="utf-8"))
    strip = lambda w: {k: {"class_type": n["class_type"], "inputs": n["inputs"]} for k, n in w.items()}  # noqa: E731
    assert strip(converted) == strip(api)


# -- a real ComfyUI and its page ------------------------------------------------------
@pytest.fixture(scope="module")
def server(comfyui_server_factory):
    return comfyui_server_factory(env={"TWITTERCHAT_WEATHER_URL": ""}, with_probes=False)


@pytest.mark.comfyui
def test_comfyui_serves_the_templates_and_their_thumbnails(server):
    import urllib.request

    listed = server.get_json("/api/workflow_templates")
    assert sorted(listed[MODULE]) == TEMPLATES
    for name in TEMPLATES:
        workflow = server.get_json(f"/api/workflow_templates/{MODULE}/{name}.json")
        assert is_ui_workflow(workflow)
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{MODULE}/{name}.jpg", timeout=30) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and r.read(3) == b"\xff\xd8\xff"


@pytest.mark.comfyui
@pytest.mark.slow
def test_each_template_opens_in_comfyuis_page(server, tmp_path):
    with chromium(tmp_path / "profile") as browser:
        open_comfyui(browser, server.url)
        listed = browser.execute_async_script("""const done = arguments[arguments.length - 1];
          fetch('/api/workflow_templates').then((r) => r.json()).then(done);""")
        assert sorted(listed[MODULE]) == TEMPLATES
        for name in TEMPLATES:
            expected = json.loads((EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))
            # What the Templates browser does with an entry: fetch it from the pack's route, load it.
            opened = browser.execute_async_script("""const [module, name, done] = arguments;
              fetch(`/api/workflow_templates/${module}/${name}.json`).then((r) => r.json())
                .then((data) => app.loadGraphData(data, true, true, name, {showMissingModelsDialog: false}))
                .then(() => done({types: app.graph.nodes.map((n) => n.type).sort(),
                                  links: Object.keys(app.graph.links ?? {}).length || app.graph.links?.size || 0}))
                .catch((error) => done({error: String(error)}));""", MODULE, name)
            assert "error" not in opened, opened
            assert opened["types"] == sorted(n["type"] for n in expected["nodes"]), name
            assert opened["links"] == len(expected["links"]), name
            alerts = browser.execute_script(
                "return [...document.querySelectorAll('.p-toast-message-error, .p-dialog')].map((e) => e.innerText)")
            assert not [a for a in alerts if "valid version" in a or "Invalid workflow" in a], alerts
        assert pack_console_errors(browser) == []
