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


def _loaded(name: str):
    """A ComfyUI module, only if ComfyUI itself already imported it (never imported from here)."""
    return sys.modules.get(name)


class NodeProgress:
    """ComfyUI's progress bar for the node being run (days done of days asked, ...).

    Outside ComfyUI it does nothing. Inside, every update also checks ComfyUI's
    interrupt flag: ComfyUI's progress hook raises its InterruptProcessingException
    when Cancel was pressed, which ends the prompt as interrupted.
    """

    def __init__(self, total: int) -> None:
        utils = _loaded("comfy.utils")
        self._bar = utils.ProgressBar(max(1, total)) if utils is not None and hasattr(utils, "ProgressBar") else None

    def update(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)


async def interruptible(awaitable, poll_seconds: float = 0.1):
    """Await ``awaitable``; when ComfyUI's Cancel (or ``/interrupt``) is pressed meanwhile,
    cancel it at once (abandoning in-flight LLM requests) and raise ComfyUI's
    InterruptProcessingException, so the prompt ends ``cancelled`` instead of after its last call.
    Outside ComfyUI it simply awaits."""
    import asyncio

    task = asyncio.ensure_future(awaitable)
    management = _loaded("comfy.model_management")
    if management is None or not hasattr(management, "processing_interrupted"):
        return await task
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_seconds)
            if done:
                return task.result()
            if management.processing_interrupted():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                management.throw_exception_if_processing_interrupted()
    finally:
        if not task.done():
            task.cancel()
