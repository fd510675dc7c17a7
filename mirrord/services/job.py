"""One job, as every entry point runs it: catalog → sync → publication → status.json,
metrics and Slack, under the bucket lock (one sync per bucket, docs/design.md §8).

The CLI, the daemon and the sync Lambda all come here; they differ only in how they wait
for the lock, what stops the job, and where its progress goes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from typing import Any

import orjson
import structlog

from mirrord import __version__
from mirrord.adapters.lock import BucketLock
from mirrord.adapters.slack import SlackProgress
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import fetch_catalog, fetch_untrusted, guarded_session, shown_url
from mirrord.core.brew import missing_bottles, registry_root
from mirrord.core.catalog import Catalog, select_bottles
from mirrord.core.closure import Closure, job_closure, select_closure
from mirrord.core.errors import (
    InputError,
    JobCrashed,
    LockBusy,
    MirrordError,
    SettingsError,
    UpstreamError,
)
from mirrord.core.hashfile import HashFile, parse, utc_now
from mirrord.core.jobs import Job
from mirrord.core.messages import failure_message, success_message
from mirrord.core.report import Failure, Progress, Published, Report, emf
from mirrord.core.settings import Settings
from mirrord.core.status import run_record, with_run
from mirrord.core.subset import SUBSET_OF_FULL, last_job_was_full, subset_of
from mirrord.services.checkpoint import Checkpointer, load_hashfile
from mirrord.services.fallback import FallbackMirrors
from mirrord.services.ports import Adapters
from mirrord.services.publish import Fetched, fetch_api, fetch_missing, publish
from mirrord.services.sync import Tuning, job_targets, run_sync
from mirrord.services.transfer import AnnouncedSizes, Hook, SizeLimit, no_hook

log = structlog.get_logger("mirrord.services.job")


def crash_hook(settings: Settings) -> Hook:
    """``MIRRORD_CRASH_AT=<point>[:<nth>]``: signal this process (KILL or TERM) at the nth
    pass through that point, so tests/test_reliability.py can crash a sync exactly
    there. Unset (always, in production): the no-op hook."""
    if settings.crash_at is None:
        return no_hook
    point, nth = settings.crash_at
    signum = signal.SIGKILL if settings.crash_signal == "KILL" else signal.SIGTERM
    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        if name != point:
            return
        seen += 1
        if seen == nth:
            log.warning("crash_hook", point=name, nth=nth, signal=settings.crash_signal)
            os.kill(os.getpid(), signum)

    return hook


EXTERNAL_HASH_LIMIT = 64 * 2**20


async def load_external(app: Adapters, *, limit: int = EXTERNAL_HASH_LIMIT) -> HashFile | None:
    """``MIRRORD_EXTERNAL_HASH_URL`` (s3:// or https://): another mirror's hash file,
    whose bottles are skipped. Unusable → a warning, and the sync goes on without it."""
    s = app.settings
    url = s.external_hash_url
    if not url:
        return None
    try:
        if url.startswith("s3://"):
            bucket, _, key = url.removeprefix("s3://").partition("/")
            found = await app.store_for(bucket).get(key)
            if found is None:
                raise InputError("no such object")
            raw = found[0]
            if len(raw) > limit:
                raise InputError(f"over the {limit}-byte cap")
        else:
            # A session of its own for a URL someone else controls: its resolver refuses
            # private addresses (see upstream.fetch_untrusted); once per job.
            async with guarded_session(
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                allow_private=s.external_hash_allow_private,
                user_agent=f"mirrord/{__version__}",
            ) as session:
                raw = await fetch_untrusted(
                    session,
                    url,
                    app.backoff,
                    limit=limit,
                    allow_http=s.external_hash_allow_http,
                    allow_private=s.external_hash_allow_private,
                )
        external = parse(raw, source=shown_url(url))
    except MirrordError as exc:
        log.warning(
            "external_hash_unusable", url=shown_url(url), error=str(exc), kind=type(exc).__name__
        )
        return None
    log.info("external_hash_loaded", url=shown_url(url), entries=len(external.bottles))
    return external


async def run_exclusive(
    app: Adapters,
    job: Job,
    *,
    owner: str,
    route: str,
    stop: asyncio.Event | None = None,
    grace: float | None = None,
    progress: Progress | None = None,
    wait: bool = False,
    every: float = 15.0,
    publish_progress: Progress | None = None,
) -> Report:
    """``run_job`` under the bucket lock, renewed while it runs (if it is lost, ``stop``
    is set); ``LockBusy`` when another sync holds the bucket, or, with ``wait``, once
    ``stop`` is set while waiting for it. A waiter asks again at the holder's lease end
    or every ``every`` seconds, whichever is first."""
    s = app.settings
    stop = stop or asyncio.Event()
    # Three heartbeats may fail before a rival considers the lock abandoned.
    lock = BucketLock(app.store, owner, ttl=s.heartbeat_seconds * 3)
    if wait:
        holder = await lock.wait(job.job_id, stop, every=every)
    else:
        holder = await lock.acquire(job.job_id)
    if holder is not None:
        raise LockBusy(holder)
    try:
        async with lock.kept(s.heartbeat_seconds, on_lost=stop.set):
            return await run_job(
                app,
                job,
                route=route,
                stop=stop,
                grace=grace,
                progress=progress,
                publish_progress=publish_progress,
            )
    finally:
        await lock.release()


async def run_job(
    app: Adapters,
    job: Job,
    *,
    route: str,
    stop: asyncio.Event | None = None,
    grace: float | None = None,
    progress: Progress | None = None,
    publish_progress: Progress | None = None,
) -> Report:
    """Catalog → sync → status.json, metrics and Slack: the same for the CLI, the daemon
    and the sync Lambda. A job that dies early is reported to Slack and re-raised; an
    exception that is no ``MirrordError`` (a bug) too, as ``JobCrashed``."""
    slack_progress = SlackProgress(app.slack, progress or LogProgress(), job_id=job.job_id)
    try:
        report = await _sync_and_publish(app, job, slack_progress, stop, grace, publish_progress)
        await slack_progress.aclose()
        await record_outcome(app, job, report, route)
    except MirrordError as exc:
        if not isinstance(exc, SettingsError):  # a usage error says nothing of the mirror
            await note_run(app, run_record(job, utc_now(), None, str(exc)))
        await _job_failed(app, job, slack_progress, str(exc))
        raise
    except Exception as exc:  # not CancelledError, a BaseException: a stop is no bug
        log.error("job_crashed", kind=type(exc).__name__, error=str(exc), exc_info=exc)
        error = (
            f"{type(exc).__name__}: {str(exc) or '(no message)'} — a bug in mirrord, not in its "
            "input or peers: please report it with the traceback from the log"
        )
        await note_run(app, run_record(job, utc_now(), None, error))
        await _job_failed(app, job, slack_progress, error)
        raise JobCrashed(error) from exc
    return report


async def _sync_and_publish(
    app: Adapters,
    job: Job,
    progress: Progress,
    stop: asyncio.Event | None,
    grace: float | None,
    publish_progress: Progress | None = None,
) -> Report:
    s = app.settings
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    # The API files are fetched with the catalog, not after a sync of hours: both
    # must describe the same bottles, and formulae.brew.sh changes every few minutes.
    api = await fetch_job_api(app, catalog, job) if s.brew_mirror else None
    report = await run_sync(
        job,
        catalog,
        app.store,
        app.registry,
        Tuning.of(s),
        hash_key=s.hash_key,
        default_platforms=s.platforms,
        progress=progress,
        external=await load_external(app),
        stop=stop,
        grace=s.stop_grace if grace is None else grace,
        hook=crash_hook(s),
        sizes=AnnouncedSizes(app.registry),
        releases=s.releases,
        fallbacks=FallbackMirrors.of(s, app.fallback),
    )
    found = job_subset(app, catalog, job)
    report = with_subset(report, found)  # status.json records the subset
    if not s.brew_mirror:
        return report
    if report.stopped:  # not a step further; the publication is the next run's
        skipped = Published(api="kept: stopped before publication", finished=False)
        return replace(report, published=skipped)
    published = await publish_for(app, catalog, job, found, api, report, stop, publish_progress)
    # A portable Ruby that could not be stored fails the job (exit 1, Slack), while
    # the API files went out without it.
    return replace(report, published=published, failed=(*report.failed, *published.ruby_problems))


def job_subset(app: Adapters, catalog: Catalog, job: Job) -> Closure | None:
    """The closure of a subset job on its targets; None for a job of every formula."""
    s = app.settings
    targets = job_targets(catalog, job, s.platforms, s.releases)
    return job_closure(catalog, job.formulae, targets, s.releases)


def with_subset(report: Report, found: Closure | None) -> Report:
    """The report, saying which subset (``job_subset``) the job mirrored: status.json
    records it."""
    return report if found is None else replace(report, subset=subset_of(found))


async def read_status(app: Adapters) -> Any:
    """status.json, parsed; None when absent or not JSON (a reader never fails on it)."""
    found = await app.store.get(app.settings.status_key)
    try:
        return orjson.loads(found[0]) if found is not None else None
    except orjson.JSONDecodeError:
        return None


async def note_run(app: Adapters, run: dict[str, Any]) -> None:
    """status.json's ``last_run`` after a job that did not complete; the rest stays the
    last complete job's. Never raises: the job's own outcome is what matters."""
    try:
        body = with_run(await read_status(app), run)
        await app.store.put(
            app.settings.status_key, orjson.dumps(body), content_type="application/json"
        )
    except MirrordError as exc:
        log.warning("status_not_written", error=str(exc), kind=type(exc).__name__)


async def record_outcome(app: Adapters, job: Job, report: Report, route: str) -> None:
    """What a finished job leaves: its EMF record, status.json when complete, Slack.
    Also the fan-in's last step (services/fanin.py)."""
    s = app.settings
    if s.emf:  # where CloudWatch reads the log (Lambda, ECS) or MIRRORD_EMF asks for it
        log.info("metrics", **emf(report, route=route, now_ms=int(time.time() * 1000)))
    now = utc_now()
    run = run_record(job, now, report)
    if report.complete:
        body = {k: v for k, v in report.to_dict().items() if k not in ("failed", "rejected")}
        await app.store.put(
            s.status_key,
            orjson.dumps({"last_success": now, **body, "last_run": run}),
            content_type="application/json",
        )
        await app.slack.send(
            success_message(report, bucket=s.bucket, estimated_bytes=job.estimated_bytes)
        )
    else:
        await note_run(app, run)
    if not report.complete and report.failed:
        await app.slack.send(
            failure_message(
                job_id=job.job_id, date=job.date, error=None, report=report, logs_hint=s.logs_hint
            )
        )


async def _job_failed(app: Adapters, job: Job, progress: SlackProgress, error: str) -> None:
    await progress.aclose()
    await app.slack.send(
        failure_message(
            job_id=job.job_id,
            date=job.date,
            error=error,
            report=None,
            logs_hint=app.settings.logs_hint,
        )
    )


async def fetch_job_api(app: Adapters, catalog: Catalog, job: Job) -> dict[str, bytes] | None:
    """The job's Homebrew API files, or None (warned) when upstream fails."""
    targets = job_targets(catalog, job, app.settings.platforms, app.settings.releases)
    try:
        return await fetch_api(app.http, app.settings.api_base, targets, app.backoff)
    except UpstreamError as exc:  # the bottles still sync; the API files stay as they were
        log.warning("api_fetch_failed", error=str(exc))
        return None


async def publish_for(
    app: Adapters,
    catalog: Catalog,
    job: Job,
    found: Closure | None,
    api: dict[str, bytes] | None,
    report: Report,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> Published:
    """The brew-facing stage after a sync (brew.py); never raises: its problems are in
    the report and the log, and ``mirrord check-client`` shows what a user sees.
    Bottles the API files name that the catalog did not (formulae.brew.sh republished
    in between) are fetched and recorded first, so the API files can go out. ``found``:
    the job's subset (``job_subset``), None for a job of every formula."""
    s = app.settings
    targets = job_targets(catalog, job, s.platforms, s.releases)
    clean = report.complete
    try:
        if found is None:
            bottles = select_bottles(catalog.formulae, targets, s.releases).bottles
        else:
            bottles = select_closure(catalog, found, s.releases).bottles
        kept = None
        if found is not None and api is not None and clean:
            # A subset sync must not publish over a full mirror's API files.
            kept = SUBSET_OF_FULL if last_job_was_full(await read_status(app)) else None
        hf, etag = await load_hashfile(app.store, s.hash_key)
        fetched = Fetched()
        root = registry_root(catalog)
        if api is not None and clean and root is not None and found is None:
            missing = missing_bottles(api, targets, hf.by_sha256(), catalog, root, s.releases)
            fetched = await fetch_missing(
                app.store,
                app.registry,
                missing,
                job.date,
                part_size=s.part_size,
                limit=SizeLimit(s.max_bottle_bytes),
                concurrency=s.concurrency,
                stop=stop,
            )
            if fetched.entries:
                record = Checkpointer(app.store, s.hash_key, hf, etag, s.batch_size)
                record.add(fetched.entries)
                await record.flush()
                hf = record.current
        published = await publish(
            app.store,
            app.registry,
            catalog,
            [*bottles, *fetched.bottles],
            hf,
            targets,
            api=None if kept else api,
            clean=clean,
            ruby_versions=s.portable_ruby,
            part_size=s.part_size,
            concurrency=s.concurrency,
            stop=stop,
            fetched=fetched,
            releases=s.releases,
            progress=progress,
            subset=None if found is None else found.by_target,
        )
        if kept:
            published.api = kept
    except MirrordError as exc:
        log.warning("publish_failed", error=str(exc), kind=type(exc).__name__)
        published = Published(
            api="kept: publication failed", problems=[Failure("", str(exc))], finished=False
        )
    return published
