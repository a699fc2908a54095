"""The dashboard page in a real browser (Debian's chromium + chromedriver, driven
by Selenium, headless) against a real ComfyUI with the pack and the probe nodes.

Tasks go queued -> running (a progress bar between 0 and 100) -> completed live,
without a reload; a running task is cancelled while the others go on; a failed
task shows its error; a persona_posts batch submitted from the form ends with its
post text; a pasted workflow list makes a batch that shows progress and is
cancelled; a refused workflow shows its node_errors next to the field; the event
stream resumes with Last-Event-ID after a gap; a reload shows the same state; the
page has no horizontal scroll at 1440 and 390 px and no console errors; ComfyUI's
own UI offers the entry that opens it; a server with a token asks for it once.

Screenshots are saved to ``$TWITTERCHAT_TEST_ARTIFACTS`` (default
``~/.cache/comfyui-twitterchat/artifacts/dashboard``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser_harness import chromium, wait_js
from comfyui_harness import cache_root
from openai_double import Faults, FakeOpenAIServer
from service_harness import API, call, probe_workflow, wait_final

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

KEY = "sk-dashboard-test-abcdefghijklmnopqrstuvwxyz0123"
TOKEN = "dashboard-test-token-0123456789"
FINAL = ("completed", "failed", "cancelled")
# Every probe workflow gets its own width, so ComfyUI never answers one from its cache.
_widths = itertools.count(16 + int(time.time()) % 4000)


def probe(**kwargs) -> dict:
    return probe_workflow(width=next(_widths), **kwargs)


# -- fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm_double():
    server = FakeOpenAIServer(Faults(latency=0.02)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(comfyui_server_factory, llm_double):
    return comfyui_server_factory(env={"OPENAI_BASE_URL": llm_double.base_url, "OPENAI_API_KEY": KEY,
                                       "TWITTERCHAT_WEATHER_URL": ""})


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("TWITTERCHAT_TEST_ARTIFACTS") or cache_root() / "artifacts" / "dashboard")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


# -- helpers ------------------------------------------------------------------------
def console_errors(driver, allowed: tuple[tuple[str, int], ...] = ()) -> list[str]:
    """SEVERE browser log entries, minus the HTTP statuses a test provoked on purpose
    (``(path fragment, status)`` pairs)."""
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = entry["message"]
        if any(fragment in message and f"status of {status}" in message for fragment, status in allowed):
            continue
        errors.append(message)
    return errors


def open_dashboard(driver, base_url: str, width: int = 1440, height: int = 1000) -> None:
    driver.set_window_size(width, height)
    driver.get(base_url + "/twitterchat/dashboard")
    wait_js(driver, "return document.documentElement.dataset.ready === 'true'", 30, "the page to start")
    wait_js(driver, "return document.querySelector('[data-testid=connection]').dataset.state === 'live'", 20,
            "the connection indicator to show live")
    # A marker that only survives if the page is never reloaded.
    driver.execute_script("window.__noReload = true;")


def record_rows(driver) -> None:
    """Record every status and progress value each task row shows (a MutationObserver)."""
    driver.execute_script("""
      window.__seen = {};
      const body = document.querySelector('[data-testid=tasks] tbody');
      const note = (tr) => {
        if (!tr || !tr.dataset || !tr.dataset.taskId) return;
        const bar = tr.querySelector('[role=progressbar]');
        (window.__seen[tr.dataset.taskId] ||= []).push([tr.dataset.status, Number(bar && bar.getAttribute('aria-valuenow'))]);
      };
      for (const tr of body.querySelectorAll('tr[data-task-id]')) note(tr);
      new MutationObserver((changes) => {
        for (const change of changes) {
          note(change.target.closest && change.target.closest('tr[data-task-id]'));
          for (const node of change.addedNodes) if (node.matches && node.matches('tr[data-task-id]')) note(node);
        }
      }).observe(body, {subtree: true, childList: true, attributes: true,
                        attributeFilter: ['data-status', 'aria-valuenow']});
    """)


def row_status(driver, task_id: str) -> str | None:
    return driver.execute_script(
        "const tr = document.querySelector(`[data-testid=task-row][data-task-id='${arguments[0]}']`);"
        "return tr ? tr.dataset.status : null;", task_id)


def wait_row(driver, task_id: str, statuses: tuple[str, ...], timeout: float = 60.0) -> str:
    return wait_js(driver, f"""
      const tr = document.querySelector("[data-testid=task-row][data-task-id='{task_id}']");
      return tr && {json.dumps(list(statuses))}.includes(tr.dataset.status) ? tr.dataset.status : null;""",
                   timeout, f"task {task_id[:8]} to show {'/'.join(statuses)}")


def click(driver, selector: str) -> None:
    element = driver.find_element("css selector", selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def detail_when_final(driver) -> dict:
    """Once the open detail dialog's timeline reached a final state: what it shows."""
    wait_js(driver, f"""const items = [...document.querySelectorAll('[data-testid=task-detail] [data-testid=timeline] li')];
                        return items.length > 0 && {json.dumps(list(FINAL))}.includes(items[items.length - 1].dataset.status)""",
            15, "the detail's timeline to reach a final state")
    return driver.execute_script("""const d = document.querySelector('[data-testid=task-detail]');
      const all = (s) => [...d.querySelectorAll(s)].map((e) => e.innerText);
      return {status: d.dataset.status, posts: all('[data-testid=post-text]'), scenes: all('[data-testid=post-scene]'),
              timeline: [...d.querySelectorAll('[data-testid=timeline] li')].map((li) => li.dataset.status)}""")


