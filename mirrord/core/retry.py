"""Retry policy: which failures deserve another attempt, how long to wait, and the retry
loop itself (``retrying``, ``Attempts``), written once for every adapter. Pure.

The adapters say what an attempt is and translate their library's errors into
``RetryableError``; the clock and randomness come in as arguments so tests control them
instead of patching ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

from mirrord.core.errors import RetryableError

RETRYABLE_4XX = frozenset({401, 408, 429})
T = TypeVar("T")


def is_retryable_status(status: int) -> bool:
    """5xx and 401/408/429 are worth another attempt; other 4xx never are."""
    return status >= 500 or status in RETRYABLE_4XX


# ASCII digits only: str.isdigit() takes '²' (which float() refuses) and any script's
# digits. Ten digits are three centuries, far past any wait the policy honours.
_SECONDS = re.compile(r"[0-9]{1,10}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (epoch seconds); None when absent or bad.
    Never raises: the value is whatever the server sent."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, says RFC 5322, not the host's zone
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0  # a server asking for longer is treated as this

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Wait before attempt ``attempt + 1`` (attempt counts from 1): full jitter,
        or what the server asked for when it said so."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class Backoff:
    """A policy bound to a clock: what adapters call between attempts."""

    policy: RetryPolicy
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    async def pause(self, attempt: int, exc: RetryableError) -> None:
        """Sleep before attempt ``attempt + 1``; re-raise ``exc`` once attempts are spent."""
        exc.attempt = attempt
        if attempt >= self.policy.max_attempts:
            raise exc
        await self.sleep(self.policy.delay(attempt, self.rng, exc.retry_after))


class Attempts:
    """The one retry loop's count, for every adapter: which request this is, and what a
    failure costs. ``failed`` sleeps before the next request or raises.

    Attempts that made progress (a body that resumes where a cut left it) earn their
    failures back: a long transfer survives many short outages, and ``ceiling`` bounds the
    requests in all, however much progress each made."""

    __slots__ = ("_backoff", "_ceiling", "_failures", "made")

    def __init__(self, backoff: Backoff, *, ceiling: int | None = None) -> None:
        self._backoff = backoff
        self._ceiling = ceiling
        self._failures = 0  # in a row, as the backoff counts them
        self.made = 0

    def __iter__(self) -> Iterator[int]:
        """The attempt numbers, from 1; ``failed`` ends the loop by raising."""
        while True:
            self.made += 1
            yield self.made

    async def failed(
        self, error: RetryableError, *, progressed: bool = False, received: str = ""
    ) -> None:
        """Attempt ``made`` failed with ``error``: sleep before the next, or raise once the
        attempts are spent (``received`` says what the requests got, when giving up at the
        ceiling)."""
        self._failures = 1 if progressed else self._failures + 1
        if self._ceiling is not None and self.made >= self._ceiling:
            raise RetryableError(
                f"gave up after {self.made} requests{received}: {error}",
                url=error.url,
                status=error.status,
                attempt=self.made,
            )
        await self._backoff.pause(self._failures, error)


async def retrying(
    backoff: Backoff,
    attempt: Callable[[], Awaitable[T]],
    *,
    on_retry: Callable[[int, RetryableError], None] | None = None,
) -> T:
    """``attempt()`` until it returns, again after each ``RetryableError`` (told to
    ``on_retry`` with its attempt number) until ``backoff`` gives up; any other exception
    ends it at once."""
    attempts = Attempts(backoff)
    for number in attempts:
        try:
            return await attempt()
        except RetryableError as error:
            if on_retry is not None:
                on_retry(number, error)
            await attempts.failed(error)
    raise AssertionError("unreachable")
