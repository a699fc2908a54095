"""comfyui-twitterchat: persona-to-post nodes and an in-process prompt monitor.

ComfyUI imports this file from ``custom_nodes/<any folder>/`` under a
path-derived module name, so every import inside the pack is relative. Importing
it starts no thread, opens no connection and loads nothing heavy; the monitor is
started from ComfyUI's startup signal, never here.
"""

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


_setup_logging()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