def submit_task(server, body: dict, headers: dict | None = None) -> str:
    status, answer, _ = call(server.url, "POST", f"{API}/tasks", body, headers=headers)
    assert status == 202, answer
    return answer["task_id"]


def no_horizontal_scroll(driver) -> tuple[int, int]:
    return tuple(driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]"))


# -- tests --------------------------------------------------------------------------
def fetch_raw(url: str) -> tuple[int, str, str]:
    """(status, content type, text) of a GET; HTTP errors are answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


def test_the_page_and_its_files_are_served_and_nothing_else(server):
    status, kind, page = fetch_raw(server.url + "/twitterchat/dashboard")
    assert status == 200 and kind.startswith("text/html")
    assert 'src="dashboard/static/main.js"' in page
    assert "http://" not in page and "https://" not in page  # nothing from another host
    status, kind, script = fetch_raw(server.url + "/twitterchat/dashboard/static/main.js")
    assert status == 200 and kind.startswith("text/javascript") and "EventStream" in script
    for path in ("static/__init__.py", "static/..%2F__init__.py", "static/%2e%2e%2f%2e%2e%2fconfig.json",
                 "static/", "static/missing.js", "static/.%2e/__init__.py"):
        status, _, body = fetch_raw(f"{server.url}/twitterchat/dashboard/{path}")
        assert status == 404 and "import" not in body, path


def test_tasks_appear_live_run_with_progress_complete_and_one_running_task_is_cancelled(server, browser, artifacts):
    open_dashboard(browser, server.url)
    record_rows(browser)
    ids = [submit_task(server, {"workflow": probe(seconds=2.4, steps=12)}) for _ in range(3)]
    for task_id in ids:  # each appears without a reload, in progress
        wait_row(browser, task_id, ("queued", "running", "completed"), 20)
    # The first one runs: its bar is strictly between 0 and 100 at some point.
    wait_js(browser, f"""return (window.__seen['{ids[0]}'] || []).some(([s, v]) => s === 'running' && v > 0 && v < 100)""",
            30, "a running row with a progress bar between 0 and 100")
    browser.save_screenshot(str(artifacts / "dashboard-running-1440.png"))
    # Cancel the second one while it runs; the others go on.
    wait_row(browser, ids[1], ("running",), 40)
    click(browser, f"[data-task-id='{ids[1]}'] [data-testid=task-cancel]")
    assert wait_row(browser, ids[1], ("cancelled",), 30) == "cancelled"
    assert wait_row(browser, ids[0], FINAL, 40) == "completed"
    assert wait_row(browser, ids[2], FINAL, 60) == "completed"
    seen = browser.execute_script("return window.__seen")
    for task_id in ids:
        statuses = [s for s, _ in seen[task_id]]
        # In progress in every non-final state until the final one; never a final state and back.
        first_final = next(i for i, s in enumerate(statuses) if s in FINAL)
        assert all(s in ("queued", "running") for s in statuses[:first_final]), statuses
        assert all(s == statuses[first_final] for s in statuses[first_final:]), statuses
    assert "running" in [s for s, _ in seen[ids[0]]]
    # A final row has no cancel button; the page was never reloaded; the API agrees.
    assert not browser.find_elements("css selector", f"[data-task-id='{ids[0]}'] [data-testid=task-cancel]")
    assert browser.execute_script("return window.__noReload === true")
    final = wait_final(server.url, ids, timeout=10)
    assert [final[t]["status"] for t in ids] == ["completed", "cancelled", "completed"]
    # The finished task's image is a thumbnail through ComfyUI's /view.
    click(browser, f"[data-task-id='{ids[0]}'] [data-testid=task-open]")
    image = final[ids[0]]["outputs"][0]
    source = wait_js(browser, """const img = document.querySelector('[data-testid=task-detail] [data-testid=output-image]');
                                 return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src')""",
                     10, "the output thumbnail to load")
    assert source == server.url + image["url"]
    browser.find_element("css selector", "[data-testid=task-detail] [data-testid=task-detail-close]").click()
    assert console_errors(browser) == []


