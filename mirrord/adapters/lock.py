"""One sync at a time per bucket (docs/design.md §8): a lock object in the bucket.

Taken with ``If-None-Match: *``; renewed with ``If-Match`` on our own ETag; taken over
only once its holder let it expire (``If-Match`` on the stale ETag, so two contenders
cannot both win); released by writing it expired, again with ``If-Match``. Every step
is one conditional write, so S3 decides every race.

Expiry is judged by S3's clock alone: the lock object's ``LastModified`` (set by S3 at
each renewal) against the ``Date`` of the answer that read it, and the lease (``ttl``)
its holder wrote. A host whose clock runs minutes fast cannot take over a live lock.

The lock also names the holder's process (host, boot, pid, start time). A holder on this
same machine whose process is gone (SIGKILL, OOM, a closed terminal) is taken over at
once, so kill-and-rerun works; a holder elsewhere is only ever waited out.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
import structlog

from mirrord.adapters.s3 import Read, S3Store
from mirrord.core.errors import LockLost, MirrordError, PreconditionFailed, StoreError
from mirrord.core.tasks import background

log = structlog.get_logger("mirrord.adapters.lock")
LOCK_KEY = "sync.lock"
JOIN_ATTEMPTS = 8  # races a shared lease may lose in a row to its own siblings


@dataclass(frozen=True, slots=True)
class Process:
    """Where a lock holder runs: enough to tell, from the same machine, whether it still
    does. ``boot`` and ``started`` are empty where the system does not say (not Linux)."""

    host: str
    boot: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> Process:
        return cls(socket.gethostname(), _boot_id(), os.getpid(), _started(os.getpid()))

    def to_json(self) -> dict[str, object]:
        return {"host": self.host, "boot": self.boot, "pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, data: object) -> Process | None:
        if not isinstance(data, dict):
            return None
        host, boot, pid, started = (data.get(k) for k in ("host", "boot", "pid", "started"))
        if not (isinstance(host, str) and isinstance(boot, str) and isinstance(started, str)):
            return None
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
            return None
        return cls(host, boot, pid, started)

    def gone(self, here: Process) -> bool:
        """True only when certain that this process no longer runs: it ran on ``here``'s
        machine, and that machine has rebooted since or has no such process now (or one
        that started at another time: a reused pid)."""
        if self.host != here.host or not self.host:
            return False
        if self.boot and here.boot:
            if self.boot != here.boot:
                return True
        elif self.boot or here.boot:
            return False  # one side cannot say which boot: not certain
        if not _runs(self.pid):
            return True
        return bool(self.started) and _started(self.pid) != self.started


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22);
    the command name before it may hold spaces and parentheses, so split after the last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def _shared(value: object) -> str:
    return value[:40] if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    job_id: str
    left: float  # seconds of lease left, by S3's clock
    process: Process | None = None
    shared: str = ""  # held by the shards of job_id of this date, who may join it

    def alive(self, here: Process) -> bool:
        """Whether the holder may still run, as seen from ``here``: a holder whose process
        on this host is gone is dead (its lease need not run out); any other is alive."""
        return self.process is None or not self.process.gone(here)


def default_owner() -> str:
    """Who holds a lock: host and process, enough to find it in the logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


# LastModified and Date are whole seconds: a lease is held one second past its ttl
# rather than taken over up to one second early.
RESOLUTION = 1.0


def read_lock(found: Read, default_ttl: float, clock: Callable[[], float]) -> Holder | str:
    """The live holder of the lock as read, or why it is free: "released", "expired" or
    "unreadable" (a bad write cannot wedge the mirror). By S3's clock; a store that sends
    no dates falls back to the holder's written expiry against ours."""
    try:
        data = orjson.loads(found.body)
        owner, job_id = str(data["owner"]), str(data["job_id"])
        expires_at = float(data["expires_at"])
        ttl = float(data.get("ttl", default_ttl))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return "unreadable"
    if not (math.isfinite(expires_at) and math.isfinite(ttl)):
        return "unreadable"
    if not (expires_at > 0 and ttl > 0):
        return "released"
    if found.last_modified is not None and found.server_time is not None:
        left = found.last_modified + ttl + RESOLUTION - found.server_time
    else:
        left = expires_at - clock()
    if left < 0:
        return "expired"
    return Holder(
        owner, job_id, left, Process.from_json(data.get("process")), _shared(data.get("shared"))
    )


