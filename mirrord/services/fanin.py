"""The fan-in of a sharded job (docs/design.md §12): once every shard has left a record
(done or given up), exactly one caller merges the records into the job's report and does
what a single-worker job does after its sync: publication, status.json, metrics, Slack.

Who fans in is decided by S3, never by timing: ``jobs/<job>/finalize.json`` is created
with ``If-None-Match: *``. It is a lease (``running``, renewed every heartbeat, by S3's
clock like the bucket lock) until the winner writes it ``done`` with ``If-Match``. A
finalizer that crashed leaves a ``running`` lease that expires (or, on the same host, a
dead pid): the job's next caller takes it over, so the fan-in completes exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson
import structlog

from mirrord.adapters.lock import BucketLock, Holder, Process, read_lock
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.web import fetch_catalog
from mirrord.core.catalog import Catalog
from mirrord.core.errors import InputError, LockBusy, LockLost, MirrordError, PreconditionFailed
from mirrord.core.hashfile import HashFile, utc_now
from mirrord.core.jobs import Job
from mirrord.core.messages import failure_message
from mirrord.core.plan import Plan
from mirrord.core.releases import Releases, unknown_tags
from mirrord.core.report import Failure, Fallbacks, Quarantined, Rejected, Report
from mirrord.core.shards import (
    Shard,
    ShardRecord,
    finalize_key,
    missing_shards,
    record_key,
    shard_of,
    split,
)
from mirrord.core.tasks import background
from mirrord.services.checkpoint import Checkpointer, load_hashfile
from mirrord.services.job import (
    fetch_job_api,
    job_subset,
    load_external,
    publish_for,
    record_outcome,
    with_subset,
)
from mirrord.services.ports import Adapters
from mirrord.services.sync import prepare

log = structlog.get_logger("mirrord.services.fanin")
JSON = "application/json"


async def load_records(store: S3Store, job_id: str, count: int) -> dict[int, ShardRecord]:
    """The records of the job's ``count`` shards that exist, by shard index. One that
    cannot be read, or names another job or shard than its key, is an ``InputError``
    naming its key: the fan-in stops before it publishes anything."""
    wanted = {record_key(job_id, Shard(k, count)): k for k in range(1, count + 1)}
    present = [o.key async for o in store.list_objects(f"jobs/{job_id}/shards/")]
    keys = [key for key in present if key in wanted]
    bodies = await asyncio.gather(*(store.get(key) for key in keys))
    records: dict[int, ShardRecord] = {}
    for key, found in zip(keys, bodies, strict=True):
        if found is None:  # listed, then gone: records are never deleted
            raise InputError(f"{key}: listed but absent")
        where = f"s3://{store.bucket}/{key}"
        try:
            data = orjson.loads(found[0])
        except orjson.JSONDecodeError:
            raise InputError(f"{where}: unreadable shard record (not JSON)") from None
        record = ShardRecord.from_json(data, where)
        if record.job_id != job_id or record.shard != Shard(wanted[key], count):
            raise InputError(
                f"{where}: unreadable shard record (it names job {record.job_id!r:.60} "
                f"shard {record.shard}, not {job_id!r:.60} shard {wanted[key]}/{count})"
            )
        records[record.shard.index] = record
    return records


async def write_record(store: S3Store, record: ShardRecord, *, replace_given_up: bool) -> bool:
    """Write ``record`` unless one is there; True when written. ``replace_given_up``: a
    ``given_up`` record already there is overwritten (a late success wins); a ``done``
    one never is."""
    key = record_key(record.job_id, record.shard)
    body = orjson.dumps(record.to_json())
    try:
        await store.put_if(key, body, etag=None, content_type=JSON)
        return True
    except PreconditionFailed:
        pass
    found = await store.get(key)
    if found is None or not replace_given_up:
        return False
    try:
        there = orjson.loads(found[0])
    except orjson.JSONDecodeError:
        there = None
    if isinstance(there, dict) and there.get("state") == "done":
        return False
    try:
        await store.put_if(key, body, etag=found[1], content_type=JSON)
    except PreconditionFailed:
        return False
    return True


async def give_up(app: Adapters, job: Job, shard: Shard, error: str) -> ShardRecord:
    """The shard failed for the last time: record it ``given_up``, naming as failed its
    bottles the mirror still lacks (the job's plan ∩ the shard, i.e. minus the hash
    file). The fan-in reports them by key; the other shards' bottles are published.
    A record already there (a duplicate delivery that succeeded) is kept and returned."""
    s = app.settings
    try:
        catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
        hf, _ = await load_hashfile(app.store, s.hash_key)
        _, plan = prepare(catalog, hf, job, s.platforms, await load_external(app), s.releases)
        mine = split(plan, shard)
        failed = tuple((b.hash_key, error) for t in mine.transfers for b in (t.bottle, *t.aliases))
    except MirrordError as exc:  # the plan itself is out of reach: say so, by shard
        log.warning("give_up_unplanned", shard=str(shard), error=str(exc))
        failed = ((f"shard {shard}", f"{error}; its bottles could not be listed: {exc}"),)
    record = ShardRecord(job.job_id, shard, "given_up", failed=failed, finished_at=utc_now())
    if not await write_record(app.store, record, replace_given_up=False):
        existing = (await load_records(app.store, job.job_id, shard.count)).get(shard.index)
        if existing is not None:
            log.info("give_up_kept", shard=str(shard), state=existing.state)
            return existing
    log.warning("shard_given_up", shard=str(shard), failed=len(failed), error=error)
    return record


# ---- the finalize lease -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one ``finalize_if_last`` call found: the report when it fanned in; else the
    shards still missing, or who has the fan-in ("done", or the owner running it)."""

    report: Report | None = None
    missing: tuple[int, ...] = ()
    holder: str = ""


