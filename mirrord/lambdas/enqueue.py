"""The weekly cron Lambda: look at the catalog, estimate the work, send a job.

Invoked by EventBridge (a scheduled event) or by hand with ``{"source": "manual", …}``.
It plans exactly as a sync would, then sizes the new bottles: from each formula's OCI
image index (``sh.brew.bottle.size``, one GET per formula version with new bottles), else
from the previous version's size in the hash file. Below ``MIRRORD_SIZE_THRESHOLD_GB`` the
job goes to the sync Lambda (asynchronous invoke); at or above it, to SQS for the daemon.
With ``MIRRORD_BREW_MIRROR`` a job is also sent when no bottle is new but the brew-6 view
is behind (status.json says the last publication was cut short or kept the API files
back, or the listing of ``v2/`` lacks an index or blob key of a stored bottle).
Nothing new and nothing behind: no job, one "nothing to do" notification.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from mirrord.adapters.registry import Registry
from mirrord.adapters.web import fetch_catalog, shown_url
from mirrord.app import App, load_external, open_app, run_loop
from mirrord.core.catalog import filter_formulae, select_bottles
from mirrord.core.errors import JobError, SettingsError, StoreError, UpstreamError
from mirrord.core.jobs import Job, job_from_dict, parse_date
from mirrord.core.plan import Plan, estimate, index_url, sizes_from_index
from mirrord.core.releases import DEFAULT_RELEASES, Releases, unknown_tags
from mirrord.lambdas import settings_from_env
from mirrord.notify import nothing_to_do_message, start_message
from mirrord.services.publish import publication_lag
from mirrord.services.sync import load_hashfile, prepare

log = structlog.get_logger("mirrord.enqueue")
Invoker = Callable[[Job], Awaitable[None]]


def job_from_event(event: Any, now: datetime, releases: Releases = DEFAULT_RELEASES) -> Job:
    """An EventBridge scheduled event or a manual event → the job it asks for; its
    platforms are read with ``releases`` (MIRRORD_MACOS_RELEASES)."""
    if not isinstance(event, dict):
        raise JobError("event must be a JSON object")
    today = now.astimezone(UTC).date().isoformat()
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        when = event.get("time")
        day = parse_date(when[:10], "event.time") if isinstance(when, str) else today
        return job_from_dict({"v": 1, "job_id": f"{day}-weekly", "date": day, "reason": "schedule"})
    if event.get("source") == "manual":
        day = event.get("date") or today
        fields = {k: event.get(k) for k in ("platforms", "formulae")}
        job_id = event.get("job_id") or f"{day}-manual"
        reason = event.get("reason", "manual")
        body = {"v": 1, "job_id": job_id, "date": day, "reason": reason, **fields}
        return job_from_dict(body, releases=releases)
    raise JobError(
        f"event.source must be 'aws.events' or 'manual', got {event.get('source')!r:.40}"
    )


async def index_sizes(registry: Registry, plan: Plan, concurrency: int) -> dict[str, int]:
    """sha256 → size from the image indexes of the formula versions the plan fetches."""
    urls = {url for t in plan.transfers if (url := index_url(t.bottle))}
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> dict[str, int]:
        async with gate:
            try:
                index = await registry.image_index(url)
            except UpstreamError as exc:  # an estimate, not a sync: fall back, go on
                log.warning("image_index_failed", url=shown_url(url), error=str(exc))
                return {}
        return sizes_from_index(index) if index else {}

    sizes: dict[str, int] = {}
    for found in await asyncio.gather(*(one(u) for u in sorted(urls))):
        sizes.update(found)
    return sizes


def lambda_invoker(app: App) -> Invoker | None:
    function = app.settings.sync_function
    if not function:
        return None

    async def invoke(job: Job) -> None:
        try:
            answer = await app.lambda_client.invoke(
                FunctionName=function, InvocationType="Event", Payload=job.body()
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"Lambda Invoke {function}: {exc}", key=function) from exc
        if answer.get("StatusCode") != 202:  # Event invocations are queued, never run inline
            raise StoreError(f"Lambda Invoke {function}: status {answer.get('StatusCode')}")

    return invoke


async def enqueue(app: App, job: Job, invoke: Invoker | None) -> dict[str, Any]:
    s = app.settings
    if app.queue is None and invoke is None:
        raise SettingsError("MIRRORD_QUEUE_URL or MIRRORD_SYNC_FUNCTION: one is required")
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
        hf, _ = await load_hashfile(app.store, s.hash_key)
        targets, plan = prepare(catalog, hf, job, s.platforms, await load_external(app), s.releases)
        behind = None
        if s.brew_mirror:
            formulae = filter_formulae(catalog, job.formulae)
            bottles = select_bottles(formulae, targets, s.releases).bottles
            behind = await publication_lag(
                app.store,
                s.status_key,
                bottles,
                hf,
                (f.name for f in catalog.formulae),
                s.portable_ruby,
            )
        result: dict[str, Any] = {
            "job_id": job.job_id,
            "date": job.date,
            "platforms": list(targets),
            "bottles": len(plan.transfers),
            "links": len(plan.links),
            "skipped": plan.skipped,
            "publication_behind": behind,
        }
        if not plan.transfers and not plan.links and behind is None:
            # No sync will run to name them: a new macOS must not go unnoticed for it.
            unknown = unknown_tags(catalog.formulae, s.releases)
            if unknown:
                log.warning("unknown_macos_tags", tags=list(unknown))
            await app.slack.send(
                nothing_to_do_message(
                    date=job.date, platforms=targets, skipped=plan.skipped, unknown_tags=unknown
                )
            )
            log.info("nothing_to_do", **result)
            return {**result, "route": "none"}
        guess = estimate(plan, await index_sizes(app.registry, plan, s.concurrency))
        job = replace(job, platforms=job.platforms or targets, estimated_bytes=guess.bytes)
        small = guess.bytes < s.size_threshold_gb * 1e9
        route = "lambda" if (small and invoke is not None) or app.queue is None else "fargate"
        if route == "lambda":
            assert invoke is not None
            await invoke(job)
        else:
            assert app.queue is not None
            await app.queue.send(job)
        await app.slack.send(
            start_message(
                job_id=job.job_id,
                date=job.date,
                bottles=len(plan.transfers),
                estimated_bytes=guess.bytes,
                route=route,
                bucket=s.bucket,
            )
        )
        result.update(route=route, estimate=guess.to_dict())
        log.info("enqueued", **result)
        return result


async def _main(event: Any) -> dict[str, Any]:
    settings = settings_from_env()
    job = job_from_event(event, datetime.now(UTC), settings.releases)
    async with open_app(settings) as app:
        return await enqueue(app, job, lambda_invoker(app))


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``mirrord.lambdas.enqueue.handler``)."""
    return run_loop(_main(event))
