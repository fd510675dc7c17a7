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
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import structlog

from mirrord.adapters.s3 import S3Store
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import source_url
from mirrord.core.catalog import Catalog
from mirrord.core.closure import job_selection
from mirrord.core.errors import (
    FatalUpstreamError,
    FormulaError,
    IntegrityError,
    MirrordError,
    StoreError,
    UpstreamError,
)
from mirrord.core.hashfile import HashFile, entry_problem, note_failure, utc_now
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry, ObjectInfo, gc_paused
from mirrord.core.plan import Plan, Transfer, make_plan
from mirrord.core.releases import DEFAULT_RELEASES, Releases, auto_targets, unknown_tags
from mirrord.core.report import Failure, Progress, Quarantined, Rejected, Report
from mirrord.core.settings import Settings
from mirrord.core.shards import Shard, split
from mirrord.core.tasks import background, first_error
from mirrord.services.checkpoint import Checkpointer, abort_orphans, load_hashfile, unrecorded
from mirrord.services.fallback import FallbackMirrors
from mirrord.services.transfer import (
    AnnouncedSizes,
    Hook,
    SizeLimit,
    Source,
    no_hook,
    transfer,
)

log = structlog.get_logger("mirrord.services.sync")


@dataclass(frozen=True, slots=True)
class Tuning:
    concurrency: int
    part_size: int
    batch_size: int
    checkpoint_seconds: float
    max_bottle_bytes: int = 4 * 2**30
    bottle_timeout: float = 3600.0  # seconds a bottle may take in all, retries included

    @classmethod
    def of(cls, s: Settings) -> Tuning:
        return cls(
            s.concurrency,
            s.part_size,
            s.batch_size,
            s.checkpoint_seconds,
            s.max_bottle_bytes,
            s.bottle_timeout,
        )


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
        targets = job_targets(catalog, job, default_platforms, releases)
        selection = job_selection(catalog, job.formulae, targets, releases)
        plan = make_plan(selection.bottles, hf, job.date, selection.no_bottle, external=external)
    return targets, plan


def stale_suspects(hf: HashFile, catalog: Catalog) -> list[str]:
    """Quarantine records of versions the catalog no longer lists: never tried again,
    so never released. (Tags hold no '-': a key's stem is its <name>-<pkg_version>.)"""
    stems = {f"{f.name}-{f.pkg_version}" for f in catalog.formulae}
    return sorted(k for k in hf.quarantine if k.rpartition("-")[0] not in stems)


def _entries(t: Transfer, date: str, size: int, key: str) -> dict[str, HashEntry]:
    entry = HashEntry(t.bottle.sha256, date, size, key)
    return {b.hash_key: entry for b in (t.bottle, *t.aliases)}


