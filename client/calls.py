"""The API's requests as plain data, shared by the sync and the async client.

Each builder checks what can be checked without the server (a task is a
workflow *or* a template, never both) and leaves the rest to the server's
validation, so the two sides never disagree about the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from .config import API_PREFIX
from .errors import TwitterChatError

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


def is_final(task: Mapping[str, Any]) -> bool:
    return task.get("status") in FINAL_STATUSES


def _path(*parts: str) -> str:
    if not all(isinstance(part, str) and part for part in parts):
        raise ValueError(f"ids must be non-empty strings, got {parts!r}")
    return API_PREFIX + "".join("/" + quote(part, safe="") for part in parts)


def _options(priority: int | None, metadata: Mapping[str, Any] | None,
             webhook_url: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if priority is not None:
        options["priority"] = int(priority)
    if metadata is not None:
        options["metadata"] = dict(metadata)
    if webhook_url is not None:
        options["webhook_url"] = webhook_url
    return options


def task_body(workflow: Mapping[str, Any] | None = None, *, template: str | None = None,
              params: Mapping[str, Any] | None = None, priority: int | None = None,
              metadata: Mapping[str, Any] | None = None,
              webhook_url: str | None = None) -> dict[str, Any]:
    """The body of ``POST /tasks`` (also one entry of a batch's ``tasks``)."""
    if (workflow is None) == (template is None):
        raise ValueError("a task is either a workflow (API format) or a template name: give exactly one")
    if workflow is not None:
        if params is not None:
            raise ValueError("params go with a template; a workflow carries its own inputs")
        body: dict[str, Any] = {"workflow": dict(workflow)}
    else:
        body = {"template": template, "params": dict(params or {})}
    body.update(_options(priority, metadata, webhook_url))
    return body


def submit_task(workflow: Mapping[str, Any] | None = None, *, template: str | None = None,
                params: Mapping[str, Any] | None = None, priority: int | None = None,
                metadata: Mapping[str, Any] | None = None, webhook_url: str | None = None,
                idempotency_key: str | None = None) -> Call:
    body = task_body(workflow, template=template, params=params, priority=priority,
                     metadata=metadata, webhook_url=webhook_url)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return Call("POST", _path("tasks"), json=body, headers=headers)


def submit_batch(name: str, *, tasks: Sequence[Mapping[str, Any]] | None = None,
                 template: str | None = None, personas: Sequence[Any] | None = None,
                 params: Mapping[str, Any] | None = None, priority: int | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 webhook_url: str | None = None) -> Call:
    """``tasks`` (task bodies, see :func:`task_body`) or ``template`` with ``personas``."""
    if not name or not isinstance(name, str):
        raise ValueError("a batch needs a name")
    if (tasks is None) == (template is None):
        raise ValueError("a batch is either a list of tasks or a template with personas: give exactly one")
    if tasks is not None:
        if personas is not None or params is not None:
            raise ValueError("personas and params go with a template, not with a list of tasks")
        body: dict[str, Any] = {"name": name, "tasks": [dict(task) for task in tasks]}
    else:
        if not personas:
            raise ValueError(f"template {template!r} needs at least one persona")
        body = {"name": name, "template": template, "personas": list(personas),
                "params": dict(params or {})}
    body.update(_options(priority, metadata, webhook_url))
    return Call("POST", _path("batches"), json=body)


def get_task(task_id: str) -> Call:
    return Call("GET", _path("tasks", task_id))


def list_tasks(status: str | None = None, batch_id: str | None = None, limit: int | None = None,
               cursor: str | None = None) -> Call:
    params = {"status": status, "batch_id": batch_id, "limit": limit, "cursor": cursor}
    return Call("GET", _path("tasks"), params={k: v for k, v in params.items() if v is not None})


def get_batch(batch_id: str) -> Call:
    return Call("GET", _path("batches", batch_id))


def cancel(task_id: str) -> Call:
    return Call("POST", _path("tasks", task_id, "cancel"))


def cancel_batch(batch_id: str) -> Call:
    return Call("POST", _path("batches", batch_id, "cancel"))


def events(task_id: str | None = None, batch_id: str | None = None,
           last_event_id: str | None = None) -> Call:
    params = {k: v for k, v in (("task_id", task_id), ("batch_id", batch_id)) if v is not None}
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return Call("GET", _path("events"), params=params, headers=headers)


def page_of_tasks(page: Any, wanted: int | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``GET /tasks``: at most ``wanted`` of its tasks, and the cursor of the next page
    (``None`` when there is none or no more are wanted)."""
    tasks = page.get("tasks") if isinstance(page, dict) else None
    if not isinstance(tasks, list):
        raise TwitterChatError(200, "invalid_response", "the task list answer has no 'tasks' list", page)
    if wanted is not None:
        tasks = tasks[:wanted]
        if len(tasks) >= wanted:
            return tasks, None
    cursor = page.get("next_cursor")
    return tasks, cursor if isinstance(cursor, str) and cursor else None


MAX_PAGE = 500  # the server's page limit


def page_size(limit: int | None) -> int | None:
    """``limit`` is how many tasks the caller wants in all; one page holds at most 500."""
    return None if limit is None else min(limit, MAX_PAGE)
