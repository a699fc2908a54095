"""The one module of the service that touches ComfyUI: enqueue, delete, interrupt, results.

ComfyUI has no public helper to enqueue from inside the server, so
``enqueue`` does what ``POST /prompt`` does (on-prompt handlers, the prompt
number, node replacements where the version has them, ``validate_prompt``
with the arity this version takes, then ``PromptQueue.put`` with the 5- or
6-tuple this version's worker reads). Versions are detected by feature, never
by number. Only public ``PromptQueue`` methods are called, except for the one
place ComfyUI 0.3.75 offers no way to interrupt a given prompt atomically
(``interrupt_running``), where its queue lock is held around the check.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import ipaddress
import time
from typing import Any, Mapping
from urllib.parse import urlencode

from ..monitor.query import HistorySummary, summarize_history_entry

EXTRA_DATA_TAG = "twitterchat"
FILE_KEYS = ("images", "gifs", "video", "videos", "audio", "files", "3d")


class InvalidWorkflow(ValueError):
    """ComfyUI's validation refused the workflow; ``node_errors`` is ComfyUI's own."""

    def __init__(self, message: str, node_errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.node_errors = dict(node_errors or {})


def _error_message(error: Any) -> str:
    if isinstance(error, Mapping):
        message = str(error.get("message") or "invalid workflow")
        details = str(error.get("details") or "").strip()
        return f"{message}: {details}" if details else message
    return str(error or "invalid workflow")


def listen_addresses() -> list[str]:
    """The addresses ComfyUI was told to listen on (``--listen``)."""
    try:
        args = importlib.import_module("comfy.cli_args").args
    except (ImportError, AttributeError):
        return ["127.0.0.1"]
    return [a.strip() for a in str(getattr(args, "listen", "127.0.0.1") or "").split(",") if a.strip()]


def is_loopback_only(addresses: list[str]) -> bool:
    for address in addresses:
        if address.lower() == "localhost":
            continue
        try:
            if not ipaddress.ip_address(address.strip("[]")).is_loopback:
                return False
        except ValueError:  # a host name: it may resolve to anything
            return False
    return bool(addresses)


def files_from_outputs(outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every file ComfyUI recorded for a prompt, with a URL on ComfyUI's own ``/view``."""
    files = []
    for node_id, ui in outputs.items():
        if not isinstance(ui, Mapping):
            continue
        for key in FILE_KEYS:
            for item in ui.get(key) or ():
                if not isinstance(item, Mapping) or not item.get("filename"):
                    continue
                entry = {"node_id": str(node_id), "filename": str(item["filename"]),
                         "subfolder": str(item.get("subfolder") or ""), "type": str(item.get("type") or "output")}
                entry["url"] = "/view?" + urlencode({"filename": entry["filename"], "subfolder": entry["subfolder"],
                                                     "type": entry["type"]})
                files.append(entry)
    return files


