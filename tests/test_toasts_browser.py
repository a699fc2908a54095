"""The monitor's failure toast is a ComfyUI setting, off by default: ComfyUI's own dialog
reports the failures of prompts this browser queued, and the monitor's events reach every
browser. 'prompts queued elsewhere' toasts only the others; 'all prompts' toasts every one."""

from __future__ import annotations

import json
import urllib.request

import pytest

from browser_harness import chromium, open_comfyui, pack_console_errors, wait_js
from pack_paths import EXAMPLES_DIR

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

SETTING = "TwitterChat.Monitor.FailureToasts"


@pytest.fixture(scope="module")
def server(comfyui_server_factory):
    # No endpoint is needed: the prompts fail in the PersonaLoader, before any LLM call.
    return comfyui_server_factory(env={"TWITTERCHAT_WEATHER_URL": "", "KY_MONITOR_FREQUENCY_SECONDS": "0.2"},
                                  with_probes=False)


def failing_elsewhere(server) -> str:
    """A prompt queued by another client (no client id) that fails when it runs."""
    from comfyui_twitterchat.service.templates import build_workflow

    workflow = build_workflow("persona_posts", {"persona_file": "tea_girl_meilin.json", "user_id": "../escape",
                                                "num_days": 1, "start_day_offset": 0, "llm_profile": "auto"})
    request = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": workflow}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["prompt_id"]


def failing_here(browser) -> str:
    """The same failing prompt queued from this page; its id, once the monitor reported it failed."""
    known = browser.execute_script("return [...window.__failed]")
    browser.execute_script("""
      app.graph.nodes.find((n) => n.type === 'PersonaLoader').widgets.find((w) => w.name === 'user_id').value = '../escape';
      app.queuePrompt(0, 1);""")
    return wait_js(browser, "const n = window.__failed.filter((id) => !arguments[0].includes(id)); return n[0]",
                   60, "the monitor to report the page's prompt failed", (known,))


def wait_failed(browser, prompt_id: str) -> None:
    wait_js(browser, "return window.__failed.includes(arguments[0])", 60,
            f"the monitor's failed event for {prompt_id[:8]}", (prompt_id,))


def toasted(browser) -> list[str]:
    return browser.execute_script(
        "return window.__toasts.filter((t) => t.summary === 'TwitterChat monitor').map((t) => t.detail)")


def set_mode(browser, value: str) -> None:
    browser.execute_async_script("const [id, value, done] = arguments;"
                                 "Promise.resolve(app.extensionManager.setting.set(id, value)).then(() => done(true));",
                                 SETTING, value)


def test_failure_toasts_follow_the_setting(server, tmp_path):
    template = json.loads((EXAMPLES_DIR / "persona_posts.json").read_text(encoding="utf-8"))
    with chromium(tmp_path / "profile") as browser:
        open_comfyui(browser, server.url)
        assert browser.execute_script("return app.extensionManager.setting.get(arguments[0])", SETTING) == "off"
        browser.execute_async_script("""const [graph, done] = arguments;
          window.__toasts = []; window.__failed = [];
          const toast = app.extensionManager.toast, add = toast.add.bind(toast);
          toast.add = (t) => { window.__toasts.push(t); return add(t); };
          app.api.addEventListener('twitterchat.monitor', ({detail}) => {
            if (detail.status === 'failed' && !window.__failed.includes(detail.id)) window.__failed.push(detail.id); });
          app.loadGraphData(graph, true, true, 'persona_posts').then(() => done(true));""", template)

        # Off (the default): nobody's failure is toasted.
        other = failing_elsewhere(server)
        wait_failed(browser, other)
        mine = failing_here(browser)
        assert toasted(browser) == []

        # Only prompts queued elsewhere.
        set_mode(browser, "prompts queued elsewhere")
        other = failing_elsewhere(server)
        wait_failed(browser, other)
        mine = failing_here(browser)
        shown = toasted(browser)
        assert len(shown) == 1 and shown[0].startswith(f"Prompt {other[:8]} failed in PersonaLoader")
        assert not any(mine[:8] in t for t in shown)  # ComfyUI's own dialog reports this one

        # Every prompt.
        set_mode(browser, "all prompts")
        mine = failing_here(browser)
        assert any(t.startswith(f"Prompt {mine[:8]} failed") for t in toasted(browser))
        assert pack_console_errors(browser) == []
