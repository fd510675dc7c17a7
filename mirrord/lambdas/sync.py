"""The sync Lambda: the same pipeline as the daemon, for jobs small enough to finish
inside one invocation. It watches ``context.get_remaining_time_in_millis()``; when less
than ``MIRRORD_LAMBDA_MARGIN_SECONDS`` is left it stops starting transfers, lets those in
flight finish (half the margin at most), checkpoints, stops a publication under way, and
sends the job to SQS so the daemon finishes it (``Report.unfinished``). The plan is
recomputed there, so nothing is fetched twice. A finished clean scheduled job is followed
by a prune with MIRRORD_PRUNE_AFTER_SYNC (services/prune.py), as on the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from mirrord.adapters.lock import default_owner
from mirrord.app import App, open_app, run_loop
from mirrord.core.errors import LockBusy
from mirrord.core.jobs import Job, job_from_dict
from mirrord.core.tasks import background
from mirrord.lambdas import settings_from_env
from mirrord.services.job import run_exclusive
from mirrord.services.prune import prune_after

log = structlog.get_logger("mirrord.sync_lambda")


async def sync_job(
    app: App, job: Job, remaining_ms: Callable[[], int], *, owner: str | None = None
) -> dict[str, Any]:
    owner = owner or default_owner()
    margin = app.settings.lambda_margin_seconds
    stop = asyncio.Event()

    async def deadline() -> None:
        # The Lambda clock runs with the wall clock: one sleep reaches the margin.
        await asyncio.sleep(max(0.0, remaining_ms() / 1000 - margin))
        log.warning("lambda_deadline", remaining_ms=remaining_ms(), margin_s=margin)
        stop.set()

    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        try:
            async with background(deadline(), name="lambda-deadline"):
                report = await run_exclusive(
                    app,
                    job,
                    owner=owner,
                    route="lambda",
                    stop=stop,
                    grace=min(app.settings.stop_grace, margin / 2),
                )
        except LockBusy as exc:  # a daemon is at it: give it the job, it waits for the lock
            log.info("lock_busy_handoff", error=str(exc))
            if app.queue is None:
                raise
            await app.queue.send(job)
            return {"job_id": job.job_id, "handed_off": True, "reason": "lock busy"}
        handed_off = False
        if report.unfinished:  # bottles left, or a publication cut short
            if app.queue is None:
                log.error("handoff_impossible", reason="MIRRORD_QUEUE_URL not set")
            else:
                await app.queue.send(job)
                handed_off = True
                log.info("handed_off", remaining=report.remaining)
        pruned = None
        if not report.unfinished and remaining_ms() / 1000 > margin:
            # MIRRORD_PRUNE_AFTER_SYNC, when due; a prune cut by the deadline is safe to
            # cut (the hash file goes first), the next one finishes it.
            done = await prune_after(app, job, report, owner)
            pruned = None if done is None else done.to_dict()
    return {**report.to_dict(), "handed_off": handed_off, "pruned": pruned}


async def _main(event: Any, context: Any) -> dict[str, Any]:
    settings = settings_from_env()
    job = job_from_dict(event, releases=settings.releases)
    async with open_app(settings) as app:
        return await sync_job(app, job, context.get_remaining_time_in_millis)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``mirrord.lambdas.sync.handler``); the event is the job."""
    return run_loop(_main(event, context))
