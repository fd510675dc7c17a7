"""Enqueue: look at the catalog, estimate the work, send a job.

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

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from mirrord.adapters.registry import Registry
from mirrord.adapters.web import shown_url
from mirrord.core.catalog import filter_formulae, select_bottles
from mirrord.core.errors import SettingsError, UpstreamError
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.messages import nothing_to_do_message, start_message
from mirrord.core.plan import Estimate, Plan, estimate, index_url, sizes_from_index
from mirrord.core.releases import unknown_tags
from mirrord.core.tasks import bounded
from mirrord.services.plan import Planned, plan_job
from mirrord.services.ports import Adapters
from mirrord.services.publish import publication_lag

log = structlog.get_logger("mirrord.enqueue")

Invoker = Callable[[Job], Awaitable[None]]
Route = Literal["lambda", "fargate", "none"]


@dataclass(frozen=True, slots=True)
class Enqueued:
    """Where a job went (``route``), and the plan it was sent for."""

    job_id: str
    date: str
    platforms: tuple[str, ...]
    bottles: int
    links: int
    skipped: int
    publication_behind: str | None
    route: Route
    estimate: Estimate | None = None  # None when nothing was sent

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "date": self.date,
            "platforms": list(self.platforms),
            "bottles": self.bottles,
            "links": self.links,
            "skipped": self.skipped,
            "publication_behind": self.publication_behind,
            "route": self.route,
        }
        if self.estimate is not None:
            body["estimate"] = self.estimate.to_dict()
        return body


async def index_sizes(registry: Registry, plan: Plan, concurrency: int) -> dict[str, int]:
    """sha256 → size from the image indexes of the formula versions the plan fetches."""
    urls = {url for t in plan.transfers if (url := index_url(t.bottle))}

    async def one(url: str) -> dict[str, int]:
        try:
            index = await registry.image_index(url)
        except UpstreamError as exc:  # an estimate, not a sync: fall back, go on
            log.warning("image_index_failed", url=shown_url(url), error=str(exc))
            return {}
        return sizes_from_index(index) if index else {}

    sizes: dict[str, int] = {}
    for found in await bounded(sorted(urls), one, concurrency):
        sizes.update(found)
    return sizes


async def enqueue(
    app: Adapters, job: Job, invoke: Invoker | None, *, external: HashFile | None
) -> Enqueued:
    """Plan ``job``; send it to the sync Lambda (``invoke``) or the queue, or, with
    nothing to do, only tell Slack. ``external`` as in plan.plan_job."""
    if app.queue is None and invoke is None:
        raise SettingsError("MIRRORD_QUEUE_URL or MIRRORD_SYNC_FUNCTION: one is required")
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        planned = await plan_job(app, job, external=external)
        plan = planned.plan
        result = Enqueued(
            job_id=job.job_id,
            date=job.date,
            platforms=planned.targets,
            bottles=len(plan.transfers),
            links=len(plan.links),
            skipped=plan.skipped,
            publication_behind=await _behind(app, job, planned),
            route="none",
        )
        if not plan.transfers and not plan.links and result.publication_behind is None:
            await _nothing_to_do(app, job, planned)
            log.info("nothing_to_do", **_fields(result))
            return result
        s = app.settings
        guess = estimate(plan, await index_sizes(app.registry, plan, s.concurrency))
        job = replace(job, platforms=job.platforms or planned.targets, estimated_bytes=guess.bytes)
        small = guess.bytes < s.size_threshold_gb * 1e9
        if (small and invoke is not None) or app.queue is None:
            assert invoke is not None
            await invoke(job)
            result = replace(result, route="lambda", estimate=guess)
        else:
            await app.queue.send(job)
            result = replace(result, route="fargate", estimate=guess)
        await app.slack.send(
            start_message(
                job_id=job.job_id,
                date=job.date,
                bottles=len(plan.transfers),
                estimated_bytes=guess.bytes,
                route=result.route,
                bucket=s.bucket,
            )
        )
        log.info("enqueued", **result.to_dict())
        return result


def _fields(result: Enqueued) -> dict[str, Any]:
    """The plan's facts, for the log line of a job not sent."""
    return {k: v for k, v in result.to_dict().items() if k != "route"}


async def _behind(app: Adapters, job: Job, planned: Planned) -> str | None:
    """Why the brew-6 view lags the stored bottles (MIRRORD_BREW_MIRROR), or None."""
    s = app.settings
    if not s.brew_mirror:
        return None
    formulae = filter_formulae(planned.catalog, job.formulae)
    bottles = select_bottles(formulae, planned.targets, s.releases).bottles
    return await publication_lag(
        app.store,
        s.status_key,
        bottles,
        planned.hashfile,
        (f.name for f in planned.catalog.formulae),
        s.portable_ruby,
    )


async def _nothing_to_do(app: Adapters, job: Job, planned: Planned) -> None:
    # No sync will run to name them: a new macOS must not go unnoticed for it.
    unknown = unknown_tags(planned.catalog.formulae, app.settings.releases)
    if unknown:
        log.warning("unknown_macos_tags", tags=list(unknown))
    await app.slack.send(
        nothing_to_do_message(
            date=job.date,
            platforms=planned.targets,
            skipped=planned.plan.skipped,
            unknown_tags=unknown,
        )
    )
