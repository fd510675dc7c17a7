"""The bucket as a mirror brew 6 uses as it is, published after each sync.

brew with ``HOMEBREW_ARTIFACT_DOMAIN=https://M`` asks ``M/v2/homebrew/core/<image>/…``
where it would have asked ghcr.io, and with ``HOMEBREW_API_DOMAIN=https://M/api`` it asks
``M/api/<endpoint>``. So next to the dated folders (unchanged, DESIGN.md §4) the bucket
holds, at exactly those paths:

* ``v2/homebrew/core/<image>/manifests/<ref>``: each formula version's OCI image index,
  byte for byte as GHCR served it, stored only once it is checked to describe every
  bottle the mirror holds for that version (digest, ``ref.name``, ``sh.brew.tab``);
* ``v2/homebrew/core/<image>/blobs/sha256:<hex>``: a server-side copy of the dated
  object (README: why a copy, and what it costs);
* ``v2/homebrew/core/portable-ruby/…``: portable Ruby, which every brew install needs;
* ``api/<endpoint>``: the Homebrew API files, byte for byte, written only after a clean
  sync and only when every bottle they name for a target is in the mirror.

Order makes it safe to stop anywhere: an index is written before the blob copies of its
version, so "index and every blob present" means done, and a version is looked at again
after any crash. Steady state costs one listing of ``v2/`` and no upstream request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from mirrord.catalog import Catalog, formula_from_api, parse_catalog, select_file
from mirrord.errors import (
    FormulaError,
    InputError,
    IntegrityError,
    MirrordError,
    StoreError,
    UpstreamError,
)
from mirrord.hashfile import HashFile
from mirrord.models import Bottle, BottleFile, Formula, HashEntry
from mirrord.plan import index_url
from mirrord.report import Failure
from mirrord.retry import Backoff
from mirrord.s3 import S3Store
from mirrord.transfer import transfer
from mirrord.upstream import INDEX_MEDIA_TYPE, Registry, fetch_bytes

log = structlog.get_logger("mirrord.brew")
T = TypeVar("T")

OCI_PREFIX = "v2/homebrew/core/"
API_PREFIX = "api/"
PORTABLE_RUBY = "portable-ruby"
# The files brew 6 fetches from HOMEBREW_API_DOMAIN, besides internal/packages.<tag>.jws.json.
API_ENDPOINTS = (
    "formula.jws.json",
    "cask.jws.json",
    "formula_tap_migrations.jws.json",
    "cask_tap_migrations.jws.json",
    "internal/executables.txt",
)
API_FILE_LIMIT = 256 * 2**20
COPY_LIMIT = 5 * 2**30  # CopyObject's ceiling; no bottle comes near it (llvm: ~0.6 GB)


def packages_endpoint(tag: str) -> str:
    return f"internal/packages.{tag}.jws.json"


def api_endpoints(targets: Iterable[str]) -> tuple[str, ...]:
    return (*API_ENDPOINTS, *(packages_endpoint(t) for t in dict.fromkeys(targets)))


def content_type(endpoint: str) -> str:
    return "text/plain; charset=utf-8" if endpoint.endswith(".txt") else "application/json"


# --- pure: names, matching, the API's contents -------------------------------------------


def oci_path(url: str) -> str | None:
    """``https://ghcr.io/v2/homebrew/core/x/blobs/sha256:…`` → ``v2/homebrew/core/x/…``:
    the key where the mirror serves what brew would ask ghcr.io for; None elsewhere."""
    path = urlsplit(url).path.lstrip("/")
    if not path.startswith(OCI_PREFIX) or ".." in path.split("/"):
        return None
    return path


def ref_name(pkg_version: str, tag: str, rebuild: int) -> str:
    """``org.opencontainers.image.ref.name`` of one bottle in its image index."""
    return f"{pkg_version}.{tag}" + (f".{rebuild}" if rebuild else "")


def descriptor_problem(index: Any, sha256: str, ref: str) -> str | None:
    """None when ``index`` holds the descriptor brew looks for (digest and ref.name
    equal, ``sh.brew.tab`` present), else why not."""
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        return "image index has no manifests list"
    for manifest in manifests:
        notes = manifest.get("annotations") if isinstance(manifest, dict) else None
        if not isinstance(notes, dict):
            continue
        digest = notes.get("sh.brew.bottle.digest")
        if not isinstance(digest, str) or digest.removeprefix("sha256:") != sha256:
            continue
        if notes.get("org.opencontainers.image.ref.name") != ref:
            continue
        tab = notes.get("sh.brew.tab")
        if not isinstance(tab, str) or not tab:
            return f"descriptor {ref} has no sh.brew.tab"
        return None
    return f"no descriptor with sh.brew.bottle.digest {sha256[:12]}… and ref.name {ref}"


def jws_payload(raw: bytes, source: str) -> Any:
    """The document inside a ``*.jws.json`` file (its payload is a JSON string); the
    signature is brew's to check. ``InputError`` naming the file and the field."""
    try:
        outer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON: {exc}") from exc
    payload = outer.get("payload") if isinstance(outer, dict) else None
    if not isinstance(payload, str):
        raise InputError(f"{source}: payload must be a JSON string")
    if not isinstance(outer.get("signatures"), list):
        raise InputError(f"{source}: signatures must be a list")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: payload is not JSON: {exc}") from exc


