"""``mirrord status``: the mirror as the bucket records it, judged (core/status.py).

Reads status.json, the hash file, the bucket lock and the ``api/`` objects; with
``upstream`` it also fetches the upstream API files the mirror serves and compares their
sha256 with the published copies' (recorded in each object's metadata by the
publication; hashed from the object when an older publication recorded none). Writes
nothing; takes no lock.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import structlog

from mirrord.adapters.lock import BucketLock
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.web import fetch_bytes
from mirrord.core.brew import API_PREFIX
from mirrord.core.errors import UpstreamError
from mirrord.core.hashfile import utc_now
from mirrord.core.status import MAX_AGE_DAYS, ApiState, Held, Status, api_state, judge
from mirrord.core.tasks import bounded
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.ports import Adapters
from mirrord.services.publish import API_FILE_LIMIT

log = structlog.get_logger("mirrord.services.status")


async def mirror_status(
    app: Adapters, *, upstream: bool = True, max_age_days: float = MAX_AGE_DAYS
) -> Status:
    s = app.settings
    found = await app.store.get(s.status_key)
    try:
        status_json, unreadable = (orjson.loads(found[0]) if found else None), False
    except orjson.JSONDecodeError:
        status_json, unreadable = None, True
    hf, _ = await load_hashfile(app.store, s.hash_key)
    lock = BucketLock(app.store, "mirrord-status", ttl=s.heartbeat_seconds * 3)
    holder = await lock.holder()
    running = (
        None
        if holder is None
        else {"job_id": holder.job_id, "owner": holder.owner, "lease_left_s": round(holder.left)}
    )
    api = await _api(app, upstream) if s.brew_mirror else ApiState("off")
    status = Status(
        bucket=s.bucket,
        now=utc_now(),
        status_json=status_json,
        held=Held.of(hf),
        api=api,
        running=running,
        max_age_days=max_age_days,
    )
    judged = judge(status)
    if unreadable:  # there, and not JSON: said first
        judged.problems.insert(0, f"{s.status_key} is not JSON (written by hand?)")
    return judged


async def _api(app: Adapters, upstream: bool) -> ApiState:
    store = app.store
    listed = [o async for o in store.list_objects(API_PREFIX)]
    stamps = [o.modified for o in listed if o.modified is not None]
    newest = (
        datetime.fromtimestamp(max(stamps), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamps else None
    )
    endpoints = [o.key.removeprefix(API_PREFIX) for o in listed]
    digests = await bounded(endpoints, lambda e: _published_sha256(store, API_PREFIX + e), 8)
    published = dict(zip(endpoints, digests, strict=True))
    if not upstream:
        return api_state(published, None, newest=newest, error="not asked (--no-upstream)")
    base = app.settings.api_base.rstrip("/")

    async def one(endpoint: str) -> str:
        body = await fetch_bytes(app.http, f"{base}/{endpoint}", app.backoff, limit=API_FILE_LIMIT)
        return hashlib.sha256(body).hexdigest()

    try:
        found = await bounded(endpoints, one, 8)
    except UpstreamError as exc:
        log.warning("status_upstream_unreachable", error=str(exc))
        return api_state(published, None, newest=newest, error=f"upstream: {exc}")
    return api_state(published, dict(zip(endpoints, found, strict=True)), newest=newest)


async def _published_sha256(store: S3Store, key: str) -> str:
    """The sha256 the publication recorded for an api/ object, else its bytes'."""
    head = await store.head(key)
    recorded = head.metadata.get("sha256") if head is not None else None
    if recorded:
        return recorded
    digest = hashlib.sha256()
    async for chunk in store.stream(key):
        digest.update(chunk)
    return digest.hexdigest()