def test_a_failed_task_shows_its_error_in_the_detail_dialog_by_keyboard(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    open_dashboard(browser, server.url)
    task_id = submit_task(server, {"workflow": probe(seconds=0.1, steps=2, fail="the probe failed on purpose")})
    assert wait_row(browser, task_id, FINAL, 60) == "failed"
    opener = browser.find_element("css selector", f"[data-task-id='{task_id}'] [data-testid=task-open]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", opener)
    opener.send_keys(Keys.ENTER)
    wait_js(browser, "return document.querySelector('[data-testid=task-detail]').open", 10, "the dialog to open")
    # The timeline is the task's own events, from its first one to the final one.
    wait_js(browser, """const items = [...document.querySelectorAll('[data-testid=task-detail] [data-testid=timeline] li')];
                        return items.length >= 2 && items[0].dataset.status === 'queued'
                               && items[items.length - 1].dataset.status === 'failed'""", 10, "the timeline")
    shown = browser.execute_script("""const d = document.querySelector('[data-testid=task-detail]');
      const text = (s) => d.querySelector(s)?.innerText;
      return {error: text('[data-testid=task-error]'), node: text('[data-testid=error-node]'),
              frames: [...d.querySelectorAll('[data-testid=error-frames] pre')].map((p) => p.innerText)}""")
    assert "ValueError" in shown["error"] and "the probe failed on purpose" in shown["error"]
    assert shown["node"] == "TCProbeFail #3"
    frames = shown["frames"]
    assert len(frames) == 2 and "innermost" in frames[-1] and "raise ValueError" in frames[-1]
    # Escape closes it and gives the focus back to the row's Open button.
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_js(browser, "return !document.querySelector('[data-testid=task-detail]').open", 15, "the dialog to close")
    assert browser.execute_script(
        "return document.activeElement && document.activeElement.dataset.testid === 'task-open'"
        " && document.activeElement.closest('tr').dataset.taskId === arguments[0]", task_id)
    # The Close button closes it too.
    click(browser, f"[data-task-id='{task_id}'] [data-testid=task-open]")
    wait_js(browser, "return document.querySelector('[data-testid=task-detail]').open", 10)
    browser.find_element("css selector", "[data-testid=task-detail] [data-testid=task-detail-close]").click()
    wait_js(browser, "return !document.querySelector('[data-testid=task-detail]').open", 15, "Close to close")
    # The status filter shows failed tasks only, and says so in the address.
    status_filter = Select(browser.find_element("css selector", "[data-testid=task-filters] select[name=status]"))
    status_filter.select_by_value("failed")
    wait_js(browser, """const rows = [...document.querySelectorAll('[data-testid=task-row]')];
                        return rows.length > 0 && rows.every((r) => r.dataset.status === 'failed')
                               && rows.some((r) => r.dataset.taskId === arguments[0])""", 10,
            "only failed rows", (task_id,))
    assert browser.current_url.endswith("#status=failed")
    status_filter.select_by_value("")
    wait_js(browser, "return [...document.querySelectorAll('[data-testid=task-row]')].some((r) => r.dataset.status !== 'failed')",
            10, "all rows again")
    # Tab reaches the forms, the filters and the row buttons.
    browser.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    wanted = {"task-open", "status", "batch", "name", "personas", "num_days", "workflow", "monitor-refresh"}
    reached = set()
    keyboard = ActionChains(browser)
    for _ in range(300):
        keyboard.send_keys(Keys.TAB).perform()
        reached.add(browser.execute_script(
            "const e = document.activeElement; return e ? (e.dataset.testid || e.name || e.id || e.tagName) : ''"))
        if wanted <= reached:
            break
    assert wanted <= reached, reached
    assert console_errors(browser) == []


def test_a_persona_posts_batch_from_the_form_finishes_with_its_posts(server, browser, artifacts):
    open_dashboard(browser, server.url)
    form = browser.find_element("css selector", "[data-testid=batch-form]")
    assert form.find_element("name", "personas").get_attribute("value") == "tea_girl_meilin.json"
    assert form.find_element("name", "llm_profile").get_attribute("value") == "auto"
    # The server's persona files are offered (cards only: the example workflows are not cards).
    offered = wait_js(browser, """const b = [...document.querySelectorAll('[data-testid=persona-choice]')];
                                  return b.length && b.map((x) => [x.dataset.file, x.getAttribute('aria-pressed')])""",
                      15, "the persona files from the server")
    assert ["tea_girl_meilin.json", "true"] in offered
    assert not any(name.startswith("workflow") for name, _ in offered), offered
    click(browser, "[data-testid=persona-choice][data-file='tea_girl_meilin.json']")
    assert form.find_element("name", "personas").get_attribute("value") == ""
    click(browser, "[data-testid=persona-choice][data-file='tea_girl_meilin.json']")
    assert form.find_element("name", "personas").get_attribute("value") == "tea_girl_meilin.json"
    form.find_element("name", "name").send_keys("form persona batch")
    days = form.find_element("name", "num_days")
    days.clear()
    days.send_keys("2")
    form.find_element("css selector", "button[type=submit]").click()
    batch_id = wait_js(browser, """const b = [...document.querySelectorAll('[data-testid=batch]')]
                                     .find((li) => li.querySelector('h3').textContent === 'form persona batch');
                                   return b && b.dataset.batchId""", 15, "the batch card")
    wait_js(browser, f"return document.querySelector(\"[data-testid=batch][data-batch-id='{batch_id}']\").dataset.status"
                     " === 'finished'", 120, "the persona batch to finish")
    card = browser.execute_script("""const c = document.querySelector(`[data-testid=batch][data-batch-id='${arguments[0]}']`);
      return {progress: c.querySelector('[role=progressbar]').getAttribute('aria-valuenow'),
              completed: c.querySelector('[data-status=completed] .count-n').textContent,
              cancel: !!c.querySelector('[data-testid=batch-cancel]')}""", batch_id)
    assert card == {"progress": "100", "completed": "1", "cancel": False}
    status, listed, _ = call(server.url, "GET", f"{API}/tasks?batch_id={batch_id}")
    assert status == 200 and len(listed["tasks"]) == 1
    task = listed["tasks"][0]
    assert task["status"] == "completed", task["error"]
    posts = [o for o in task["outputs"] if o.get("kind") == "post"]
    assert len(posts) == 2
    assert wait_row(browser, task["task_id"], FINAL, 10) == "completed"
    row = browser.find_element("css selector", f"[data-task-id='{task['task_id']}']")
    assert task["user_id"] in row.text and "form persona batch" in row.text
    click(browser, f"[data-task-id='{task['task_id']}'] [data-testid=task-open]")
    shown = detail_when_final(browser)
    assert shown["posts"] == [p["text"] for p in posts]
    assert shown["scenes"] == [p["scene_hint"] for p in posts if p.get("scene_hint")]
    browser.save_screenshot(str(artifacts / "dashboard-posts-1440.png"))
    browser.find_element("css selector", "[data-testid=task-detail] [data-testid=task-detail-close]").click()
    assert console_errors(browser) == []


def test_a_pasted_workflow_list_makes_a_batch_with_progress_that_can_be_cancelled(server, browser):
    open_dashboard(browser, server.url)
    form = browser.find_element("css selector", "[data-testid=workflow-form]")
    workflows = [probe(seconds=1.2, steps=6) for _ in range(5)]
    browser.execute_script("arguments[0].value = arguments[1];", form.find_element("name", "workflow"),
                           json.dumps(workflows))
    form.find_element("name", "batch_name").send_keys("pasted probes")
    form.find_element("css selector", "button[type=submit]").click()
    batch_id = wait_js(browser, """const b = [...document.querySelectorAll('[data-testid=batch]')]
                                     .find((li) => li.querySelector('h3').textContent === 'pasted probes');
                                   return b && b.dataset.batchId""", 15, "the pasted batch's card")
    card = f"[data-testid=batch][data-batch-id='{batch_id}']"
    # Part-way: some done, the bar between 0 and 100, an estimate of the time left.
    wait_js(browser, f"""const c = document.querySelector("{card}");
                         const v = Number(c.querySelector('[role=progressbar]').getAttribute('aria-valuenow'));
                         return v > 0 && v < 100 && /about .+ left/.test(c.innerText) && /elapsed/.test(c.innerText)""",
            60, "the batch part-way with an estimate")
    click(browser, f"{card} [data-testid=batch-cancel]")
    wait_js(browser, f"return document.querySelector(\"{card}\").dataset.status === 'finished'", 30,
            "the cancelled batch to finish")
    counts = browser.execute_script(f"""return Object.fromEntries([...document.querySelectorAll("{card} .count")]
                                        .map((li) => [li.dataset.status, Number(li.querySelector('.count-n').textContent)]))""")
    assert counts["completed"] >= 1 and counts["cancelled"] >= 1, counts
    assert sum(counts.values()) == 5 and counts["queued"] == counts["running"] == 0, counts
    # "Show tasks" filters the table to this batch: five final rows, none with a cancel button.
    click(browser, f"{card} [data-testid=batch-show]")
    wait_js(browser, f"""const rows = [...document.querySelectorAll('[data-testid=task-row]')];
                         return rows.length === 5 && rows.every((r) => ['completed', 'cancelled'].includes(r.dataset.status))""",
            15, "the batch's five rows")
    assert not browser.find_elements("css selector", "[data-testid=task-row] [data-testid=task-cancel]")
    assert f"batch={batch_id}" in browser.current_url
    status, batch, _ = call(server.url, "GET", f"{API}/batches/{batch_id}")
    assert status == 200 and batch["counts"] == {**counts}
    assert console_errors(browser) == []


def test_a_refused_workflow_shows_node_errors_next_to_the_field(server, browser):
    open_dashboard(browser, server.url)
    form = browser.find_element("css selector", "[data-testid=workflow-form]")
    area = form.find_element("name", "workflow")
    bad = {"1": {"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 8, "batch_size": 1, "color": 0}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bad"}}}
    browser.execute_script("arguments[0].value = arguments[1];", area, json.dumps(bad))
    form.find_element("css selector", "button[type=submit]").click()
    errors = form.find_element("css selector", "[data-testid=workflow-errors]")
    wait_js(browser, "return arguments[0].querySelector('[data-testid=node-error]')", 15, "node errors", (errors,))
    items = errors.find_elements("css selector", "[data-testid=node-error]")
    assert [i.get_attribute("data-node-id") for i in items] == ["1"]
    text = items[0].text
    assert "Node #1 (EmptyImage)" in text and "width" in text and '"wide"' in text
    assert '{"' not in errors.text  # readable, not a JSON dump
    # Next to the field: in the same form field, and the field is marked invalid.
    assert browser.execute_script("return arguments[0].parentElement === arguments[1].parentElement", errors, area)
    assert area.get_attribute("aria-invalid") == "true"
    # Text that is not JSON is answered before anything is sent.
    browser.execute_script("arguments[0].value = '{not json';", area)
    form.find_element("css selector", "button[type=submit]").click()
    wait_js(browser, "return /not JSON/.test(arguments[0].textContent)", 5, "the JSON error", (errors,))
    # The batch form puts the service's answer about a persona next to the personas field.
    batch_form = browser.find_element("css selector", "[data-testid=batch-form]")
    batch_form.find_element("name", "name").send_keys("no such persona")
    personas = batch_form.find_element("name", "personas")
    personas.clear()
    personas.send_keys("no_such_persona.json")
    batch_form.find_element("css selector", "button[type=submit]").click()
    persona_error = batch_form.find_element("css selector", ".field-error[data-for=personas]")
    wait_js(browser, "return arguments[0].textContent.includes('no_such_persona.json')", 10,
            "the persona error next to the field", (persona_error,))
    assert personas.get_attribute("aria-invalid") == "true"
    assert console_errors(browser, allowed=(("/twitterchat/api/v1/", 400),)) == []


