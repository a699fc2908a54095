"""A semaphore that works across event loops and threads: the pack's one bound on LLM calls.

ComfyUI runs each prompt in a new event loop (``asyncio.run`` per prompt), and
the headless commands run many personas in one; every LLM call of the process
passes through the pool's one ``CrossLoopSemaphore``.
"""

from __future__ import annotations

import asyncio
import collections
import threading


class CrossLoopSemaphore:
    """``async with sem:`` from any event loop or thread; waiters are served in order.

    Written by hand: asyncio's semaphore belongs to one loop, threading's blocks
    the loop. Waiters park on a future of their own loop and are woken with
    ``call_soon_threadsafe``.
    """

    def __init__(self, value: int) -> None:
        self._value = value
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = collections.deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._value > 0 and not self._waiters:
                self._value -= 1
                return
            future = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))
                    raise
            # The slot was handed to us just as we were cancelled: pass it on.
            self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                if loop.is_closed():
                    continue
                loop.call_soon_threadsafe(_wake, future)
                return
            self._value += 1

    async def __aenter__(self) -> "CrossLoopSemaphore":
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
