"""One sync at a time per bucket (DESIGN.md §5): a lock object in the bucket.

Taken with ``If-None-Match: *``; renewed with ``If-Match`` on our own ETag; taken over
only once its holder let it expire (``If-Match`` on the stale ETag, so two contenders
cannot both win); released by writing it expired, again with ``If-Match``. Every step
is one conditional write, so S3 decides every race.
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
from mirrord.s3 import S3Store

log = structlog.get_logger("mirrord.lock")
LOCK_KEY = "sync.lock"


class LockLost(MirrordError):
    """Someone else holds the lock now (ours expired and was taken over)."""


class LockBusy(MirrordError):
    """Another sync holds the bucket."""

    def __init__(self, holder: Holder) -> None:
        left = max(0, int(holder.expires_at - time.time()))
        super().__init__(
            f"another sync holds the bucket: {holder.owner} (job {holder.job_id}), "
            f"lease renewed for another {left}s"
        )
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    job_id: str
    expires_at: float


def default_owner() -> str:
    """Who holds a lock: host and process, enough to find it in the logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _holder(raw: bytes) -> Holder | None:
    try:
        data = orjson.loads(raw)
        return Holder(str(data["owner"]), str(data["job_id"]), float(data["expires_at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # unreadable: treated as expired, so a bad write cannot wedge the mirror


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

    def _body(self, expires_at: float) -> bytes:
        return orjson.dumps(
            {"owner": self._owner, "job_id": self._job_id, "expires_at": expires_at}
        )

    async def _put(self, etag: str | None, expires_at: float) -> str:
        return await self._store.put_if(
            self._key, self._body(expires_at), etag=etag, content_type="application/json"
        )

    async def acquire(self, job_id: str) -> Holder | None:
        """Take the lock for ``job_id``: None on success, else who holds it."""
        self._job_id = job_id
        expires = self._clock() + self._ttl
        try:
            self._etag = await self._put(None, expires)
            return None
        except PreconditionFailed:
            pass
        found = await self._store.get(self._key)
        if found is None:  # released between our two calls: try once more
            try:
                self._etag = await self._put(None, expires)
                return None
            except PreconditionFailed:
                return Holder("unknown", "unknown", expires)
        raw, etag = found
        holder = _holder(raw)
        if holder is not None and holder.expires_at > self._clock():
            return holder
        try:
            self._etag = await self._put(etag, expires)
        except PreconditionFailed:
            return Holder("unknown", "unknown", expires)
        log.warning("lock_taken_over", key=self._key, previous=holder.owner if holder else None)
        return None

    async def renew(self) -> None:
        if self._etag is None:
            raise LockLost("lock not held")
        try:
            self._etag = await self._put(self._etag, self._clock() + self._ttl)
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
            await self._put(self._etag, 0.0)
        except PreconditionFailed:
            log.warning("lock_already_lost", key=self._key)
        finally:
            self._etag = None