STATS_JS = """return {requests: twitterchatDashboard.counters.requests, lists: twitterchatDashboard.counters.lists,
                     connects: twitterchatDashboard.stream.stats.connects,
                     resumed: twitterchatDashboard.stream.stats.resumedWith}"""


def miss_a_task(server, browser) -> str:
    """Drop the page's stream, run a task to its end meanwhile, reconnect: its id."""
    browser.execute_script("twitterchatDashboard.disconnect()")
    wait_js(browser, "return document.querySelector('[data-testid=connection]').dataset.state === 'reconnecting'", 5,
            "the indicator to leave live")
    task_id = submit_task(server, {"workflow": probe(seconds=0.2, steps=2)})
    assert wait_final(server.url, [task_id], timeout=60)[task_id]["status"] == "completed"
    assert row_status(browser, task_id) is None
    browser.execute_script("twitterchatDashboard.connect()")
    return task_id


def test_the_stream_catches_up_with_last_event_id_after_a_gap_and_idles_quietly(server, browser):
    open_dashboard(browser, server.url)
    seen = submit_task(server, {"workflow": probe(seconds=0.1, steps=2)})
    assert wait_row(browser, seen, FINAL, 60) == "completed"  # the page has seen events: it has a resume point
    before = browser.execute_script(STATS_JS)
    task_id = miss_a_task(server, browser)
    assert wait_row(browser, task_id, FINAL, 15) == "completed"
    wait_js(browser, "return document.querySelector('[data-testid=connection]').dataset.state === 'live'", 5)
    after = browser.execute_script(STATS_JS)
    assert after["connects"] == before["connects"] + 1
    assert isinstance(after["resumed"][-1], int)  # the reconnect sent Last-Event-ID ...
    assert after["lists"] == before["lists"]  # ... and read no list again
    # The row moved to the top (newest first) without a reload.
    assert browser.execute_script("return document.querySelector('[data-testid=task-row]').dataset.taskId") == task_id
    # The monitor panel reads health and its counters once, a few seconds after the events ...
    wait_js(browser, "return twitterchatDashboard.counters.requests >= arguments[0]", 10,
            "the monitor panel's refresh after the events", (after["requests"] + 2,))
    nudged = browser.execute_script(STATS_JS)
    assert nudged["requests"] == after["requests"] + 2 and nudged["lists"] == after["lists"]
    # ... then, idle with a live connection, the page is silent (a window of a few seconds).
    time.sleep(3)
    assert browser.execute_script(STATS_JS) == nudged
    assert console_errors(browser) == []


