"""Tasks and batches as short human-readable lines, for the command line."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from .calls import FINAL_STATUSES

_TEXT_CHARS = 100


def _short(text: Any, limit: int = _TEXT_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def task_headline(task: Mapping[str, Any]) -> str:
    """``task <id> [user]: <status> [progress, node, queue position]``."""
    parts = [f"task {task.get('task_id')}"]
    if task.get("user_id"):
        parts.append(f"({task['user_id']})")
    status = str(task.get("status"))
    line = " ".join(parts) + f": {status}"
    progress = task.get("progress")
    if status == "running" and isinstance(progress, (int, float)):
        line += f" {progress:.0%}"
    node = task.get("current_node")
    if status == "running" and isinstance(node, dict):
        line += f", node {node.get('id')} ({node.get('type')})"
    if status == "queued" and task.get("queue_position") is not None:
        line += f", position {task['queue_position']} in the queue"
    return line


def task_details(task: Mapping[str, Any]) -> list[str]:
    """The error, and one line per output (posts with their date and text, files with their URL)."""
    lines = []
    error = task.get("error")
    if isinstance(error, dict):
        where = f" in node {error['node_id']} ({error.get('node_type')})" if error.get("node_id") else ""
        lines.append(f"  error{where}: {error.get('type')}: {_short(error.get('message'), 300)}")
    for output in task.get("outputs") or []:
        if not isinstance(output, dict):
            continue
        if output.get("kind") == "post":
            lines.append(f"  post {output.get('user_id')} {output.get('date')}: {_short(output.get('text'))}")
        else:
            where = output.get("url") or output.get("subfolder") or ""
            lines.append(f"  file {output.get('filename')}: {where}")
    return lines


def describe_task(task: Mapping[str, Any]) -> list[str]:
    return [task_headline(task), *task_details(task)]


def _counts_text(counts: Mapping[str, int]) -> str:
    order = ("completed", "failed", "cancelled", "running", "queued")
    return ", ".join(f"{counts.get(status, 0)} {status}" for status in order)


def describe_batch(batch: Mapping[str, Any]) -> list[str]:
    counts = batch.get("counts") or {}
    final = sum(counts.get(status, 0) for status in FINAL_STATUSES)
    progress = batch.get("progress")
    share = f" {progress:.0%}" if isinstance(progress, (int, float)) else ""
    return [f"batch {batch.get('batch_id')} {batch.get('name')!r}: {batch.get('status')}{share}, "
            f"{final}/{batch.get('total')} tasks final ({_counts_text(counts)})"]


def summarize_tasks(tasks: Iterable[Mapping[str, Any]]) -> list[str]:
    """A count per status, then a line for every task that did not complete."""
    tasks = list(tasks)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[str(task.get("status"))] = counts.get(str(task.get("status")), 0) + 1
    lines = [f"{len(tasks)} tasks: {_counts_text(counts)}"]
    for task in tasks:
        if task.get("status") == "completed":
            posts = sum(1 for out in task.get("outputs") or [] if isinstance(out, dict)
                        and out.get("kind") == "post")
            lines.append(f"{task_headline(task)}, {posts} post{'' if posts == 1 else 's'}")
        else:
            lines.extend(describe_task(task))
    return lines
