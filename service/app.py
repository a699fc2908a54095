"""Wiring the task service into ComfyUI: routes at import, the service from start-up.

Nothing starts at import time. ``register`` adds the routes (they answer 503
until the service runs) and appends one coroutine to ComfyUI's
``app.on_startup``, which opens the store, reconciles what a restart left,
and starts the feeder, the webhook sender and event pruning. Any failure is
logged and leaves ComfyUI running without the service.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .config import ServiceSettings, load_service_settings
from .routes import Api, add_routes

logger = logging.getLogger("twitterchat.service")

PRUNE_EVERY_SECONDS = 600.0
REDIS_RETRY_SECONDS = 5.0  # redis backend: how often a service that found no Redis at start-up tries again
_state: dict[str, Any] = {"service": None}


def store_path(settings: ServiceSettings) -> Path:
    """The SQLite file: configured, else ComfyUI's system user directory (never served over HTTP)."""
    if settings.db_path:
        return Path(settings.db_path).expanduser()
    folder_paths = importlib.import_module("folder_paths")
    if hasattr(folder_paths, "get_system_user_directory"):
        folder = Path(folder_paths.get_system_user_directory("twitterchat"))
    else:  # ComfyUI before 0.3.76: '__' folders in the user directory are not served either
        folder = Path(folder_paths.get_user_directory()) / "__twitterchat"
    return folder / "tasks.sqlite3"


def instance_name() -> str:
    configured = os.environ.get("TWITTERCHAT_INSTANCE_NAME", "").strip()
    if configured:
        return configured[:200]
    try:
        port = importlib.import_module("comfy.cli_args").args.port
    except (ImportError, AttributeError):
        port = 8188
    return f"{socket.gethostname()}:{port}"


def _monitor_stats() -> dict | None:
    from ..monitor.service import current_monitor

    monitor = current_monitor()
    return None if monitor is None else monitor.stats()


def current_service() -> Any:
    return _state["service"]


async def _prune_loop(service: Any) -> None:
    while True:
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
        try:
            removed = await service.run(service.store.prune, service.settings.event_retention)
            if removed:
                logger.info("task service: pruned %d old rows (events beyond the newest %d, webhook deliveries "
                            "and idempotency keys older than a week)", removed, service.settings.event_retention)
        except Exception:
            logger.exception("task service: pruning events failed")


def public_url(settings: ServiceSettings) -> str:
    """This instance's base URL for output links in Redis mode: configured, else the address ComfyUI
    listens on (the host name when it listens on every address) and its port."""
    if settings.public_url:
        return settings.public_url
    try:
        args = importlib.import_module("comfy.cli_args").args
        host, port = str(args.listen).split(",")[0].strip(), args.port
    except (ImportError, AttributeError):
        host, port = "127.0.0.1", 8188
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def open_store(settings: ServiceSettings) -> Any:
    """The SQLite store (one instance) or the Redis store shared by many (``service.backend``)."""
    if settings.backend == "redis":
        from .redis_store import RedisStore

        store = RedisStore(settings.redis_url, password=settings.redis_password, prefix=settings.redis_prefix,
                           lease_seconds=settings.lease_seconds)
        store.open()
        return store
    from .store import Store

    return Store(store_path(settings))


async def start_service(server: Any, settings: ServiceSettings) -> Any:
    from ..monitor.service import start_monitor
    from ..utils.llm import add_call_observer
    from ..utils.output_paths import output_root
    from .comfy_bridge import ComfyBridge
    from .metrics import ServiceMetrics
    from .tasks import TaskService
    from .webhooks import WebhookSender

    monitor = start_monitor(server, required=True)
    store = await asyncio.get_running_loop().run_in_executor(None, open_store, settings)
    path = store.display if settings.backend == "redis" else store.path
    service = TaskService(settings, store, ComfyBridge(server), worker=instance_name(), output_root=output_root,
                          websocket=server.send_sync, monitor=monitor,
                          public_url=public_url(settings) if settings.backend == "redis" else "")
    service.metrics = ServiceMetrics(service, _monitor_stats)
    add_call_observer(service.metrics.observe_llm)
    await service.start()
    sender = WebhookSender(service, settings.webhook_key, settings.webhook_allowed_hosts)
    service.webhooks = sender
    service._tasks.append(asyncio.create_task(sender.run(), name="twitterchat-webhooks"))
    service._tasks.append(asyncio.create_task(_prune_loop(service), name="twitterchat-prune"))
    logger.info("task service started: %s store %s, at most %d task(s) in ComfyUI at once, %d waiting, "
                "instance %s", settings.backend, path, settings.max_inflight, store.counts["waiting"], service.worker)
    return service


async def _start_when_redis_answers(server: Any, settings: ServiceSettings,
                                    every_seconds: float = REDIS_RETRY_SECONDS) -> None:
    from .store import StoreError

    while _state["service"] is None:
        await asyncio.sleep(every_seconds)
        try:
            _state["service"] = await start_service(server, settings)
            logger.info("task service started: Redis answers again")
        except StoreError:
            continue
        except Exception:
            logger.exception("task service failed to start; ComfyUI continues without it")
            return


def register(server: Any) -> None:
    settings = load_service_settings()
    api = Api(current_service, settings, _monitor_stats)
    add_routes(server.routes, api)
    if not settings.enabled:
        logger.info("task service disabled by configuration")
        return

    async def on_startup(app: Any) -> None:
        from .store import StoreError

        try:
            _state["service"] = await start_service(server, settings)
        except StoreError as exc:
            if settings.backend != "redis":
                logger.error("task service failed to start (%s); ComfyUI continues without it", exc)
                return
            # Redis is not there yet: ComfyUI starts anyway, and the service joins when Redis answers.
            logger.warning("task service waits for Redis (%s); ComfyUI runs meanwhile, the API answers 503", exc)
            _state["retry"] = asyncio.get_running_loop().create_task(_start_when_redis_answers(server, settings))
        except Exception:  # a node pack must never stop ComfyUI from starting
            logger.exception("task service failed to start; ComfyUI continues without it")

    server.app.on_startup.append(on_startup)