def test_a_stream_without_a_resume_point_reads_the_lists_once(server, browser):
    open_dashboard(browser, server.url)  # a fresh page on an idle server has seen no event yet
    before = browser.execute_script(STATS_JS)
    task_id = miss_a_task(server, browser)
    assert wait_row(browser, task_id, FINAL, 15) == "completed"
    after = browser.execute_script(STATS_JS)
    assert after["connects"] == before["connects"] + 1
    # Either the server gave a resume point, or the page read the two lists once.
    assert after["lists"] - before["lists"] <= 2
    assert console_errors(browser) == []


def test_a_reload_shows_the_same_state_without_horizontal_scroll_at_1440_and_390(server, browser, artifacts):
    open_dashboard(browser, server.url)
    wait_js(browser, "return document.querySelectorAll('[data-testid=task-row]').length >= 5", 10, "rows")
    rows = browser.execute_script("""return Object.fromEntries([...document.querySelectorAll('[data-testid=task-row]')]
                                     .map((r) => [r.dataset.taskId, r.dataset.status]))""")
    total = len(call(server.url, "GET", f"{API}/tasks?limit=500")[1]["tasks"])
    assert min(total, 25) <= len(rows) <= total  # at least 25 rows a page
    assert all(status in FINAL for status in rows.values()), rows
    for width, height in ((1440, 1000), (390, 844)):
        open_dashboard(browser, server.url, width, height)
        wait_js(browser, "return document.querySelectorAll('[data-testid=task-row]').length >= arguments[0]", 10,
                "the rows after the reload", (len(rows),))
        again = browser.execute_script("""return Object.fromEntries([...document.querySelectorAll('[data-testid=task-row]')]
                                          .map((r) => [r.dataset.taskId, r.dataset.status]))""")
        assert again == rows, f"at {width}px"
        scroll_width, inner_width = no_horizontal_scroll(browser)
        assert scroll_width <= inner_width, f"horizontal scroll at {width}px: {scroll_width} > {inner_width}"
        # Newest first: the first row is the newest task.
        newest = call(server.url, "GET", f"{API}/tasks?limit=1")[1]["tasks"][0]["task_id"]
        assert browser.execute_script("return document.querySelector('[data-testid=task-row]').dataset.taskId") == newest
        browser.save_screenshot(str(artifacts / f"dashboard-{width}.png"))
        # The detail dialog fits too.
        click(browser, "[data-testid=task-row][data-status=completed] [data-testid=task-open]")
        wait_js(browser, "return document.querySelector('[data-testid=task-detail] [data-testid=timeline]')", 10)
        scroll_width, inner_width = no_horizontal_scroll(browser)
        assert scroll_width <= inner_width, f"horizontal scroll with the dialog at {width}px"
        browser.save_screenshot(str(artifacts / f"dashboard-detail-{width}.png"))
        browser.find_element("css selector", "[data-testid=task-detail] [data-testid=task-detail-close]").click()
    assert (artifacts / "dashboard-1440.png").stat().st_size > 10_000
    # The monitor panel: health, waiting depth, and the websocket channel's counters.
    panel = browser.execute_script("""const m = document.querySelector('[data-testid=monitor]');
      const text = (s) => m.querySelector(s)?.textContent;
      const ws = '[data-testid=channel][data-channel=websocket] ';
      return {health: text('[data-testid=monitor-health]'), waiting: text('[data-testid=monitor-waiting]'),
              sent: text(ws + '[data-field=sent]'), dropped: text(ws + '[data-field=dropped]')}""")
    stats = call(server.url, "GET", "/twitterchat/monitor/stats")[1]
    assert panel["health"] == "ok" and panel["waiting"].isdigit() and panel["dropped"] == "0", panel
    assert 0 < int(panel["sent"]) <= stats["channels"]["websocket"]["sent"]
    assert console_errors(browser) == []


