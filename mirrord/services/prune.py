"""``mirrord prune``: delete superseded bottles under the bucket lock (core/prune.py says
which; docs/design.md §13).

Refused while a sync holds the bucket, and on a partial catalog (rejected entries) or one
that cannot be fetched, or published API files it cannot read: what they name must stay,
and unread they name nothing. Order: the hash file is cut first (conditional write, as a
checkpoint), then the brew-6 keys are deleted, then the dated objects, so a crash leaves
nothing recorded that is gone; a rerun finds the unrecorded leftovers and finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from mirrord.adapters.lock import BucketLock, Process
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import fetch_catalog
from mirrord.core.brew import API_PREFIX, jws_document, jws_payload, packages_formulae
from mirrord.core.catalog import Catalog, parse_catalog
from mirrord.core.errors import (
    CatalogError,
    InputError,
    LockBusy,
    MirrordError,
    PreconditionFailed,
    StoreError,
)
from mirrord.core.hashfile import HashFile, dumps, utc_now
from mirrord.core.jobs import Job
from mirrord.core.messages import Message, human_size
from mirrord.core.models import SHA256_RE, HashEntry, is_bottle_key, is_date
from mirrord.core.oci import OCI_PREFIX
from mirrord.core.prune import Named, PrunePlan, Rules, held_bottles, joined, named_by, plan_prune
from mirrord.core.report import Progress, Report
from mirrord.core.settings import Settings
from mirrord.core.tasks import bounded
from mirrord.services.checkpoint import SAVE_ATTEMPTS, load_hashfile
from mirrord.services.job import read_status
from mirrord.services.ports import Adapters
from mirrord.services.transfer import Hook, no_hook

log = structlog.get_logger("mirrord.services.prune")


@dataclass
class PruneResult:
    rules: Rules
    dry_run: bool
    plan: PrunePlan
    cut: int = 0  # hash-file entries removed
    deleted: int = 0  # keys deleted (v2/ and dated)
    freed: int = 0  # their bytes (blob copies included)
    stopped: bool = False  # the lock was lost: the rest is the next run's
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.stopped

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "dry_run": self.dry_run,
            "keep_versions": self.rules.keep_versions,
            "keep_days": self.rules.keep_days,
            "cutoff": self.rules.cutoff,
            "entries": sorted(p.entries),
            "objects": p.objects,
            "v2": p.v2,
            "unrecorded": p.unrecorded,
            "bytes": p.bytes,
            "v2_bytes": p.v2_bytes,
            "would_free_bytes": p.freed,
            "freed_bytes": self.freed,
            "kept": dict(sorted(p.kept.items())),
            "cut": self.cut,
            "deleted": self.deleted,
            "stopped": self.stopped,
            "problems": self.problems,
        }


def rules_of(settings: Settings) -> Rules:
    """The rules a run goes by (MIRRORD_PRUNE_KEEP_*, or the flags); today in UTC."""
    return Rules(
        settings.prune_keep_versions,
        settings.prune_keep_days,
        datetime.now(UTC).date().isoformat(),
    )


async def published_named(store: S3Store) -> Named:
    """What the API files the mirror publishes name (formula.jws.json and every
    packages file under ``api/``). One it cannot read, or with an entry it cannot read,
    refuses the prune: it may name any bottle."""
    found: list[Named] = []
    async for obj in store.list_objects(API_PREFIX):
        endpoint = obj.key.removeprefix(API_PREFIX)
        if endpoint != "formula.jws.json" and not (
            endpoint.startswith("internal/packages.") and endpoint.endswith(".jws.json")
        ):
            continue
        got = await store.get(obj.key)
        if got is None:  # replaced between the listing and the read: gone is no name
            continue
        try:
            if endpoint == "formula.jws.json":
                catalog = parse_catalog(jws_document(got[0], endpoint))
                formulae, bad = list(catalog.formulae), [str(r) for r in catalog.rejected]
            else:
                parsed, rejected = packages_formulae(jws_payload(got[0], endpoint), endpoint)
                formulae, bad = parsed, [str(r) for r in rejected]
        except (InputError, CatalogError, RecursionError) as exc:
            raise InputError(f"published {obj.key} is unreadable: {exc}") from exc
        if bad:
            raise InputError(f"published {obj.key} has {len(bad)} unreadable entries ({bad[0]})")
        found.append(named_by(formulae))
    return joined(*found)


async def dated_objects(store: S3Store) -> dict[str, int]:
    """Every bottle object in the date folders: key → size."""
    listing: dict[str, int] = {}
    for folder in await store.folders():
        if not is_date(folder.removesuffix("/")):
            continue
        async for obj in store.list_objects(folder):
            if is_bottle_key(obj.key):
                listing[obj.key] = obj.size
    return listing


async def object_sha256(store: S3Store, keys: list[str], concurrency: int) -> dict[str, str | None]:
    """The ``sha256`` metadata of objects no entry names (their blob key needs it)."""

    async def one(key: str) -> str | None:
        head = await store.head(key)
        sha = head.metadata.get("sha256") if head is not None else None
        return sha if isinstance(sha, str) and SHA256_RE.fullmatch(sha) else None

    found = await bounded(keys, one, concurrency)
    return dict(zip(keys, found, strict=True))


def without(hf: HashFile, doomed: Mapping[str, HashEntry]) -> HashFile:
    """``hf`` less the doomed entries still exactly as judged (one rewritten since stays)."""
    bottles = {k: e for k, e in hf.bottles.items() if doomed.get(k) != e}
    return HashFile(bottles, utc_now(), quarantine=hf.quarantine)


async def cut_hashfile(
    store: S3Store, key: str, hf: HashFile, etag: str | None, doomed: Mapping[str, HashEntry]
) -> HashFile:
    """Remove ``doomed`` from the hash file with a conditional write; on 412, reload and
    remove again from the fresh file (any other writer's entries survive)."""
    for _ in range(SAVE_ATTEMPTS):
        cut = without(hf, doomed)
        if len(cut.bottles) == len(hf.bottles):
            return hf
        try:
            await store.put_if(key, dumps(cut), etag=etag, content_type="application/json")
        except PreconditionFailed:
            hf, etag = await load_hashfile(store, key)
            continue
        return cut
    raise StoreError(f"{key}: lost {SAVE_ATTEMPTS} write races in a row")


async def whole_catalog(app: Adapters) -> Catalog:
    """The catalog, or ``InputError`` when it is partial (rejected entries): a formula it
    lacks could be the one an old bottle belongs to. Fetched before the lock is taken,
    so a refusal writes nothing."""
    catalog = await fetch_catalog(app.http, app.settings.api_url, app.backoff)
    if catalog.rejected:
        first = catalog.rejected[0]
        raise InputError(
            f"the catalog has {len(catalog.rejected)} rejected entries (first: {first}): "
            "prune needs the whole catalog, nothing was deleted"
        )
    return catalog


async def plan_for(
    app: Adapters, catalog: Catalog, rules: Rules
) -> tuple[PrunePlan, HashFile, str | None]:
    """The prune plan from the whole catalog, the published API files, the hash file and
    listings of the date folders and ``v2/``."""
    s = app.settings
    named = joined(named_by(catalog.formulae), await published_named(app.store))
    hf, etag = await load_hashfile(app.store, s.hash_key)
    listing = await dated_objects(app.store)
    recorded = {e.s3_key for e in hf.bottles.values()}
    loose = [k for k in listing if k not in recorded]
    shas = await object_sha256(app.store, loose, s.concurrency)
    v2 = {o.key: o.size async for o in app.store.list_objects(OCI_PREFIX)}
    plan = plan_prune(held_bottles(hf.bottles, listing, shas), named, rules, v2)
    return plan, hf, etag


async def _run(
    app: Adapters,
    catalog: Catalog,
    rules: Rules,
    *,
    dry_run: bool,
    stop: asyncio.Event,
    hook: Hook,
    progress: Progress | None = None,
) -> PruneResult:
    s = app.settings
    plan, hf, etag = await plan_for(app, catalog, rules)
    result = PruneResult(rules, dry_run, plan)
    log.info("prune_plan", **_counts(result))
    if dry_run:
        return result
    after = await cut_hashfile(app.store, s.hash_key, hf, etag, plan.entries)
    result.cut = sum(k not in after.bottles for k in plan.entries)
    hook("after_prune_cut")
    still = {e.s3_key for e in after.bottles.values()}  # a writer's since: never deleted
    shas = {e.sha256 for e in after.bottles.values()}
    v2 = [k for k in plan.v2 if not ("/blobs/sha256:" in k and k.rpartition(":")[2] in shas)]
    dated = [k for k in plan.objects if k not in still]
    # A first prune of a mirror a year old deletes tens of thousands of keys.
    progress = progress or LogProgress(event="prune_progress")
    progress.start(len(v2) + len(dated))
    try:
        await _delete(app, v2, result, stop, hook, progress)
        if not result.problems and not result.stopped:
            # Only once every brew-6 key is gone: a dated object is how a rerun finds them.
            await _delete(app, dated, result, stop, hook, progress)
    finally:
        progress.close()
    log.info("pruned", **_counts(result))
    return result


async def _delete(
    app: Adapters,
    keys: list[str],
    result: PruneResult,
    stop: asyncio.Event,
    hook: Hook,
    progress: Progress,
) -> None:
    """Delete ``keys``, MIRRORD_CONCURRENCY at once, counting what went and its bytes."""

    async def one(key: str) -> None:
        if stop.is_set():  # the lock was lost: the rest is the next run's
            result.stopped = True
            return
        hook("prune_delete")
        try:
            await app.store.delete(key)
        except StoreError as exc:
            result.problems.append(f"{key}: {exc}")
            progress.done(False)
            return
        result.deleted += 1
        result.freed += result.plan.sizes.get(key, 0)
        progress.add_bytes(result.plan.sizes.get(key, 0))
        progress.done(True)

    await bounded(keys, one, app.settings.concurrency)


def _counts(result: PruneResult) -> dict[str, Any]:
    d = result.to_dict()
    return {k: v for k, v in d.items() if k not in ("entries", "objects", "v2")}


async def after_a_clean_sync(app: Adapters) -> None:
    """``InputError`` unless status.json says the last sync that ended was clean: after a
    failed or stopped one the mirror may lack what the catalog names, and a prune then
    would judge a half-updated mirror (a dry run only looks, so it is not asked)."""
    status = await read_status(app)
    if not isinstance(status, dict) or not status.get("last_success"):
        raise InputError(f"{app.settings.status_key}: no complete sync recorded; sync first")
    run = status.get("last_run")
    if isinstance(run, dict) and run.get("outcome") not in (None, "complete"):
        raise InputError(
            f"the last sync (job {run.get('job_id')!s:.64}) ended {run.get('outcome')!s:.16}: "
            "prune only after a clean sync (run mirrord sync, then prune)"
        )


async def prune(
    app: Adapters,
    rules: Rules,
    *,
    dry_run: bool,
    owner: str,
    hook: Hook = no_hook,
    progress: Progress | None = None,
) -> PruneResult:
    """Prune under the bucket lock (a dry run only looks that no live sync holds it: it
    writes nothing, not even the lock). ``LockBusy`` while a sync holds the bucket."""
    s = app.settings
    here = Process.current()
    lock = BucketLock(app.store, owner, ttl=s.heartbeat_seconds * 3, process=here)
    stop = asyncio.Event()
    catalog = await whole_catalog(app)
    if dry_run:
        holder = await lock.holder()
        if holder is not None and holder.alive(here):
            raise LockBusy(holder)
        return await _run(app, catalog, rules, dry_run=True, stop=stop, hook=hook)
    await after_a_clean_sync(app)
    holder = await lock.acquire(f"prune-{rules.today}")
    if holder is not None:
        raise LockBusy(holder)
    try:
        async with lock.kept(s.heartbeat_seconds, on_lost=stop.set):
            return await _run(
                app, catalog, rules, dry_run=False, stop=stop, hook=hook, progress=progress
            )
    finally:
        await lock.release()


def due(settings: Settings, job: Job, report: Report) -> bool:
    """MIRRORD_PRUNE_AFTER_SYNC: after a clean scheduled sync of what the mirror holds,
    the whole catalog or a deployed subset's closure (MIRRORD_FORMULAE), never after a
    job of other names (``report``: the whole job's; a sharded job's from its fan-in)."""
    return (
        settings.prune_after_sync
        and job.reason == "schedule"
        and job.formulae == settings.formulae
        and report.complete
        and not report.failed
        and not report.rejected
        and not report.stopped
    )


def prune_message(result: PruneResult | None, error: str | None = None) -> Message:
    """The Slack line a prune after a sync posts."""
    if result is None:
        text = f"mirrord prune refused or failed: {error}"
    else:
        p = result.plan
        text = (
            f"mirrord prune: {human_size(result.freed)} freed, {len(p.objects)} bottles and "
            f"{len(p.v2)} brew-6 keys deleted (kept: the newest {result.rules.keep_versions} "
            f"of each formula per tag, and the last {result.rules.keep_days} days)"
        )
        if not result.ok:
            text += f"; {len(result.problems)} problems, stopped={result.stopped}"
    return Message(text, ({"type": "section", "text": {"type": "mrkdwn", "text": text}},))


async def prune_after(app: Adapters, job: Job, report: Report, owner: str) -> PruneResult | None:
    """The daemon's prune after a job, when ``due``; never raises a MirrordError: a
    refusal or failure is a warning and a Slack line."""
    if not due(app.settings, job, report):
        return None
    rules = rules_of(app.settings)
    try:
        result = await prune(app, rules, dry_run=False, owner=owner, hook=no_hook)
    except MirrordError as exc:
        log.warning("prune_failed", error=str(exc), kind=type(exc).__name__)
        await app.slack.send(prune_message(None, str(exc)))
        return None
    await app.slack.send(prune_message(result))
    return result