def _history_digest(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Runs under ComfyUI's queue lock: copy only what the service keeps."""
    return {"outputs": copy.deepcopy(entry.get("outputs") or {})}


class ComfyBridge:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.queue = server.prompt_queue
        self.execution = importlib.import_module("execution")
        task_done = getattr(type(self.queue), "task_done", None)
        self.six_tuple = task_done is not None and "process_item" in inspect.signature(task_done).parameters
        validate = self.execution.validate_prompt
        self._validate_params = len(inspect.signature(validate).parameters)
        self._volatile = hasattr(self.queue, "get_current_queue_volatile")
        try:
            self._history_map = "map_function" in inspect.signature(self.queue.get_history).parameters
        except (TypeError, ValueError):
            self._history_map = False

    # -- validation and enqueueing (on ComfyUI's event loop) ---------------
    async def validate(self, prompt_id: str, prompt: dict[str, Any]) -> list[str]:
        """The outputs to execute; raises ``InvalidWorkflow`` with ComfyUI's node_errors."""
        validate = self.execution.validate_prompt
        if self._validate_params >= 3:
            result = validate(prompt_id, prompt, None)
        elif self._validate_params == 2:
            result = validate(prompt_id, prompt)
        else:
            result = validate(prompt)
        if inspect.isawaitable(result):
            result = await result
        ok, error, outputs, node_errors = result
        if not ok:
            raise InvalidWorkflow(_error_message(error), node_errors)
        if node_errors:  # valid, but some outputs were dropped (ComfyUI#9076): refuse, never run half
            raise InvalidWorkflow("some output nodes of the workflow are invalid", node_errors)
        return list(outputs)

    def prepare(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """What ``POST /prompt`` does to a prompt before validating it."""
        prompt = copy.deepcopy(prompt)
        trigger = getattr(self.server, "trigger_on_prompt", None)
        if trigger is not None:
            prompt = trigger({"prompt": prompt}).get("prompt", prompt)
        replacer = getattr(self.server, "node_replace_manager", None)
        if replacer is not None and hasattr(replacer, "apply_replacements"):
            replacer.apply_replacements(prompt)
        return prompt

    async def enqueue(self, prompt_id: str, prompt: dict[str, Any]) -> None:
        prompt = self.prepare(prompt)
        outputs = await self.validate(prompt_id, prompt)
        number = self.server.number
        self.server.number += 1
        extra_data = {"create_time": int(time.time() * 1000), EXTRA_DATA_TAG: {"task_id": prompt_id}}
        item = (number, prompt_id, prompt, extra_data, outputs)
        self.queue.put(item + ({},) if self.six_tuple else item)

    # -- reading the queue and history (any thread, no I/O) ----------------
    def present(self, ids: set[str]) -> set[str]:
        """Which of ``ids`` are pending or running in ComfyUI's queue right now."""
        if not ids:
            return set()
        if self._volatile:
            running, pending = self.queue.get_current_queue_volatile()
        else:
            running, pending = self.queue.get_current_queue()
        return {str(item[1]) for item in (*running, *pending) if str(item[1]) in ids}

    def history_outputs(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's outputs (``None`` when ComfyUI has no history for it)."""
        if self._history_map:
            found = self.queue.get_history(prompt_id=prompt_id, map_function=_history_digest)
            entry = found.get(prompt_id)
        else:
            entry = self.queue.get_history(prompt_id=prompt_id).get(prompt_id)
            entry = _history_digest(entry) if entry is not None else None
        return None if entry is None else entry["outputs"]

    def history_summary(self, prompt_id: str) -> HistorySummary | None:
        """The monitor's summary of a finished prompt (``None`` without history)."""
        if self._history_map:
            return self.queue.get_history(prompt_id=prompt_id, map_function=summarize_history_entry).get(prompt_id)
        entry = self.queue.get_history(prompt_id=prompt_id).get(prompt_id)
        return None if entry is None else summarize_history_entry(entry)

    # -- cancelling --------------------------------------------------------
    def delete_pending(self, prompt_id: str) -> bool:
        """True when the prompt was still waiting in ComfyUI's queue and is now gone."""
        return bool(self.queue.delete_queue_item(lambda item: str(item[1]) == prompt_id))

    def interrupt_running(self, prompt_id: str) -> bool:
        """Interrupt ``prompt_id`` only if it is the one running; never another prompt."""
        if hasattr(self.queue, "interrupt_if_running"):  # ComfyUI 0.26+
            return bool(self.queue.interrupt_if_running(prompt_id))
        nodes = importlib.import_module("nodes")
        with self.queue.mutex:  # the worker cannot swap prompts while the check and the flag happen
            running = getattr(self.queue, "currently_running", {})
            if not any(str(item[1]) == prompt_id for item in running.values()):
                return False
            nodes.interrupt_processing()
            return True

    # -- node definitions --------------------------------------------------
    def input_types(self, class_type: str) -> dict[str, Any] | None:
        nodes = importlib.import_module("nodes")
        cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
        if cls is None:
            return None
        return cls.INPUT_TYPES()