class Sync:
    """The transfers of one planned job: ``concurrency`` workers on one queue, one
    checkpoint writer, one stop watcher; what they did is in the counters and lists."""

    def __init__(
        self,
        job: Job,
        plan: Plan,
        store: S3Store,
        source: Source,
        tuning: Tuning,
        checkpoints: Checkpointer,
        *,
        progress: Progress,
        stop: asyncio.Event,
        grace: float,
        hook: Hook,
        sizes: AnnouncedSizes | None,
        present: Mapping[str, Sequence[str]],
        fallbacks: FallbackMirrors | None = None,
    ) -> None:
        """``present``: file name → keys of unrecorded objects that may be this bottle,
        stored by a run that died before its checkpoint (``unrecorded``)."""
        self._job, self._plan, self._store, self._source = job, plan, store, source
        self._tuning, self._checkpoints, self._progress = tuning, checkpoints, progress
        self._stop, self._grace, self._hook, self._sizes = stop, grace, hook, sizes
        self._present, self._fallbacks = present, fallbacks
        self._suspects = checkpoints.current.quarantine  # as this run found them
        self._queue: asyncio.Queue[Transfer] = asyncio.Queue()
        for t in plan.transfers:
            self._queue.put_nowait(t)
        self._batch_full = asyncio.Event()
        self.downloaded = self.adopted = self.bytes = 0
        self.failures: list[Failure] = []
        self.quarantined: list[Quarantined] = []
        self.released: list[str] = []

    def report(
        self,
        catalog: Catalog,
        targets: tuple[str, ...],
        unknown: tuple[str, ...],
        duration_s: float,
    ) -> Report:
        job, plan = self._job, self._plan
        finished = self.downloaded + self.adopted + len(self.failures) + len(self.quarantined)
        return Report(
            job_id=job.job_id,
            date=job.date,
            planned=len(plan.transfers),
            downloaded=self.downloaded,
            adopted=self.adopted,
            skipped=plan.skipped,
            failed=tuple(self.failures),
            bytes=self.bytes,
            duration_s=duration_s,
            platforms=targets,
            no_bottle=plan.no_bottle,
            rejected=tuple(Rejected(r.name, r.reason) for r in catalog.rejected),
            checkpoints=self._checkpoints.saves,
            stopped=self._stop.is_set(),
            remaining=len(plan.transfers) - finished,
            estimated_bytes=job.estimated_bytes,
            unknown_tags=unknown,
            quarantined=tuple(self.quarantined),
            released=tuple(self.released),
            fallback=None if self._fallbacks is None else self._fallbacks.report(),
        )

    async def run(self) -> None:
        """Every transfer, or until ``stop``; the checkpoint runs after each batch and,
        also on the way out of a failure, at the end: what is stored must be recorded."""
        self._progress.start(len(self._plan.transfers))
        workers: list[asyncio.Task[None]] = []
        try:
            async with (
                background(self._write_checkpoints(), name="checkpoint-writer"),
                background(self._watch_stop(workers), name="stop-watcher"),
                asyncio.TaskGroup() as group,
            ):
                workers += [
                    group.create_task(self._work()) for _ in range(self._tuning.concurrency)
                ]
        except BaseExceptionGroup as crashed:  # a bug, not a bottle failure: raised as itself
            raise first_error(crashed) from None
        finally:
            if self._sizes is not None:
                await self._sizes.aclose()
            self._progress.close()
            await self._checkpoints.flush()

    async def _work(self) -> None:
        while not self._stop.is_set():
            try:
                t = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            ok = False
            try:
                await self._one(t)
                ok = True
            except (UpstreamError, IntegrityError, StoreError, FormulaError) as exc:
                self._failed(t, exc)
            self._progress.done(ok)

    async def _write_checkpoints(self) -> None:
        """One writer: a full batch or the interval, whichever comes first."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel that
            # ends this task when the event fires at the same moment, and the job hangs.
            with suppress(TimeoutError):
                async with asyncio.timeout(self._tuning.checkpoint_seconds):
                    await self._batch_full.wait()
            self._batch_full.clear()
            try:
                await self._checkpoints.flush()
            except MirrordError as exc:
                # A failed checkpoint is not a failed bottle: the entries stay queued
                # for the next flush; the final one raises.
                log.warning("checkpoint_failed", error=str(exc))

    async def _watch_stop(self, workers: list[asyncio.Task[None]]) -> None:
        await self._stop.wait()
        log.warning("stopping", grace_s=self._grace, queued=self._queue.qsize())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=self._grace)
        for w in pending:  # over the grace period: cancel, which aborts their uploads
            w.cancel()

    async def _one(self, t: Transfer) -> None:
        job, key = self._job, t.key
        for hash_key, entry in _entries(t, job.date, 0, key).items():
            # The catalog's rules should have refused it; never fetch what cannot be
            # recorded, and never hand the checkpoint an entry that would stop it.
            if (problem := entry_problem(hash_key, entry)) is not None:
                raise FormulaError(t.bottle.name, f"cannot be recorded: {problem}")
        head = await self._stored_before(t)
        if head is not None:
            # Stored by a run that died before its checkpoint: adopt, do not refetch.
            # Recorded under this job's date, where the object lies.
            self.adopted += 1
            size, key = head.size, head.key
        else:
            size = await self._fetch(t)
            self.downloaded += 1
            self.bytes += size
            self._hook("after_complete_before_checkpoint")
        for bottle in (t.bottle, *t.aliases):
            if bottle.hash_key in self._suspects:  # verified at last: out of quarantine
                self.released.append(bottle.hash_key)
                self._checkpoints.note(bottle.hash_key, None)
                log.info("bottle_released", key=bottle.hash_key)
        if self._checkpoints.add(_entries(t, job.date, size, key)):
            self._batch_full.set()  # the writer saves it; workers go on transferring

    async def _stored_before(self, t: Transfer) -> ObjectInfo | None:
        for key in self._present.get(t.key.rpartition("/")[2], ()):
            head = await self._store.head(key)
            if head is not None and head.metadata.get("sha256") == t.bottle.sha256:
                return head
        return None

    async def _fetch(self, t: Transfer) -> int:
        """From the registry, else (its error after retries) from the fallback mirrors."""
        try:
            return await self._fetch_from(t, self._source, None)
        except UpstreamError as failed:
            if self._fallbacks is None:
                raise
            return await self._fallbacks.fetch(t.bottle, failed, partial(self._fetch_from, t))

    async def _fetch_from(self, t: Transfer, source: Source, url: str | None) -> int:
        """The transfer from ``url`` (a fallback's; None: the catalog's) under its own
        deadline: a trickle, or cuts that keep earning attempts back, still end (#12)."""
        tuning = self._tuning
        announced = self._sizes.of(t.bottle) if self._sizes is not None else None
        limit = SizeLimit(tuning.max_bottle_bytes, announced)
        try:
            async with asyncio.timeout(tuning.bottle_timeout) as deadline:
                return await transfer(
                    t.bottle,
                    t.key,
                    source,
                    self._store,
                    tuning.part_size,
                    self._progress.add_bytes,
                    self._hook,
                    limit,
                    url,
                )
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise FatalUpstreamError(
                f"not complete within MIRRORD_BOTTLE_TIMEOUT ({tuning.bottle_timeout:g} s)",
                url=url or t.bottle.url,
            ) from exc

    def _failed(self, t: Transfer, exc: MirrordError) -> None:
        """A failure, or, for bytes that failed verification in QUARANTINE_AFTER runs in
        a row, a quarantined bottle: a known miss, reported once in ``quarantined``."""
        key, url = t.bottle.hash_key, source_url(t.bottle.url)
        runs: dict[str, int] = {}
        if isinstance(exc, IntegrityError):  # counted across runs in the hash file
            current = self._checkpoints.current.quarantine.get(key)
            suspect = note_failure(
                current, t.bottle.sha256, exc.actual, self._job.job_id, utc_now()
            )
            self._checkpoints.note(key, suspect)
            runs = {"runs": suspect.count}
            if suspect.quarantined:
                self.quarantined.append(Quarantined.of(key, suspect, str(exc), url))
                log.warning("bottle_quarantined", key=key, error=str(exc), **runs)
                return
        self.failures.append(Failure(key, str(exc), url))
        log.warning("bottle_failed", key=key, error=str(exc), kind=type(exc).__name__, **runs)


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
    shard: Shard | None = None,
    fallbacks: FallbackMirrors | None = None,
) -> Report:
    """``sizes``: where transfers past one part learn how big their bottle should be
    (without it, ``max_bottle_bytes`` is their only cap). ``today``: UTC date, for
    telling a bad job date from a real one (default: now). ``releases``: the macOS
    codenames tags are read with (MIRRORD_MACOS_RELEASES). ``shard``: carry out only
    that shard's part of the plan (core/shards.py), touching only its own leftovers."""
    started = clock()
    stop = stop or asyncio.Event()
    hf, etag = await load_hashfile(store, hash_key)
    targets, plan = prepare(catalog, hf, job, default_platforms, external, releases)
    plan = plan if shard is None else split(plan, shard)
    unknown = unknown_tags(catalog.formulae, releases)
    _log_plan(job, catalog, targets, plan, unknown, shard)
    checkpoints = Checkpointer(store, hash_key, hf, etag, tuning.batch_size, hook)
    checkpoints.add(plan.links)
    for key in stale_suspects(hf, catalog):
        if shard is None or shard.owns(key):
            log.info("quarantine_dropped", key=key, reason="the catalog no longer lists it")
            checkpoints.note(key, None)
    present = await _leftovers(store, hf, job, plan, shard, today)
    sync = Sync(
        job,
        plan,
        store,
        source,
        tuning,
        checkpoints,
        progress=progress or LogProgress(),
        stop=stop,
        grace=grace,
        hook=hook,
        sizes=sizes,
        present=present,
        fallbacks=fallbacks,
    )
    await sync.run()
    report = sync.report(catalog, targets, unknown, duration_s=clock() - started)
    log.info(
        "sync_done",
        **{k: v for k, v in report.to_dict().items() if k not in _LISTS},
        failed=len(report.failed),
        rejected=len(report.rejected),
        quarantined=len(report.quarantined),
    )
    return report


