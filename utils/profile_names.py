"""The LLM profile names a node may pick (``llm_profile``), read from the settings.

Kept apart from the LLM client: the widget needs only the names, and a name is
all a workflow ever holds (never a key).
"""

from __future__ import annotations

import logging

from .settings import ConfigError

logger = logging.getLogger("twitterchat.llm")


def _settings_class():
    try:
        from .llm import LLMSettings
    except ImportError:  # before the LLM client became a package
        from .llm_client import LLMSettings
    return LLMSettings


def profile_names() -> list[str]:
    """``auto`` then the configured profiles, sorted; only ``auto`` when the configuration is broken
    (the error is logged; the nodes say so when they run)."""
    try:
        profiles = _settings_class().load().profiles
    except ConfigError as exc:
        logger.error("llm profiles unreadable: %s", exc)
        return ["auto"]
    return ["auto", *sorted(name for name in profiles if name != "auto")]


def check_profile(name: object) -> bool | str:
    """``True`` for a configured name, else a message that never repeats the value (it may be a
    pasted key)."""
    names = profile_names()
    if isinstance(name, str) and name in names:
        return True
    return (f"not a configured LLM profile; pick one of: {', '.join(names)} (profiles are set in "
            "config.json; a key goes in OPENAI_API_KEY or secrets.json, never in a widget)")
