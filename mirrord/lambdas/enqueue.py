"""The weekly cron Lambda: look at the catalog, estimate the work, send a job
(services/enqueue.py says how).

Invoked by EventBridge (a scheduled event) or by hand with ``{"source": "manual", …}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mirrord.adapters.invoke import lambda_invoker
from mirrord.app import open_app, run_loop
from mirrord.core.errors import JobError
from mirrord.core.jobs import Job, job_from_dict, parse_date
from mirrord.core.releases import DEFAULT_RELEASES, Releases
from mirrord.lambdas import settings_from_env
from mirrord.services.enqueue import enqueue
from mirrord.services.job import load_external


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


async def _main(event: Any) -> dict[str, Any]:
    settings = settings_from_env()
    job = job_from_event(event, datetime.now(UTC), settings.releases)
    async with open_app(settings) as app:
        invoke = lambda_invoker(app.lambda_client, settings.sync_function)
        result = await enqueue(app, job, invoke, external=await load_external(app))
    return result.to_dict()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``mirrord.lambdas.enqueue.handler``)."""
    return run_loop(_main(event))