def packages_formulae(document: Any, source: str) -> tuple[list[Formula], list[FormulaError]]:
    """Formulae of an ``internal/packages.<tag>`` document ({"formulae": {name: hash}});
    a bottle file without ``url`` gets the one brew derives from ``root_url``."""
    formulae = document.get("formulae") if isinstance(document, dict) else None
    if not isinstance(formulae, dict):
        raise InputError(f"{source}: formulae must be an object")
    out: list[Formula] = []
    bad: list[FormulaError] = []
    for name, body in formulae.items():
        entry = {**body, "name": name} if isinstance(body, dict) else body
        try:
            _fill_urls(entry, name)
            out.append(formula_from_api(entry))
        except FormulaError as exc:
            bad.append(exc)
    return out, bad


def _fill_urls(entry: Any, name: str) -> None:
    stable = entry.get("bottle", {}).get("stable") if isinstance(entry, dict) else None
    if not isinstance(stable, dict) or not isinstance(stable.get("files"), dict):
        return
    root = stable.get("root_url", "https://ghcr.io/v2/homebrew/core")
    image = name.replace("@", "/").replace("+", "x")
    for spec in stable["files"].values():
        if isinstance(spec, dict) and "url" not in spec and isinstance(spec.get("sha256"), str):
            spec["url"] = f"{root}/{image}/blobs/sha256:{spec['sha256']}"


def api_formulae(endpoint: str, raw: bytes) -> list[Formula] | None:
    """The formulae an API file names bottles for (None for files that name none)."""
    if endpoint == "formula.jws.json":
        return list(parse_catalog(orjson.dumps(jws_payload(raw, endpoint))).formulae)
    if endpoint.startswith("internal/packages."):
        return packages_formulae(jws_payload(raw, endpoint), endpoint)[0]
    return None


def api_gaps(
    files: Mapping[str, bytes], targets: Sequence[str], stored: Mapping[str, HashEntry]
) -> list[str]:
    """``name-version-tag`` of every bottle the API files would send a target machine
    to that the mirror does not hold: published, they would send brew to a 404."""
    gaps: list[str] = []
    for endpoint, raw in files.items():
        formulae = api_formulae(endpoint, raw)
        if formulae is None:
            continue
        machines = (
            targets
            if endpoint == "formula.jws.json"
            else [endpoint.removeprefix("internal/packages.").removesuffix(".jws.json")]
        )
        for formula in formulae:
            for target in machines:
                file = select_file(formula, target)
                if file is not None and file.sha256 not in stored:
                    gaps.append(f"{formula.name}-{formula.pkg_version}-{file.tag} ({endpoint})")
    return gaps


def registry_root(catalog: Catalog) -> str | None:
    """``https://ghcr.io``: where the catalog's bottles live (portable Ruby is there too)."""
    for formula in catalog.formulae:
        for file in formula.files:
            before, marker, _ = file.url.partition("/" + OCI_PREFIX)
            if marker:
                return before
    return None