_LISTS = ("failed", "rejected", "quarantined")  # logged as counts


async def _leftovers(
    store: S3Store, hf: HashFile, job: Job, plan: Plan, shard: Shard | None, today: str | None
) -> dict[str, list[str]]:
    """What a dead run left: its open uploads are aborted (a shard's: only keys it owns,
    its live siblings upload the others) and its unrecorded objects returned, by file
    name, for adoption (a shard's: only those named like one of its own transfers)."""
    if not plan.transfers:
        return {}
    present = await unrecorded(store, hf, job.date, today or datetime.now(UTC).date().isoformat())
    await abort_orphans(store, None if shard is None else shard.owns)
    if shard is not None:
        names = {t.key.rpartition("/")[2] for t in plan.transfers}
        present = {name: keys for name, keys in present.items() if name in names}
    return present


def _log_plan(
    job: Job,
    catalog: Catalog,
    targets: Sequence[str],
    plan: Plan,
    unknown: Sequence[str],
    shard: Shard | None = None,
) -> None:
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
        shard=None if shard is None else str(shard),
        platforms=list(targets),
        transfers=len(plan.transfers),
        links=len(plan.links),
        skipped=plan.skipped,
        no_bottle=plan.no_bottle,
        rejected=len(catalog.rejected),
    )