def page_ids(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('[data-testid=task-row]')].map((r) => r.dataset.taskId)")


def test_pages_go_newest_first_and_a_big_batch_arrives_live(server, browser):
    open_dashboard(browser, server.url)
    workflow = probe(seconds=0.1, steps=1)
    status, answer, _ = call(server.url, "POST", f"{API}/batches",
                             {"name": "sixty", "tasks": [{"workflow": workflow} for _ in range(60)]})
    assert status == 202, answer
    # All sixty arrive live on the first page, newest first.
    wait_js(browser, "return arguments[0].every((id) => document.querySelector(`[data-task-id='${id}']`))", 20,
            "the batch's rows", (answer["task_ids"],))
    assert page_ids(browser)[:60] == answer["task_ids"][::-1]
    # (ComfyUI answers the same workflow from its cache: sixty take seconds.)
    final = wait_final(server.url, answer["task_ids"], timeout=60)
    # A fresh page: one page of the newest tasks, then the next one, with no overlap, in the API's order.
    open_dashboard(browser, server.url)
    listed = call(server.url, "GET", f"{API}/tasks?limit=500")[1]["tasks"]
    wait_js(browser, "return document.querySelectorAll('[data-testid=task-row]').length >= 25", 10, "a full page")
    first = page_ids(browser)
    assert len(first) >= 25 and first == [t["task_id"] for t in listed[:len(first)]]
    assert browser.find_element("css selector", "[data-testid=page-first]").get_attribute("disabled") is not None
    click(browser, "[data-testid=page-next]")
    wait_js(browser, "return document.querySelector('[data-testid=task-row]')?.dataset.taskId === arguments[0]", 10,
            "the second page", (listed[len(first)]["task_id"],))
    second = page_ids(browser)
    assert second == [t["task_id"] for t in listed[len(first):len(first) + len(second)]] and not set(first) & set(second)
    click(browser, "[data-testid=page-first]")
    wait_js(browser, "return document.querySelector('[data-testid=task-row]')?.dataset.taskId === arguments[0]", 10,
            "the first page again", (first[0],))
    assert {final[t]["status"] for t in answer["task_ids"]} == {"completed"}
    assert console_errors(browser) == []


