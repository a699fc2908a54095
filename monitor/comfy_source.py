"""The one module that reads ComfyUI's live state (queue, history, progress).

Only public methods of ``PromptQueue`` are called, each holding ComfyUI's queue
lock for as short as it can: the queue comes back as a shallow copy
(``get_current_queue_volatile`` where present), history entries are reduced to
a small summary *inside* the lock through ``get_history``'s ``map_function``
(no deep copy of the workflow), and nothing here does network I/O.
"""

from __future__ import annotations

import importlib
from typing import Any

from .query import HistorySummary, ProgressSnapshot, QueueEntry, queue_entry, summarize_history_entry


class ComfySource:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.queue = server.prompt_queue
        self._volatile = hasattr(self.queue, "get_current_queue_volatile")
        try:
            self._progress = importlib.import_module("comfy_execution.progress")
        except ImportError:  # ComfyUI before 0.3.45 has no progress registry
            self._progress = None

    def read_queue(self) -> tuple[list[QueueEntry], list[QueueEntry]]:
        if self._volatile:
            running, pending = self.queue.get_current_queue_volatile()
        else:
            running, pending = self.queue.get_current_queue()
        return [queue_entry(item) for item in running], [queue_entry(item) for item in pending]

    def read_progress(self) -> ProgressSnapshot | None:
        if self._progress is None or not hasattr(self._progress, "get_progress_state"):
            return None
        registry = self._progress.get_progress_state()
        nodes = dict(getattr(registry, "nodes", {}) or {})  # shallow copy: the worker mutates it
        snapshot = {}
        for node_id, state in nodes.items():
            try:
                name = getattr(state["state"], "value", state["state"])
                snapshot[str(node_id)] = (str(name).lower(), float(state.get("value") or 0.0),
                                          float(state.get("max") or 0.0))
            except (KeyError, TypeError, ValueError):
                continue
        return ProgressSnapshot(prompt_id=getattr(registry, "prompt_id", None), nodes=snapshot,
                                node_types=self._expanded_types(registry, snapshot))

    @staticmethod
    def _expanded_types(registry: Any, nodes: dict) -> dict[str, str]:
        """Class types of nodes that exist only in the dynamic prompt (subgraph expansion)."""
        dynprompt = getattr(registry, "dynprompt", None)
        types = {}
        if dynprompt is None:
            return types
        for node_id, (state, _, _) in nodes.items():
            if state != "running":
                continue
            try:
                types[node_id] = dynprompt.get_node(node_id)["class_type"]
            except Exception:  # a node id the dynamic prompt no longer knows
                continue
        return types

    def history_summary(self, prompt_id: str) -> HistorySummary | None:
        found = self.queue.get_history(prompt_id=prompt_id, map_function=summarize_history_entry)
        return found.get(prompt_id)

    def recent_history(self, max_items: int) -> dict[str, HistorySummary]:
        return self.queue.get_history(max_items=max_items, map_function=summarize_history_entry)

    def started_prompt_id(self) -> str | None:
        """The prompt ComfyUI's worker took last (``PromptServer.last_prompt_id``)."""
        value = getattr(self.server, "last_prompt_id", None)
        return str(value) if value else None

    def queued_counter(self) -> int | None:
        """How many prompts the server has numbered so far (``PromptServer.number``)."""
        number = getattr(self.server, "number", None)
        return int(number) if isinstance(number, (int, float)) else None
