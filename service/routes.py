"""HTTP routes of the task service on ComfyUI's own aiohttp server.

Everything under ``/twitterchat/api/v1`` plus ``/twitterchat/health`` and
``/twitterchat/metrics``. ComfyUI has no authentication, so when it listens on
anything but loopback every route here needs ``Authorization: Bearer <token>``
(``TWITTERCHAT_API_TOKEN``), and answers 503 when no token is configured; on
loopback the routes are open unless a token is set. Errors are always
``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from functools import wraps
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from .comfy_bridge import InvalidWorkflow, is_loopback_only, listen_addresses
from .store import API_STATUSES, NewTask, StoreError
from .templates import (PERSONA_POSTS, TemplateError, build_workflow, check_params, known_profiles,
                        list_personas, persona_user_id)
from .ui_workflow import UIWorkflowError, is_ui_workflow, ui_to_api
from .webhooks import WebhookURLError, check_url

logger = logging.getLogger("twitterchat.service.http")

PREFIX = "/twitterchat/api/v1"
MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_BATCH_TASKS = 10_000
MAX_METADATA_BYTES = 4096
MAX_PAGE = 500
MAX_PRIORITY = 1_000_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.extra = status, kind, message, extra

    def response(self) -> web.Response:
        headers = {}
        if "retry_after" in self.extra:
            headers["Retry-After"] = str(self.extra.pop("retry_after"))
        return web.json_response({"error": {"type": self.kind, "message": self.message, **self.extra}},
                                 status=self.status, headers=headers)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Api:
    def __init__(self, service_ref: Callable[[], Any], settings: Any, monitor_stats: Callable[[], Any]) -> None:
        self.service_ref = service_ref
        self.settings = settings
        self.monitor_stats = monitor_stats
        self._loopback: bool | None = None

    # -- guards ------------------------------------------------------------
    def loopback_only(self) -> bool:
        if self._loopback is None:
            self._loopback = is_loopback_only(listen_addresses())
        return self._loopback

    def authorize(self, request: web.Request) -> None:
        token = self.settings.api_token
        if token is None:
            if self.loopback_only():
                return
            raise ApiError(503, "token_required", "ComfyUI listens beyond loopback and these routes act on "
                                                  "its queue: set TWITTERCHAT_API_TOKEN to use them")
        given = _bearer(request)
        if given is None:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <TWITTERCHAT_API_TOKEN>")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(403, "forbidden", "the bearer token is not the configured one")

    def guarded(self, handler: Handler, *, needs_service: bool = True) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                self.authorize(request)
                if needs_service and self.service is None:
                    raise ApiError(503, "service_unavailable", "the task service is not running (disabled by "
                                                               "configuration, or still starting; see the log)")
                return await handler(request)
            except ApiError as exc:
                return exc.response()
            except StoreError as exc:
                logger.error("task store error: %s", exc)
                return ApiError(503, "store_unavailable", getattr(exc, "public", None)
                                or "the task store cannot be used; see ComfyUI's log", retry_after=5).response()
            except Exception:  # still the API's error shape, never aiohttp's plain-text 500
                logger.exception("task service: %s %s failed", request.method, request.path)
                return ApiError(500, "internal_error", "unexpected server error; see ComfyUI's log").response()
        return wrapper

    @property
    def service(self) -> Any:
        service = self.service_ref()
        return service if service is not None and service.started else None

    # -- request parsing ---------------------------------------------------
    async def body(self, request: web.Request) -> tuple[Any, bytes]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MB")
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, "too_large", f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MB")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return json.loads(raw or b"null"), raw
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "invalid_request", f"the body is not JSON: {exc}") from None

    def persona_folders(self) -> list[Path]:
        from ..nodes.persona import persona_folders

        return persona_folders()

    async def task_from_body(self, body: Any, where: str = "body",
                             validated: dict[str, dict] | None = None) -> NewTask:
        """One task body -> NewTask; validates a workflow with ComfyUI (nothing is stored on failure)."""
        if not isinstance(body, Mapping):
            raise ApiError(400, "invalid_request", f"{where} must be a JSON object")
        known = {"workflow", "template", "params", "priority", "metadata", "webhook_url"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ApiError(400, "invalid_request", f"{where}: unknown field(s) {', '.join(unknown)}; "
                                                   f"known: {', '.join(sorted(known))}")
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
            raise ApiError(400, "invalid_request", f"{where}.priority must be a whole number within ±{MAX_PRIORITY} "
                                                   "(higher runs first)")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise ApiError(400, "invalid_request", f"{where}.metadata must be a JSON object")
            if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
                raise ApiError(413, "too_large", f"{where}.metadata is over {MAX_METADATA_BYTES} bytes")
        webhook_url = self.webhook(body.get("webhook_url"), where)
        if ("workflow" in body) == ("template" in body):
            raise ApiError(400, "invalid_request", f"{where} needs exactly one of 'workflow' or 'template'")
        if "template" in body:
            if body["template"] != PERSONA_POSTS:
                raise ApiError(400, "invalid_request", f"{where}.template: unknown template {body['template']!r}; "
                                                       f"known: {PERSONA_POSTS}")
            try:
                params = check_params(body.get("params") or {}, self.persona_folders)
            except TemplateError as exc:
                raise ApiError(400, "invalid_params", f"{where}: {exc}") from None
            if validated is None or PERSONA_POSTS not in validated:  # nodes and links are the same every time
                await self.workflow(build_workflow(PERSONA_POSTS, params), where)
                if validated is not None:
                    validated[PERSONA_POSTS] = {}
            return NewTask(spec={"template": PERSONA_POSTS, "params": params}, priority=priority,
                           metadata=metadata, webhook_url=webhook_url, user_id=params["user_id"])
        workflow = await self.workflow(body["workflow"], where, validated)
        return NewTask(spec={"workflow": workflow}, priority=priority, metadata=metadata, webhook_url=webhook_url)

    def webhook(self, url: Any, where: str) -> str | None:
        if url is None:
            return None
        if self.settings.webhook_key is None:
            raise ApiError(400, "webhooks_disabled", f"{where}.webhook_url: set TWITTERCHAT_WEBHOOK_SECRET "
                                                     "(whsec_...) so webhooks can be signed")
        try:
            return check_url(url, self.settings.webhook_allowed_hosts)
        except WebhookURLError as exc:
            raise ApiError(400, "invalid_webhook_url", f"{where}.webhook_url: {exc}") from None

    async def workflow(self, workflow: Any, where: str, validated: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(workflow, Mapping) or not workflow:
            raise ApiError(400, "invalid_workflow", f"{where}.workflow must be an API-format workflow object",
                           node_errors={})
        bridge = self.service.bridge
        if is_ui_workflow(workflow):
            try:
                workflow = ui_to_api(dict(workflow), bridge.input_types)
            except UIWorkflowError as exc:
                raise ApiError(400, "invalid_workflow", f"{where}.workflow: {exc}", node_errors={}) from None
        malformed = [str(node_id) for node_id, node in workflow.items()
                     if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str)
                     or not isinstance(node.get("inputs", {}), Mapping)]
        if malformed:
            raise ApiError(400, "invalid_workflow", f"{where}.workflow: node(s) {', '.join(malformed[:5])} are not "
                           "{\"class_type\", \"inputs\"} objects; send the API format (Export (API) in ComfyUI)",
                           node_errors={})
        key = hashlib.sha256(json.dumps(workflow).encode()).hexdigest()  # same document, same text
        if validated is not None and key in validated:
            return validated[key]
        try:
            await bridge.validate("validation", bridge.prepare(dict(workflow)))
        except InvalidWorkflow as exc:
            raise ApiError(400, "invalid_workflow", f"{where}.workflow: {exc}",
                           node_errors=_plain(exc.node_errors)) from None
        if validated is not None:
            validated[key] = dict(workflow)
        return dict(workflow)

    def check_capacity(self, adding: int) -> None:
        waiting = self.service.store.counts["waiting"]
        if waiting + adding > self.settings.max_waiting:
            raise ApiError(429, "queue_full", f"{waiting} tasks are waiting (limit {self.settings.max_waiting}); "
                                              "try again later", retry_after=30)

    async def idempotent(self, request: web.Request, raw: bytes, tasks: list[NewTask], batch: dict | None,
                         build: Callable[[list[str], str | None], dict]) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        service = self.service
        idem = None
        if key is not None:
            if not key or len(key) > 255:
                raise ApiError(400, "invalid_request", "Idempotency-Key must be 1 to 255 characters")
            idem = (idempotency_scope(request, key), hashlib.sha256(raw).hexdigest())
        result, events = await service.run(service.store.add_tasks, tasks, build, batch=batch, idempotency=idem)
        if result["replay"]:
            return self.replay(result["body_hash"], result["response"], idem[1])
        service.published(events)
        service.kick()
        return web.json_response(result["response"], status=202)

    def replay(self, stored_hash: str, response: dict, body_hash: str) -> web.Response:
        if stored_hash != body_hash:
            raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with another body")
        return web.json_response(response, status=202, headers={"Idempotent-Replayed": "true"})

    async def early_replay(self, request: web.Request, raw: bytes) -> web.Response | None:
        """A replay answers what the first request answered, without validating again."""
        key = request.headers.get("Idempotency-Key")
        if not key:
            return None
        service = self.service
        found = await service.run(service.store.idempotent_response, idempotency_scope(request, key))
        if found is None:
            return None
        return self.replay(found[0], found[1], hashlib.sha256(raw).hexdigest())

    # -- handlers ----------------------------------------------------------
    async def post_task(self, request: web.Request) -> web.Response:
        body, raw = await self.body(request)
        replay = await self.early_replay(request, raw)
        if replay is not None:
            return replay
        task = await self.task_from_body(body)
        self.check_capacity(1)
        return await self.idempotent(request, raw, [task], None,
                                     lambda ids, _: {"task_id": ids[0], "status": "queued", "batch_id": None})

    async def found(self, request: web.Request, what: str) -> web.Response:
        """GET one task or batch by its id from the path."""
        item_id = request.match_info[f"{what}_id"]
        service = self.service
        item = await service.run(getattr(service.store, f"get_{what}"), item_id)
        if item is None:
            raise ApiError(404, "not_found", f"no {what} {item_id!r}")
        return web.json_response(item)

    async def get_task(self, request: web.Request) -> web.Response:
        return await self.found(request, "task")

    async def list_tasks(self, request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        if status is not None and status not in API_STATUSES:
            raise ApiError(400, "invalid_request", f"status must be one of {', '.join(API_STATUSES)}")
        limit, cursor = _page(request)
        service = self.service
        tasks, next_cursor = await service.run(service.store.list_tasks, status,
                                               request.query.get("batch_id") or None, limit, cursor)
        return web.json_response({"tasks": tasks, "next_cursor": None if next_cursor is None else str(next_cursor)})

    async def cancel_task(self, request: web.Request) -> web.Response:
        answer = await self.service.cancel(request.match_info["task_id"])
        if answer is None:
            raise ApiError(404, "not_found", f"no task {request.match_info['task_id']!r}")
        return web.json_response(answer)

    async def post_batch(self, request: web.Request) -> web.Response:
        body, raw = await self.body(request)
        replay = await self.early_replay(request, raw)
        if replay is not None:
            return replay
        if not isinstance(body, Mapping):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ApiError(400, "invalid_request", "name must be text of 1 to 200 characters")
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, Mapping) or len(json.dumps(metadata)) > MAX_METADATA_BYTES):
            raise ApiError(400, "invalid_request", f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes")
        webhook_url = self.webhook(body.get("webhook_url"), "body")
        if "tasks" in body:
            tasks = await self.batch_tasks(body)
        elif body.get("template") == PERSONA_POSTS:
            tasks = self.persona_tasks(body)
            await self.check_template(tasks)
        else:
            raise ApiError(400, "invalid_request", "a batch needs 'tasks' or 'template': 'persona_posts' with "
                                                   "'personas'")
        self.check_capacity(len(tasks))
        batch = {"name": name.strip(), "metadata": metadata, "webhook_url": webhook_url}
        return await self.idempotent(request, raw, tasks, batch,
                                     lambda ids, batch_id: {"batch_id": batch_id, "task_ids": ids})

    async def batch_tasks(self, body: Mapping[str, Any]) -> list[NewTask]:
        entries = body["tasks"]
        if not isinstance(entries, list) or not entries:
            raise ApiError(400, "invalid_request", "tasks must be a non-empty list of task bodies")
        _limit(len(entries))
        validated: dict[str, dict] = {}  # the same workflow is validated once per batch
        return [await self.task_from_body(entry, f"tasks[{index}]", validated)
                for index, entry in enumerate(entries)]

    def persona_tasks(self, body: Mapping[str, Any]) -> list[NewTask]:
        personas = body.get("personas")
        if not isinstance(personas, list) or not personas:
            raise ApiError(400, "invalid_request", "personas must be a non-empty list")
        _limit(len(personas))
        shared = body.get("params") or {}
        if not isinstance(shared, Mapping) or {"persona_file", "persona_json", "user_id"} & set(shared):
            raise ApiError(400, "invalid_request", "params holds what every persona shares (num_days, "
                                                   "start_day_offset, llm_profile); personas go in 'personas'")
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
            raise ApiError(400, "invalid_request", f"priority must be a whole number within ±{MAX_PRIORITY}")
        user_ids: dict[str, str] = {}
        names = known_profiles()  # read the configuration once per request, not per persona
        folders = self.persona_folders()
        found: set[str] = set()
        tasks = []
        for index, entry in enumerate(personas):
            if not isinstance(entry, (str, Mapping)):
                raise ApiError(400, "invalid_request", f"personas[{index}] must be a file name or an object")
            if isinstance(entry, str):
                if entry not in user_ids:
                    try:
                        user_ids[entry] = persona_user_id(entry, lambda: folders)
                    except TemplateError as exc:
                        raise ApiError(400, "invalid_params", f"personas[{index}]: {exc}") from None
                entry = {"persona_file": entry, "user_id": user_ids[entry]}
            if not isinstance(entry, Mapping):
                raise ApiError(400, "invalid_request", f"personas[{index}] must be a file name or an object")
            try:
                params = check_params({**shared, **entry}, lambda: folders, lambda: names, found)
            except TemplateError as exc:
                raise ApiError(400, "invalid_params", f"personas[{index}]: {exc}") from None
            tasks.append(NewTask(spec={"template": PERSONA_POSTS, "params": params}, priority=priority,
                                 user_id=params["user_id"]))
        return tasks

    async def check_template(self, tasks: list[NewTask]) -> None:
        """The template's workflow, validated by ComfyUI once per request (values differ per persona,
        nodes and links do not)."""
        await self.workflow(build_workflow(PERSONA_POSTS, tasks[0].spec["params"]), "personas[0]")

    async def get_batch(self, request: web.Request) -> web.Response:
        return await self.found(request, "batch")

    async def list_batches(self, request: web.Request) -> web.Response:
        limit, cursor = _page(request)
        service = self.service
        batches, next_cursor = await service.run(service.store.list_batches, limit, cursor)
        return web.json_response({"batches": batches,
                                  "next_cursor": None if next_cursor is None else str(next_cursor)})

    async def cancel_batch(self, request: web.Request) -> web.Response:
        count = await self.service.cancel_batch(request.match_info["batch_id"])
        if count is None:
            raise ApiError(404, "not_found", f"no batch {request.match_info['batch_id']!r}")
        return web.json_response({"batch_id": request.match_info["batch_id"], "cancelled": count})

    async def events(self, request: web.Request) -> web.StreamResponse:
        from .events import stream_events

        service = self.service
        task_id = request.query.get("task_id") or None
        batch_id = request.query.get("batch_id") or None
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        if last is not None:
            if not last.strip().isdigit():
                raise ApiError(400, "invalid_request", "Last-Event-ID must be an event id (a whole number)")
            start_after = int(last)
        elif task_id or batch_id:
            start_after = 0
        else:
            start_after = await service.run(service.store.last_event_id)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)

        async def read(after: int) -> list:
            return await service.run(service.store.events_after, after, task_id, batch_id)

        await stream_events(response, service.hub, read, start_after)
        return response

    async def personas(self, request: web.Request) -> web.Response:
        """The character cards a persona_posts task may name: the pack's examples and ComfyUI's input folder."""
        folders = self.persona_folders()
        found = await self.service.run(list_personas, folders)
        return web.json_response({"personas": found})

    async def health(self, request: web.Request) -> web.Response:
        service = self.service
        stats = self.monitor_stats()
        body: dict[str, Any] = {"status": "ok" if service is not None and stats else "degraded",
                                "service_running": service is not None, "monitor_running": bool(stats)}
        if service is not None:
            store = service.store
            body["backend"] = "redis" if service.distributed else "sqlite"
            body["worker"] = service.worker
            try:
                body["store"] = {"ok": True, "path_name": store.display if service.distributed
                                 else Path(store.path).name, "webhooks": await service.run(store.outbox_stats)}
                body["tasks"] = await service.run(store.api_counts)
                if service.distributed:
                    body["queue"] = await service.run(store.queue_stats)
            except Exception as exc:  # report, never raise from a health check
                body["status"], body["store"] = "degraded", {"ok": False, "error": type(exc).__name__,
                                                             "message": getattr(exc, "public", None)}
            body["queue_depth"] = {"waiting": store.counts["waiting"], "in_comfyui": len(service.inflight)}
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        service = self.service
        data, content_type = await service.run(service.metrics.render, request.headers.get("Accept"))
        return web.Response(body=data, headers={"Content-Type": content_type})


def idempotency_scope(request: web.Request, key: str) -> str:
    """One key space per route, whichever of ComfyUI's two spellings (``/api/...``) was used."""
    path = request.path
    return f"{path[4:] if path.startswith('/api/') else path}:{key}"


