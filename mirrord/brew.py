"""The bucket as a mirror brew 6 uses as it is, published after each sync.

brew with ``HOMEBREW_ARTIFACT_DOMAIN=https://M`` asks ``M/v2/homebrew/core/<image>/…``
where it would have asked ghcr.io, and with ``HOMEBREW_API_DOMAIN=https://M/api`` it asks
``M/api/<endpoint>``. So next to the dated folders (unchanged, docs/design.md §6) the bucket
holds, at exactly those paths:

* ``v2/homebrew/core/<image>/manifests/<ref>``: each formula version's OCI image index,
  byte for byte as GHCR served it, stored only once it is checked to describe every
  bottle the mirror holds for that version (digest, ``ref.name``, ``sh.brew.tab``);
* ``v2/homebrew/core/<image>/blobs/sha256:<hex>``: a server-side copy of the dated
  object (README: why a copy, and what it costs);
* ``v2/homebrew/core/portable-ruby/…``: portable Ruby, which every brew install needs;
* ``api/<endpoint>``: the Homebrew API files, byte for byte, written only after a clean
  sync and only when every bottle they name for a target is in the mirror.

Every key is named as brew names what it asks for: the image from the formula's name
(``image_name``) and the blob by the sha256 the catalog gives and the stored object was
checked against, never from the path of the catalog's url (a hostile entry could name
another formula's image or digest there). Two formulae whose names make one image are
both left out and reported.

Order makes it safe to stop anywhere: an index is written before the blob copies of its
version, so "index and every blob present" means done, and a version is looked at again
after any crash. Steady state costs one listing of ``v2/`` and no upstream request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog

from mirrord.adapters.registry import INDEX_MEDIA_TYPE, Registry
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.web import fetch_bytes, shown_url, source_url
from mirrord.core.catalog import DEFAULT_RELEASES, Catalog, Releases, parse_catalog, select_file
from mirrord.core.errors import (
    CatalogError,
    FormulaError,
    InputError,
    IntegrityError,
    MirrordError,
    StoreError,
    UpstreamError,
)
from mirrord.core.hashfile import HashFile, entry_problem
from mirrord.core.models import (
    MAX_JSON_INT,
    MAX_NAME_LEN,
    MAX_TAG_LEN,
    MAX_VERSION_LEN,
    NAME_RE,
    SHA256_RE,
    TAG_RE,
    VERSION_RE,
    Bottle,
    BottleFile,
    Formula,
    HashEntry,
)
from mirrord.core.plan import index_url
from mirrord.core.report import Failure, LogProgress, Progress
from mirrord.core.retry import Backoff
from mirrord.services.transfer import SizeLimit, transfer

log = structlog.get_logger("mirrord.brew")
T = TypeVar("T")

OCI_PREFIX = "v2/homebrew/core/"
API_PREFIX = "api/"
GHCR = "https://ghcr.io"  # brew's default artifact domain
PORTABLE_RUBY = "portable-ruby"
# MIRRORD_PORTABLE_RUBY's default: the newest RUBY_NEWEST versions the registry lists
# (the brew being rolled out and the one before it), so an upgrade upstream is followed.
RUBY_LATEST = "latest"
RUBY_NEWEST = 2
TAGS_LIMIT = 2**20  # a tags/list answer: a few KB
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


# OCI's repository path grammar (distribution spec): no empty, "." or ".." segment, and
# nothing a URL or a CDN would normalise into another path.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# Characters an OCI tag may not hold; brew writes them as "." (as plan.index_url does).
_OCI_TAG_INVALID = re.compile(r"[^A-Za-z0-9._-]")


def image_name(name: str) -> str | None:
    """brew's GHCR repository of a formula: ``@`` → ``/``, ``+`` → ``x`` (openssl@3 →
    openssl/3, libxml++ → libxmlxx); None when that is no OCI repository path."""
    image = name.replace("@", "/").replace("+", "x")
    return image if len(image) <= 255 and _IMAGE_RE.fullmatch(image) else None


def manifest_ref(pkg_version: str, rebuild: int) -> str:
    """The tag of a formula version's image index: ``<pkg_version>[-<rebuild>]``."""
    return _OCI_TAG_INVALID.sub(".", pkg_version + (f"-{rebuild}" if rebuild else ""))