class BucketLock:
    def __init__(
        self,
        store: S3Store,
        owner: str,
        ttl: float,
        *,
        key: str = LOCK_KEY,
        clock: Callable[[], float] = time.time,
        process: Process | None = None,
        shared: str = "",
    ) -> None:
        """``process``: this one (the default), as the lock records it and as it judges
        whether a holder on the same machine is gone. ``shared``: the job's date, for the
        lease of a sharded job (docs/design.md §12), which the job's other shards join
        and renew with us, if they run with the same job id and date."""
        self._store = store
        self._shared = shared
        self._process = process or Process.current()
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
        # expires_at is for people reading the object; S3's clock decides (read_lock).
        body: dict[str, object] = {
            "owner": self._owner,
            "job_id": self._job_id,
            "ttl": 0 if release else self._ttl,
            "expires_at": 0.0 if release else self._clock() + self._ttl,
            # A shared lease names no process: the one that wrote it last may be gone while
            # its siblings still run, so it is only ever taken over once it expires.
            "process": None if self._shared else self._process.to_json(),
        }
        if self._shared:
            body["shared"] = self._shared
        return await self._store.put_if(
            self._key, orjson.dumps(body), etag=etag, content_type="application/json"
        )

    async def holder(self) -> Holder | None:
        """Who holds the lock now, or None when it is free."""
        found = await self._store.read(self._key)
        if found is None:
            return None
        state = read_lock(found, self._ttl, self._clock)
        return state if isinstance(state, Holder) else None

    def _joins(self, holder: Holder) -> bool:
        """A shared lock may join (and renew) a live lease of its own job's shards."""
        return bool(self._shared) and (holder.shared, holder.job_id) == (
            self._shared,
            self._job_id,
        )

    async def acquire(self, job_id: str) -> Holder | None:
        """Take the lock for ``job_id``: None on success, else who holds it. A shared lock
        joins a live shared lease of the same job; its siblings write it too, so a lost
        race there is tried again, a few times."""
        self._job_id = job_id
        for _ in range(JOIN_ATTEMPTS):
            outcome = await self._acquire_once()
            if outcome != "raced":
                return outcome if isinstance(outcome, Holder) else None
        return Holder("unknown", "unknown", self._ttl)

    async def _acquire_once(self) -> Holder | Literal["raced"] | None:
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
                return "raced" if self._shared else Holder("unknown", "unknown", self._ttl)
        state = read_lock(found, self._ttl, self._clock)
        if isinstance(state, Holder) and self._joins(state):
            try:
                self._etag = await self._put(found.etag)
            except PreconditionFailed:
                return "raced"
            log.info("lock_joined", key=self._key, job_id=self._job_id, holder=state.owner)
            return None
        if isinstance(state, Holder):
            if state.alive(self._process):
                return state
            assert state.process is not None  # alive() is False only with a process
            state = f"its process {state.process.pid} on this host is gone"
            previous: str | None = found.body.decode(errors="replace")[:200]
        else:
            previous = None if state == "released" else found.body.decode(errors="replace")[:200]
        try:
            self._etag = await self._put(found.etag)
        except PreconditionFailed:
            return Holder("unknown", "unknown", self._ttl)
        if state == "released":
            log.debug("lock_acquired", key=self._key)  # the ordinary case: no news
        elif state == "expired" or state == "unreadable":
            # A holder that stopped renewing without releasing: it crashed elsewhere.
            log.warning("lock_taken_over", key=self._key, reason=state, previous=previous)
        else:
            log.info("lock_taken_over", key=self._key, reason=state, previous=previous)
        return None

    async def wait(self, job_id: str, stop: asyncio.Event, *, every: float) -> Holder | None:
        """``acquire`` until it succeeds (None), asking again at the holder's lease end
        or every ``every`` seconds, whichever is first; the holder once ``stop`` is set."""
        while (holder := await self.acquire(job_id)) is not None:
            if stop.is_set():
                return holder
            log.info(
                "lock_wait", holder=holder.owner, holder_job=holder.job_id, left_s=int(holder.left)
            )
            with suppress(TimeoutError):
                async with asyncio.timeout(min(max(holder.left, 1.0), every)):
                    await stop.wait()
        return None

    async def renew(self) -> None:
        if self._etag is None:
            raise LockLost("lock not held")
        if self._shared:
            await self._renew_shared()
            return
        try:
            self._etag = await self._put(self._etag)
        except PreconditionFailed as exc:
            self._etag = None
            raise LockLost(f"{self._key} was taken over") from exc

    async def _renew_shared(self) -> None:
        """Siblings renew the same object: read it, check it is still our job's, write on
        the ETag read. A lease that lapsed (every sibling stalled) is taken again."""
        for _ in range(JOIN_ATTEMPTS):
            found = await self._store.read(self._key)
            state = "released" if found is None else read_lock(found, self._ttl, self._clock)
            if isinstance(state, Holder) and not self._joins(state):
                self._etag = None
                raise LockLost(f"{self._key} was taken by {state.owner} (job {state.job_id})")
            try:
                self._etag = await self._put(None if found is None else found.etag)
                return
            except PreconditionFailed:
                continue
        raise StoreError(f"{self._key}: lost {JOIN_ATTEMPTS} renewal races in a row")

    async def leave(self, others_live: Callable[[], Awaitable[bool]]) -> None:
        """Leave a shared lease: released only when no sibling is live. The lease is read
        first, then the siblings, then written on the ETag read: a sibling that joins in
        between changes that ETag, and we look again. (A shard releases its own shard
        lock before it leaves, so two that end together do not each wait for the other.)"""
        if self._etag is None:
            return
        try:
            for _ in range(JOIN_ATTEMPTS):
                found = await self._store.read(self._key)
                if found is None:
                    return
                state = read_lock(found, self._ttl, self._clock)
                if not (isinstance(state, Holder) and self._joins(state)):
                    return  # released, lapsed or another's: nothing of ours to release
                if await others_live():
                    log.info("lock_left", key=self._key, job_id=self._job_id)
                    return
                try:
                    await self._put(found.etag, release=True)
                    return
                except PreconditionFailed:
                    continue
            log.warning("lock_leave_failed", key=self._key)  # its lease runs out instead
        finally:
            self._etag = None

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

        async with background(renew(), name="lock-renewal"):
            yield

    async def release(self) -> None:
        if self._etag is None:
            return
        etag = self._etag
        try:
            for _ in range(JOIN_ATTEMPTS):
                try:
                    await self._put(etag, release=True)
                    return
                except PreconditionFailed:
                    # A renewal cancelled on the way out may land after the ETag we knew:
                    # if the lock is still ours, release it on the one it has now, or a
                    # sharded job's last shard takes it for a live sibling and keeps the
                    # job's lease until it expires.
                    found = await self._store.read(self._key)
                    state = None if found is None else read_lock(found, self._ttl, self._clock)
                    if found is None or not self._ours(state):
                        log.warning("lock_already_lost", key=self._key)
                        return
                    etag = found.etag
            log.warning("lock_release_failed", key=self._key)  # its lease runs out instead
        finally:
            self._etag = None

    def _ours(self, state: object) -> bool:
        """A live holder record that this lock wrote (same owner, job and process)."""
        return (
            isinstance(state, Holder)
            and (state.owner, state.job_id) == (self._owner, self._job_id)
            and (self._shared != "" or state.process == self._process)
        )