def _plain(value: Any) -> Any:
    """ComfyUI's node_errors as plain JSON (they are built from dicts, lists and strings)."""
    return json.loads(json.dumps(value, default=str))


def _limit(count: int) -> None:
    if count > MAX_BATCH_TASKS:
        raise ApiError(413, "too_large", f"a batch holds at most {MAX_BATCH_TASKS} tasks; got {count}")


def _page(request: web.Request) -> tuple[int, int | None]:
    try:
        limit = int(request.query.get("limit", "50"))
        cursor = request.query.get("cursor")
        cursor = int(cursor) if cursor else None
    except ValueError:
        raise ApiError(400, "invalid_request", "limit and cursor must be whole numbers") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_request", f"limit must be from 1 to {MAX_PAGE}")
    return limit, cursor


def add_routes(routes: Any, api: Api) -> None:
    g = api.guarded
    routes.post(f"{PREFIX}/tasks")(g(api.post_task))
    routes.get(f"{PREFIX}/tasks")(g(api.list_tasks))
    routes.get(f"{PREFIX}/tasks/{{task_id}}")(g(api.get_task))
    routes.post(f"{PREFIX}/tasks/{{task_id}}/cancel")(g(api.cancel_task))
    routes.delete(f"{PREFIX}/tasks/{{task_id}}")(g(api.cancel_task))
    routes.post(f"{PREFIX}/batches")(g(api.post_batch))
    routes.get(f"{PREFIX}/batches")(g(api.list_batches))
    routes.get(f"{PREFIX}/batches/{{batch_id}}")(g(api.get_batch))
    routes.post(f"{PREFIX}/batches/{{batch_id}}/cancel")(g(api.cancel_batch))
    routes.get(f"{PREFIX}/events")(g(api.events))
    routes.get(f"{PREFIX}/personas")(g(api.personas))
    routes.get("/twitterchat/health")(g(api.health, needs_service=False))
    routes.get("/twitterchat/metrics")(g(api.metrics))
