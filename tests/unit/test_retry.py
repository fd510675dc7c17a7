"""core.retry: the one retry loop every adapter uses (``retrying``, ``Attempts``), driven
by a recorded clock instead of real sleeps."""

from __future__ import annotations

import random

import pytest

from mirrord.core.errors import FatalUpstreamError, RetryableError
from mirrord.core.retry import Attempts, Backoff, RetryPolicy, retrying


def recorded(max_attempts: int) -> tuple[Backoff, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_attempts=max_attempts, base=1.0, cap=4.0)
    return Backoff(policy, sleep=sleep, rng=random.Random(7)), slept


async def test_retrying_returns_once_an_attempt_succeeds_after_retryable_failures() -> None:
    backoff, slept = recorded(5)
    calls, told = 0, []

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RetryableError(f"cut {calls}", url="u", retry_after=2.0 if calls == 2 else None)
        return "body"

    got = await retrying(backoff, attempt, on_retry=lambda n, e: told.append((n, str(e))))
    assert got == "body"
    assert calls == 3
    assert told == [(1, "cut 1"), (2, "cut 2")]
    assert len(slept) == 2
    assert 0.0 <= slept[0] <= 1.0  # full jitter below base * 2^0
    assert slept[1] == 2.0  # the server's Retry-After


async def test_retrying_gives_up_after_max_attempts_with_the_last_error() -> None:
    backoff, slept = recorded(3)

    async def attempt() -> None:
        raise RetryableError("503", url="u", status=503)

    with pytest.raises(RetryableError, match="503") as info:
        await retrying(backoff, attempt)
    assert info.value.attempt == 3
    assert len(slept) == 2


async def test_retrying_stops_at_once_on_a_fatal_error() -> None:
    backoff, slept = recorded(5)
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise FatalUpstreamError("404", url="u", status=404)

    with pytest.raises(FatalUpstreamError):
        await retrying(backoff, attempt)
    assert calls == 1
    assert slept == []


async def fail_every(attempts: Attempts, *, progressed: bool) -> None:
    for _ in attempts:
        await attempts.failed(
            RetryableError("cut", url="u"), progressed=progressed, received=", 6 MiB"
        )


async def test_progress_earns_attempts_back_until_the_ceiling() -> None:
    backoff, slept = recorded(2)
    attempts = Attempts(backoff, ceiling=6)
    # Each attempt delivered part of the body: never two failures in a row.
    with pytest.raises(RetryableError, match="gave up after 6 requests, 6 MiB: cut") as info:
        await fail_every(attempts, progressed=True)
    assert attempts.made == 6
    assert info.value.attempt == 6
    assert len(slept) == 5


async def test_failures_without_progress_spend_the_backoff() -> None:
    backoff, _ = recorded(2)
    attempts = Attempts(backoff, ceiling=100)
    with pytest.raises(RetryableError, match=r"^cut$"):
        await fail_every(attempts, progressed=False)
    assert attempts.made == 2