def test_comfyui_ui_loads_the_extension_that_opens_the_dashboard(server, browser):
    browser.set_window_size(1440, 1000)
    browser.get(server.url + "/")
    wait_js(browser, "return !!(window.app && app.extensions && app.extensionManager && "
                     "app.extensions.some((e) => e.name === 'comfyui-twitterchat.dashboard'))", 90,
            "ComfyUI's UI with the dashboard extension")
    command = browser.execute_script("""const c = app.extensionManager.command.commands
                                          .find((c) => c.id === 'TwitterChat.OpenDashboard');
                                        return c && {label: c.label, source: c.source}""")
    assert command == {"label": "Open TwitterChat dashboard", "source": "comfyui-twitterchat.dashboard"}
    tabs = browser.execute_script("return (app.extensionManager.getSidebarTabs?.() || []).map((t) => t.id)")
    assert "twitterchat-dashboard" in tabs
    main_window = browser.current_window_handle
    try:
        browser.execute_script("return app.extensionManager.command.execute('TwitterChat.OpenDashboard')")
        deadline = time.monotonic() + 10
        while len(browser.window_handles) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        opened = [h for h in browser.window_handles if h != main_window]
        assert len(opened) == 1
        browser.switch_to.window(opened[0])
        wait_js(browser, "return document.querySelector('[data-testid=connection]')?.dataset.state === 'live'", 30,
                "the dashboard opened by the command")
        assert browser.current_url == server.url + "/twitterchat/dashboard"
        browser.close()
    finally:
        browser.switch_to.window(main_window)
    # The sidebar tab shows a button that opens it as well.
    browser.execute_script("app.extensionManager.sidebarTab.toggleSidebarTab('twitterchat-dashboard')")
    wait_js(browser, "return document.querySelector('[data-testid=twitterchat-open-dashboard]')", 10,
            "the sidebar tab's button")
    own = [e for e in console_errors(browser) if "comfyui-twitterchat" in e or "twitterchat" in e.lower()]
    assert own == []


