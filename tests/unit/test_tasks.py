"""core.tasks: the background-task block and bounded concurrency every stage uses."""

from __future__ import annotations

import asyncio

import pytest

from mirrord.core.errors import UpstreamError
from mirrord.core.tasks import background, bounded


async def test_bounded_keeps_order_and_limit() -> None:
    running = peak = 0

    async def square(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - n % 5))  # later items finish first
        running -= 1
        return n * n

    assert await bounded(range(10), square, 3) == [n * n for n in range(10)]
    assert peak == 3


async def test_bounded_raises_the_first_failure_itself_and_cancels_the_rest() -> None:
    cancelled: list[int] = []

    async def one(n: int) -> int:
        if n == 0:
            raise UpstreamError("boom")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    with pytest.raises(UpstreamError, match="boom"):
        await bounded(range(4), one, 4)
    assert sorted(cancelled) == [1, 2, 3]


async def test_bounded_refuses_a_limit_below_one() -> None:
    async def echo(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="at least 1"):
        await bounded([1], echo, 0)


async def test_background_cancels_a_running_task_and_swallows_its_end() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(10)

    async with background(forever(), name="beat") as task:
        await started.wait()
    assert task.cancelled()


async def test_background_leaves_a_finished_task_readable() -> None:
    async def fails() -> None:
        raise UpstreamError("renewal failed")

    async with background(fails()) as task:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert isinstance(task.exception(), UpstreamError)
