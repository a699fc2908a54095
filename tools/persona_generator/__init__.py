"""PersonaGenerator's logic: an image and/or a concept text -> a complete chara_card_v2.

- ``stages``: the seven stages and their dependency graph, declared once as data;
  schemas and the checks on each answer.
- ``prompts``: one stage's request (the image only to vision profiles; a
  tighter grammar for the embedded model).
- ``runner``: the scheduling, checkpoints and resume (``generate_persona``).
- ``card``: the stages merged into a card; ``card_file``: JSON and PNG (``chara`` tEXt).
- ``images``: reading, downscaling and the placeholder portrait.
"""

from .images import PersonaImageError, image_from_pixels, open_image
from .runner import PersonaGenerationError, PersonaJob, PersonaResult, generate_persona, persona_folder
from .stages import STAGE_GRAPH, STAGES

__all__ = ["PersonaGenerationError", "PersonaImageError", "PersonaJob", "PersonaResult", "STAGES",
           "STAGE_GRAPH", "generate_persona", "image_from_pixels", "open_image", "persona_folder"]