def index_key(image: str, ref: str) -> str:
    return f"{OCI_PREFIX}{image}/manifests/{ref}"


def blob_key(image: str, sha256: str) -> str:
    return f"{OCI_PREFIX}{image}/blobs/sha256:{sha256}"


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


def jws_document(raw: bytes, source: str) -> bytes:
    """The payload of a ``*.jws.json`` file (a JSON string holding a JSON document), as
    bytes; the signature is brew's to check. ``InputError`` naming the file and field."""
    try:
        outer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON: {exc}") from exc
    payload = outer.get("payload") if isinstance(outer, dict) else None
    if not isinstance(payload, str):
        raise InputError(f"{source}: payload must be a JSON string")
    if not isinstance(outer.get("signatures"), list):
        raise InputError(f"{source}: signatures must be a list")
    # orjson refuses lone surrogates in strings, so this encodes every string it returns.
    return payload.encode()


def jws_payload(raw: bytes, source: str) -> Any:
    """The document inside a ``*.jws.json`` file, parsed."""
    try:
        return orjson.loads(jws_document(raw, source))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: payload is not JSON: {exc}") from exc


def packages_tag(endpoint: str) -> str:
    """The bottle tag of ``internal/packages.<tag>.jws.json``."""
    return endpoint.removeprefix("internal/packages.").removesuffix(".jws.json")


def packages_formulae(
    document: Any, endpoint: str, root: str = GHCR
) -> tuple[list[Formula], list[FormulaError]]:
    """Formulae of an ``internal/packages.<tag>`` document as brew 6 reads it (brew's
    FormulaStruct.deserialize): each formula hash is flat, ``stable_version``,
    ``revision`` and ``bottle_rebuild`` (0 when absent), and, when brew pours a bottle on
    <tag>, ``bottle_checksum`` with ``bottle_tag`` (``":arm64_sequoia"``, when the bottle
    is another tag's; else <tag>). That bottle is the formula's one file, at the url brew
    builds from its domain, the name and the checksum. Total: any JSON gives formulae and
    rejected entries, or ``InputError`` for the whole."""
    tag = packages_tag(endpoint)
    formulae = document.get("formulae") if isinstance(document, dict) else None
    if not isinstance(formulae, dict):
        raise InputError(f"{endpoint}: formulae must be an object")
    metadata = document.get("metadata", {})
    said = metadata.get("bottle_tag", tag) if isinstance(metadata, dict) else None
    if said != tag:  # another machine's file under this name: brew would pour wrong bottles
        raise InputError(f"{endpoint}: metadata.bottle_tag is {said!r:.40}, not {tag!r}")
    out: list[Formula] = []
    bad: list[FormulaError] = []
    for name, body in formulae.items():
        try:
            out.append(_packages_formula(name, body, tag, root))
        except FormulaError as exc:
            bad.append(exc)
    return out, bad


def _packages_formula(name: str, body: Any, tag: str, root: str) -> Formula:
    if len(name) > MAX_NAME_LEN or not NAME_RE.fullmatch(name):
        raise FormulaError(name[:MAX_NAME_LEN], "name has characters outside [A-Za-z0-9@+._-]")
    if not isinstance(body, dict):
        raise FormulaError(name, f"must be an object, got {type(body).__name__}")
    version = body.get("stable_version")
    if not isinstance(version, str) or len(version) > MAX_VERSION_LEN:
        raise FormulaError(name, f"stable_version must be a version, got {version!r:.60}")
    if not VERSION_RE.fullmatch(version):
        raise FormulaError(name, f"stable_version {version!r:.60} is not a safe version")
    revision = _counter(body, "revision", name)
    rebuild = _counter(body, "bottle_rebuild", name)
    checksum = body.get("bottle_checksum")
    if checksum is None:  # no bottle for this machine
        return Formula(name, version, revision, rebuild)
    if not isinstance(checksum, str) or not SHA256_RE.fullmatch(checksum):
        raise FormulaError(name, "bottle_checksum is not 64 lowercase hex digits")
    # A symbol, as brew writes one (":arm64_sequoia"); a plain string reads the same.
    chosen = body.get("bottle_tag", tag)
    chosen = chosen.removeprefix(":") if isinstance(chosen, str) else chosen
    if not isinstance(chosen, str) or len(chosen) > MAX_TAG_LEN or not TAG_RE.fullmatch(chosen):
        raise FormulaError(name, f"bottle_tag {body.get('bottle_tag')!r:.60} is not a bottle tag")
    # Only where to GET it; every key is named from the name and checksum (image_name).
    url = f"{root}/{OCI_PREFIX}{image_name(name) or name}/blobs/sha256:{checksum}"
    return Formula(name, version, revision, rebuild, (BottleFile(chosen, url, checksum),))


