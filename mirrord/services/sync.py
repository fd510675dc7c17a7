"""A sync job: catalog → plan → bounded concurrent transfers → checkpoints → report.

One failure never stops the others. Progress reaches the hash file after every
``batch_size`` bottles or ``checkpoint_seconds``, whichever comes first, and at the end,
so a crash loses at most one batch plus the transfers in flight — and those are adopted
by the next run's HEAD without downloading again.

A ``stop`` event (SIGTERM, a Lambda deadline) ends the job early: no new transfer starts,
those in flight get ``grace`` seconds to finish and are then cancelled (and aborted), and
the final checkpoint still runs. The report then says ``stopped`` and how many remain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog

from mirrord.adapters.s3 import S3Store
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import shown_url, source_url
from mirrord.core.catalog import Catalog, filter_formulae, select_bottles
from mirrord.core.errors import (
    FatalUpstreamError,
    FormulaError,
    IntegrityError,
    MirrordError,
    PreconditionFailed,
    StoreError,
    UpstreamError,
)
from mirrord.core.hashfile import (
    HashFile,
    Suspect,
    dumps,
    entry_problem,
    merge,
    missing_from,
    note_failure,
    parse,
    quarantine_missing,
    utc_now,
)
from mirrord.core.jobs import Job
from mirrord.core.models import DATE_RE, Bottle, HashEntry, ObjectInfo, gc_paused
from mirrord.core.plan import Plan, Transfer, index_url, make_plan, sizes_from_index
from mirrord.core.releases import DEFAULT_RELEASES, Releases, auto_targets, unknown_tags
from mirrord.core.report import Failure, Progress, Quarantined, Rejected, Report
from mirrord.services.transfer import Hook, SizeLimit, Source, no_hook, transfer

log = structlog.get_logger("mirrord.services.sync")
SAVE_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Tuning:
    concurrency: int
    part_size: int
    batch_size: int
    checkpoint_seconds: float
    max_bottle_bytes: int = 4 * 2**30
    bottle_timeout: float = 3600.0  # seconds a bottle may take in all, retries included


class IndexSource(Protocol):
    async def image_index(self, url: str) -> dict[str, Any] | None: ...


class AnnouncedSizes:
    """The size the registry announces for a bottle (``sh.brew.bottle.size`` in its
    formula version's image index), one GET per version, asked only by the transfers
    that need it (those past one part). Unknown (None) when the index is missing,
    unreadable or silent about the bottle: the transfer then falls back to
    ``MIRRORD_MAX_BOTTLE_BYTES``."""

    def __init__(self, registry: IndexSource) -> None:
        self._registry = registry
        self._indexes: dict[str, asyncio.Future[dict[str, int]]] = {}

    def of(self, bottle: Bottle) -> Callable[[], Awaitable[int | None]]:
        async def size() -> int | None:
            url = index_url(bottle)
            if url is None:
                return None
            if url not in self._indexes:
                self._indexes[url] = asyncio.ensure_future(self._fetch(url))
            # Shielded: a transfer cancelled while waiting leaves the answer to the others.
            return (await asyncio.shield(self._indexes[url])).get(bottle.sha256)

        return size

    async def aclose(self) -> None:
        """Cancel what a stopped transfer left asking (its answer went unused)."""
        for future in self._indexes.values():
            future.cancel()
        await asyncio.gather(*self._indexes.values(), return_exceptions=True)

    async def _fetch(self, url: str) -> dict[str, int]:
        try:
            index = await self._registry.image_index(url)
        except UpstreamError as exc:
            log.info("announced_size_unknown", url=shown_url(url), error=str(exc))
            return {}
        return sizes_from_index(index) if index else {}


async def load_hashfile(store: S3Store, key: str) -> tuple[HashFile, str | None]:
    """The hash file and its ETag; an empty file and None when there is none yet."""
    found = await store.get(key)
    if found is None:
        return HashFile(), None
    raw, etag = found
    return parse(raw, source=f"s3://{store.bucket}/{key}"), etag


class Checkpointer:
    """Collects new entries and writes them with conditional writes; on 412 it reloads,
    merges (union) and writes again, so no writer ever loses another's entries."""

    def __init__(
        self,
        store: S3Store,
        key: str,
        hf: HashFile,
        etag: str | None,
        batch_size: int,
        hook: Hook = no_hook,
    ) -> None:
        self._store = store
        self._key = key
        self._hf = hf
        self._etag = etag
        self._batch = batch_size
        self._pending: dict[str, HashEntry] = {}
        self._pending_quarantine: dict[str, Suspect | None] = {}
        self._hook = hook
        self._lock = asyncio.Lock()
        self.saves = 0

    @property
    def current(self) -> HashFile:
        return self._hf

    def add(self, entries: Mapping[str, HashEntry]) -> bool:
        """Queue entries; True when a batch is full and should be flushed."""
        self._pending.update(entries)
        return len(self._pending) >= self._batch

    def note(self, key: str, suspect: Suspect | None) -> None:
        """Queue a quarantine record for ``key`` (None: remove it), written with the
        next checkpoint and merged like the entries."""
        self._pending_quarantine[key] = suspect

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending and not self._pending_quarantine:
                return
            snapshot = dict(self._pending)
            records = dict(self._pending_quarantine)
            pending = snapshot
            for _ in range(SAVE_ATTEMPTS):
                merged = merge(self._hf, pending, quarantine=records)
                body = dumps(merged)
                self._hook("during_hashfile_write")
                try:
                    etag = await self._store.put_if(
                        self._key, body, etag=self._etag, content_type="application/json"
                    )
                except PreconditionFailed:
                    # Another writer got there first: take its file and merge into it.
                    self._hf, self._etag = await load_hashfile(self._store, self._key)
                    pending = missing_from(self._hf, pending)
                    log.info("hashfile_conflict", key=self._key, pending=len(pending))
                    if not pending and not quarantine_missing(self._hf, records):
                        break
                    continue
                self._hf, self._etag = merged, etag
                self.saves += 1
                self._hook("after_checkpoint")
                break
            else:
                raise StoreError(f"{self._key}: lost {SAVE_ATTEMPTS} write races in a row")
            # Entries added while we were writing stay queued for the next flush.
            for k, entry in snapshot.items():
                if self._pending.get(k) == entry:
                    del self._pending[k]
            for k, record in records.items():
                if k in self._pending_quarantine and self._pending_quarantine[k] == record:
                    del self._pending_quarantine[k]
            log.info("checkpoint", key=self._key, entries=len(self._hf.bottles))


async def abort_orphans(store: S3Store) -> int:
    """Abort the multipart uploads a dead run left open (SIGKILL, OOM, a lost host).

    They are invisible but billed, and the lifecycle rule only reaps them days later.
    Call it holding the bucket lock: one sync at a time, so every open upload is an orphan.
    """
    try:
        uploads = await store.open_uploads()
    except StoreError as exc:  # housekeeping: never a reason to stop the sync
        log.warning("orphan_listing_failed", error=str(exc))
        return 0
    aborted = 0
    for key, upload_id in uploads:
        try:
            await store.abort_multipart(key, upload_id)
        except StoreError as exc:  # the lifecycle rule is the backstop
            log.warning("orphan_abort_failed", key=key, upload_id=upload_id, error=str(exc))
            continue
        aborted += 1
        log.info("orphan_upload_aborted", key=key, upload_id=upload_id)
    return aborted


def job_targets(
    catalog: Catalog,
    job: Job,
    default_platforms: Sequence[str] | None,
    releases: Releases = DEFAULT_RELEASES,
) -> tuple[str, ...]:
    return tuple(job.platforms or default_platforms or auto_targets(catalog.formulae, releases))


def prepare(
    catalog: Catalog,
    hf: HashFile,
    job: Job,
    default_platforms: Sequence[str] | None,
    external: HashFile | None = None,
    releases: Releases = DEFAULT_RELEASES,
) -> tuple[tuple[str, ...], Plan]:
    """Pure: which targets, and what to fetch for them."""
    with gc_paused():  # ~10⁵ new records, no cycles
        formulae = filter_formulae(catalog, job.formulae)
        targets = job_targets(catalog, job, default_platforms, releases)
        selection = select_bottles(formulae, targets, releases)
        plan = make_plan(selection.bottles, hf, job.date, selection.no_bottle, external=external)
    return targets, plan


def adoption_folders(folders: Sequence[str], hf: HashFile, job_date: str, today: str) -> list[str]:
    """The date folders a run that died before its checkpoint may have left objects in:
    this job's, every folder since the newest recorded download (the dead run's job may
    have had an earlier date: a cron `mirrord sync` resumed the next day), and any folder
    dated after tomorrow, which only a bad job date can have made. Recorded dates after
    tomorrow are ignored: one such entry must not hide every folder before it."""
    tomorrow = (date.fromisoformat(today) + timedelta(days=1)).isoformat()
    newest = max(
        (e.download_date for e in hf.bottles.values() if e.download_date <= tomorrow),
        default="",
    )
    dated = [f[:-1] for f in folders if DATE_RE.fullmatch(f[:-1])]
    others = sorted((d for d in dated if d >= newest or d > tomorrow), reverse=True)
    return [f"{d}/" for d in dict.fromkeys([job_date, *others])]  # this job's own first


async def unrecorded(
    store: S3Store, hf: HashFile, job_date: str, today: str
) -> dict[str, list[str]]:
    """File name → keys of objects no hash-file entry names, in ``adoption_folders``.
    One listing each rather than a HEAD per bottle; a HEAD that answers 404 also costs a
    new connection in aiobotocore (measured)."""
    recorded = {e.s3_key for e in hf.bottles.values()}
    found: dict[str, list[str]] = {}
    for folder in adoption_folders(await store.folders(), hf, job_date, today):
        async for o in store.list_objects(folder):
            if o.key not in recorded:
                found.setdefault(o.key.rpartition("/")[2], []).append(o.key)
    return found


def stale_suspects(hf: HashFile, catalog: Catalog) -> list[str]:
    """Quarantine records of versions the catalog no longer lists: never tried again,
    so never released. (Tags hold no '-': a key's stem is its <name>-<pkg_version>.)"""
    stems = {f"{f.name}-{f.pkg_version}" for f in catalog.formulae}
    return sorted(k for k in hf.quarantine if k.rpartition("-")[0] not in stems)


def _entries(t: Transfer, date: str, size: int, key: str) -> dict[str, HashEntry]:
    entry = HashEntry(t.bottle.sha256, date, size, key)
    return {b.hash_key: entry for b in (t.bottle, *t.aliases)}


async def run_sync(
    job: Job,
    catalog: Catalog,
    store: S3Store,
    source: Source,
    tuning: Tuning,
    *,
    hash_key: str,
    default_platforms: Sequence[str] | None = None,
    progress: Progress | None = None,
    external: HashFile | None = None,
    stop: asyncio.Event | None = None,
    grace: float = 90.0,
    clock: Callable[[], float] = time.monotonic,
    hook: Hook = no_hook,
    sizes: AnnouncedSizes | None = None,
    today: str | None = None,
    releases: Releases = DEFAULT_RELEASES,
) -> Report:
    """``sizes``: where transfers past one part learn how big their bottle should be
    (without it, ``max_bottle_bytes`` is their only cap). ``today``: UTC date, for
    telling a bad job date from a real one (default: now). ``releases``: the macOS
    codenames tags are read with (MIRRORD_MACOS_RELEASES)."""
    started = clock()
    today = today or datetime.now(UTC).date().isoformat()
    progress = progress or LogProgress()
    stop = stop or asyncio.Event()
    hf, etag = await load_hashfile(store, hash_key)
    targets, plan = prepare(catalog, hf, job, default_platforms, external, releases)
    unknown = unknown_tags(catalog.formulae, releases)
    if unknown:
        log.warning(
            "unknown_macos_tags",
            tags=list(unknown),
            hint="a macOS release mirrord does not know: add it to MIRRORD_MACOS_RELEASES "
            "(e.g. redwood=28) so that auto and targets can use it",
        )
    log.info(
        "plan",
        job_id=job.job_id,
        date=job.date,
        platforms=list(targets),
        transfers=len(plan.transfers),
        links=len(plan.links),
        skipped=plan.skipped,
        no_bottle=plan.no_bottle,
        rejected=len(catalog.rejected),
    )
    checkpoints = Checkpointer(store, hash_key, hf, etag, tuning.batch_size, hook)
    checkpoints.add(plan.links)
    for key in stale_suspects(hf, catalog):
        log.info("quarantine_dropped", key=key, reason="the catalog no longer lists this version")
        checkpoints.note(key, None)
    batch_full = asyncio.Event()

    queue: asyncio.Queue[Transfer] = asyncio.Queue()
    for t in plan.transfers:
        queue.put_nowait(t)
    counts = {"downloaded": 0, "adopted": 0, "bytes": 0}
    failures: list[Failure] = []
    quarantined: list[Quarantined] = []
    released: list[str] = []
    progress.start(len(plan.transfers))

    present = await unrecorded(store, hf, job.date, today) if plan.transfers else {}
    if plan.transfers:
        await abort_orphans(store)

    async def stored_before(t: Transfer) -> ObjectInfo | None:
        for key in present.get(t.key.rpartition("/")[2], ()):
            head = await store.head(key)
            if head is not None and head.metadata.get("sha256") == t.bottle.sha256:
                return head
        return None

    async def fetch(t: Transfer) -> int:
        """The transfer under its deadline: a trickle that never trips the read timeout,
        or cuts that keep earning attempts back, still end (issue 12)."""
        limit = SizeLimit(
            tuning.max_bottle_bytes, sizes.of(t.bottle) if sizes is not None else None
        )
        try:
            async with asyncio.timeout(tuning.bottle_timeout) as deadline:
                return await transfer(
                    t.bottle,
                    t.key,
                    source,
                    store,
                    tuning.part_size,
                    progress.add_bytes,
                    hook,
                    limit,
                )
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise FatalUpstreamError(
                f"not complete within MIRRORD_BOTTLE_TIMEOUT ({tuning.bottle_timeout:g} s)",
                url=t.bottle.url,
            ) from exc

    async def one(t: Transfer) -> None:
        key = t.key
        for hash_key, entry in _entries(t, job.date, 0, key).items():
            # The catalog's rules should have refused it; never fetch what cannot be
            # recorded, and never hand the checkpoint an entry that would stop it.
            if (problem := entry_problem(hash_key, entry)) is not None:
                raise FormulaError(t.bottle.name, f"cannot be recorded: {problem}")
        head = await stored_before(t)
        if head is not None:
            # Stored by a run that died before its checkpoint: adopt, do not refetch.
            # Recorded under this job's date, where the object lies.
            counts["adopted"] += 1
            size, key = head.size, head.key
        else:
            size = await fetch(t)
            counts["downloaded"] += 1
            counts["bytes"] += size
            hook("after_complete_before_checkpoint")
        for bottle in (t.bottle, *t.aliases):
            if bottle.hash_key in hf.quarantine:  # verified at last: out of quarantine
                released.append(bottle.hash_key)
                checkpoints.note(bottle.hash_key, None)
                log.info("bottle_released", key=bottle.hash_key)
        if checkpoints.add(_entries(t, job.date, size, key)):
            batch_full.set()  # the writer below saves it; workers go on transferring

    def failed(t: Transfer, exc: MirrordError) -> None:
        """A failure, or, for bytes that failed verification in QUARANTINE_AFTER runs in
        a row, a quarantined bottle: a known miss, reported once in ``quarantined``."""
        key, url = t.bottle.hash_key, source_url(t.bottle.url)
        runs: dict[str, int] = {}
        if isinstance(exc, IntegrityError):  # counted across runs in the hash file
            current = checkpoints.current.quarantine.get(key)
            suspect = note_failure(current, t.bottle.sha256, exc.actual, job.job_id, utc_now())
            checkpoints.note(key, suspect)
            runs = {"runs": suspect.count}
            if suspect.quarantined:
                quarantined.append(
                    Quarantined(
                        key,
                        suspect.expected_sha256,
                        suspect.actual_sha256,
                        suspect.first_seen,
                        suspect.last_seen,
                        suspect.count,
                        str(exc),
                        url,
                    )
                )
                log.warning("bottle_quarantined", key=key, error=str(exc), **runs)
                return
        failures.append(Failure(key, str(exc), url))
        log.warning("bottle_failed", key=key, error=str(exc), kind=type(exc).__name__, **runs)

    async def worker() -> None:
        while not stop.is_set():
            try:
                t = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            ok = False
            try:
                await one(t)
                ok = True
            except (UpstreamError, IntegrityError, StoreError, FormulaError) as exc:
                failed(t, exc)
            progress.done(ok)

    async def checkpoint_writer() -> None:
        """One writer: a full batch or the interval, whichever comes first."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel that
            # ends this task when the event fires at the same moment, and the job hangs.
            with suppress(TimeoutError):
                async with asyncio.timeout(tuning.checkpoint_seconds):
                    await batch_full.wait()
            batch_full.clear()
            try:
                await checkpoints.flush()
            except MirrordError as exc:
                # A failed checkpoint is not a failed bottle: the entries stay queued
                # for the next flush; the final one raises.
                log.warning("checkpoint_failed", error=str(exc))

    async def stopper(workers: list[asyncio.Task[None]]) -> None:
        await stop.wait()
        log.warning("stopping", grace_s=grace, queued=queue.qsize())
        _, pending = await asyncio.wait(workers, timeout=grace)
        for w in pending:  # over the grace period: cancel, which aborts their uploads
            w.cancel()

    writer = asyncio.create_task(checkpoint_writer())
    workers = [asyncio.create_task(worker()) for _ in range(tuning.concurrency)]
    watcher = asyncio.create_task(stopper(workers))
    try:
        await asyncio.wait(workers)
        for w in workers:
            if not w.cancelled() and w.exception() is not None:
                raise w.exception()  # type: ignore[misc]  # a bug, not a bottle failure
    finally:
        for task in (watcher, writer, *workers):
            task.cancel()
        await asyncio.gather(watcher, writer, *workers, return_exceptions=True)
        if sizes is not None:
            await sizes.aclose()
        progress.close()
        # Also on the way out of a failure: what is stored must be recorded.
        await checkpoints.flush()

    finished = counts["downloaded"] + counts["adopted"] + len(failures) + len(quarantined)
    report = Report(
        job_id=job.job_id,
        date=job.date,
        planned=len(plan.transfers),
        downloaded=counts["downloaded"],
        adopted=counts["adopted"],
        skipped=plan.skipped,
        failed=tuple(failures),
        bytes=counts["bytes"],
        duration_s=clock() - started,
        platforms=targets,
        no_bottle=plan.no_bottle,
        rejected=tuple(Rejected(r.name, r.reason) for r in catalog.rejected),
        checkpoints=checkpoints.saves,
        stopped=stop.is_set(),
        remaining=len(plan.transfers) - finished,
        estimated_bytes=job.estimated_bytes,
        unknown_tags=unknown,
        quarantined=tuple(quarantined),
        released=tuple(released),
    )
    log.info(
        "sync_done",
        **{
            k: v
            for k, v in report.to_dict().items()
            if k not in ("failed", "rejected", "quarantined")
        },
        failed=len(failures),
        rejected=len(catalog.rejected),
        quarantined=len(quarantined),
    )
    return report
