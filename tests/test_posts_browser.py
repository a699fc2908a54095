"""The posts a generator wrote show on its node in ComfyUI's page: the text-only template,
queued from the page against the OpenAI test double, ends with each day's post (the
one saved to tweet.txt) drawn on the Batch Tweet Generator node."""

from __future__ import annotations

import json

import pytest

from browser_harness import chromium, open_comfyui, pack_console_errors, wait_js
from comfyui_harness import cache_root
from pack_paths import EXAMPLES_DIR

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]



@pytest.fixture(scope="module")
def server(llm_comfyui):
    return llm_comfyui


def test_posts_show_on_the_generator_node_after_a_queue_from_the_page(server, tmp_path):
    template = json.loads((EXAMPLES_DIR / "persona_posts.json").read_text(encoding="utf-8"))
    with chromium(tmp_path / "profile") as browser:
        open_comfyui(browser, server.url)
        generator = browser.execute_async_script("""const [graph, done] = arguments;
          app.loadGraphData(graph, true, true, 'persona_posts').then(() => {
            const loader = app.graph.nodes.find((n) => n.type === 'PersonaLoader');
            loader.widgets.find((w) => w.name === 'user_id').value = 'posts_on_canvas';
            const generator = app.graph.nodes.find((n) => n.type === 'BatchTweetGenerator');
            done(generator.id);
          });""", template)
        assert browser.execute_script(
            "return document.querySelectorAll('[data-testid=twitterchat-post]').length") == 0
        browser.execute_script("app.queuePrompt(0, 1)")  # what the Queue button does
        shown = wait_js(browser, """const items = [...document.querySelectorAll('[data-testid=twitterchat-post]')];
          return items.length === 3 && items.map((i) => ({date: i.dataset.date, ok: i.dataset.ok,
            text: i.querySelector('[data-testid=twitterchat-post-text]').textContent}));""",
                        120, "three posts drawn on the generator node")
        on_node = browser.execute_script("""const node = app.graph.getNodeById(arguments[0]);
          return node.twitterchatPosts && node.twitterchatPosts.isConnected &&
                 node.twitterchatPosts.querySelectorAll('[data-testid=twitterchat-post]').length""", generator)
        assert on_node == 3
        folder = cache_root() / "artifacts" / "posts"
        folder.mkdir(parents=True, exist_ok=True)
        browser.execute_script("document.querySelectorAll('.p-dialog-mask').forEach((m) => m.remove());"
                               "app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        browser.save_screenshot(str(folder / "posts_on_node.png"))  # for a person to look at
        # the panel is not a saved widget value
        saved = browser.execute_script("return app.graph.getNodeById(arguments[0]).serialize().widgets_values",
                                       generator)
        assert saved == [3, 0, 5, "auto", 42, "fixed", True]
        assert pack_console_errors(browser) == []
    saved_posts = {folder.name: (folder / "tweet.txt").read_text(encoding="utf-8").rstrip("\n")
                   for folder in (server.output_dir / "posts_on_canvas").iterdir() if folder.name[:2] == "20"}
    assert [s["ok"] for s in shown] == ["true"] * 3
    assert {s["date"]: s["text"] for s in shown} == saved_posts
    assert all(s["text"].startswith(s["date"]) for s in shown)  # the double writes the day it was asked about