def test_a_server_with_a_token_asks_for_it_once_and_then_shows_its_tasks(comfyui_server_factory, browser):
    guarded = comfyui_server_factory(env={"TWITTERCHAT_API_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _, _ = call(guarded.url, "GET", f"{API}/tasks")
    assert status == 401
    task_id = submit_task(guarded, {"workflow": probe(seconds=0.1, steps=2)}, headers=auth)
    browser.set_window_size(1440, 1000)
    browser.get(guarded.url + "/twitterchat/dashboard")
    wait_js(browser, "return document.querySelector('[data-testid=token-dialog]').open", 20, "the token prompt")
    # A wrong token is refused and asked for again, with the reason.
    browser.find_element("id", "token-input").send_keys("not-the-token")
    browser.find_element("css selector", "[data-testid=token-dialog] button[type=submit]").click()
    wait_js(browser, """const d = document.querySelector('[data-testid=token-dialog]');
                        return d.open && /refused/.test(d.innerText)""", 15, "the prompt again after a refusal")
    browser.find_element("id", "token-input").send_keys(TOKEN)
    browser.find_element("css selector", "[data-testid=token-dialog] button[type=submit]").click()
    assert wait_row(browser, task_id, ("queued", "running", "completed"), 30)
    wait_js(browser, "return document.querySelector('[data-testid=connection]').dataset.state === 'live'", 15)
    assert wait_row(browser, task_id, FINAL, 60) == "completed"
    assert not browser.execute_script("return document.querySelector('[data-testid=token-dialog]').open")
    # Asked once, and once more after the refusal: never once per request.
    assert browser.execute_script("return document.querySelector('[data-testid=token-dialog]').dataset.asked") == "2"
    stored = browser.execute_script("return [sessionStorage.getItem('twitterchat.dashboard.token'), localStorage.length]")
    assert stored == [TOKEN, 0]
    # A reload in the same tab keeps the token: no prompt, the tasks are there.
    browser.refresh()
    wait_js(browser, "return document.documentElement.dataset.ready === 'true'", 30)
    assert wait_row(browser, task_id, FINAL, 15) == "completed"
    assert not browser.execute_script("return document.querySelector('[data-testid=token-dialog]').open")
    assert console_errors(browser, allowed=(("/twitterchat/", 401), ("/twitterchat/", 403))) == []
