"""The hash file on S3 and the gap a crash leaves between it and the bucket.

The file is read once, then checkpointed with conditional writes that merge with any
other writer's entries instead of overwriting them (docs/design.md §6). What a dead run
stored but never recorded is found by listing (and adopted by the sync); the multipart
uploads it left open are aborted."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta

import structlog

from mirrord.adapters.s3 import S3Store
from mirrord.core.errors import PreconditionFailed, StoreError
from mirrord.core.hashfile import (
    HashFile,
    Suspect,
    dumps,
    merge,
    missing_from,
    parse,
    quarantine_missing,
)
from mirrord.core.models import DATE_RE, HashEntry
from mirrord.services.transfer import Hook, no_hook

log = structlog.get_logger("mirrord.services.checkpoint")
# N shards write one hash file (docs/design.md §12): a writer that loses a race reloads,
# merges and waits a jittered, growing pause before it writes again, so N writers spread
# out instead of racing in lockstep. 30 attempts with pauses up to 2 s: minutes of
# losing streaks before a checkpoint fails (and its entries stay queued even then).
SAVE_ATTEMPTS = 30
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0


def conflict_pause(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^attempt)]."""
    return rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


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
        self._rng = random.Random()  # noqa: S311  # nosec B311  # jitter, not a secret
        self.saves = 0
        self.conflicts = 0  # races lost to another writer, for the log and the tests
        self.longest_streak = 0  # the most races one flush lost before it wrote

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
            for attempt in range(SAVE_ATTEMPTS):
                merged = merge(self._hf, pending, quarantine=records)
                body = dumps(merged)
                self._hook("during_hashfile_write")
                try:
                    etag = await self._store.put_if(
                        self._key, body, etag=self._etag, content_type="application/json"
                    )
                except PreconditionFailed:
                    # Another writer got there first: pause (jittered, so N writers spread
                    # out), then take its file, fresh, and merge into it.
                    await asyncio.sleep(conflict_pause(attempt, self._rng))
                    self._hf, self._etag = await load_hashfile(self._store, self._key)
                    pending = missing_from(self._hf, pending)
                    self.conflicts += 1
                    log.info(
                        "hashfile_conflict", key=self._key, pending=len(pending), attempt=attempt
                    )
                    if not pending and not quarantine_missing(self._hf, records):
                        break
                    continue
                self._hf, self._etag = merged, etag
                self.longest_streak = max(self.longest_streak, attempt)
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


async def abort_orphans(store: S3Store, owns: Callable[[str], bool] | None = None) -> int:
    """Abort the multipart uploads a dead run left open (SIGKILL, OOM, a lost host).

    They are invisible but billed, and the lifecycle rule only reaps them days later.
    Call it holding the bucket lock: one sync at a time, so every open upload is an orphan.
    A shard passes ``owns`` (Shard.owns): its live siblings upload only keys they own, so
    an open upload of a key this shard owns is an orphan, and no other is touched.
    """
    try:
        uploads = await store.open_uploads()
    except StoreError as exc:  # housekeeping: never a reason to stop the sync
        log.warning("orphan_listing_failed", error=str(exc))
        return 0
    aborted = 0
    for key, upload_id in uploads:
        if owns is not None and not owns(key):
            continue
        try:
            await store.abort_multipart(key, upload_id)
        except StoreError as exc:  # the lifecycle rule is the backstop
            log.warning("orphan_abort_failed", key=key, upload_id=upload_id, error=str(exc))
            continue
        aborted += 1
        log.info("orphan_upload_aborted", key=key, upload_id=upload_id)
    return aborted


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