def portable_ruby_formula(index: Any, version: str, root: str) -> Formula:
    """portable Ruby's image index as a formula whose files are its bottles, in index
    order, so brew's choice of bottle (``select_file``) applies to it unchanged."""
    files: list[BottleFile] = []
    manifests = index.get("manifests") if isinstance(index, dict) else None
    for manifest in manifests if isinstance(manifests, list) else ():
        notes = manifest.get("annotations") if isinstance(manifest, dict) else None
        if not isinstance(notes, dict):
            continue
        ref, digest = (
            notes.get("org.opencontainers.image.ref.name"),
            notes.get("sh.brew.bottle.digest"),
        )
        if not (isinstance(ref, str) and isinstance(digest, str)):
            continue
        tag, sha256 = ref.removeprefix(f"{version}."), digest.removeprefix("sha256:")
        url = f"{root}/{OCI_PREFIX}{PORTABLE_RUBY}/blobs/sha256:{sha256}"
        files.append(BottleFile(tag, url, sha256))
    return Formula(PORTABLE_RUBY, version, files=tuple(files))


def ruby_index_url(root: str, version: str) -> str:
    return f"{root}/{OCI_PREFIX}{PORTABLE_RUBY}/manifests/{version}"


@dataclass(frozen=True, slots=True)
class Version:
    """One formula version: one image index, and the stored bottles it must describe."""

    url: str  # upstream …/manifests/<ref>
    key: str  # where the mirror serves it
    bottles: tuple[tuple[Bottle, HashEntry], ...]

    def blob_keys(self) -> list[str]:
        return [k for b, _ in self.bottles if (k := oci_path(b.url)) is not None]


def versions(bottles: Iterable[Bottle], stored: Mapping[str, HashEntry]) -> list[Version]:
    """Stored bottles grouped by their image index; bottles that are not registry blobs
    (a catalog pointing at flat files) have none and are left out."""
    by_url: dict[str, list[tuple[Bottle, HashEntry]]] = {}
    for bottle in bottles:
        entry = stored.get(bottle.sha256)
        url = index_url(bottle)
        if entry is None or url is None or oci_path(bottle.url) is None:
            continue
        by_url.setdefault(url, []).append((bottle, entry))
    out = []
    for url, group in by_url.items():
        key = oci_path(url)
        if key is not None:
            out.append(Version(url, key, tuple(group)))
    return out


# --- the stage ---------------------------------------------------------------------------


@dataclass
class Published:
    """What one publication did; ``problems`` never fail the bottle sync itself."""

    indexes: int = 0  # image indexes written
    blobs: int = 0  # blob keys copied
    current: int = 0  # versions already complete
    portable_ruby: int = 0  # portable Ruby blobs stored
    api: str = "not fetched"  # published | kept: <why> | not fetched
    problems: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexes": self.indexes,
            "blobs": self.blobs,
            "current": self.current,
            "portable_ruby": self.portable_ruby,
            "api": self.api,
            "problems": [{"key": p.key, "error": p.error, "url": p.url} for p in self.problems],
        }


