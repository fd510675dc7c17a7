"""One bottle: upstream stream → SHA-256 → S3, committed only when the digest matches.

No temporary files. A bottle that fits one part is buffered and sent as one PutObject
carrying ``ChecksumSHA256``. A larger one becomes a multipart upload whose part N uploads
while part N+1 is read (at most two parts held per transfer); it is completed only when
the running SHA-256 equals the catalog's, and aborted otherwise, on any error, and on
cancellation. A corrupt or truncated bottle is never visible in the bucket.

A body may not outgrow its bottle: past one part, the transfer asks the size the registry
announces (``sh.brew.bottle.size``) and stops a little past it, or past
``MIRRORD_MAX_BOTTLE_BYTES`` when none is known, aborting its upload at once. An object
is written only where none is (``If-None-Match: *``): a stored bottle is never replaced.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from mirrord.adapters.s3 import Part, S3Store
from mirrord.adapters.web import shown_url, source_url
from mirrord.core.errors import IntegrityError, PreconditionFailed, StoreError, UpstreamError
from mirrord.core.models import Bottle
from mirrord.core.plan import index_url, sizes_from_index

# Below this, hashing on the event loop is cheaper than a hop to a thread.
THREAD_HASH_MIN = 1 << 20

log = structlog.get_logger("mirrord.services.transfer")


class Source(Protocol):
    def stream(self, url: str) -> AsyncIterator[bytes]: ...


# Called with a point's name (settings.CRASH_POINTS) as the data path passes it: the
# reliability tests kill the process there. In production it is ``no_hook``.
Hook = Callable[[str], None]


def no_hook(point: str) -> None:
    return None


def object_metadata(bottle: Bottle, fallback_url: str | None = None) -> dict[str, str]:
    """Enough to rebuild the hash file from the bucket alone (docs/design.md §6), and
    where the bytes came from: ``source-url`` is the URL that served them, and a bottle a
    fallback mirror served (``fallback_url``) says ``source: fallback``."""
    served = {} if fallback_url is None else {"source": "fallback"}
    return {
        "sha256": bottle.sha256,
        "formula": bottle.name,
        "version": bottle.pkg_version,
        "platform": bottle.tag,
        # Public metadata: no credentials or query token of the catalog's URL.
        "source-url": source_url(fallback_url or bottle.url),
        **served,
    }


def allowance(announced: int) -> int:
    """Bytes a body announced as ``announced`` may reach before it is cut off: the sha256
    check rejects any other length anyway, this only bounds what a liar costs."""
    return announced + announced // 100 + 2**20


@dataclass(frozen=True, slots=True)
class SizeLimit:
    """How far a bottle's body may grow. ``announced`` gives the registry's size for it
    (None: unknown); it is asked only once the body outgrows one part, so the bottles
    that fit one part (most of them) cost no extra request."""

    max_bytes: int = 4 * 2**30
    announced: Callable[[], Awaitable[int | None]] | None = None

    async def cap(self) -> tuple[int, str]:
        size = await self.announced() if self.announced is not None else None
        if size is not None and allowance(size) < self.max_bytes:
            return allowance(size), f"the registry announces {size}"
        return self.max_bytes, "MIRRORD_MAX_BOTTLE_BYTES"


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


def _take(chunks: deque[memoryview], size: int) -> Part:
    """Move exactly ``size`` leading bytes of ``chunks`` into a buffer of their own.

    One copy per byte. The buffer is a BytesIO that owns its memory: botocore streams it
    as is, where bytes would be copied once more on the way to the socket.
    """
    out = Part()
    while size:
        chunk = chunks[0]
        if len(chunk) <= size:
            out.write(chunks.popleft())
            size -= len(chunk)
        else:
            out.write(chunk[:size])
            chunks[0] = chunk[size:]
            size = 0
    out.seek(0)
    return out


async def _hash(hasher: Any, buffer: io.BytesIO) -> None:
    with buffer.getbuffer() as view:
        # hashlib releases the GIL on large buffers: a thread keeps the loop responsive
        # and lets two transfers hash on two cores.
        if view.nbytes >= THREAD_HASH_MIN:
            await asyncio.to_thread(hasher.update, view)
        else:
            hasher.update(view)


def _check(key: str, bottle: Bottle, hasher: Any, size: int) -> None:
    digest = hasher.hexdigest()
    if digest != bottle.sha256:
        raise IntegrityError(
            key,
            f"sha256 mismatch: expected {bottle.sha256}, got {digest} ({size} bytes)",
            actual=digest,
        )


async def _taken(store: S3Store, key: str, bottle: Bottle, exc: PreconditionFailed) -> None:
    """The conditional write lost: the key holds an object. The same bytes (a sibling
    run, a retried request that landed) are fine; anything else stays as it is."""
    head = await store.head(key)
    found = head.metadata.get("sha256", "") if head is not None else ""
    if found != bottle.sha256:
        raise StoreError(
            f"{key} already holds other bytes (sha256 {found[:12] or 'unknown'}…); "
            "a stored bottle is never overwritten",
            key=key,
            code="PreconditionFailed",
        ) from exc


async def transfer(
    bottle: Bottle,
    key: str,
    source: Source,
    store: S3Store,
    part_size: int,
    on_bytes: Callable[[int], None] = lambda n: None,
    hook: Hook = no_hook,
    limit: SizeLimit = SizeLimit(),  # frozen: one shared default is safe
    fallback_url: str | None = None,
) -> int:
    """Store ``bottle`` at ``key``; return its size. Raises ``IntegrityError`` when the
    bytes do not match (or outgrow the bottle), ``UpstreamError``/``StoreError`` when a
    peer fails. ``fallback_url``: a fallback mirror's file to read instead, as checked."""
    metadata = object_metadata(bottle, fallback_url)
    hasher = hashlib.sha256()
    chunks: deque[memoryview] = deque()
    buffered = size = 0
    # Until the body outgrows one part it is held in memory anyway; then the real cap.
    cap, why = min(limit.max_bytes, part_size), ""
    upload_id: str | None = None
    parts: list[dict[str, Any]] = []
    pending: asyncio.Task[dict[str, Any]] | None = None
    next_part = 1
    try:
        async for chunk in source.stream(fallback_url or bottle.url):
            chunks.append(memoryview(chunk))
            buffered += len(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
            if size > cap:
                if not why:
                    cap, why = await limit.cap()
                if size > cap:
                    raise IntegrityError(
                        key, f"stopped at {size} bytes read: over the {cap} allowed ({why})"
                    )
            # Strictly more than a part: now we know the bottle needs a multipart upload.
            while buffered > part_size:
                # Part N must be sent before part N+1 is cut from the buffer: that keeps
                # two parts per transfer in memory (one uploading, one being read).
                if pending is not None:
                    parts.append(await pending)
                    pending = None
                    hook("after_part_upload")
                part = _take(chunks, part_size)
                buffered -= part_size
                await _hash(hasher, part)
                if upload_id is None:
                    upload_id = await store.create_multipart(key, metadata)
                pending = asyncio.create_task(store.upload_part(key, upload_id, next_part, part))
                del part
                next_part += 1
        tail = _take(chunks, buffered)
        await _hash(hasher, tail)
        if upload_id is None:
            _check(key, bottle, hasher, size)
            try:
                await store.put_verified(key, tail, bottle.sha256, metadata)
            except PreconditionFailed as exc:
                await _taken(store, key, bottle, exc)
            return size
        if pending is not None:
            parts.append(await pending)
            pending = None
            hook("after_part_upload")
        if buffered:
            parts.append(await store.upload_part(key, upload_id, next_part, tail))
            hook("after_part_upload")
        _check(key, bottle, hasher, size)
        hook("before_complete")
        try:
            await store.complete_multipart(key, upload_id, parts)
        except PreconditionFailed as exc:
            await _taken(store, key, bottle, exc)
            return size  # the finally below aborts our upload, which was not used
        upload_id = None
        return size
    finally:
        await _leave(store, key, upload_id, pending)


async def _leave(
    store: S3Store, key: str, upload_id: str | None, pending: asyncio.Task[Any] | None
) -> None:
    """What an ended transfer may leave: the part still uploading is cancelled and the
    upload not completed aborted, also on cancellation (it is invisible but billed)."""
    if pending is not None:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    if upload_id is not None:
        await asyncio.shield(_abort(store, key, upload_id))


async def _abort(store: S3Store, key: str, upload_id: str) -> None:
    try:
        await store.abort_multipart(key, upload_id)
    except StoreError as exc:  # the original error matters more; the lifecycle rule cleans up
        log.warning("abort_failed", key=key, upload_id=upload_id, error=str(exc))
