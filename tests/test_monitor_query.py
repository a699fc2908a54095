"""monitor/query.py on payloads captured from ComfyUI 0.3.75 and 0.33.0."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from comfyui_twitterchat.monitor.query import (ProgressSnapshot, PromptTracker, history_info,
                                                nodes_to_run, queue_entry, running_progress,
                                                summarize_history_entry)
from pack_paths import PACK_ROOT

SAMPLES = PACK_ROOT / "tests" / "fixtures" / "comfyui-samples"  # copied from shared/comfyui-samples
VERSIONS = ["v0.3.75", "v0.33.0"]
INFO_KEYS = {"id", "type", "status", "progress", "current_node", "queue_time", "start_time", "end_time",
             "result", "error_info", "queue_position"}


def sample(version: str, name: str):
    path = SAMPLES / version / name
    if not path.is_file():
        pytest.fail(f"captured sample missing: {path}")
    return json.loads(path.read_text())


def history_by_status(version: str, status: str):
    return [(pid, entry) for pid, entry in sample(version, "history.json").items()
            if entry["status"]["status_str"] == status]


@pytest.mark.parametrize("version", VERSIONS)
def test_successful_prompt(version):
    prompt_id, entry = history_by_status(version, "success")[0]
    info = history_info(prompt_id, summarize_history_entry(entry))
    assert set(info) == INFO_KEYS
    assert info["status"] == "completed" and info["result"] == "success"
    assert info["progress"] == 1.0 and info["type"] == "history"
    assert info["error_info"] is None and info["current_node"] is None
    start = [d for e, d in entry["status"]["messages"] if e == "execution_start"][0]["timestamp"]
    assert info["start_time"].startswith("20") and info["start_time"].endswith("+00:00")
    assert info["start_time"] < info["end_time"]
    from datetime import datetime
    assert datetime.fromisoformat(info["start_time"]).timestamp() == pytest.approx(start / 1000)


@pytest.mark.parametrize("version", VERSIONS)
def test_failed_prompt_keeps_message_and_two_innermost_frames(version):
    prompt_id, entry = history_by_status(version, "error")[0]
    info = history_info(prompt_id, summarize_history_entry(entry))
    assert info["status"] == "failed" and info["result"] == "failure"
    error = info["error_info"]
    assert error["message"] == "probe failure"  # the trailing newline is stripped
    assert error["type"] == "ValueError"
    assert (error["node_id"], error["node_type"]) == ("2", "ProbeFail")
    assert len(error["traceback"]) == 2
    assert "probe_nodes.py" in error["traceback"][-1] and "in inner" in error["traceback"][-1]
    assert "in run" in error["traceback"][0]
    assert "current_inputs" not in json.dumps(info)


def test_cycle_error_with_success_status_is_a_failure():
    prompt_id, entry = history_by_status("v0.3.75", "error")[0]
    entry = copy.deepcopy(entry)
    entry["status"]["status_str"] = "success"  # what a dependency-cycle error can leave
    assert history_info(prompt_id, summarize_history_entry(entry))["status"] == "failed"


def test_interrupt_is_cancelled_and_tips_are_cut():
    prompt_id, entry = history_by_status("v0.33.0", "error")[0]
    interrupted = copy.deepcopy(entry)
    interrupted["status"]["messages"] = [m for m in interrupted["status"]["messages"]
                                         if m[0] != "execution_error"]
    interrupted["status"]["messages"].append(
        ["execution_interrupted", {"prompt_id": prompt_id, "node_id": "2", "node_type": "ProbeSlow",
                                   "executed": [], "timestamp": 1795348189100}])
    info = history_info(prompt_id, summarize_history_entry(interrupted))
    assert info["status"] == "cancelled" and info["result"] == "failure"
    oom = copy.deepcopy(entry)
    for event, data in oom["status"]["messages"]:
        if event == "execution_error":
            data["exception_message"] = "Allocation failed\n\nThis error means you ran out of memory.\nTIPS: ..."
    assert history_info(prompt_id, summarize_history_entry(oom))["error_info"]["message"] == "Allocation failed"


@pytest.mark.parametrize("version", VERSIONS)
def test_pending_order_follows_queue_number(version):
    queue = sample(version, "queue_running.json")
    running = [queue_entry(item) for item in queue["queue_running"]]
    pending_items = copy.deepcopy(queue["queue_pending"])
    front = copy.deepcopy(pending_items[-1])
    front[0], front[1] = -5, "queued-to-the-front"
    pending_items.append(front)
    random.Random(7).shuffle(pending_items)  # heap order is not queue order
    pending = [queue_entry(item) for item in pending_items]
    infos, vanished = PromptTracker().observe_queue(running, pending, None, 1795347150000)
    assert vanished == []
    by_id = {info["id"]: info for info in infos}
    assert by_id[running[0].prompt_id]["status"] == "running"
    assert by_id[running[0].prompt_id]["queue_position"] == 0
    expected = ["queued-to-the-front"] + [item[1] for item in queue["queue_pending"]]
    positions = sorted((info["queue_position"], pid) for pid, info in by_id.items() if info["status"] == "pending")
    assert [pid for _, pid in positions] == expected
    assert [pos for pos, _ in positions] == list(range(1, len(expected) + 1))
    assert by_id[expected[1]]["queue_time"].endswith("+00:00")


@pytest.mark.parametrize("version", VERSIONS)
def test_running_progress_and_current_node(version):
    queue = sample(version, "queue_running.json")
    entry = queue_entry(queue["queue_running"][0])
    assert nodes_to_run(entry.prompt, entry.outputs) == {"1", "2", "3"}
    snapshot = ProgressSnapshot(entry.prompt_id, {"1": ("finished", 1, 1), "2": ("running", 5, 10)})
    progress, node = running_progress(nodes_to_run(entry.prompt, entry.outputs), snapshot)
    assert progress == pytest.approx(0.5) and node == "2"
    infos, _ = PromptTracker().observe_queue([entry], [], snapshot, 0)
    assert infos[0]["current_node"] == {"id": "2", "type": "ProbeSlow"}
    assert 0 < infos[0]["progress"] < 1
    # another prompt's registry says nothing about this one
    other = ProgressSnapshot("someone-else", {"2": ("running", 9, 10)})
    infos, _ = PromptTracker().observe_queue([entry], [], other, 0)
    assert infos[0]["progress"] == 0 and infos[0]["current_node"] is None


def test_tracker_publishes_changes_only():
    queue = sample("v0.3.75", "queue_running.json")
    entry = queue_entry(queue["queue_running"][0])
    tracker = PromptTracker(progress_step=0.05)
    step = lambda value: ProgressSnapshot(entry.prompt_id, {"1": ("finished", 1, 1), "2": ("running", value, 100)})
    assert len(tracker.observe_queue([entry], [], step(10), 0)[0]) == 1
    assert tracker.observe_queue([entry], [], step(10), 0)[0] == []      # nothing changed
    assert tracker.observe_queue([entry], [], step(12), 0)[0] == []      # below the step
    assert len(tracker.observe_queue([entry], [], step(40), 0)[0]) == 1  # a real move
    infos, vanished = tracker.observe_queue([], [], None, 0)
    assert infos == [] and vanished == [entry.prompt_id]
    history = sample("v0.3.75", "history.json")
    final = tracker.finish(entry.prompt_id, summarize_history_entry(history[entry.prompt_id]), 0)
    assert final["status"] == "completed"
    # the same prompt in history later is not published twice
    assert tracker.observe_history({entry.prompt_id: summarize_history_entry(history[entry.prompt_id])}, 0) == []


def test_deleted_pending_prompt_is_cancelled_and_unseen_history_is_published_once():
    queue = sample("v0.3.75", "queue_running.json")
    history = sample("v0.3.75", "history.json")
    tracker = PromptTracker()
    pending = queue_entry(queue["queue_pending"][0])
    tracker.observe_queue([], [pending], None, 0)
    _, vanished = tracker.observe_queue([], [], None, 0)
    info = tracker.finish(vanished[0], None, 1795347150000)
    assert info["status"] == "cancelled" and info["end_time"] is not None
    summaries = {pid: summarize_history_entry(e) for pid, e in history.items()}
    first = tracker.observe_history(summaries, 0)
    assert {i["id"] for i in first} == set(history) - {pending.prompt_id}
    assert tracker.observe_history(summaries, 0) == []


def test_no_workflow_extra_data_sensitive_or_inputs_in_any_info():
    queue = sample("v0.3.75", "queue_running.json")
    history = sample("v0.3.75", "history.json")
    secret = "comfy-org-api-key-SECRET-1234567890"
    running = copy.deepcopy(queue["queue_running"][0])
    running[3]["api_key_comfy_org"] = secret
    running.append({"api_key_comfy_org": secret})  # the 6th element
    entry = queue_entry(running)
    snapshot = ProgressSnapshot(entry.prompt_id, {"2": ("running", 1, 4)})
    tracker = PromptTracker()
    infos, _ = tracker.observe_queue([entry], [queue_entry(i) for i in queue["queue_pending"]], snapshot, 0)
    for pid, item in history.items():
        item = copy.deepcopy(item)
        item["prompt"][3]["api_key_comfy_org"] = secret
        infos.append(history_info(pid, summarize_history_entry(item)))
    text = json.dumps(infos)
    for forbidden in (secret, "extra_pnginfo", "client_id", "inputs", "class_type", "filename_prefix",
                      "probe failure\\n", "workflow"):
        assert forbidden not in text
    assert all(set(info) == INFO_KEYS for info in infos)
