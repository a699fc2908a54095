"""service/ui_workflow.py: UI-format workflows to the API format, or one clear refusal.

The pack's node definitions come from its own registry; the ComfyUI core
classes that examples/persona_posts_with_images.json uses are copied below from ComfyUI
0.3.75's nodes.py (names, order, types and options that matter here).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from enum import StrEnum

import pytest

from pack_paths import EXAMPLES_DIR, PACK_NAME, PACK_ROOT

if (PACK_ROOT / "service" / "__init__.py").is_file():
    from comfyui_twitterchat.service.ui_workflow import UIWorkflowError, is_ui_workflow, ui_to_api
else:  # the service package is not there yet: load the module on its own
    _spec = importlib.util.spec_from_file_location(f"{PACK_NAME}_ui_workflow",
                                                   PACK_ROOT / "service" / "ui_workflow.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _module
    _spec.loader.exec_module(_module)
    UIWorkflowError, is_ui_workflow, ui_to_api = _module.UIWorkflowError, _module.is_ui_workflow, _module.ui_to_api

from comfyui_twitterchat.nodes import NODE_CLASS_MAPPINGS  # noqa: E402


class IO(StrEnum):
    """Stands in for ComfyUI's comfy_types.IO, which some core definitions use."""
    STRING = "STRING"
    CLIP = "CLIP"


SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["simple", "normal", "karras"]

