"""The bucket against the hash file: ``verify`` finds where they disagree, ``rebuild-hash``
writes the hash file anew from the objects' own metadata."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import structlog

from mirrord.adapters.lock import BucketLock
from mirrord.adapters.s3 import S3Store
from mirrord.core.errors import HashFileError, LockBusy, PreconditionFailed
from mirrord.core.hashfile import HashFile, dumps, parse, utc_now
from mirrord.core.models import (
    NAME_RE,
    SHA256_RE,
    TAG_RE,
    VERSION_RE,
    HashEntry,
    ObjectInfo,
    is_bottle_key,
    is_hash_key,
)
from mirrord.core.tasks import bounded

log = structlog.get_logger("mirrord.services.verify")


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # missing | orphaned | size | metadata | sha256
    key: str  # hash key, or the S3 key for orphans
    detail: str


@dataclass(frozen=True, slots=True)
class Superseded:
    """A bottle object its hash key no longer points at: the previous rebuild of a
    bottle (``D/jq-1.7.1.arm64_sonoma.bottle.tar.gz`` once the entry moved to
    ``D2/jq-1.7.1.arm64_sonoma.bottle.1.tar.gz``). Every rebottle leaves one; not a fault."""

    key: str  # the object's S3 key
    hash_key: str
    current: str  # the S3 key the entry points at now


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    objects: int
    checked_deep: int
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    superseded: tuple[Superseded, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


# File name → hash key: the tag is the last '.'-separated part before
# ".bottle[.<rebuild>].tar.gz" (tags hold no '.'), the rest is <name>-<pkg_version>.
_FILE_NAME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}/([^/]+)\.([a-z0-9_]+)\.bottle(?:\.[0-9]+)?\.tar\.gz"
)


def hash_key_of(s3_key: str) -> str | None:
    """The hash key a bottle key's file name spells, or None for another key."""
    match = _FILE_NAME.fullmatch(s3_key)
    return f"{match[1]}-{match[2]}" if match else None


async def verify(
    store: S3Store, hf: HashFile, *, deep: bool = False, concurrency: int = 16
) -> VerifyReport:
    listing = {o.key: o async for o in store.list_objects()}
    problems: list[Problem] = []
    present: list[tuple[str, HashEntry]] = []
    for key, entry in sorted(hf.bottles.items()):
        obj = listing.get(entry.s3_key)
        if obj is None:
            problems.append(Problem("missing", key, f"no object {entry.s3_key}"))
        elif entry.file_size is not None and obj.size != entry.file_size:
            problems.append(
                Problem("size", key, f"object {obj.size} bytes, file {entry.file_size}")
            )
        else:
            present.append((key, entry))
    referenced = {e.s3_key for e in hf.bottles.values()}
    superseded: list[Superseded] = []
    for k in sorted(listing):
        if not is_bottle_key(k) or k in referenced:
            continue
        hash_key = hash_key_of(k)
        now = hf.bottles.get(hash_key) if hash_key else None
        if hash_key and now:
            superseded.append(Superseded(k, hash_key, now.s3_key))
        else:
            problems.append(Problem("orphaned", k, "bottle object not in the hash file"))

    async def check(item: tuple[str, HashEntry]) -> Problem | None:
        key, entry = item
        head = await store.head(entry.s3_key)
        if head is None:
            return Problem("missing", key, f"no object {entry.s3_key}")
        if head.metadata.get("sha256") != entry.sha256:
            return Problem(
                "metadata", key, f"object sha256 metadata {head.metadata.get('sha256')!r}"
            )
        if deep:
            digest = hashlib.sha256()
            async for chunk in store.stream(entry.s3_key):
                digest.update(chunk)
            if digest.hexdigest() != entry.sha256:
                return Problem("sha256", key, f"bytes hash to {digest.hexdigest()}")
        return None

    found = await bounded(present, check, concurrency)
    problems += [p for p in found if p is not None]
    return VerifyReport(
        len(hf.bottles),
        len(listing),
        len(present) if deep else 0,
        tuple(problems),
        tuple(superseded),
    )


def entry_from_object(obj: ObjectInfo) -> tuple[str, HashEntry] | None:
    """An object written by mirrord names itself in its metadata; anything else → None."""
    meta = obj.metadata
    name, version, tag, sha = (
        meta.get(k, "") for k in ("formula", "version", "platform", "sha256")
    )
    key = f"{name}-{version}-{tag}"
    # The same rules parse() applies, so a rebuilt file always reads back.
    if not (
        is_bottle_key(obj.key)
        and NAME_RE.fullmatch(name)
        and VERSION_RE.fullmatch(version)
        and TAG_RE.fullmatch(tag)
        and SHA256_RE.fullmatch(sha)
        and is_hash_key(key)
    ):
        return None
    return key, HashEntry(sha, obj.key[:10], obj.size, obj.key)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    objects: int
    entries: int
    unrecognised: tuple[str, ...]
    replaced_corrupt: bool


async def rebuild_hash(
    store: S3Store,
    hash_key: str,
    *,
    owner: str,
    heartbeat: float,
    concurrency: int = 16,
) -> RebuildReport:
    """Rewrite the hash file from object metadata. The one command that may replace a
    corrupt file — deliberately, and still with a conditional write.

    It holds the bucket lock throughout (``LockBusy`` while a sync runs): a sync's
    checkpoints would otherwise land between the listing and the write and be replaced
    by a file that lacks them (measured: 50 of 388 entries lost)."""
    lock = BucketLock(store, owner, ttl=heartbeat * 3)
    holder = await lock.acquire("rebuild-hash")
    if holder is not None:
        raise LockBusy(holder)
    try:
        # Should the lease lapse all the same, the conditional write below still guards
        # the file: a sync that took over and checkpointed makes it fail.
        async with lock.kept(heartbeat, on_lost=lambda: None):
            return await _rebuild(store, hash_key, concurrency)
    finally:
        await lock.release()


async def _rebuild(store: S3Store, hash_key: str, concurrency: int) -> RebuildReport:
    # The file and its ETag before the listing: whatever is written after this read
    # (by a writer that ignores the lock) makes the conditional write below fail,
    # instead of vanishing under a file rebuilt from a listing that predates it.
    existing = await store.get(hash_key)
    keys = [o.key async for o in store.list_objects() if is_bottle_key(o.key)]
    heads = await bounded(keys, store.head, concurrency)
    entries: dict[str, HashEntry] = {}
    unrecognised: list[str] = []
    for key, head in zip(keys, heads, strict=True):
        found = entry_from_object(head) if head is not None else None
        if found is None:
            unrecognised.append(key)
            continue
        name, entry = found
        current = entries.get(name)
        if current is None or current.download_date < entry.download_date:
            entries[name] = entry
    corrupt = False
    if existing is not None:
        try:
            parse(existing[0])
        except HashFileError:
            corrupt = True
    body = dumps(HashFile(entries, utc_now()))
    try:
        await store.put_if(
            hash_key, body, etag=existing[1] if existing else None, content_type="application/json"
        )
    except PreconditionFailed as exc:
        raise PreconditionFailed(
            f"{hash_key} changed while rebuild-hash ran (a writer that ignores the lock?); "
            "nothing written: run it again",
            key=hash_key,
            code=exc.code,
        ) from exc
    log.info(
        "hash_rebuilt",
        objects=len(keys),
        entries=len(entries),
        unrecognised=len(unrecognised),
        replaced_corrupt=corrupt,
    )
    return RebuildReport(len(keys), len(entries), tuple(unrecognised), corrupt)
