"""One sync at a time per bucket (DESIGN.md §5): a lock object in the bucket.

Taken with ``If-None-Match: *``; renewed with ``If-Match`` on our own ETag; taken over
only once its holder let it expire (``If-Match`` on the stale ETag, so two contenders
cannot both win); released by writing it expired, again with ``If-Match``. Every step
is one conditional write, so S3 decides every race.

Expiry is judged by S3's clock alone: the lock object's ``LastModified`` (set by S3 at
each renewal) against the ``Date`` of the answer that read it, and the lease (``ttl``)
its holder wrote. A host whose clock runs minutes fast cannot take over a live lock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
import structlog

from mirrord.errors import MirrordError, PreconditionFailed
from mirrord.s3 import Read, S3Store

log = structlog.get_logger("mirrord.lock")
LOCK_KEY = "sync.lock"


class LockLost(MirrordError):
    """Someone else holds the lock now (ours expired and was taken over)."""


class LockBusy(MirrordError):
    """Another sync holds the bucket."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(
            f"another sync holds the bucket: {holder.owner} (job {holder.job_id}), "
            f"lease renewed for another {max(0, int(holder.left))}s"
        )
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    job_id: str
    left: float  # seconds of lease left, by S3's clock


def default_owner() -> str:
    """Who holds a lock: host and process, enough to find it in the logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


# LastModified and Date are whole seconds: a lease is held one second past its ttl
# rather than taken over up to one second early.
RESOLUTION = 1.0


def live_holder(found: Read, default_ttl: float, clock: Callable[[], float]) -> Holder | None:
    """Who holds the lock as read, or None when it is free (released, expired, unreadable:
    a bad write cannot wedge the mirror). By S3's clock; a store that sends no dates
    falls back to the holder's written expiry against ours."""
    try:
        data = orjson.loads(found.body)
        owner, job_id = str(data["owner"]), str(data["job_id"])
        expires_at = float(data["expires_at"])
        ttl = float(data.get("ttl", default_ttl))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if expires_at <= 0 or not ttl > 0:
        return None  # released
    if found.last_modified is not None and found.server_time is not None:
        left = found.last_modified + ttl + RESOLUTION - found.server_time
    else:
        left = expires_at - clock()
    return Holder(owner, job_id, left) if left >= 0 else None


class BucketLock:
    def __init__(
        self,
        store: S3Store,
        owner: str,
        ttl: float,
        *,
        key: str = LOCK_KEY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._owner = owner
        self._ttl = ttl
        self._key = key
        self._clock = clock
        self._etag: str | None = None
        self._job_id = ""

    @property
    def held(self) -> bool:
        return self._etag is not None

    async def _put(self, etag: str | None, *, release: bool = False) -> str:
        # expires_at is for people reading the object; S3's clock decides (live_holder).
        body = {
            "owner": self._owner,
            "job_id": self._job_id,
            "ttl": 0 if release else self._ttl,
            "expires_at": 0.0 if release else self._clock() + self._ttl,
        }
        return await self._store.put_if(
            self._key, orjson.dumps(body), etag=etag, content_type="application/json"
        )

    async def holder(self) -> Holder | None:
        """Who holds the lock now, or None when it is free."""
        found = await self._store.read(self._key)
        return None if found is None else live_holder(found, self._ttl, self._clock)

    async def acquire(self, job_id: str) -> Holder | None:
        """Take the lock for ``job_id``: None on success, else who holds it."""
        self._job_id = job_id
        try:
            self._etag = await self._put(None)
            return None
        except PreconditionFailed:
            pass
        found = await self._store.read(self._key)
        if found is None:  # released between our two calls: try once more
            try:
                self._etag = await self._put(None)
                return None
            except PreconditionFailed:
                return Holder("unknown", "unknown", self._ttl)
        holder = live_holder(found, self._ttl, self._clock)
        if holder is not None:
            return holder
        try:
            self._etag = await self._put(found.etag)
        except PreconditionFailed:
            return Holder("unknown", "unknown", self._ttl)
        log.warning("lock_taken_over", key=self._key)
        return None

    async def renew(self) -> None:
        if self._etag is None:
            raise LockLost("lock not held")
        try:
            self._etag = await self._put(self._etag)
        except PreconditionFailed as exc:
            self._etag = None
            raise LockLost(f"{self._key} was taken over") from exc

    @asynccontextmanager
    async def kept(self, every: float, on_lost: Callable[[], None]) -> AsyncIterator[None]:
        """Renew the held lock every ``every`` seconds while inside; if it is lost,
        call ``on_lost`` (which should stop the job) and stop renewing."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    await self.renew()
                except LockLost:
                    log.error("lock_lost", key=self._key)
                    on_lost()
                    return
                except MirrordError as exc:  # S3 blinked: the lease outlasts a few misses
                    log.warning("lock_renew_failed", key=self._key, error=str(exc))

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def release(self) -> None:
        if self._etag is None:
            return
        try:
            await self._put(self._etag, release=True)
        except PreconditionFailed:
            log.warning("lock_already_lost", key=self._key)
        finally:
            self._etag = None
