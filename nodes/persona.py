"""PersonaLoader: a character card (file, JSON text or PNG card) plus a user id."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..tools.persona_card import (Persona, PersonaError, build_system_prompt, card_from_file,
                                  card_from_json_text)
from ..tools.persona_choices import UPLOAD_SUBFOLDER, persona_choices
from ..utils.comfy_env import input_directory
from ..utils.safe_paths import UnsafePathError, resolve_inside, validate_user_id

PACK_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = PACK_ROOT / "examples" / "personas"
DEFAULT_CARD = "tea_girl_meilin.json"
INPUT_MODES = ("file", "json_string")


def persona_folders() -> list[Path]:
    """Where ``persona_file`` may live: the pack's example cards, then ComfyUI's input folder."""
    folders = [EXAMPLES_DIR]
    comfy_input = input_directory()
    if comfy_input is not None:
        folders.append(comfy_input)
    return folders


def persona_path(persona_file: str) -> Path:
    try:
        return resolve_inside(persona_file, persona_folders(), what="persona_file")
    except (UnsafePathError, FileNotFoundError) as exc:
        raise PersonaError(str(exc)) from None


def load_persona(input_mode: str, persona_file: str, persona_json: str, user_id: str) -> Persona:
    user_id = validate_user_id(user_id)
    if input_mode == "file":
        card = card_from_file(persona_path(persona_file))
    elif input_mode == "json_string":
        card = card_from_json_text(persona_json)
    else:
        raise PersonaError(f"input_mode must be 'file' or 'json_string', got {input_mode!r}")
    return Persona(user_id=user_id, card=card)


class PersonaLoader:
    NODE_ID = "PersonaLoader"
    DISPLAY_NAME = "Persona Loader (character card)"
    CATEGORY = "TwitterChat/persona"
    DESCRIPTION = ("Loads a chara_card_v2/v3 persona from a card in the list (the pack's example cards, "
                   "ComfyUI's input folder, cards uploaded with the node's button) or from pasted JSON.")
    RETURN_TYPES = ("TC_PERSONA", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("persona", "summary", "system_prompt", "user_id")
    OUTPUT_TOOLTIPS = ("The persona for the other TwitterChat nodes", "A short summary of the card",
                       "The system prompt built from the card", "The validated user id")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "input_mode": (list(INPUT_MODES), {"default": "file",
                                                   "tooltip": "file: the card chosen in persona_file; "
                                                              "json_string: the card pasted in persona_json"}),
                "persona_file": (persona_choices(EXAMPLES_DIR, input_directory()),
                                 {"default": DEFAULT_CARD,
                                  "tooltip": "A .json or .png character card: the pack's examples, .json cards "
                                             f"in ComfyUI's input folder, or input/{UPLOAD_SUBFOLDER}/ (the "
                                             "upload button puts cards there)"}),
                "persona_json": ("STRING", {"default": "", "multiline": True,
                                            "tooltip": "A whole chara_card_v2/v3 card as JSON (json_string mode)"}),
                "user_id": ("STRING", {"default": "meilin_001",
                                       "tooltip": "Stable account id; names the output folder (letters, digits, "
                                                  "_ . @ -)"}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, input_mode=None, persona_file=None):
        """Instead of ComfyUI's list check: a saved workflow's file name that is not in the list but
        still resolves (an older card elsewhere in input/) keeps working; anything else is named."""
        if input_mode is not None and input_mode not in INPUT_MODES:
            return f"input_mode must be one of {', '.join(INPUT_MODES)}"
        if input_mode == "file" and persona_file is not None:
            try:
                persona_path(persona_file)
            except PersonaError as exc:
                return f"{exc}; pick a card from the list or upload one"
        return True

    @classmethod
    def IS_CHANGED(cls, input_mode=None, persona_file=None, **kwargs):
        """A card read from a file is read again when the file changes (its content's hash)."""
        if input_mode != "file" or persona_file is None:
            return ""
        try:
            return hashlib.sha256(persona_path(persona_file).read_bytes()).hexdigest()
        except (PersonaError, OSError):
            return float("nan")  # let the node run and name the problem

    def load(self, input_mode, persona_file, persona_json, user_id):
        try:
            persona = load_persona(input_mode, persona_file, persona_json, user_id)
        except (UnsafePathError, PersonaError) as exc:
            raise ValueError(f"PersonaLoader: {exc}") from None
        return (persona, persona.summary(), build_system_prompt(persona), persona.user_id)