class FinalizeLease:
    """``finalize.json``: created once, held while the fan-in runs, then ``done``."""

    def __init__(
        self,
        store: S3Store,
        job_id: str,
        owner: str,
        ttl: float,
        *,
        clock: Callable[[], float] = time.time,
        process: Process | None = None,
    ) -> None:
        self._store = store
        self._key = finalize_key(job_id)
        self._job_id = job_id
        self._owner = owner
        self._ttl = ttl
        self._clock = clock
        self._process = process or Process.current()
        self._etag: str | None = None

    async def _put(self, etag: str | None, state: str, ttl: float) -> str:
        body = {
            "state": state,
            "owner": self._owner,
            "job_id": self._job_id,
            "ttl": ttl,
            "expires_at": self._clock() + ttl if ttl else 0.0,
            "process": self._process.to_json(),
            "at": utc_now(),
        }
        return await self._store.put_if(self._key, orjson.dumps(body), etag=etag, content_type=JSON)

    async def claim(self) -> str:
        """ "" when this caller now holds the fan-in; else "done" or the live holder."""
        try:
            self._etag = await self._put(None, "running", self._ttl)
            return ""
        except PreconditionFailed:
            pass
        found = await self._store.read(self._key)
        if found is None:  # never deleted; a store that lost it is someone else's to mend
            return "unknown"
        try:
            state = orjson.loads(found.body).get("state")
        except (orjson.JSONDecodeError, AttributeError):
            state = None
        if state == "done":
            return "done"
        lease = read_lock(found, self._ttl, self._clock)
        if isinstance(lease, Holder) and lease.alive(self._process):
            return lease.owner
        try:
            self._etag = await self._put(found.etag, "running", self._ttl)
        except PreconditionFailed:
            return "unknown"  # another caller took it over first
        log.warning(
            "finalize_taken_over",
            key=self._key,
            reason=lease if isinstance(lease, str) else "its process on this host is gone",
            previous=found.body.decode(errors="replace")[:200],
        )
        return ""

    async def renew(self) -> None:
        try:
            self._etag = await self._put(self._etag, "running", self._ttl)
        except PreconditionFailed as exc:
            raise LockLost(f"{self._key} was taken over") from exc

    async def done(self) -> None:
        """The fan-in completed: no caller will run it again. Lost meanwhile (this
        process stalled past its lease): the taker's run is the one that counts."""
        try:
            await self._put(self._etag, "done", 0)
        except PreconditionFailed:
            log.error("finalize_lease_lost", key=self._key, when="marking it done")

    async def release(self) -> None:
        """The fan-in failed: the next caller takes it over at once (ttl 0)."""
        try:
            await self._put(self._etag, "running", 0)
        except (PreconditionFailed, MirrordError) as exc:
            log.warning("finalize_release_failed", key=self._key, error=str(exc))

    async def keep(self, every: float, on_lost: Callable[[], None]) -> None:
        """Renew every ``every`` seconds until cancelled; ``on_lost`` when taken over."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except LockLost:
                log.error("finalize_lease_lost", key=self._key)
                on_lost()
                return
            except MirrordError as exc:  # S3 blinked: the lease outlasts a few misses
                log.warning("finalize_renew_failed", key=self._key, error=str(exc))


# ---- the fan-in ---------------------------------------------------------------------


async def finalize_if_last(
    app: Adapters,
    job: Job,
    count: int,
    *,
    owner: str = "",
    route: str = "fargate",
    stop: asyncio.Event | None = None,
) -> Report | None:
    """After a shard ends: the job's report if this caller ran the fan-in, else None
    (shards are still missing, or the fan-in is done or running elsewhere). ``route``:
    the EMF dimension, "fargate" (the daemon runs the shards) so the alarms see it."""
    return (await fan_in(app, job, count, owner=owner, route=route, stop=stop)).report


async def fan_in(
    app: Adapters,
    job: Job,
    count: int,
    *,
    owner: str = "",
    route: str = "fargate",
    stop: asyncio.Event | None = None,
) -> Outcome:
    """``finalize_if_last`` with the reason when it does not fan in. The winner holds
    the finalize lease (renewed) and the bucket lock for the job while it finalizes."""
    s = app.settings
    stop = stop or asyncio.Event()
    Shard(count, count)  # a bad count is an InputError before any request
    missing = missing_shards(await load_records(app.store, job.job_id, count), count)
    if missing:
        log.info("fanin_waiting", missing=missing, shards=count)
        return Outcome(missing=tuple(missing))
    owner = owner or f"fanin-{Process.current().host}-{Process.current().pid}"
    lease = FinalizeLease(app.store, job.job_id, owner, ttl=s.heartbeat_seconds * 3)
    holder = await lease.claim()
    if holder:
        log.info("fanin_not_mine", holder=holder)
        return Outcome(holder=holder)
    completed = False
    try:
        async with background(lease.keep(s.heartbeat_seconds, stop.set), name="finalize-lease"):
            lock = BucketLock(app.store, owner, ttl=s.heartbeat_seconds * 3)
            busy = await lock.wait(job.job_id, stop, every=min(15.0, s.heartbeat_seconds))
            if busy is not None:
                raise LockBusy(busy)
            try:
                async with lock.kept(s.heartbeat_seconds, on_lost=stop.set):
                    report = await finalize(app, job, count, route=route, stop=stop)
            finally:
                await lock.release()
        if not (report.published is not None and not report.published.finished):
            await lease.done()
            completed = True
    finally:
        if not completed:
            await lease.release()
    return Outcome(report=report)


async def finalize(
    app: Adapters,
    job: Job,
    count: int,
    *,
    route: str = "fargate",
    stop: asyncio.Event | None = None,
) -> Report:
    """The job's report from its shards' records, the hash file and the catalog, then
    what ``run_job`` does after a sync: brew-6 publication, status.json, EMF, Slack.
    Every shard must have a record (``InputError`` naming the missing ones). Call it
    through ``finalize_if_last`` unless one caller is certain to be alone."""
    s = app.settings
    started = time.monotonic()
    records = await load_records(app.store, job.job_id, count)
    missing = missing_shards(records, count)
    if missing:
        raise InputError(
            f"job {job.job_id}: no record yet from shard(s) "
            f"{', '.join(f'{k}/{count}' for k in missing)}; finalize runs after every shard"
        )
    try:
        catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
        api = await fetch_job_api(app, catalog, job) if s.brew_mirror else None
        hf, etag = await load_hashfile(app.store, s.hash_key)
        targets, plan = prepare(catalog, hf, job, s.platforms, await load_external(app), s.releases)
        if plan.links:  # same bytes under a key no shard linked yet: recorded, not fetched
            record = Checkpointer(app.store, s.hash_key, hf, etag, s.batch_size)
            record.add(plan.links)
            await record.flush()
            hf = record.current
        report = merged_report(job, records, plan, hf, catalog, targets, s.releases)
        found = job_subset(app, catalog, job)
        report = with_subset(replace(report, duration_s=time.monotonic() - started), found)
        if s.brew_mirror:
            published = await publish_for(app, catalog, job, found, api, report, stop)
            report = replace(
                report, published=published, failed=(*report.failed, *published.ruby_problems)
            )
        await record_outcome(app, job, report, route)
    except MirrordError as exc:
        await app.slack.send(
            failure_message(
                job_id=job.job_id,
                date=job.date,
                error=f"fan-in of {count} shards: {exc}",
                report=None,
                logs_hint=s.logs_hint,
            )
        )
        raise
    log.info("fanin_done", shards=count, complete=report.complete, failed=len(report.failed))
    return report


def _skipped_before(records: dict[int, ShardRecord], plan: Plan) -> int:
    """Bottles already mirrored before the job: the least any shard saw when it planned.
    The fan-in's own re-plan counts the job's stored bottles too (records from before
    the field existed, or only given-up ones: that re-plan, the best there is)."""
    seen = [r.skipped for r in records.values() if r.skipped is not None]
    return min(seen) if seen else plan.skipped


def merged_report(
    job: Job,
    records: dict[int, ShardRecord],
    plan: Plan,
    hf: HashFile,
    catalog: Catalog,
    targets: tuple[str, ...],
    releases: Releases,
) -> Report:
    """One report for the whole job. Stored and bytes: the shards' sums. Failed: every
    record's failures by key, and any bottle the job still lacks that no record names
    (its shard said done without storing it). Quarantined bottles are reported as such,
    from the hash file, as a single worker would."""
    count = next(iter(records.values())).shard.count
    failed: dict[str, Failure] = {}
    for record in sorted(records.values(), key=lambda r: r.shard):
        for key, reason in record.failed:
            failed.setdefault(key, Failure(key, f"shard {record.shard}: {reason}"))
    quarantined: list[Quarantined] = []
    for t in plan.transfers:
        key = t.bottle.hash_key
        suspect = hf.quarantine.get(key)
        if suspect is not None and suspect.quarantined and key not in failed:
            quarantined.append(Quarantined.of(key, suspect))
        elif key not in failed:
            owner = f"{shard_of(t.key, count)}/{count}"
            failed[key] = Failure(key, f"shard {owner}: ended without recording it")
    stored = sum(r.stored for r in records.values())
    return Report(
        job_id=job.job_id,
        date=job.date,
        planned=stored + len(failed) + len(quarantined),
        downloaded=stored,
        skipped=_skipped_before(records, plan),
        failed=tuple(failed.values()),
        bytes=sum(r.bytes for r in records.values()),
        platforms=targets,
        no_bottle=plan.no_bottle,
        rejected=tuple(Rejected(r.name, r.reason) for r in catalog.rejected),
        estimated_bytes=job.estimated_bytes,
        unknown_tags=unknown_tags(catalog.formulae, releases),
        quarantined=tuple(quarantined),
        fallback=Fallbacks.merged(r.fallback for r in records.values()),
    )
