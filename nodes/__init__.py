"""One registry: every node class carries its id and display name, and the two
ComfyUI mapping dicts are built from this list."""

from __future__ import annotations

from .calendar import CalendarManager
from .context import ContextGatherer
from .generation import BatchTweetGenerator, TweetGenerator
from .output import OutputManager
from .persona import PersonaLoader
from .persona_generator import PersonaGenerator

NODE_CLASSES = (
    PersonaLoader,
    ContextGatherer,
    CalendarManager,
    BatchTweetGenerator,
    TweetGenerator,
    OutputManager,
    PersonaGenerator,
)


def build_mappings(classes=NODE_CLASSES) -> tuple[dict, dict]:
    class_mappings: dict = {}
    display_names: dict = {}
    for cls in classes:
        node_id = cls.NODE_ID
        if node_id in class_mappings:
            raise ValueError(f"duplicate node id {node_id!r} ({class_mappings[node_id].__name__} "
                             f"and {cls.__name__})")
        class_mappings[node_id] = cls
        display_names[node_id] = cls.DISPLAY_NAME
    return class_mappings, display_names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = build_mappings()
