"""The widgets in a real ComfyUI and a real browser: the lists ComfyUI serves, a free-text
value from an old workflow refused at validation by name (a pasted key never repeated),
a card file edited between two queues read again, 'regenerate' planning again on a
re-queue, and in ComfyUI's page: lists instead of text boxes, seeds that stay fixed,
and a card uploaded with the node's button."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request

import pytest

from browser_harness import chromium, open_comfyui, pack_console_errors, wait_js
from pack_paths import PERSONAS_DIR

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

PASTED_KEY = "sk-proj-pasted-into-a-widget-0123456789abcdef"
CARD = json.loads((PERSONAS_DIR / "tea_girl_meilin.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server(llm_comfyui):
    return llm_comfyui


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def workflow(**params) -> dict:
    from comfyui_twitterchat.service.templates import build_workflow

    return build_workflow("persona_posts", {"persona_file": "tea_girl_meilin.json", "user_id": "widgets_user",
                                            "num_days": 1, "start_day_offset": 0, "llm_profile": "openai",
                                            **params})


def post_prompt(server, prompt: dict) -> tuple[int, str]:
    request = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def run(server, prompt: dict) -> dict:
    entry = server.wait_for_history(server.queue_prompt(prompt), timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


def cached_nodes(entry: dict) -> set[str]:
    return {node for event, data in entry["status"]["messages"] if event == "execution_cached"
            for node in data["nodes"]}


def write_card(path, description: str) -> None:
    card = copy.deepcopy(CARD)
    card["data"]["description"] = description
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card), encoding="utf-8")


def test_comfyui_serves_lists_of_cards_and_profiles(server):
    write_card(server.input_dir / "personas" / "listed.json", "Listed.")
    info = server.get_json("/object_info/PersonaLoader")["PersonaLoader"]["input"]["required"]
    from comfyui_twitterchat.tools.persona_choices import cards_in
    from pack_paths import PACK_ROOT

    shipped = cards_in(PACK_ROOT / "examples" / "personas")
    assert "tea_girl_meilin.json" in shipped
    assert info["persona_file"][0] == [*shipped, "personas/listed.json"]
    assert info["persona_file"][1]["tooltip"]
    for node in ("CalendarManager", "BatchTweetGenerator", "TweetGenerator"):
        spec = server.get_json(f"/object_info/{node}")[node]["input"]["required"]["llm_profile"]
        assert spec[0] == ["auto", "local", "openai"] and spec[1]["default"] == "auto"


def test_a_pasted_key_in_an_old_workflow_is_refused_without_being_repeated(server):
    prompt = workflow()
    for node in prompt.values():
        if "llm_profile" in node["inputs"]:
            node["inputs"]["llm_profile"] = PASTED_KEY
    status, body = post_prompt(server, prompt)
    assert status == 400
    answer = json.loads(body)
    details = [e["details"] for n in answer["node_errors"].values() for e in n["errors"]]
    assert len(details) == 2 and all("not a configured LLM profile" in d and "auto, local, openai" in d
                                     for d in details), details
    assert PASTED_KEY not in body and PASTED_KEY not in server.log_text()


def test_an_unknown_card_is_refused_by_name(server):
    status, body = post_prompt(server, workflow(persona_file="gone_missing.json"))
    assert status == 400
    assert "'gone_missing.json' not found" in body and "upload" in body


def test_an_edited_card_file_is_read_again_on_the_next_queue(server, llm_double):
    card = server.input_dir / "personas" / "edited.json"
    write_card(card, "Before the edit.")
    prompt = workflow(persona_file="personas/edited.json", user_id="edited_card")
    loader = next(k for k, n in prompt.items() if n["class_type"] == "PersonaLoader")
    run(server, prompt)
    assert loader in cached_nodes(run(server, prompt))  # unchanged file: ComfyUI's cache answers
    write_card(card, "After the edit.")
    asked = len(llm_double.requests)
    entry = run(server, prompt)
    assert loader not in cached_nodes(entry)
    systems = [m["content"] for r in llm_double.requests[asked:] for m in r["messages"] if m["role"] == "system"]
    assert systems and all("After the edit." in s and "Before the edit." not in s for s in systems)


def test_regenerate_plans_again_on_every_queue(server, llm_double):
    prompt = workflow(user_id="regenerating")
    manager = next(k for k, n in prompt.items() if n["class_type"] == "CalendarManager")
    prompt[manager]["inputs"]["regenerate"] = True

    def plans() -> int:
        return sum(1 for r in llm_double.requests
                   if (r.get("response_format") or {}).get("json_schema", {}).get("name") == "content_calendar")

    before = plans()
    first = run(server, prompt)
    second = run(server, prompt)
    assert manager not in cached_nodes(first) | cached_nodes(second)
    assert plans() == before + 2
    prompt[manager]["inputs"]["regenerate"] = False
    run(server, prompt)
    entry = run(server, prompt)
    assert manager in cached_nodes(entry) and plans() == before + 2  # the month is cached on disk


def add_node(driver, node_type: str) -> int:
    return driver.execute_script(
        "const n = LiteGraph.createNode(arguments[0]); app.graph.add(n); return n.id;", node_type)


def widgets(driver, node_id: int) -> dict:
    return driver.execute_script("""
      const n = app.graph.getNodeById(arguments[0]);
      return Object.fromEntries(n.widgets.map((w) => [w.name, {type: w.type, value: w.value,
        values: Array.isArray(w.options?.values) ? [...w.options.values] : null}]));""", node_id)


def test_in_the_browser_lists_fixed_seeds_and_a_card_upload(server, browser, tmp_path):
    open_comfyui(browser, server.url)
    loader = add_node(browser, "PersonaLoader")
    shown = widgets(browser, loader)
    assert shown["persona_file"]["type"] == "combo" and "tea_girl_meilin.json" in shown["persona_file"]["values"]
    assert shown["persona_file"]["value"] == "tea_girl_meilin.json"
    assert shown["upload_card"]["type"] == "button"
    for node_type in ("CalendarManager", "BatchTweetGenerator"):
        shown = widgets(browser, add_node(browser, node_type))
        assert shown["llm_profile"]["type"] == "combo"
        assert shown["llm_profile"]["values"] == ["auto", "local", "openai"]
        assert shown["control_after_generate"]["value"] == "fixed"  # a queue does not change the seed
    # A saved workflow keeps the seed control it saved.
    saved = browser.execute_script("""
      const n = LiteGraph.createNode('BatchTweetGenerator'); app.graph.add(n);
      n.configure({...n.serialize(), widgets_values: [3, 0, 5, 'auto', 7, 'randomize', true]});
      return n.widgets.find((w) => w.name === 'control_after_generate').value""")
    assert saved == "randomize"

    # Upload a card with the node's button: it lands in input/personas/ and becomes the choice.
    card = tmp_path / "uploaded card.json"
    write_card(card, "Uploaded from the browser.")
    browser.execute_script("""const n = app.graph.getNodeById(arguments[0]);
                              n.widgets.find((w) => w.name === 'upload_card').callback();""", loader)
    chooser = browser.find_element("css selector", "input[data-testid=twitterchat-card-upload]")
    chooser.send_keys(str(card))
    wait_js(browser, """const n = app.graph.getNodeById(arguments[0]);
                        return n.widgets.find((w) => w.name === 'persona_file').value === 'personas/uploaded card.json'""",
            30, "the uploaded card to become the node's choice", (loader,))
    assert json.loads((server.input_dir / "personas" / "uploaded card.json").read_text())["data"]["description"] \
        == "Uploaded from the browser."
    assert "personas/uploaded card.json" in widgets(browser, loader)["persona_file"]["values"]
    # The button is not a saved widget value (values map to inputs by position).
    assert browser.execute_script("return app.graph.getNodeById(arguments[0]).serialize().widgets_values",
                                  loader) == ["file", "personas/uploaded card.json", "", "meilin_001"]
    assert pack_console_errors(browser) == []


def test_an_old_workflow_with_free_text_values_loads_and_is_refused_by_name(server, browser):
    """A workflow saved before the lists still opens with its values; queueing it shows
    ComfyUI's validation error naming the problem, never the pasted key."""
    from pack_paths import EXAMPLES_DIR

    old = json.loads((EXAMPLES_DIR / "persona_posts.json").read_text(encoding="utf-8"))
    for node in old["nodes"]:
        if node["type"] in ("CalendarManager", "BatchTweetGenerator"):
            values = node["widgets_values"]
            values[values.index("auto")] = PASTED_KEY
    open_comfyui(browser, server.url)
    loaded = browser.execute_async_script("""const [graph, done] = arguments;
      app.loadGraphData(graph, true, true, 'old').then(() => done(app.graph.nodes
        .filter((n) => n.widgets?.some((w) => w.name === 'llm_profile'))
        .map((n) => n.widgets.find((w) => w.name === 'llm_profile').value)));""", old)
    assert loaded == [PASTED_KEY, PASTED_KEY]  # opened as saved (the user decides what to pick)
    browser.execute_script("app.queuePrompt(0, 1)")
    shown = wait_js(browser, """const text = [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText).join('\\n');
                                return text.includes('not a configured LLM profile') && text""",
                    60, "ComfyUI's validation error")
    assert "auto, local, openai" in shown
    assert PASTED_KEY not in browser.execute_script("return document.body.innerText")
    browser.execute_script("document.querySelectorAll('.p-dialog-mask').forEach((m) => m.remove())")
