"""PersonaLoader: a character card (file, JSON text or PNG card) plus a user id."""

from __future__ import annotations

from pathlib import Path

from ..tools.persona_card import (Persona, PersonaError, build_system_prompt, card_from_file,
                                  card_from_json_text)
from ..utils.comfy_env import input_directory
from ..utils.safe_paths import UnsafePathError, resolve_inside, validate_user_id

PACK_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = PACK_ROOT / "examples"


def persona_folders() -> list[Path]:
    """Where ``persona_file`` may live: the pack's examples, then ComfyUI's input folder."""
    folders = [EXAMPLES_DIR]
    comfy_input = input_directory()
    if comfy_input is not None:
        folders.append(comfy_input)
    return folders


def load_persona(input_mode: str, persona_file: str, persona_json: str, user_id: str) -> Persona:
    user_id = validate_user_id(user_id)
    if input_mode == "file":
        try:
            path = resolve_inside(persona_file, persona_folders(), what="persona_file")
        except (UnsafePathError, FileNotFoundError) as exc:
            raise PersonaError(str(exc)) from None
        card = card_from_file(path)
    elif input_mode == "json_string":
        card = card_from_json_text(persona_json)
    else:
        raise PersonaError(f"input_mode must be 'file' or 'json_string', got {input_mode!r}")
    return Persona(user_id=user_id, card=card)


class PersonaLoader:
    NODE_ID = "PersonaLoader"
    DISPLAY_NAME = "Persona Loader (character card)"
    CATEGORY = "TwitterChat/persona"
    DESCRIPTION = ("Loads a chara_card_v2/v3 persona from a file in the pack's examples/ or "
                   "ComfyUI's input folder (JSON or PNG card), or from pasted JSON.")
    RETURN_TYPES = ("TC_PERSONA", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("persona", "summary", "system_prompt", "user_id")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "input_mode": (["file", "json_string"], {"default": "file"}),
                "persona_file": ("STRING", {"default": "tea_girl_meilin.json",
                                            "tooltip": "A .json or .png card in the pack's "
                                                       "examples/ or ComfyUI's input folder"}),
                "persona_json": ("STRING", {"default": "", "multiline": True}),
                "user_id": ("STRING", {"default": "meilin_001",
                                       "tooltip": "Stable account id; names the output folder"}),
            },
        }

    def load(self, input_mode, persona_file, persona_json, user_id):
        try:
            persona = load_persona(input_mode, persona_file, persona_json, user_id)
        except (UnsafePathError, PersonaError) as exc:
            raise ValueError(f"PersonaLoader: {exc}") from None
        return (persona, persona.summary(), build_system_prompt(persona), persona.user_id)