CORE_INPUT_TYPES = {
    "CheckpointLoaderSimple": {"required": {
        "ckpt_name": (["v1-5-pruned-emaonly.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}),
    }},
    "CLIPTextEncode": {"required": {
        "text": (IO.STRING, {"multiline": True, "dynamicPrompts": True}),
        "clip": (IO.CLIP, {}),
    }},
    "KSampler": {"required": {
        "model": ("MODEL", {}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
        "sampler_name": (SAMPLERS, {}),
        "scheduler": (SCHEDULERS, {}),
        "positive": ("CONDITIONING", {}),
        "negative": ("CONDITIONING", {}),
        "latent_image": ("LATENT", {}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
    }},
    "EmptyLatentImage": {"required": {
        "width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
        "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
    }},
    "VAEDecode": {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}},
    "LoadImage": {"required": {"image": (["example.png", "cat.png"], {"image_upload": True})}},
    # Not core: a combo with a control value, and a node that saves its widgets by name.
    "PickOne": {"required": {"choice": (["a", "b", "c"], {"control_after_generate": True})}},
    "NamedWidgets": {"required": {"width": ("INT", {}), "label": ("STRING", {})},
                     "optional": {"images": ("IMAGE",)}},
}

PACK_CLASSES = {"PersonaLoader", "ContextGatherer", "CalendarManager", "BatchTweetGenerator", "OutputManager"}
EXPORT = "Export (API)"


def input_types(class_type):
    if class_type in CORE_INPUT_TYPES:
        return CORE_INPUT_TYPES[class_type]
    cls = NODE_CLASS_MAPPINGS.get(class_type)
    return None if cls is None else cls.INPUT_TYPES()


def load_example(name):
    return json.loads((EXAMPLES_DIR / name).read_text(encoding="utf-8"))


def node(node_id, class_type, widgets=None, inputs=(), mode=0, **extra):
    entry = {"id": node_id, "type": class_type, "mode": mode, "inputs": list(inputs), "outputs": [], **extra}
    if widgets is not None:
        entry["widgets_values"] = widgets
    return entry


def slot(name, link, widget=False):
    entry = {"name": name, "type": "*", "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def workflow(nodes, links=(), **extra):
    return {"nodes": list(nodes), "links": [list(row) for row in links], **extra}


def latent_and_decode(decode_mode=0):
    """EmptyLatentImage -> VAEDecode.samples; the VAE comes from a checkpoint loader."""
    return workflow(
        [node(1, "EmptyLatentImage", [512, 768, 2]),
         node(2, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"]),
         node(3, "VAEDecode", [], [slot("samples", 1), slot("vae", 2)], mode=decode_mode)],
        [(1, 1, 0, 3, 0, "LATENT"), (2, 2, 2, 3, 1, "VAE")])


def refusal(ui):
    with pytest.raises(UIWorkflowError) as caught:
        ui_to_api(ui, input_types)
    message = str(caught.value)
    assert EXPORT in message and "Save (API Format)" in message
    return message


# The example workflow

def _structure(prompt, node_id):
    """A node's inputs with each link written as (origin class type, origin slot)."""
    inputs = {}
    for name, value in prompt[node_id]["inputs"].items():
        if isinstance(value, list):
            value = (prompt[value[0]]["class_type"], value[1])
        inputs[name] = value
    return inputs


def test_example_workflow_converts_to_the_api_example():
    ui = load_example("persona_posts_with_images.json")
    before = copy.deepcopy(ui)
    converted = ui_to_api(ui, input_types)
    expected = load_example("api/workflow_api.json")
    assert ui == before

    assert set(converted) == {str(entry["id"]) for entry in ui["nodes"]}
    ids = {prompt_node["class_type"]: node_id for node_id, prompt_node in converted.items()
           if prompt_node["class_type"] in PACK_CLASSES}
    expected_ids = {prompt_node["class_type"]: node_id for node_id, prompt_node in expected.items()}
    assert set(ids) == set(expected_ids) == PACK_CLASSES
    for class_type in PACK_CLASSES:
        got = _structure(converted, ids[class_type])
        want = _structure(expected, expected_ids[class_type])
        if class_type == "OutputManager":
            # The UI example also saves the image; the API example is text only.
            assert got.pop("image") == ("VAEDecode", 0)
        assert got == want, class_type
        assert list(got) == list(want), class_type  # definition order
    # Links name the real node ids and slots, not just the right classes.
    assert converted[ids["OutputManager"]]["inputs"]["scene_hint"] == [ids["BatchTweetGenerator"], 1]
    assert converted[ids["CalendarManager"]]["inputs"]["context"] == [ids["ContextGatherer"], 0]
    assert converted[ids["PersonaLoader"]]["_meta"] == {"title": "Persona"}
    assert converted[ids["ContextGatherer"]]["_meta"] == {"title": "ContextGatherer"}


def test_example_workflow_image_branch():
    converted = ui_to_api(load_example("persona_posts_with_images.json"), input_types)
    image_branch = {node_id: converted[node_id] for node_id in ("5", "6", "7", "8", "9", "10")}
    assert image_branch == {
        "5": {"class_type": "CheckpointLoaderSimple", "_meta": {"title": "CheckpointLoaderSimple"},
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "_meta": {"title": "Scene hint -> prompt"},
              "inputs": {"text": ["4", 1], "clip": ["5", 1]}},
        "7": {"class_type": "CLIPTextEncode", "_meta": {"title": "Negative"},
              "inputs": {"text": "blurry, text, watermark", "clip": ["5", 1]}},
        "8": {"class_type": "EmptyLatentImage", "_meta": {"title": "EmptyLatentImage"},
              "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "9": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
              "inputs": {"model": ["5", 0], "seed": 42, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                         "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["8", 0], "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "_meta": {"title": "VAEDecode"},
               "inputs": {"samples": ["9", 0], "vae": ["5", 2]}},
    }


def test_is_ui_workflow():
    assert is_ui_workflow(load_example("persona_posts_with_images.json"))
    assert not is_ui_workflow(load_example("api/workflow_api.json"))
    assert not is_ui_workflow({"nodes": [], "links": {}})
    assert not is_ui_workflow([])
    assert "not a ComfyUI UI-format workflow" in refusal(load_example("api/workflow_api.json"))


# Widget values

def test_seed_control_value_is_skipped():
    ui = workflow([node(1, "PersonaLoader", ["file", "tea_girl_meilin.json", "", "meilin_001"]),
                   node(2, "ContextGatherer", [1, False], [slot("persona", 1)]),
                   node(3, "CalendarManager", [True, "local", 7, "randomize"],
                        [slot("persona", 2), slot("context", 3)])],
                  [(1, 1, 0, 2, 0, "TC_PERSONA"), (2, 1, 0, 3, 0, "TC_PERSONA"), (3, 2, 0, 3, 1, "TC_CONTEXT")])
    calendar = ui_to_api(ui, input_types)["3"]["inputs"]
    assert calendar == {"persona": ["1", 0], "context": ["2", 0], "regenerate": True, "llm_profile": "local",
                        "seed": 7}


def test_seed_without_its_control_value_is_refused():
    ui = workflow([node(1, "KSampler", [42, 20, 7.0, "euler", "normal", 1.0])])
    message = refusal(ui)
    assert "node 1 (KSampler)" in message
    assert "expected 7 widget values" in message and "got 6" in message
    assert "seed (+ control value)" in message


def test_control_value_in_the_wrong_place_is_refused():
    # Seven values, but where the seed's control value belongs there is a number.
    ui = workflow([node(1, "KSampler", [42, 20, "fixed", 7.0, "euler", "normal", 1.0])])
    message = refusal(ui)
    assert "node 1 (KSampler)" in message and "do not line up" in message


def test_wrong_widget_count_names_node_type_expected_and_got():
    ui = latent_and_decode()
    ui["nodes"][0]["widgets_values"] = [512, 512]
    message = refusal(ui)
    assert "node 1 (EmptyLatentImage): expected 3 widget values for its widgets (width, height, batch_size), " \
           "got 2" in message


def test_converted_widget_takes_its_link_and_skips_its_saved_value():
    ui = workflow([node(1, "PersonaLoader", ["file", "tea_girl_meilin.json", "", "meilin_001"],
                        outputs=[{"name": "user_id", "type": "STRING", "links": [1]}]),
                   node(2, "CheckpointLoaderSimple", ["v1-5-pruned-emaonly.safetensors"]),
                   node(3, "CLIPTextEncode", ["text typed before the widget became an input"],
                        [slot("clip", 2), slot("text", 1, widget=True)])],
                  [(1, 1, 3, 3, 1, "STRING"), (2, 2, 1, 3, 0, "CLIP")])
    assert ui_to_api(ui, input_types)["3"]["inputs"] == {"text": ["1", 3], "clip": ["2", 1]}


def test_widget_input_slots_of_new_frontends_without_links_keep_their_values():
    ui = latent_and_decode()
    ui["nodes"][0]["inputs"] = [slot("width", None, widget=True), slot("height", None, widget=True),
                                slot("batch_size", None, widget=True)]
    assert ui_to_api(ui, input_types)["1"]["inputs"] == {"width": 512, "height": 768, "batch_size": 2}


@pytest.mark.parametrize("saved", [["cat.png"], ["cat.png", "image"]])
def test_image_upload_value_is_optional(saved):
    ui = workflow([node(1, "LoadImage", saved)])
    assert ui_to_api(ui, input_types)["1"]["inputs"] == {"image": "cat.png"}


@pytest.mark.parametrize("saved", [["b", "increment"], ["b", "increment", ""]])
def test_combo_control_value_and_filter_are_skipped(saved):
    assert ui_to_api(workflow([node(1, "PickOne", saved)]), input_types)["1"]["inputs"] == {"choice": "b"}


def test_widget_values_saved_by_name():
    ui = workflow([node(1, "NamedWidgets", {"label": "x", "width": 64, "preview": {"hidden": True}})])
    assert ui_to_api(ui, input_types)["1"]["inputs"] == {"width": 64, "label": "x"}
    ui["nodes"][0]["widgets_values"] = {"label": "x"}
    assert "node 1 (NamedWidgets): widgets_values has no value for width" in refusal(ui)


def test_list_widget_value_is_wrapped_so_it_does_not_read_as_a_link():
    ui = workflow([node(1, "NamedWidgets", {"width": 64, "label": ["1", 0]})])
    assert ui_to_api(ui, input_types)["1"]["inputs"]["label"] == {"__value__": ["1", 0]}


# Links and what the frontend drops

def test_link_objects_of_newer_frontends():
    ui = latent_and_decode()
    ui["links"] = [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "LATENT"},
                   {"id": 2, "origin_id": 2, "origin_slot": 2, "target_id": 3, "target_slot": 1, "type": "VAE"}]
    assert ui_to_api(ui, input_types)["3"]["inputs"] == {"samples": ["1", 0], "vae": ["2", 2]}


def test_notes_are_dropped():
    ui = latent_and_decode()
    ui["nodes"] += [node(7, "Note", ["remember the VAE"]), node(8, "MarkdownNote", ["# hi"])]
    assert set(ui_to_api(ui, input_types)) == {"1", "2", "3"}


def test_muted_node_is_dropped_with_the_links_into_it():
    ui = latent_and_decode(decode_mode=2)
    assert set(ui_to_api(ui, input_types)) == {"1", "2"}


def test_required_input_from_a_muted_node_is_refused():
    ui = latent_and_decode()
    ui["nodes"][0]["mode"] = 2
    assert "node 3 (VAEDecode): required input 'samples' comes from node 1 (EmptyLatentImage), which is muted" \
        in refusal(ui)


def test_optional_input_from_a_muted_node_is_left_out():
    ui = workflow([node(1, "EmptyLatentImage", [512, 512, 1], mode=2),
                   node(2, "NamedWidgets", [64, "x"], [slot("images", 1)])],
                  [(1, 1, 0, 2, 0, "IMAGE")])
    assert ui_to_api(ui, input_types) == {
        "2": {"class_type": "NamedWidgets", "_meta": {"title": "NamedWidgets"}, "inputs": {"width": 64, "label": "x"}}}


def test_unconnected_required_input_is_refused():
    ui = latent_and_decode()
    ui["nodes"][2]["inputs"][1]["link"] = None
    assert "node 3 (VAEDecode): required input 'vae' is not connected" in refusal(ui)


def test_reroutes_are_followed_to_the_real_origin():
    ui = latent_and_decode()
    ui["nodes"] += [node(4, "Reroute", None, [slot("", 3)]), node(5, "Reroute", None, [slot("", 4)])]
    ui["nodes"][2]["inputs"][1]["link"] = 5
    ui["links"] = [ui["links"][0], [3, 2, 2, 4, 0, "*"], [4, 4, 0, 5, 0, "*"], [5, 5, 0, 3, 1, "VAE"]]
    converted = ui_to_api(ui, input_types)
    assert set(converted) == {"1", "2", "3"}
    assert converted["3"]["inputs"]["vae"] == ["2", 2]


def test_dangling_reroute_into_a_required_input_is_refused():
    ui = latent_and_decode()
    ui["nodes"].append(node(4, "Reroute", None, [slot("", None)]))
    ui["links"][1] = [2, 4, 0, 3, 1, "VAE"]
    assert "required input 'vae' comes from node 4 (Reroute), which has nothing connected to it" in refusal(ui)


def test_primitive_node_value_goes_into_its_target():
    ui = latent_and_decode()
    ui["nodes"].append(node(4, "PrimitiveNode", [1024, "fixed"], title="Width"))
    ui["nodes"][0]["inputs"] = [slot("width", 9, widget=True)]
    ui["links"].append([9, 4, 0, 1, 0, "INT"])
    converted = ui_to_api(ui, input_types)
    assert set(converted) == {"1", "2", "3"}
    assert converted["1"]["inputs"] == {"width": 1024, "height": 768, "batch_size": 2}


def test_damaged_link_is_refused():
    ui = latent_and_decode()
    ui["nodes"][2]["inputs"][0]["link"] = 42
    assert "node 3 (VAEDecode): link 42 is not in the workflow's links" in refusal(ui)


# Refusals

def test_unknown_class_is_refused():
    ui = latent_and_decode()
    ui["nodes"].append(node(9, "SomePackUpscaler", [2.0]))
    assert "node 9 (SomePackUpscaler): this ComfyUI has no node class of that type" in refusal(ui)


def test_bypassed_node_is_refused():
    assert "node 3 (VAEDecode): bypassed" in refusal(latent_and_decode(decode_mode=4))


def test_subgraphs_are_refused():
    ui = latent_and_decode()
    ui["definitions"] = {"subgraphs": [{"id": "0b7f5e0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "nodes": []}]}
    assert "subgraphs" in refusal(ui)
    del ui["definitions"]
    ui["nodes"].append(node(9, "0b7f5e0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"))
    assert "node 9 (0b7f5e0a-1c2d-4e5f-8a9b-0c1d2e3f4a5b): a subgraph" in refusal(ui)


def test_group_nodes_are_refused():
    ui = latent_and_decode()
    ui["extra"] = {"groupNodes": {"Upscale": {"nodes": [], "links": []}}}
    assert "group nodes" in refusal(ui)
    del ui["extra"]
    ui["nodes"].append(node(9, "workflow>Upscale"))
    assert "node 9 (workflow>Upscale): a group node" in refusal(ui)


def test_every_problem_is_listed_in_one_refusal():
    ui = latent_and_decode(decode_mode=4)
    ui["nodes"][0]["widgets_values"] = []
    ui["nodes"].append(node(9, "SomePackUpscaler"))
    message = refusal(ui)
    assert "node 1 (EmptyLatentImage): expected 3" in message
    assert "node 3 (VAEDecode): bypassed" in message
    assert "node 9 (SomePackUpscaler)" in message


def test_malformed_entries_are_refused_not_crashed_on():
    ui = latent_and_decode()
    ui["links"].append(["not", "a link"])
    assert "is neither" in refusal(ui)
    ui = latent_and_decode()
    ui["nodes"].append({"type": "VAEDecode"})
    assert "is not an object with an id" in refusal(ui)
