"""PersonaGenerator: an image and/or a concept text -> a complete character card (seven LLM stages)."""

from __future__ import annotations

import json

from ..tools.persona_generator import (STAGES, PersonaGenerationError, PersonaImageError, PersonaJob,
                                       generate_persona, image_from_pixels)
from ..utils.comfy_env import NodeProgress, interruptible
from ..utils.llm import LLMError, get_pool
from ..utils.output_paths import output_root
from ..utils.safe_paths import UnsafePathError
from .inputs import SEED, llm_profile, validate_llm_profile


def _first_image(image):
    """The first picture of a ComfyUI IMAGE batch as a PIL image (None when not connected)."""
    if image is None:
        return None
    pixels = image[0]
    if hasattr(pixels, "cpu"):
        pixels = pixels.cpu().numpy()
    return image_from_pixels(pixels)


class PersonaGenerator:
    NODE_ID = "PersonaGenerator"
    DISPLAY_NAME = "Persona Generator (image or concept to card)"
    CATEGORY = "TwitterChat/persona"
    DESCRIPTION = ("Turns an image and/or a concept text into a complete chara_card_v2 in seven LLM stages "
                   "(core persona, posting strategy, example posts, social network, authenticity, visual "
                   "profile, knowledge book), checkpointed per stage under <output>/<user_id>/persona/ and "
                   "saved as <user_id>.json and a PNG card. A failed run resumes from its failed stage; "
                   "'regenerate' starts over. Only vision profiles see the image.")
    RETURN_TYPES = ("TC_PERSONA", "STRING", "STRING", "STRING")
    RETURN_NAMES = ("persona", "card_json", "card_path", "notes")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "user_id": ("STRING", {"default": "persona_001",
                                       "tooltip": "Stable account id; names the output folder"}),
                "language": ("STRING", {"default": "English", "tooltip": "The language the card is written in"}),
                "llm_profile": llm_profile(), "seed": SEED,
                "regenerate": ("BOOLEAN", {"default": False,
                                           "tooltip": "Start over instead of resuming from the checkpoints"}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "A picture of the persona (the first of a batch)"}),
                "concept": ("STRING", {"default": "", "multiline": True,
                                       "tooltip": "Who the persona is, in a few sentences"}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, llm_profile=None):
        return validate_llm_profile(llm_profile)

    @classmethod
    def IS_CHANGED(cls, regenerate=False, **kwargs):
        # NaN never equals itself: with 'regenerate' on, ComfyUI never answers from its cache.
        return float("nan") if regenerate else False

    async def generate(self, user_id, language, llm_profile, seed, regenerate, image=None, concept=""):
        progress = NodeProgress(len(STAGES))  # one step per stage, done or resumed
        try:
            job = PersonaJob(user_id=user_id, concept=concept or "", image=_first_image(image),
                             language=language, seed=seed, regenerate=regenerate)
            result = await interruptible(generate_persona(get_pool(), llm_profile, job, output_root(),
                                                          on_stage=lambda stage, status: progress.update(1)))
        except (PersonaGenerationError, PersonaImageError, UnsafePathError, LLMError) as exc:
            raise RuntimeError(f"PersonaGenerator: {exc}") from None
        notes = result.notes + [f"stages asked: {', '.join(result.generated) or 'none'}; "
                                f"resumed from checkpoints: {', '.join(result.resumed) or 'none'}",
                                f"PNG card: {result.png_path}"]
        return (result.persona, json.dumps(result.card, ensure_ascii=False, indent=1), str(result.json_path),
                "\n".join(notes))
