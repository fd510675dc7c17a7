"""Enqueue: look at the catalog, estimate the work, send a job.

It plans exactly as a sync would, then sizes the new bottles: from each formula's OCI
image index (``sh.brew.bottle.size``, one GET per formula version with new bottles), else
from the previous version's size in the hash file. Below ``MIRRORD_SIZE_THRESHOLD_GB`` the
job goes to the sync Lambda (asynchronous invoke); at or above it, to SQS for the daemon.
The index GETs are bounded (``MIRRORD_CONCURRENCY`` at once, at most
``MIRRORD_ESTIMATE_MAX_INDEXES``, within ``MIRRORD_ESTIMATE_SECONDS``) so a first sync's
~8-9k of them cannot outlive the enqueue Lambda: past a bound the estimate is partial, a
lower bound, and the job goes to Fargate, which any size fits.
With ``MIRRORD_BREW_MIRROR`` a job is also sent when no bottle is new but the brew-6 view
is behind (status.json says the last publication was cut short or kept the API files
back, or the listing of ``v2/`` lacks an index or blob key of a stored bottle).
Nothing new and nothing behind: no job, one "nothing to do" notification.
A Fargate job estimated over ``MIRRORD_SHARD_BYTES`` fans out (docs/design.md §12): it
is sent as N messages, one per shard (``"shard": "K/N"``, the same job id and date), N =
ceil(bytes / MIRRORD_SHARD_BYTES) capped at ``MIRRORD_MAX_SHARDS``; a partial estimate,
a lower bound from a job too big to size in time, takes the cap.
A dry run (the post-deploy smoke test) does all of it, with the same reads, and stops
before the first write: it returns the route, bottles and bytes it would send, and sends,
invokes and posts nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from mirrord.adapters.registry import Registry
from mirrord.adapters.web import shown_url
from mirrord.core.closure import job_selection
from mirrord.core.errors import SettingsError, UpstreamError
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.messages import nothing_to_do_message, start_message
from mirrord.core.plan import Estimate, Plan, estimate, index_url, sizes_from_index
from mirrord.core.releases import unknown_tags
from mirrord.core.settings import Settings
from mirrord.core.shards import Shard
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
    # Why the estimate is only a lower bound (a bound of index_sizes was hit), or None.
    estimate_partial: str | None = None
    dry_run: bool = False  # route is where the job WOULD have gone; nothing was sent
    shards: int = 1  # messages the job went out as (fargate only; 1: one worker, no shard)

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
        if self.route == "fargate":
            body["shards"] = self.shards
        if self.estimate is not None:
            body["estimate"] = {**self.estimate.to_dict(), "partial": self.estimate_partial}
        if self.dry_run:
            body["dry_run"] = True
        return body


@dataclass(frozen=True, slots=True)
class IndexSizes:
    """What the image indexes said: sha256 → size, and whether all were read."""

    sizes: dict[str, int]
    wanted: int  # the plan's formula versions with an image index
    read: int  # indexes asked for and answered (a 404 or an error too: history stands in)
    cut: str | None = None  # which bound stopped the reading, or None

    @property
    def partial(self) -> str | None:
        """Why the estimate is a lower bound, in words for Slack and the result; or None."""
        if self.cut is None:
            return None
        return f"{self.read:,} of {self.wanted:,} image indexes read ({self.cut})"


def _index_urls(plan: Plan) -> list[str]:
    """The plan's image-index URLs, those of bottles with no earlier size in the hash
    file first: when a bound stops the reading, what is left has a fallback."""
    unhinted = {url for t in plan.transfers if (url := index_url(t.bottle)) and not t.size_hint}
    urls = {url for t in plan.transfers if (url := index_url(t.bottle))}
    return sorted(urls, key=lambda url: (url not in unhinted, url))


async def index_sizes(registry: Registry, plan: Plan, s: Settings) -> IndexSizes:
    """sha256 → size from the image indexes of the formula versions the plan fetches, at
    most ``s.concurrency`` GETs at once, ``s.estimate_max_indexes`` in all, and none past
    ``s.estimate_seconds`` (those in flight then are cancelled)."""
    urls = _index_urls(plan)
    asked = urls[: s.estimate_max_indexes]
    sizes: dict[str, int] = {}
    read = 0

    async def one(url: str) -> None:
        nonlocal read
        try:
            index = await registry.image_index(url)
        except UpstreamError as exc:  # an estimate, not a sync: fall back, go on
            log.warning("image_index_failed", url=shown_url(url), error=str(exc))
            index = None
        sizes.update(sizes_from_index(index) if index else {})
        read += 1

    budget = asyncio.timeout(s.estimate_seconds)
    try:
        async with budget:
            await bounded(asked, one, s.concurrency)
    except TimeoutError:
        if not budget.expired():
            raise
    if budget.expired():
        cut: str | None = f"the {s.estimate_seconds:g} s budget ran out"
    elif len(asked) < len(urls):
        cut = f"at most {s.estimate_max_indexes:,} are read"
    else:
        cut = None
    found = IndexSizes(sizes, len(urls), read, cut)
    if cut is not None:
        log.warning("estimate_partial", wanted=len(urls), read=read, cut=cut)
    return found


def shard_count(estimated: int, partial: bool, s: Settings) -> int:
    """How many workers a Fargate job goes to: one per ``s.shard_bytes`` begun, at most
    ``s.max_shards``; the cap for a partial estimate (a lower bound); 1 with
    ``shard_bytes`` 0 (never shard)."""
    if s.shard_bytes <= 0:
        return 1
    if partial:
        return s.max_shards
    return max(1, min(s.max_shards, -(-estimated // s.shard_bytes)))


def sharded(job: Job, count: int) -> list[Job]:
    """The messages of ``job`` for ``count`` workers: itself when 1, else one per shard."""
    if count == 1:
        return [job]
    return [replace(job, shard=Shard(k, count)) for k in range(1, count + 1)]


async def enqueue(
    app: Adapters,
    job: Job,
    invoke: Invoker | None,
    *,
    external: HashFile | None,
    dry_run: bool = False,
) -> Enqueued:
    """Plan ``job``; send it to the sync Lambda (``invoke``) or the queue, or, with
    nothing to do, only tell Slack. ``external`` as in plan.plan_job. ``dry_run``: the
    same plan and estimate, then only the result (``dry_run`` set, ``route`` where it
    would have gone): no invoke, no message, no Slack."""
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
            dry_run=dry_run,
        )
        if not plan.transfers and not plan.links and result.publication_behind is None:
            if dry_run:
                log.info("dry_run", **result.to_dict())
                return result
            await _nothing_to_do(app, job, planned)
            log.info("nothing_to_do", **_fields(result))
            return result
        s = app.settings
        sized = await index_sizes(app.registry, plan, s)
        guess = estimate(plan, sized.sizes)
        job = replace(job, platforms=job.platforms or planned.targets, estimated_bytes=guess.bytes)
        # A partial estimate is a lower bound: only Fargate is sure to fit the job.
        small = guess.bytes < s.size_threshold_gb * 1e9 and sized.partial is None
        route: Route = (
            "lambda" if (small and invoke is not None) or app.queue is None else "fargate"
        )
        shards = shard_count(guess.bytes, sized.partial is not None, s) if route == "fargate" else 1
        result = replace(
            result, route=route, estimate=guess, estimate_partial=sized.partial, shards=shards
        )
        if dry_run:
            log.info("dry_run", **result.to_dict())
            return result
        if route == "lambda":
            assert invoke is not None
            await invoke(job)
        else:
            assert app.queue is not None
            for message in sharded(job, shards):
                await app.queue.send(message)
        await app.slack.send(
            start_message(
                job_id=job.job_id,
                date=job.date,
                bottles=len(plan.transfers),
                estimated_bytes=guess.bytes,
                route=result.route if shards == 1 else f"fargate, {shards} shards",
                bucket=s.bucket,
                partial=sized.partial,
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
    bottles = job_selection(planned.catalog, job.formulae, planned.targets, s.releases).bottles
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
