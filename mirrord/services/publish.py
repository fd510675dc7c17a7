"""The publication stage after each sync: the bucket as a mirror brew 6 uses as it is
(core/brew.py: which keys, and why each is safe to write).

Order makes it safe to stop anywhere: an index is written before the blob copies of its
version, so "index and every blob present" means done, and a version is looked at again
after any crash. Steady state costs one listing of ``v2/`` and no upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson
import structlog

from mirrord.adapters.registry import INDEX_MEDIA_TYPE, Registry
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import fetch_bytes, shown_url, source_url
from mirrord.core.brew import (
    API_PREFIX,
    PORTABLE_RUBY,
    RUBY_LATEST,
    Version,
    api_endpoints,
    api_hold,
    content_type,
    held_rubies,
    newest_rubies,
    portable_ruby_formula,
    registry_root,
    ruby_index_url,
    status_lag,
    versions,
)
from mirrord.core.catalog import Catalog, select_file
from mirrord.core.errors import InputError, IntegrityError, StoreError, UpstreamError
from mirrord.core.hashfile import HashFile, entry_problem
from mirrord.core.models import Bottle, HashEntry
from mirrord.core.oci import (
    OCI_PREFIX,
    blob_key,
    descriptor_problem,
    index_key,
    listed_tags,
    ref_name,
    tags_key,
)
from mirrord.core.releases import DEFAULT_RELEASES, Releases
from mirrord.core.report import Failure, Progress, Published
from mirrord.core.retry import Backoff
from mirrord.core.subset import outside_sha256s
from mirrord.core.tasks import background, bounded
from mirrord.services.transfer import SizeLimit, transfer

log = structlog.get_logger("mirrord.publish")

TAGS_LIMIT = 2**20  # a tags/list answer: a few KB
API_FILE_LIMIT = 256 * 2**20
COPY_LIMIT = 5 * 2**30  # CopyObject's ceiling; no bottle comes near it (llvm: ~0.6 GB)


@dataclass
class Fetched:
    """What ``fetch_missing`` stored: hash-file entries to record, the bottles (to be
    published like the catalog's), and the ones that failed."""

    entries: dict[str, HashEntry] = field(default_factory=dict)
    bottles: list[Bottle] = field(default_factory=list)
    problems: list[Failure] = field(default_factory=list)


async def _unless_stopped(work: Coroutine[Any, Any, Any], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True) or ``stop`` is set (False; it is cancelled:
    every step of a publication may be cut, the next run finds where it stood)."""
    async with background(stop.wait()) as stopping, background(work) as task:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if task.cancelled():
        return False
    task.result()  # its exception, if it raised one
    return True


async def fetch_api(
    http: aiohttp.ClientSession, base: str, targets: Sequence[str], backoff: Backoff
) -> dict[str, bytes]:
    """Every API file for these targets, as served, or ``UpstreamError``: all or none,
    so a half-fetched set is never published."""
    endpoints = api_endpoints(targets)

    async def one(endpoint: str) -> bytes:
        url = f"{base.rstrip('/')}/{endpoint}"
        return await fetch_bytes(http, url, backoff, limit=API_FILE_LIMIT)

    bodies = await bounded(endpoints, one, len(endpoints))
    return dict(zip(endpoints, bodies, strict=True))


async def latest_rubies(registry: Registry, root: str) -> list[str]:
    """The newest portable Rubies the registry lists, or ``UpstreamError`` saying why
    there are none."""
    url = f"{root}/{tags_key(PORTABLE_RUBY)}"
    raw = await registry.document(url, accept="application/json", limit=TAGS_LIMIT)
    if raw is None:
        raise UpstreamError("the registry has no portable Ruby tag list (404)", url=url)
    try:
        found = newest_rubies(listed_tags(raw, shown_url(url)))
    except InputError as exc:
        raise UpstreamError(str(exc), url=url) from exc
    if not found:
        raise UpstreamError("the registry lists no portable Ruby version", url=url)
    return found


async def publication_lag(
    store: S3Store,
    status_key: str,
    bottles: Sequence[Bottle],
    hf: HashFile,
    names: Iterable[str],
    ruby_versions: Sequence[str],
) -> str | None:
    """Why the brew-6 view is behind the bottles the mirror holds, or None: from
    status.json and one listing of ``v2/``, without a request upstream (the enqueuer
    sends a job for it even when no bottle is new)."""
    found = await store.get(status_key)
    try:
        status = orjson.loads(found[0]) if found is not None else None
    except orjson.JSONDecodeError:
        return "status.json is not JSON"
    why = status_lag(status)
    if why is not None:
        return why
    present = {o.key async for o in store.list_objects(OCI_PREFIX)}
    behind = [v.key for v in versions(bottles, hf.by_sha256(), names)[0] if not v.current(present)]
    # "latest" names no version without asking the registry: the mirror's own tag list
    # says a publication stored portable Ruby at all; which versions is the sync's to find.
    wanted = [
        tags_key(PORTABLE_RUBY) if v == RUBY_LATEST else index_key(PORTABLE_RUBY, v)
        for v in ruby_versions
    ]
    behind += [k for k in wanted if k not in present]
    if behind:
        return f"{len(behind)} image indexes or their blobs are not published (e.g. {behind[0]})"
    return None


async def fetch_missing(
    store: S3Store,
    registry: Registry,
    bottles: Sequence[Bottle],
    date: str,
    *,
    part_size: int,
    limit: SizeLimit,
    concurrency: int = 16,
    stop: asyncio.Event | None = None,
) -> Fetched:
    """Store ``bottles`` (``missing_bottles``: named by the API files, not by the
    catalog) under the job's date folder as the sync would have: by digest from their
    image, the sha256 checked on the way (``transfer``). One already there with the same
    sha256 (a run that died before recording it) is adopted. ``stop`` cuts it short:
    what is stored by then is returned, the rest stays missing."""
    done = Fetched()

    async def one(bottle: Bottle) -> None:
        key = bottle.s3_key(date)
        entry = HashEntry(bottle.sha256, date, 0, key)
        problem = entry_problem(bottle.hash_key, entry)
        if problem is not None:  # never hand the hash file an entry its reader refuses
            done.problems.append(Failure(bottle.hash_key, f"cannot be recorded: {problem}"))
            return
        try:
            head = await store.head(key)
            if head is not None and head.metadata.get("sha256") == bottle.sha256:
                size = head.size
            else:
                size = await transfer(bottle, key, registry, store, part_size, limit=limit)
        except (UpstreamError, IntegrityError, StoreError) as exc:
            done.problems.append(Failure(bottle.hash_key, str(exc), bottle.url))
            log.warning("api_bottle_failed", key=bottle.hash_key, error=str(exc))
            return
        done.entries[bottle.hash_key] = replace(entry, file_size=size)
        done.bottles.append(bottle)
        log.info("api_bottle_fetched", key=bottle.hash_key, bytes=size)

    await _unless_stopped(bounded(bottles, one, concurrency), stop or asyncio.Event())
    return done


async def publish(
    store: S3Store,
    registry: Registry,
    catalog: Catalog,
    bottles: Sequence[Bottle],
    hf: HashFile,
    targets: Sequence[str],
    *,
    api: Mapping[str, bytes] | None,
    clean: bool,
    ruby_versions: Sequence[str] = (),
    part_size: int = 16 * 2**20,
    concurrency: int = 16,
    stop: asyncio.Event | None = None,
    fetched: Fetched | None = None,
    releases: Releases = DEFAULT_RELEASES,
    progress: Progress | None = None,
    subset: Mapping[str, Collection[str]] | None = None,
) -> Published:
    """Image indexes and blob keys for ``bottles`` (those the hash file holds), portable
    Ruby, then the API files when ``clean`` (a complete sync: of every formula, or of a
    ``subset``, each target's closure, whose API check ignores the formulae outside it,
    core/subset.py) and all of the above went through. ``stop`` (SIGTERM, a Lambda deadline) cuts it short at
    once, leaving the rest, and the API as it was, for the next run (``finished`` False)."""
    done = Published()
    if fetched is not None:  # fetch_missing's part: its bottles are in ``bottles`` too
        done.fetched, done.problems = len(fetched.bottles), list(fetched.problems)
    stored = hf.by_sha256()
    present = {o.key async for o in store.list_objects(OCI_PREFIX)}
    found, refused = versions(bottles, stored, (f.name for f in catalog.formulae))
    done.problems += refused
    # A first publication of a whole mirror is ~8,000 versions: worth a bar of its own.
    progress = progress or LogProgress(event="publish_progress")
    progress.start(len(found))

    async def one(version: Version) -> None:
        ok = True
        try:
            if version.current(present):
                done.current += 1
                return
            await _publish_version(store, registry, version, present, done)
        except (UpstreamError, StoreError) as exc:
            ok = False
            done.problems.append(Failure(version.key, str(exc), version.url))
        finally:
            progress.done(ok)

    async def everything() -> None:
        await bounded(found, one, concurrency)
        await _publish_rubies(
            store, registry, catalog, ruby_versions, targets, present, part_size, done, releases
        )

    try:
        done.finished = await _unless_stopped(everything(), stop or asyncio.Event())
    finally:
        progress.close()
    if not done.finished:
        done.problems.append(Failure("", "stopped before the end: the rest is for the next run"))
    if api is not None:
        why = _api_hold(api, targets, hf, clean, done.problems, releases, subset)
        done.api = why or await _publish_api(store, api)
    log.info("published", **{k: v for k, v in done.to_dict().items() if k != "problems"})
    for problem in done.every_problem:
        log.warning(
            "publish_problem", key=problem.key, error=problem.error, url=shown_url(problem.url)
        )
    # Catalog URLs may carry credentials or a token: never in the report.
    done.problems, done.ruby_problems = _shown(done.problems), _shown(done.ruby_problems)
    return done


def _api_hold(
    api: Mapping[str, bytes],
    targets: Sequence[str],
    hf: HashFile,
    clean: bool,
    problems: Sequence[Failure],
    releases: Releases,
    subset: Mapping[str, Collection[str]] | None,
) -> str | None:
    """Why the API files stay as they were (core/brew.py's api_hold), or None. Bottles
    that are quarantined, or (a ``subset`` job) of formulae outside each target's
    closure, are no gap."""
    known = {q.expected_sha256 for q in hf.quarantine.values() if q.quarantined}
    if subset is not None:
        # An unusable API file: api_hold meets it again and says why it is kept.
        with contextlib.suppress(InputError):
            known |= outside_sha256s(api, subset, targets, releases=releases)
    return api_hold(
        api,
        targets,
        hf.by_sha256(),
        clean=clean,
        problems=problems,
        known=known,
        releases=releases,
    )


def _shown(failures: Iterable[Failure]) -> list[Failure]:
    return [replace(f, url=source_url(f.url) if f.url else "") for f in failures]


async def _publish_version(
    store: S3Store, registry: Registry, version: Version, present: set[str], done: Published
) -> None:
    raw = await registry.index_bytes(version.url)
    if raw is None:
        raise UpstreamError("the registry has no image index for this version", url=version.url)
    try:
        index = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"image index is not JSON: {exc}", url=version.url) from exc
    described = []
    for bottle, entry in version.bottles:
        ref = ref_name(bottle.pkg_version, bottle.tag, bottle.rebuild)
        problem = descriptor_problem(index, bottle.sha256, ref)
        if problem is None:
            described.append((bottle, entry))
        else:
            done.problems.append(Failure(bottle.hash_key, problem, version.url))
    if not described:
        return
    # The index first: with it in place, missing blobs mark the version as unfinished.
    await store.put(version.key, raw, content_type=INDEX_MEDIA_TYPE)
    present.add(version.key)
    done.indexes += 1
    for bottle, entry in described:
        # The bottle's own sha256, which the dated object was checked against when stored.
        key = blob_key(version.image, bottle.sha256)
        if key in present:
            continue
        if entry.file_size is not None and entry.file_size > COPY_LIMIT:
            done.problems.append(Failure(bottle.hash_key, "over CopyObject's 5 GiB", key))
            continue
        await store.copy(entry.s3_key, key)
        present.add(key)
        done.blobs += 1


async def _publish_rubies(
    store: S3Store,
    registry: Registry,
    catalog: Catalog,
    wanted: Sequence[str],
    targets: Sequence[str],
    present: set[str],
    part_size: int,
    done: Published,
    releases: Releases,
) -> None:
    """portable Ruby: the versions asked for (``latest``: the newest the registry
    lists), then the mirror's own tag list of every version it holds, which is how
    ``check-client`` learns what to walk (S3 cannot be listed over plain HTTP)."""
    if not wanted:
        return
    root = registry_root(catalog)
    if root is None:
        done.ruby_problems.append(Failure(PORTABLE_RUBY, "no registry url in the catalog"))
        return
    rubies = list(wanted)
    if rubies == [RUBY_LATEST]:
        try:
            rubies = await latest_rubies(registry, root)
        except UpstreamError as exc:
            done.ruby_problems.append(Failure(PORTABLE_RUBY, str(exc), exc.url))
            rubies = []
    done.ruby_versions = rubies
    stored_before = held_rubies(present)
    for ruby in rubies:
        try:
            await _publish_ruby(
                store, registry, root, ruby, targets, present, part_size, done, releases
            )
        except (UpstreamError, StoreError, IntegrityError) as exc:
            url = exc.url if isinstance(exc, UpstreamError) else ruby_index_url(root, ruby)
            done.ruby_problems.append(Failure(f"{PORTABLE_RUBY}-{ruby}", str(exc), url))
    held = held_rubies(present)
    key = tags_key(PORTABLE_RUBY)
    if held and (held != stored_before or key not in present):
        listing = {"name": f"homebrew/core/{PORTABLE_RUBY}", "tags": sorted(held)}
        try:
            await store.put(key, orjson.dumps(listing), content_type="application/json")
        except StoreError as exc:
            done.ruby_problems.append(Failure(key, str(exc)))
            return
        present.add(key)


async def _publish_ruby(
    store: S3Store,
    registry: Registry,
    root: str,
    version: str,
    targets: Sequence[str],
    present: set[str],
    part_size: int,
    done: Published,
    releases: Releases,
) -> None:
    url = ruby_index_url(root, version)
    key = index_key(PORTABLE_RUBY, version)
    raw = await registry.index_bytes(url)
    if raw is None:
        raise UpstreamError("the registry has no portable Ruby of this version", url=url)
    try:
        formula = portable_ruby_formula(orjson.loads(raw), version, root)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"image index is not JSON: {exc}", url=url) from exc
    chosen = {f.sha256: f for t in targets if (f := select_file(formula, t, releases)) is not None}
    for file in chosen.values():
        ruby_blob = blob_key(PORTABLE_RUBY, file.sha256)
        if ruby_blob in present:
            continue
        bottle = Bottle(PORTABLE_RUBY, version, file.tag, 0, file.sha256, file.url)
        await transfer(bottle, ruby_blob, registry, store, part_size)  # checks the sha256
        present.add(ruby_blob)
        done.portable_ruby += 1
    if key not in present:  # last: its presence says every blob above is in place
        await store.put(key, raw, content_type=INDEX_MEDIA_TYPE)
        present.add(key)


async def _publish_api(store: S3Store, files: Mapping[str, bytes]) -> str:
    # Each PUT replaces one file atomically; the packages files, which brew 6 reads
    # first, go last, so a client never gets one that is newer than the rest.
    for endpoint in sorted(files, key=lambda e: e.startswith("internal/packages.")):
        # The sha256 in the metadata: `mirrord status` compares it with upstream's.
        body = files[endpoint]
        digest = {"sha256": hashlib.sha256(body).hexdigest()}
        await store.put(
            API_PREFIX + endpoint, body, content_type=content_type(endpoint), metadata=digest
        )
    return "published"
