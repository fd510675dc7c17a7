"""The weekly cron Lambda: look at the catalog, estimate the work, send a job
(services/enqueue.py says how).

Invoked by EventBridge (a scheduled event) or by hand with ``{"source": "manual", …}``.
``{"source": "smoke"}`` (the deploy workflow's smoke test), or any event with
``"dry_run": true``, plans and estimates with the deployed role and returns what it would
send, sending, invoking and posting nothing.
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


def job_from_event(
    event: Any,
    now: datetime,
    releases: Releases = DEFAULT_RELEASES,
    formulae: tuple[str, ...] | None = None,
) -> Job:
    """An EventBridge scheduled event or a manual event → the job it asks for; its
    platforms are read with ``releases`` (MIRRORD_MACOS_RELEASES). ``formulae``
    (MIRRORD_FORMULAE, a subset mirror's roots) for an event that names none."""
    subset = {"formulae": list(formulae)} if formulae else {}
    if not isinstance(event, dict):
        raise JobError("event must be a JSON object")
    today = now.astimezone(UTC).date().isoformat()
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        when = event.get("time")
        day = parse_date(when[:10], "event.time") if isinstance(when, str) else today
        body = {"v": 1, "job_id": f"{day}-weekly", "date": day, "reason": "schedule", **subset}
        return job_from_dict(body)
    if event.get("source") in ("manual", "smoke"):
        day = event.get("date") or today
        fields = {**subset, **{k: event[k] for k in ("platforms", "formulae") if k in event}}
        job_id = event.get("job_id") or f"{day}-{event['source']}"
        reason = event.get("reason", event["source"])
        body = {"v": 1, "job_id": job_id, "date": day, "reason": reason, **fields}
        return job_from_dict(body, releases=releases)
    raise JobError(
        f"event.source must be 'aws.events', 'manual' or 'smoke', got {event.get('source')!r:.40}"
    )


def is_dry_run(event: Any) -> bool:
    """A smoke event, or ``"dry_run": true`` (exactly true: a typo must not send a job)."""
    if not isinstance(event, dict):
        return False
    flag = event.get("dry_run", False)
    if not isinstance(flag, bool):
        raise JobError(f"event.dry_run must be true or false, got {flag!r:.40}")
    return flag or event.get("source") == "smoke"


async def _main(event: Any) -> dict[str, Any]:
    settings = settings_from_env()
    job = job_from_event(event, datetime.now(UTC), settings.releases, settings.formulae)
    dry_run = is_dry_run(event)
    async with open_app(settings) as app:
        invoke = lambda_invoker(app.lambda_client, settings.sync_function)
        external = await load_external(app)
        result = await enqueue(app, job, invoke, external=external, dry_run=dry_run)
    return result.to_dict()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (``mirrord.lambdas.enqueue.handler``)."""
    return run_loop(_main(event))
