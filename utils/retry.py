"""Retries for calls that have no retry of their own (file systems, weather
look-ups, channel reconnects), built on ``tenacity``.

LLM calls do NOT use this module: the openai SDK already retries transient
failures with backoff (``max_retries``), and stacking a second layer on the same
call multiplies the attempts and the wait. Keep one retry layer per call.

All three forms work on plain and ``async`` callables and re-raise the last
exception once the attempts are spent.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Awaitable, Callable, TypeVar

import tenacity

T = TypeVar("T")
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

logger = logging.getLogger("twitterchat.retry")


def _validated(max_attempts: int, initial_delay: float, max_delay: float, backoff: float) -> None:
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a whole number >= 1, got {max_attempts!r}")
    if initial_delay < 0:
        raise ValueError(f"delay must be >= 0 seconds, got {initial_delay!r}")
    if max_delay < 0:
        raise ValueError(f"max_delay must be >= 0 seconds, got {max_delay!r}")
    if backoff < 1:
        raise ValueError(f"backoff must be >= 1, got {backoff!r}")


def _retrying_options(*, max_attempts: int, initial_delay: float, max_delay: float,
                      backoff: float, jitter: bool, exceptions: ExceptionTypes,
                      sleep: Callable[[float], Any] | None) -> dict[str, Any]:
    _validated(max_attempts, initial_delay, max_delay, backoff)
    if jitter:
        # "Full jitter": a random wait between 0 and the exponential bound, so
        # many clients that failed together do not retry together.
        wait = tenacity.wait_random_exponential(multiplier=initial_delay, max=max_delay,
                                                exp_base=backoff)
    else:
        wait = tenacity.wait_exponential(multiplier=initial_delay, max=max_delay,
                                         exp_base=backoff, min=0)
    options: dict[str, Any] = {
        "stop": tenacity.stop_after_attempt(max_attempts),
        "wait": wait,
        "retry": tenacity.retry_if_exception_type(exceptions),
        "reraise": True,
        "before_sleep": tenacity.before_sleep_log(logger, logging.WARNING),
    }
    if sleep is not None:
        options["sleep"] = sleep
    return options


def retry(max_attempts: int = 3, delay: float = 1.0, backoff: float = 2.0,
          exceptions: ExceptionTypes = Exception, max_delay: float = 60.0,
          sleep: Callable[[float], Any] | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: up to ``max_attempts`` calls, waiting ``delay * backoff**n`` between them."""
    return tenacity.retry(**_retrying_options(
        max_attempts=max_attempts, initial_delay=delay, max_delay=max_delay, backoff=backoff,
        jitter=False, exceptions=exceptions, sleep=sleep))


def retry_with_exponential_backoff(initial_delay: float = 1.0, max_delay: float = 60.0,
                                   max_attempts: int = 5, jitter: bool = True,
                                   exceptions: ExceptionTypes = Exception, backoff: float = 2.0,
                                   sleep: Callable[[float], Any] | None = None
                                   ) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: exponential backoff capped at ``max_delay``, with full jitter by default."""
    return tenacity.retry(**_retrying_options(
        max_attempts=max_attempts, initial_delay=initial_delay, max_delay=max_delay,
        backoff=backoff, jitter=jitter, exceptions=exceptions, sleep=sleep))


class RetryContext:
    """Retry one call without decorating it: ``RetryContext(...).execute(fn, *a, **kw)``.

    ``execute`` runs plain callables; ``execute_async`` awaits coroutine functions.
    ``attempts`` tells how many calls the last execution made.
    """

    def __init__(self, max_attempts: int = 3, initial_delay: float = 1.0, max_delay: float = 60.0,
                 backoff: float = 2.0, jitter: bool = False, exceptions: ExceptionTypes = Exception,
                 sleep: Callable[[float], Any] | None = None) -> None:
        self._options = _retrying_options(
            max_attempts=max_attempts, initial_delay=initial_delay, max_delay=max_delay,
            backoff=backoff, jitter=jitter, exceptions=exceptions, sleep=sleep)
        self.max_attempts = max_attempts
        self.attempts = 0

    def execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use execute_async")
        retrying = tenacity.Retrying(**self._options)
        try:
            return retrying(fn, *args, **kwargs)
        finally:
            self.attempts = retrying.statistics.get("attempt_number", 0)

    async def execute_async(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        # A custom ``sleep`` given to the constructor must be a coroutine
        # function here (tenacity awaits it).
        retrying = tenacity.AsyncRetrying(**self._options)
        try:
            return await retrying(fn, *args, **kwargs)
        finally:
            self.attempts = retrying.statistics.get("attempt_number", 0)