def _counter(body: dict[str, Any], field: str, name: str) -> int:
    """revision, bottle_rebuild: absent is 0 (brew leaves zeros out); larger than the
    catalog allows would shape keys the hash file refuses."""
    value = body.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JSON_INT:
        raise FormulaError(name, f"{field} must be an int from 0 to {MAX_JSON_INT}")
    return value


def api_formulae(endpoint: str, raw: bytes, root: str = GHCR) -> list[Formula] | None:
    """The formulae an API file names bottles for (None for files that name none);
    ``InputError`` when the file is unusable, whatever its shape."""
    if endpoint == "formula.jws.json":
        try:
            return list(parse_catalog(jws_document(raw, endpoint)).formulae)
        except CatalogError as exc:
            raise InputError(f"{endpoint}: {exc}") from exc
        except RecursionError as exc:  # msgspec, on a payload nested ~1,000 deep
            raise InputError(f"{endpoint}: payload nested too deeply") from exc
    if endpoint.startswith("internal/packages."):
        return packages_formulae(jws_payload(raw, endpoint), endpoint, root)[0]
    return None


def api_bottles(
    files: Mapping[str, bytes],
    targets: Sequence[str],
    root: str = GHCR,
    releases: Releases = DEFAULT_RELEASES,
) -> list[tuple[str, Bottle]]:
    """(endpoint, bottle) for every bottle the API files send a target machine to:
    formula.jws.json's by brew's choice for each target, and each packages file's own
    (generated for its tag, it names the one bottle brew pours there)."""
    found: dict[tuple[str, Bottle], None] = {}
    for endpoint, raw in files.items():
        formulae = api_formulae(endpoint, raw, root)
        if formulae is None:
            continue
        for formula in formulae:
            if endpoint == "formula.jws.json":
                chosen = [
                    f for t in targets if (f := select_file(formula, t, releases)) is not None
                ]
            else:
                chosen = list(formula.files)
            for file in chosen:
                bottle = Bottle(
                    formula.name,
                    formula.pkg_version,
                    file.tag,
                    formula.rebuild,
                    file.sha256,
                    file.url,
                )
                found[(endpoint, bottle)] = None
    return list(found)


def api_gaps(
    files: Mapping[str, bytes],
    targets: Sequence[str],
    stored: Mapping[str, HashEntry],
    known: Collection[str] = frozenset(),
    releases: Releases = DEFAULT_RELEASES,
) -> list[str]:
    """``name-version-tag (endpoint)`` of every bottle the API files would send a target
    machine to that the mirror does not hold: published, they would send brew to a 404.
    ``known``: sha256s of quarantined bottles, broken upstream too: no gap."""
    return [
        f"{bottle.hash_key} ({endpoint})"
        for endpoint, bottle in api_bottles(files, targets, releases=releases)
        if bottle.sha256 not in stored and bottle.sha256 not in known
    ]