async def _bounded(items: Iterable[T], fn: Callable[[T], Awaitable[None]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(item: T) -> None:
        async with gate:
            await fn(item)

    await asyncio.gather(*(run(i) for i in items))


async def fetch_api(
    http: aiohttp.ClientSession, base: str, targets: Sequence[str], backoff: Backoff
) -> dict[str, bytes]:
    """Every API file for these targets, as served, or ``UpstreamError``: all or none,
    so a half-fetched set is never published."""
    endpoints = api_endpoints(targets)
    bodies = await asyncio.gather(
        *(
            fetch_bytes(http, f"{base.rstrip('/')}/{e}", backoff, limit=API_FILE_LIMIT)
            for e in endpoints
        )
    )
    return dict(zip(endpoints, bodies, strict=True))


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
) -> Published:
    """Image indexes and blob keys for ``bottles`` (those the hash file holds), portable
    Ruby, then the API files when ``clean`` (a complete sync of every formula) and all
    of the above went through. ``stop`` (SIGTERM, a Lambda deadline) leaves the rest,
    and the API as it was, for the next run."""
    done = Published()
    stop = stop or asyncio.Event()
    stored = hf.by_sha256()
    present = {o.key async for o in store.list_objects(OCI_PREFIX)}

    async def one(version: Version) -> None:
        if stop.is_set():
            return
        if version.key in present and all(k in present for k in version.blob_keys()):
            done.current += 1
            return
        try:
            await _publish_version(store, registry, version, present, done)
        except (UpstreamError, StoreError) as exc:
            done.problems.append(Failure(version.key, str(exc), version.url))

    await _bounded(versions(bottles, stored), one, concurrency)
    root = registry_root(catalog)
    for ruby in ruby_versions:
        if root is None:
            done.problems.append(Failure(PORTABLE_RUBY, "no registry url in the catalog"))
            break
        try:
            await _publish_ruby(store, registry, root, ruby, targets, present, part_size, done)
        except (UpstreamError, StoreError, IntegrityError) as exc:
            done.problems.append(Failure(f"{PORTABLE_RUBY}-{ruby}", str(exc)))
    if stop.is_set():
        done.problems.append(Failure("", "stopped before the end: the rest is for the next run"))
    if api is not None:
        done.api = await _publish_api(store, api, targets, stored, clean and not done.problems)
    log.info("published", **{k: v for k, v in done.to_dict().items() if k != "problems"})
    for problem in done.problems:
        log.warning("publish_problem", key=problem.key, error=problem.error, url=problem.url)
    return done


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
        problem = descriptor_problem(index, bottle.sha256, ref_name(*_ref(bottle)))
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
        key = oci_path(bottle.url)
        if key is None or key in present:
            continue
        if entry.file_size is not None and entry.file_size > COPY_LIMIT:
            done.problems.append(Failure(bottle.hash_key, "over CopyObject's 5 GiB", key))
            continue
        await store.copy(entry.s3_key, key)
        present.add(key)
        done.blobs += 1


def _ref(bottle: Bottle) -> tuple[str, str, int]:
    return bottle.pkg_version, bottle.tag, bottle.rebuild


async def _publish_ruby(
    store: S3Store,
    registry: Registry,
    root: str,
    version: str,
    targets: Sequence[str],
    present: set[str],
    part_size: int,
    done: Published,
) -> None:
    url = ruby_index_url(root, version)
    key = f"{OCI_PREFIX}{PORTABLE_RUBY}/manifests/{version}"
    raw = await registry.index_bytes(url)
    if raw is None:
        raise UpstreamError("the registry has no portable Ruby of this version", url=url)
    try:
        formula = portable_ruby_formula(orjson.loads(raw), version, root)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"image index is not JSON: {exc}", url=url) from exc
    chosen = {f.sha256: f for t in targets if (f := select_file(formula, t)) is not None}
    for file in chosen.values():
        blob_key = oci_path(file.url)
        if blob_key is None or blob_key in present:
            continue
        bottle = Bottle(PORTABLE_RUBY, version, file.tag, 0, file.sha256, file.url)
        await transfer(bottle, blob_key, registry, store, part_size)
        present.add(blob_key)
        done.portable_ruby += 1
    if key not in present:  # last: its presence says every blob above is in place
        await store.put(key, raw, content_type=INDEX_MEDIA_TYPE)
        present.add(key)


async def _publish_api(
    store: S3Store,
    files: Mapping[str, bytes],
    targets: Sequence[str],
    stored: Mapping[str, HashEntry],
    clean: bool,
) -> str:
    if not clean:
        return "kept: the sync was not clean (failures, a stop, or only some formulae)"
    try:
        gaps = api_gaps(files, targets, stored)
    except (InputError, MirrordError) as exc:
        return f"kept: {exc}"
    if gaps:
        shown = ", ".join(gaps[:3])
        return f"kept: the API names {len(gaps)} bottles the mirror lacks ({shown})"
    # Each PUT replaces one file atomically; the packages files, which brew 6 reads
    # first, go last, so a client never gets one that is newer than the rest.
    for endpoint in sorted(files, key=lambda e: e.startswith("internal/packages.")):
        await store.put(API_PREFIX + endpoint, files[endpoint], content_type=content_type(endpoint))
    return "published"
