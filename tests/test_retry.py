"""retry, retry_with_exponential_backoff and RetryContext (sync and async)."""

from __future__ import annotations

import asyncio

import pytest

from comfyui_twitterchat.utils.retry import RetryContext, retry, retry_with_exponential_backoff


class Flaky:
    def __init__(self, failures: int, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return ("ok", args, kwargs)


def test_retry_succeeds_after_failures_with_growing_delays():
    sleeps: list[float] = []
    flaky = Flaky(2)
    wrapped = retry(max_attempts=3, delay=0.5, backoff=3.0, sleep=sleeps.append)(flaky)
    assert wrapped(1, key="v") == ("ok", (1,), {"key": "v"})
    assert flaky.calls == 3
    assert sleeps == [0.5, 1.5]


def test_retry_gives_up_and_reraises_the_last_error():
    flaky = Flaky(10)
    wrapped = retry(max_attempts=4, delay=0, sleep=lambda s: None)(flaky)
    with pytest.raises(ConnectionError, match="failure 4"):
        wrapped()
    assert flaky.calls == 4


def test_retry_leaves_unlisted_exceptions_alone():
    flaky = Flaky(1, exc=KeyError)
    wrapped = retry(max_attempts=5, delay=0, exceptions=(ConnectionError,), sleep=lambda s: None)(flaky)
    with pytest.raises(KeyError):
        wrapped()
    assert flaky.calls == 1


def test_exponential_backoff_is_capped_and_jittered():
    exact: list[float] = []
    flaky = Flaky(5)
    retry_with_exponential_backoff(initial_delay=1, max_delay=5, max_attempts=6, jitter=False,
                                   sleep=exact.append)(flaky)()
    assert exact == [1, 2, 4, 5, 5]

    jittered: list[float] = []
    for _ in range(20):
        retry_with_exponential_backoff(initial_delay=1, max_delay=5, max_attempts=6, jitter=True,
                                       sleep=jittered.append)(Flaky(5))()
    bounds = [1, 2, 4, 5, 5] * 20
    assert all(0 <= got <= bound for got, bound in zip(jittered, bounds))
    assert len(set(jittered)) > 10  # really random, not the fixed schedule


def test_retry_context_execute_counts_attempts():
    sleeps: list[float] = []
    ctx = RetryContext(max_attempts=3, initial_delay=0.1, backoff=2, sleep=sleeps.append)
    assert ctx.execute(Flaky(1), "a")[0] == "ok"
    assert ctx.attempts == 2 and sleeps == [0.1]
    with pytest.raises(ConnectionError):
        ctx.execute(Flaky(3))
    assert ctx.attempts == 3


def test_retry_context_async_and_decorated_coroutines():
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls = {"n": 0}

    async def flaky_coro(x):
        calls["n"] += 1
        if calls["n"] < 3:
            raise TimeoutError("slow")
        return x * 2

    ctx = RetryContext(max_attempts=3, initial_delay=0.2, sleep=fake_sleep)
    assert asyncio.run(ctx.execute_async(flaky_coro, 21)) == 42
    assert ctx.attempts == 3 and sleeps == [0.2, 0.4]
    with pytest.raises(TypeError, match="execute_async"):
        ctx.execute(flaky_coro, 1)

    calls["n"] = 0
    decorated = retry(max_attempts=3, delay=0.01, sleep=fake_sleep)(flaky_coro)
    assert asyncio.run(decorated(5)) == 10


@pytest.mark.parametrize("kwargs, name", [
    ({"max_attempts": 0}, "max_attempts"),
    ({"delay": -1}, "delay"),
    ({"backoff": 0.5}, "backoff"),
])
def test_invalid_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        retry(**kwargs)
