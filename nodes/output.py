"""OutputManager: saves each day's post, image, scene hint and metadata."""

from __future__ import annotations

from ..tools.post_output import build_metadata, save_day
from ..utils.comfy_env import current_prompt_id
from ..utils.output_paths import output_root
from ..utils.safe_paths import UnsafePathError
from .inputs import PERSONA


class OutputManager:
    NODE_ID = "OutputManager"
    DISPLAY_NAME = "Output Manager (save per user and date)"
    CATEGORY = "TwitterChat/output"
    DESCRIPTION = ("Writes <output>/<user_id>/<date>/ with tweet.txt, image.png (when connected), "
                   "scene_hint.txt and metadata.json; a second run for the same day gets <date>_2.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("folder",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "persona": PERSONA,
                "post": ("STRING", {"forceInput": True, "tooltip": "The post text (tweet.txt)"}),
                "scene_hint": ("STRING", {"forceInput": True, "tooltip": "The photo's scene (scene_hint.txt)"}),
                "date": ("STRING", {"forceInput": True, "tooltip": "The post's date, YYYY-MM-DD: names the folder"}),
                "lora_model": ("STRING", {"default": "", "tooltip": "LoRA recorded in metadata.json (empty: the "
                                                                    "card's extensions.twitterchat.lora.model)"}),
                "lora_weight": ("FLOAT", {"default": 0.8, "min": -10.0, "max": 10.0, "step": 0.05,
                                          "tooltip": "LoRA weight recorded in metadata.json"}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "The day's picture, saved as image.png"})},
        }

    def save(self, persona, post, scene_hint, date, lora_model, lora_weight, image=None):
        if not post or not post.strip():
            raise ValueError(f"OutputManager: empty post for {persona.user_id} on {date}")
        lora = lora_model or (persona.extension.get("lora") or {}).get("model") or ""
        metadata = build_metadata(persona.user_id, persona.name, date, current_prompt_id(), post.strip(),
                                  scene_hint.strip(), lora, lora_weight)
        images = None if image is None else [frame.cpu().numpy() for frame in image]
        try:
            folder = save_day(output_root(), metadata, images)
        except UnsafePathError as exc:
            raise ValueError(f"OutputManager: {exc}") from None
        return {"ui": {"text": [str(folder)]}, "result": (str(folder),)}
