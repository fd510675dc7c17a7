"""The two asyncio shapes every stage needs, written once: a task that lives for the length
of a block (a heartbeat, a lease renewal, a deadline watcher, a queued upload part), and a
function mapped over items with at most ``limit`` running at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.asynccontextmanager
async def background(
    work: Coroutine[Any, Any, T], *, name: str | None = None
) -> AsyncIterator[asyncio.Task[T]]:
    """Run ``work`` as a task while the block runs. Leaving the block cancels it if it has
    not ended and waits for it, so it never outlives its owner; its own outcome (result,
    exception or cancellation) is the block's to read from the task, never raised here."""
    task = asyncio.create_task(work, name=name)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of a (possibly nested) exception group: what a TaskGroup of ours
    raises in its place, so callers keep catching the one exception tree."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def bounded(items: Iterable[T], fn: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """``fn`` over ``items``, at most ``limit`` at once; the results in the items' order.
    The first failure cancels the calls still running and is raised as itself (not as an
    exception group), so callers keep catching the one exception tree of core.errors."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await fn(item)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(item)) for item in items]
    except BaseExceptionGroup as failed:
        raise first_error(failed) from None
    return [task.result() for task in tasks]