def missing_bottles(
    files: Mapping[str, bytes],
    targets: Sequence[str],
    stored: Mapping[str, HashEntry],
    catalog: Catalog,
    root: str,
    releases: Releases = DEFAULT_RELEASES,
) -> list[Bottle]:
    """The bottles the API files name, the catalog does not and the mirror lacks, once
    each, to be fetched by digest from the formula's image at ``root`` (the registry the
    catalog names): the API was republished after formula.json was read. A bottle the
    catalog names too is the sync's (left to an external hash file's mirror, say), and a
    name that makes no image has no blob to ask for: both stay gaps."""
    known = {f.sha256 for formula in catalog.formulae for f in formula.files}
    missing: dict[str, Bottle] = {}
    for _, bottle in api_bottles(files, targets, root, releases):
        image = image_name(bottle.name)
        if bottle.sha256 in stored or bottle.sha256 in known or image is None:
            continue
        if bottle.sha256 in missing:
            continue
        missing[bottle.sha256] = replace(bottle, url=f"{root}/{blob_key(image, bottle.sha256)}")
    return list(missing.values())


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
    order, so brew's choice of bottle (``select_file``) applies to it unchanged. A
    descriptor whose digest is no sha256 or whose tag is no bottle tag is left out: the
    digest names a key."""
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
        if not (SHA256_RE.fullmatch(sha256) and TAG_RE.fullmatch(tag)):
            continue
        url = f"{root}/{blob_key(PORTABLE_RUBY, sha256)}"
        files.append(BottleFile(tag, url, sha256))
    return Formula(PORTABLE_RUBY, version, files=tuple(files))


def ruby_index_url(root: str, version: str) -> str:
    return f"{root}/{index_key(PORTABLE_RUBY, version)}"


def tags_key(image: str) -> str:
    """OCI distribution's tag listing of an image (``GET /v2/<name>/tags/list``)."""
    return f"{OCI_PREFIX}{image}/tags/list"


# portable Ruby's release tags: brew's vendor/portable-ruby-version, "4.0.7" or with a
# revision "4.0.7_1". ASCII digits, and few enough for int().
_RUBY_VERSION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9}){0,7})(?:_([0-9]{1,9}))?")


def ruby_version_key(tag: str) -> tuple[tuple[int, ...], int] | None:
    """A portable Ruby tag as a comparable version: 4.0.10 > 4.0.9, 4.0.7_1 > 4.0.7;
    None for any other tag (a registry may list signatures or test tags too)."""
    match = _RUBY_VERSION.fullmatch(tag)
    if match is None:
        return None
    return tuple(int(p) for p in match[1].split(".")), int(match[2] or 0)


def newest_rubies(tags: Iterable[Any], n: int = RUBY_NEWEST) -> list[str]:
    """The ``n`` newest versions among ``tags``, newest first; other tags are ignored."""
    keyed = {t: k for t in tags if isinstance(t, str) and (k := ruby_version_key(t)) is not None}
    return sorted(keyed, key=lambda t: keyed[t], reverse=True)[:n]


