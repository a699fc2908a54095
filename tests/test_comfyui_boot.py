"""The pack inside a real ComfyUI: loaded from a hyphenated custom_nodes folder,
nodes listed in /object_info, web extension served, a node run over HTTP."""

from __future__ import annotations

import urllib.request

import pytest

from comfyui_twitterchat import NODE_CLASS_MAPPINGS

pytestmark = pytest.mark.comfyui


def test_object_info_lists_every_node(comfyui_server):
    info = comfyui_server.get_json("/object_info")
    missing = [node_id for node_id in NODE_CLASS_MAPPINGS if node_id not in info]
    assert not missing, f"not registered in ComfyUI: {missing}\n{comfyui_server.log_text()[-3000:]}"
    persona = info["PersonaLoader"]
    assert persona["category"] == "TwitterChat/persona"
    assert persona["output"] == ["TC_PERSONA", "STRING", "STRING", "STRING"]
    assert persona["input"]["required"]["input_mode"][0] == ["file", "json_string"]
    assert "TCProbeSlow" in info and "TCProbeFail" in info  # the test probes load too
    pack_lines = [line for line in comfyui_server.log_text().splitlines()
                  if line.rstrip().endswith("custom_nodes/comfyui-twitterchat")]
    assert pack_lines and not any("IMPORT FAILED" in line for line in pack_lines), pack_lines


def test_web_extension_is_served(comfyui_server):
    extensions = comfyui_server.get_json("/extensions")
    scripts = [e for e in extensions if e.endswith("/twitterchat.js")]
    assert len(scripts) == 1, extensions
    with urllib.request.urlopen(comfyui_server.url + scripts[0], timeout=10) as response:
        assert b"twitterchat.monitor" in response.read()


def test_persona_loader_runs_in_a_queued_prompt(comfyui_server):
    prompt = {
        "1": {"class_type": "PersonaLoader",
              "inputs": {"input_mode": "file", "persona_file": "tea_girl_meilin.json",
                         "persona_json": "", "user_id": "meilin_001"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}},
    }
    prompt_id = comfyui_server.queue_prompt(prompt)
    entry = comfyui_server.wait_for_history(prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    system_prompt = entry["outputs"]["2"]["text"][0]
    assert system_prompt.startswith("You are Meilin.")
    assert "Stay in character as Meilin" in system_prompt
    assert "never reach a prompt" not in system_prompt  # creator_notes stay out


def test_bad_user_id_fails_the_prompt_with_a_clear_error(comfyui_server):
    prompt = {
        "1": {"class_type": "PersonaLoader",
              "inputs": {"input_mode": "file", "persona_file": "tea_girl_meilin.json",
                         "persona_json": "", "user_id": "../../etc"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 3]}},
    }
    entry = comfyui_server.wait_for_history(comfyui_server.queue_prompt(prompt))
    assert entry["status"]["status_str"] == "error"
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert errors and "user_id" in errors[0]["exception_message"]
    assert errors[0]["node_type"] == "PersonaLoader"
