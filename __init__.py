"""comfyui-twitterchat: persona-to-post nodes and an in-process prompt monitor.

ComfyUI imports this file from ``custom_nodes/<any folder>/`` under a
path-derived module name, so every import inside the pack is relative. Importing
it starts no thread, opens no connection and loads nothing heavy; the monitor is
started from ComfyUI's startup signal, never here.
"""

import logging as _logging
import sys as _sys

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .utils.settings import ConfigError as _ConfigError, LoggingSettings as _LoggingSettings
from .utils.structured_logger import configure as _configure_logging

WEB_DIRECTORY = "./web"


def _setup_logging() -> None:
    """Route every twitterchat.* record through the redacting handlers from the start."""
    try:
        settings = _LoggingSettings.load()
    except _ConfigError as exc:
        _configure_logging().error("logging settings ignored: %s", exc)
        return
    _configure_logging(log_dir=settings.log_dir or None, level=settings.level)


def _register_monitor() -> None:
    """Inside ComfyUI, ask the monitor and the task service to start with the server;
    outside it, do nothing."""
    server_module = _sys.modules.get("server")
    server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if server is None or not hasattr(server, "app"):
        return
    try:
        from .monitor.service import register

        register(server)
    except Exception:  # a node pack must never stop ComfyUI from starting
        _logging.getLogger("twitterchat.monitor").exception("could not register the prompt monitor")
    try:
        from .service.app import register as register_service

        register_service(server)
    except Exception:
        _logging.getLogger("twitterchat.service").exception("could not register the task service")
    try:
        from .dashboard import register as register_dashboard

        register_dashboard(server)
    except Exception:
        _logging.getLogger("twitterchat.dashboard").exception("could not register the dashboard page")


_setup_logging()
_register_monitor()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
