"""The few facts this pack asks of the ComfyUI process it runs in.

Imported lazily, so the rest of the pack runs and tests without ComfyUI; each
function answers ``None`` when ComfyUI is not there.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def _folder_paths():
    try:
        return importlib.import_module("folder_paths")
    except ImportError:
        return None


def input_directory() -> Path | None:
    module = _folder_paths()
    return Path(module.get_input_directory()) if module is not None else None


def output_directory() -> Path | None:
    module = _folder_paths()
    return Path(module.get_output_directory()) if module is not None else None


def current_prompt_id() -> str | None:
    """The id of the prompt being executed (ComfyUI sets it before running a prompt)."""
    server_module = sys.modules.get("server")  # only ever the one ComfyUI already loaded
    server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    value = getattr(server, "last_prompt_id", None)
    return str(value) if value else None
