"""Retry policy: which failures deserve another attempt, and how long to wait. Pure.

The adapters own the loop (they know what an attempt is); the clock and randomness come
in as arguments so tests control them instead of patching ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

from mirrord.core.errors import RetryableError

RETRYABLE_4XX = frozenset({401, 408, 429})


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
