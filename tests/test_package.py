"""The package as ComfyUI and ComfyUI-Manager see it, and the contracts that keep
pyproject, requirements.txt, config.json and the registry in step."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pack_paths import PACK_ROOT

IMPORT_PROBE = r"""
import importlib.util, json, socket, sys, threading
connects = []
real_connect = socket.socket.connect
def record(self, *args):
    connects.append(args)
    return real_connect(self, *args)
socket.socket.connect = record
before = set(sys.modules)
spec = importlib.util.spec_from_file_location(
    "comfyui-twitterchat", sys.argv[1] + "/__init__.py",
    submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
heavy = sorted(m for m in ("torch", "openai", "redis", "llama_cpp", "PIL", "holidays", "aiohttp",
                           "rocketmq", "grpc", "server", "folder_paths", "comfy", "jsonschema", "numpy",
                           "tenacity")
               if m in sys.modules and m not in before)
print(json.dumps({"threads": threading.active_count(), "connects": len(connects),
                  "heavy": heavy, "nodes": sorted(module.NODE_CLASS_MAPPINGS),
                  "web": module.WEB_DIRECTORY}))
"""


def test_import_outside_comfyui_is_light_and_inert():
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(PACK_ROOT)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["threads"] == 1, result
    assert result["connects"] == 0, result
    assert result["heavy"] == [], result
    assert "PersonaLoader" in result["nodes"]
    assert (PACK_ROOT / result["web"]).is_dir()


def test_registry_ids_are_unique_and_complete(pack):
    from comfyui_twitterchat.nodes import NODE_CLASSES, build_mappings

    assert set(pack.NODE_CLASS_MAPPINGS) == {cls.NODE_ID for cls in NODE_CLASSES}
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    for cls in NODE_CLASSES:
        assert cls.CATEGORY.startswith("TwitterChat/"), cls
        assert hasattr(cls, cls.FUNCTION), cls
        for type_name in cls.RETURN_TYPES:
            assert type_name.isupper(), type_name
            if type_name not in ("STRING", "INT", "FLOAT", "BOOLEAN", "IMAGE"):
                assert type_name.startswith("TC_"), f"custom type {type_name} must be namespaced"

    class Twin:
        NODE_ID = NODE_CLASSES[0].NODE_ID
        DISPLAY_NAME = "twin"

    with pytest.raises(ValueError, match="duplicate node id"):
        build_mappings((NODE_CLASSES[0], Twin))


def _requirement_names(specs):
    return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower(): spec.replace(" ", "")
            for spec in specs}


def test_requirements_txt_matches_pyproject():
    project = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.split("#")[0].strip() for line in (PACK_ROOT / "requirements.txt").read_text().splitlines()]
    assert _requirement_names(filter(None, lines)) == _requirement_names(project["dependencies"])
    openai_spec = _requirement_names(project["dependencies"])["openai"]
    assert "<3" in openai_spec  # openai 3.x dropped httpx
    assert {"test", "rocketmq", "local"} <= set(project["optional-dependencies"])


def test_pyproject_has_comfy_registry_section():
    data = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]


SECRET_LOOKING = re.compile(r"(sk-[A-Za-z0-9]{8,}|password\"\s*:\s*\"[^\"]+\"|api_key\"\s*:\s*\"[^\"]+\")",
                            re.IGNORECASE)


def test_config_json_holds_defaults_and_no_secrets():
    text = (PACK_ROOT / "config.json").read_text()
    json.loads(text)
    assert not SECRET_LOOKING.search(text)


def test_gitignore_covers_local_secret_files():
    ignored = (PACK_ROOT / ".gitignore").read_text().splitlines()
    assert "secrets.json" in ignored and ".env" in ignored


def test_readme_test_command_is_what_ci_runs():
    readme = (PACK_ROOT / "README.md").read_text()
    ci = (PACK_ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^```(?:bash|sh)\n(.*?)^```", readme, flags=re.S | re.M)
    assert any("bash tests/run_tests.sh" in block for block in commands)
    assert "bash tests/run_tests.sh" in ci


def test_api_example_matches_the_registry(pack):
    workflow = json.loads((PACK_ROOT / "examples" / "api" / "workflow_api.json").read_text())
    for node_id, node in workflow.items():
        cls = pack.NODE_CLASS_MAPPINGS[node["class_type"]]
        spec = cls.INPUT_TYPES()
        allowed = set(spec["required"]) | set(spec.get("optional", {}))
        assert set(spec["required"]) <= set(node["inputs"]) <= allowed, node_id
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link: [source node, output index]
                source = pack.NODE_CLASS_MAPPINGS[workflow[value[0]]["class_type"]]
                assert source.RETURN_TYPES[value[1]] == spec["required"].get(name, spec.get("optional", {}).get(name))[0]
    assert 3 <= workflow["4"]["inputs"]["num_days"] <= 7


def test_ui_example_is_consistent(pack):
    workflow = json.loads((PACK_ROOT / "examples" / "persona_posts_with_images.json").read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    ours = {n["type"] for n in nodes.values() if n["type"] in pack.NODE_CLASS_MAPPINGS}
    assert ours == set(pack.NODE_CLASS_MAPPINGS) - {"TweetGenerator", "PersonaGenerator"}  # the generator makes cards: a workflow of its own
    assert {"CLIPTextEncode", "KSampler", "VAEDecode"} <= {n["type"] for n in nodes.values()}
    for link_id, src, src_slot, dst, dst_slot, type_name in workflow["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == type_name
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    scene_to_clip = [l for l in workflow["links"] if nodes[l[1]]["type"] == "BatchTweetGenerator"
                     and nodes[l[3]]["type"] == "CLIPTextEncode"]
    assert scene_to_clip and scene_to_clip[0][2] == 1  # scene_hints feed the image prompt


def test_readme_lists_every_node_and_env_variable(pack):
    readme = (PACK_ROOT / "README.md").read_text()
    for node_id in pack.NODE_CLASS_MAPPINGS:
        assert f"`{node_id}`" in readme, node_id
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "MAX_CONCURRENT", "OUTPUT_DIR", "KY_MONITOR_ENABLED",
                     "KY_MONITOR_REDIS_PASSWORD", "TWITTERCHAT_WEATHER_URL"):
        assert variable in readme, variable
