"""The pool: every LLM call of the process goes through ``LLMClientPool.complete``.

One process-wide bound (a ``CrossLoopSemaphore`` of ``max_concurrent``) is shared
by every node, workflow, persona stage and headless command; the call goes to
the profile's provider (``openai_provider`` or ``local_provider``); every call is
logged and reported to the observers (the task service's metrics).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from ..structured_logger import log_api_call
from .cross_loop import CrossLoopSemaphore
from .errors import LLMConfigError, LLMContentError, LLMError
from .local_provider import LocalModel
from .openai_provider import OpenAIProvider
from .profiles import LLMProfile, LLMSettings, resolve_profile
from .request import LLMRequest

logger = logging.getLogger("twitterchat.llm")

_call_observers: list[Callable[[str, float, str | None], None]] = []


def add_call_observer(observer: Callable[[str, float, str | None], None]) -> None:
    """Call ``observer(profile, seconds, error_kind or None)`` after every LLM call (metrics)."""
    if observer not in _call_observers:
        _call_observers.append(observer)


def _notify_observers(profile: str, seconds: float, error: str | None) -> None:
    for observer in list(_call_observers):
        try:
            observer(profile, seconds, error)
        except Exception:  # metrics must never fail a generation
            logger.debug("LLM call observer failed", exc_info=True)


class LLMClientPool:
    def __init__(self, max_concurrent: int | None = None, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings.load()
        self.max_concurrent = max_concurrent or self.settings.max_concurrent
        self._semaphore = CrossLoopSemaphore(self.max_concurrent)
        self._openai = OpenAIProvider()
        self._stats_lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.calls = 0

    def profile(self, name: str) -> LLMProfile:
        return resolve_profile(name, self.settings)

    async def complete(self, profile_name: str, request: LLMRequest) -> str:
        profile = self.profile(profile_name)
        if request.images and not profile.sees_images:
            raise LLMConfigError(f"profile {profile.name!r} cannot see images (vision is off); "
                                 "describe the image in text instead")
        async with self._semaphore:
            with self._stats_lock:
                self.in_flight += 1
                self.calls += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            started = time.monotonic()
            status: str | int = "ok"
            try:
                if profile.kind == "local":
                    text = await self._complete_local(profile, request)
                else:
                    text = await self._openai.complete(profile, request)
            except LLMError as exc:
                status = type(exc).__name__
                raise
            finally:
                with self._stats_lock:
                    self.in_flight -= 1
                _notify_observers(profile.name, time.monotonic() - started, None if status == "ok" else str(status))
                log_api_call(logger, profile.kind, profile.model if profile.kind == "openai" else "embedded",
                             time.monotonic() - started, status=status, tag=request.tag)
        if not text or not text.strip():
            raise LLMContentError("the model returned an empty answer")
        return text

    async def _complete_local(self, profile: LLMProfile, request: LLMRequest) -> str:
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(None, LocalModel.get, profile)
        return await loop.run_in_executor(None, model.generate, request)


_pool: LLMClientPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> LLMClientPool:
    """The process-wide pool (one bound for every node and workflow)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = LLMClientPool()
        return _pool