def listed_tags(raw: bytes, source: str) -> list[Any]:
    """``tags`` of a tags/list answer (``{"name": …, "tags": [...]}``; null when the
    image has none), or ``InputError`` naming the file."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"{source}: must be an object with a tags list")
    tags = document.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise InputError(f"{source}: tags must be a list")
    return tags


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


@dataclass(frozen=True, slots=True)
class Version:
    """One formula version: one image index, and the stored bottles it must describe."""

    url: str  # upstream …/manifests/<ref>, from the catalog's url
    image: str  # from the formula's name
    key: str  # where the mirror serves the index: from the name and the version
    bottles: tuple[tuple[Bottle, HashEntry], ...]

    def blob_keys(self) -> list[str]:
        return [blob_key(self.image, b.sha256) for b, _ in self.bottles]

    def current(self, present: set[str]) -> bool:
        """Done: the index, then every blob key, are in place (the order they are written)."""
        return self.key in present and all(k in present for k in self.blob_keys())


def versions(
    bottles: Iterable[Bottle], stored: Mapping[str, HashEntry], names: Iterable[str] = ()
) -> tuple[list[Version], list[Failure]]:
    """Stored bottles grouped by their image index, and the formulae left out because
    their name makes no image, or the image of another formula in ``names`` (the whole
    catalog) or portable Ruby's: two formulae must never write one key. Bottles that are
    not registry blobs (a catalog pointing at flat files) have no index: skipped."""
    bottles = list(bottles)
    owners: dict[str, set[str]] = {PORTABLE_RUBY: {""}}  # "": portable Ruby, no formula
    for name in (*names, *(b.name for b in bottles)):
        image = image_name(name)
        if image is not None:
            owners.setdefault(image, set()).add(name)
    groups: dict[str, Version] = {}
    refused: dict[str, Failure] = {}
    for bottle in bottles:
        entry = stored.get(bottle.sha256)
        url = index_url(bottle)
        if entry is None or url is None or bottle.name in refused:
            continue
        image = image_name(bottle.name)
        if image is None:
            refused[bottle.name] = Failure(
                bottle.name, "the name makes no OCI image name: not published", url
            )
            continue
        others = sorted(n or "portable Ruby" for n in owners[image] - {bottle.name})
        if others:
            why = f"shares image {image} with {', '.join(others)}: not published"
            refused[bottle.name] = Failure(bottle.name, why, url)
            continue
        key = index_key(image, manifest_ref(bottle.pkg_version, bottle.rebuild))
        found = groups.setdefault(key, Version(url, image, key, ()))
        groups[key] = replace(found, bottles=(*found.bottles, (bottle, entry)))
    return list(groups.values()), list(refused.values())


def status_lag(status: Any) -> str | None:
    """Why the last complete job's report (status.json, parsed) says the brew-6 view is
    behind, or None: no publication recorded, one cut short, or API files held back."""
    published = status.get("published") if isinstance(status, dict) else None
    if not isinstance(published, dict):
        return "status.json records no publication"
    if published.get("finished") is False:
        return "the last publication did not finish"
    api = published.get("api")
    if api != "published":
        return f"the API files are not current ({api!r:.120})"
    return None


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


# --- the stage ---------------------------------------------------------------------------


@dataclass
class Published:
    """What one publication did; ``problems`` never fail the bottle sync itself, while
    ``ruby_problems`` do (the caller adds them to the job's failures). ``finished`` is
    False when it was cut short (a stop, a failure): the rest is left for the next run,
    and the job is not done."""

    indexes: int = 0  # image indexes written
    blobs: int = 0  # blob keys copied
    current: int = 0  # versions already complete
    fetched: int = 0  # bottles only the API files named, fetched by digest (skew)
    portable_ruby: int = 0  # portable Ruby blobs stored
    ruby_versions: list[str] = field(default_factory=list)  # what "latest" meant, or the list
    api: str = "not fetched"  # published | kept: <why> | not fetched
    problems: list[Failure] = field(default_factory=list)  # they keep the API files back
    # portable Ruby that could not be stored: a failure of the job, never a reason to keep
    # the API files (brew needs both; one missing is no cause to freeze the other).
    ruby_problems: list[Failure] = field(default_factory=list)
    finished: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "indexes": self.indexes,
            "blobs": self.blobs,
            "current": self.current,
            "fetched": self.fetched,
            "portable_ruby": self.portable_ruby,
            "portable_ruby_versions": list(self.ruby_versions),
            "api": self.api,
            # Catalog URLs may carry credentials or a token: never in the report.
            "problems": [
                {"key": p.key, "error": p.error, "url": source_url(p.url) if p.url else ""}
                for p in (*self.problems, *self.ruby_problems)
            ],
        }


async def _bounded(items: Iterable[T], fn: Callable[[T], Awaitable[None]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(item: T) -> None:
        async with gate:
            await fn(item)

    await asyncio.gather(*(run(i) for i in items))


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True) or ``stop`` is set (False; it is cancelled:
    every step of a publication may be cut, the next run finds where it stood)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
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
    bodies = await asyncio.gather(
        *(
            fetch_bytes(http, f"{base.rstrip('/')}/{e}", backoff, limit=API_FILE_LIMIT)
            for e in endpoints
        )
    )
    return dict(zip(endpoints, bodies, strict=True))


@dataclass
class Fetched:
    """What ``fetch_missing`` stored: hash-file entries to record, the bottles (to be
    published like the catalog's), and the ones that failed."""

    entries: dict[str, HashEntry] = field(default_factory=dict)
    bottles: list[Bottle] = field(default_factory=list)
    problems: list[Failure] = field(default_factory=list)


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

    await _unless_stopped(_bounded(bottles, one, concurrency), stop or asyncio.Event())
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
) -> Published:
    """Image indexes and blob keys for ``bottles`` (those the hash file holds), portable
    Ruby, then the API files when ``clean`` (a complete sync of every formula) and all
    of the above went through. ``stop`` (SIGTERM, a Lambda deadline) cuts it short at
    once, leaving the rest, and the API as it was, for the next run (``finished`` False)."""
    done = Published()
    if fetched is not None:  # fetch_missing's part: its bottles are in ``bottles`` too
        done.fetched, done.problems = len(fetched.bottles), list(fetched.problems)
    stop = stop or asyncio.Event()
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
        await _bounded(found, one, concurrency)
        await _publish_rubies(
            store, registry, catalog, ruby_versions, targets, present, part_size, done, releases
        )

    try:
        done.finished = await _unless_stopped(everything(), stop)
    finally:
        progress.close()
    if not done.finished:
        done.problems.append(Failure("", "stopped before the end: the rest is for the next run"))
    if api is not None:
        known = {q.expected_sha256 for q in hf.quarantine.values() if q.quarantined}
        done.api = await _publish_api(
            store, api, targets, stored, clean, done.problems, known, releases
        )
    log.info("published", **{k: v for k, v in done.to_dict().items() if k != "problems"})
    for problem in (*done.problems, *done.ruby_problems):
        log.warning(
            "publish_problem", key=problem.key, error=problem.error, url=shown_url(problem.url)
        )
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


def _ref(bottle: Bottle) -> tuple[str, str, int]:
    return bottle.pkg_version, bottle.tag, bottle.rebuild


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
    stored_before = _ruby_versions(present)
    for ruby in rubies:
        try:
            await _publish_ruby(
                store, registry, root, ruby, targets, present, part_size, done, releases
            )
        except (UpstreamError, StoreError, IntegrityError) as exc:
            url = exc.url if isinstance(exc, UpstreamError) else ruby_index_url(root, ruby)
            done.ruby_problems.append(Failure(f"{PORTABLE_RUBY}-{ruby}", str(exc), url))
    held = _ruby_versions(present)
    key = tags_key(PORTABLE_RUBY)
    if held and (held != stored_before or key not in present):
        listing = {"name": f"homebrew/core/{PORTABLE_RUBY}", "tags": sorted(held)}
        try:
            await store.put(key, orjson.dumps(listing), content_type="application/json")
        except StoreError as exc:
            done.ruby_problems.append(Failure(key, str(exc)))
            return
        present.add(key)


def _ruby_versions(present: set[str]) -> set[str]:
    """The portable Ruby versions whose index the mirror holds (written last of each)."""
    prefix = index_key(PORTABLE_RUBY, "")
    return {k.removeprefix(prefix) for k in present if k.startswith(prefix)}


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


async def _publish_api(
    store: S3Store,
    files: Mapping[str, bytes],
    targets: Sequence[str],
    stored: Mapping[str, HashEntry],
    clean: bool,
    problems: Sequence[Failure],
    known: Collection[str],
    releases: Releases,
) -> str:
    if not clean:
        return "kept: the sync was not clean (failures, a stop, or only some formulae)"
    try:
        gaps = api_gaps(files, targets, stored, known, releases)
    except (InputError, MirrordError) as exc:
        return f"kept: {exc}"
    if gaps:
        shown = ", ".join(gaps[:3])
        return f"kept: the API names {len(gaps)} bottles the mirror lacks ({shown})"
    if problems:
        first = problems[0]
        where = f"{first.key}: " if first.key else ""
        return f"kept: {len(problems)} publication problems (first: {where}{first.error:.200})"
    # Each PUT replaces one file atomically; the packages files, which brew 6 reads
    # first, go last, so a client never gets one that is newer than the rest.
    for endpoint in sorted(files, key=lambda e: e.startswith("internal/packages.")):
        await store.put(API_PREFIX + endpoint, files[endpoint], content_type=content_type(endpoint))
    return "published"
