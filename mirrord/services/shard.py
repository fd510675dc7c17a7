"""One shard of a job shared by N workers (docs/design.md §12): ``mirrord sync --shard
K/N`` and the daemon's sharded messages come here.

A shard takes two locks: its own (``jobs/<job>/locks/<K>-of-<N>.lock``, so a duplicate
delivery of the same shard never runs beside it; a dead holder on this host is taken over
at once, one elsewhere once its lease ends) and the bucket lock, shared by the job's
shards (adapters/lock.py: they join and renew one lease; another job, or a plain sync,
is refused while any of them is live). Then it plans the whole job, keeps its own part
(core/shards.py ``split``), runs it like any sync — same checkpoints into the one hash
file, same adoption and orphan sweep, limited to what it owns — and writes its record.
No publication, no status.json, no Slack report: the fan-in (services/fanin.py) does
those once, for the whole job.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import NoReturn

import orjson
import structlog

from mirrord.adapters.lock import BucketLock, Holder, Process
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import fetch_catalog
from mirrord.core.errors import InputError, LockBusy, MirrordError
from mirrord.core.hashfile import utc_now
from mirrord.core.jobs import Job
from mirrord.core.report import Progress, Report
from mirrord.core.shards import Shard, ShardRecord, lock_key, record_key
from mirrord.services.fallback import FallbackMirrors
from mirrord.services.job import crash_hook, load_external
from mirrord.services.ports import Adapters
from mirrord.services.sync import Tuning, run_sync
from mirrord.services.transfer import AnnouncedSizes

log = structlog.get_logger("mirrord.services.shard")


class ShardStopped(MirrordError):
    """The shard stopped before its end (SIGTERM, a lost lock): it wrote no record, and
    its next delivery resumes it where its last checkpoint left off."""


async def run_shard(
    app: Adapters,
    job: Job,
    shard: Shard,
    *,
    owner: str,
    stop: asyncio.Event | None = None,
    grace: float | None = None,
    progress: Progress | None = None,
    wait: bool = False,
    every: float = 15.0,
) -> ShardRecord:
    """Shard ``shard`` of ``job``, under its own lock and the job's shared bucket lock;
    its record once it ran to its end (``done``, failures named by key). ``LockBusy``
    when the shard runs elsewhere or another job holds the bucket (with ``wait``: once
    ``stop`` is set while waiting); ``ShardStopped`` when stopped before its end. A shard
    that finds its record already written (a duplicate delivery) returns it."""
    s = app.settings
    stop = stop or asyncio.Event()
    ttl = s.heartbeat_seconds * 3  # three missed renewals before a rival takes over
    mine = BucketLock(app.store, owner, ttl, key=lock_key(job.job_id, shard))
    lease = BucketLock(app.store, owner, ttl, shared=job.date)
    with structlog.contextvars.bound_contextvars(shard=str(shard)):
        try:
            for lock in (mine, lease):  # its own first: a duplicate never joins the lease
                if wait:
                    holder = await lock.wait(job.job_id, stop, every=every)
                else:
                    holder = await lock.acquire(job.job_id)
                if holder is not None:
                    _refuse(job, shard, holder)
            async with (
                mine.kept(s.heartbeat_seconds, on_lost=stop.set),
                lease.kept(s.heartbeat_seconds, on_lost=stop.set),
            ):
                return await _run(app, job, shard, stop, grace, progress)
        finally:
            await mine.release()  # before leaving the lease: see BucketLock.leave
            await lease.leave(partial(_siblings_live, app, job, shard, ttl))


async def _run(
    app: Adapters,
    job: Job,
    shard: Shard,
    stop: asyncio.Event,
    grace: float | None,
    progress: Progress | None,
) -> ShardRecord:
    s = app.settings
    key = record_key(job.job_id, shard)
    found = await app.store.get(key)
    if found is not None:
        log.info("shard_already_done", job_id=job.job_id, record=key)
        return ShardRecord.from_json(_loads(found[0], key), f"s3://{s.bucket}/{key}")
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    report = await run_sync(
        job,
        catalog,
        app.store,
        app.registry,
        Tuning.of(s),
        hash_key=s.hash_key,
        default_platforms=s.platforms,
        progress=progress or LogProgress(),
        external=await load_external(app),
        stop=stop,
        grace=s.stop_grace if grace is None else grace,
        hook=crash_hook(s),
        sizes=AnnouncedSizes(app.registry),
        releases=s.releases,
        fallbacks=FallbackMirrors.of(s, app.fallback),
        shard=shard,
    )
    if report.stopped:
        raise ShardStopped(
            f"shard {shard} of job {job.job_id} stopped with {report.remaining} bottles "
            "left; running it again resumes it"
        )
    record = record_of(job, shard, report)
    await app.store.put(key, orjson.dumps(record.to_json()), content_type="application/json")
    log.info("shard_done", record=key, stored=record.stored, failed=len(record.failed))
    return record


def _refuse(job: Job, shard: Shard, holder: Holder) -> NoReturn:
    if holder.shared and holder.job_id == job.job_id and holder.shared != job.date:
        raise InputError(
            f"shard {shard} of job {job.job_id} runs with date {job.date}, its siblings with "
            f"{holder.shared}: every shard of a job needs the same --date"
        )
    raise LockBusy(holder)


def record_of(job: Job, shard: Shard, report: Report) -> ShardRecord:
    """A finished shard's record: what it stored (downloaded or adopted), its bytes, and
    its failures by hash key. Quarantined bottles are in the hash file's quarantine."""
    return ShardRecord(
        job.job_id,
        shard,
        "done",
        stored=report.downloaded + report.adopted,
        bytes=report.bytes,
        failed=tuple((f.key, f.error) for f in report.failed),
        finished_at=utc_now(),
        skipped=report.skipped,
        fallback=report.fallback,
    )


def _loads(raw: bytes, key: str) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{key}: not JSON ({exc})") from None


async def _siblings_live(app: Adapters, job: Job, shard: Shard, ttl: float) -> bool:
    """Whether another shard of the job still holds its own lock (a holder on this host
    whose process is gone does not count: it is dead, and its retry takes over)."""
    here = Process.current()
    for k in range(1, shard.count + 1):
        if k == shard.index:
            continue
        other = BucketLock(app.store, "", ttl, key=lock_key(job.job_id, Shard(k, shard.count)))
        holder = await other.holder()
        if holder is not None and holder.alive(here):
            return True
    return False
