"""``mirrord check-client``: walk the mirror as brew 6 would on one machine, over HTTP.

With ``HOMEBREW_API_DOMAIN=<base>/api`` and ``HOMEBREW_ARTIFACT_DOMAIN=<base>`` brew reads
``api/internal/packages.<tag>.jws.json`` (and the other API files), picks for each formula
the bottle it would pour on that machine, asks ``v2/…/manifests/<ref>`` with the OCI index
media type, finds the descriptor by digest and ``ref.name`` (and needs its
``sh.brew.tab``), then GETs ``v2/…/blobs/sha256:<hex>`` without Authorization and checks
the sha256. Every request here goes to ``base``; nothing goes to the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from mirrord.adapters.registry import INDEX_MEDIA_TYPE
from mirrord.adapters.terminal import LogProgress
from mirrord.adapters.web import get_once
from mirrord.core.brew import (
    PORTABLE_RUBY,
    RUBY_LATEST,
    api_endpoints,
    jws_payload,
    newest_rubies,
    packages_endpoint,
    packages_formulae,
    portable_ruby_formula,
)
from mirrord.core.catalog import select_file
from mirrord.core.errors import InputError, UpstreamError
from mirrord.core.models import BottleFile, Formula
from mirrord.core.oci import (
    blob_key,
    descriptor_problem,
    image_name,
    index_key,
    listed_tags,
    manifest_ref,
    ref_name,
    tags_key,
)
from mirrord.core.releases import DEFAULT_RELEASES, Releases
from mirrord.core.report import Progress
from mirrord.core.tasks import bounded


@dataclass(frozen=True, slots=True)
class Miss:
    what: str  # a formula, an API endpoint, or portable-ruby-<version>
    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class Coverage:
    target: str
    with_bottle: int  # formulae brew would pour a bottle for on this machine
    installable: int  # …of which the mirror serves index, descriptor and blob
    no_bottle: int
    api_files: int  # API files served and well-formed
    api_expected: int
    portable_ruby: int  # portable Ruby blobs served with the right sha256
    portable_ruby_expected: int = 0  # versions checked
    misses: tuple[Miss, ...] = ()
    # Bottles the mirror's status.json lists as quarantined (broken upstream): no miss.
    known_misses: tuple[Miss, ...] = ()
    outside_subset: int | None = None  # a subset check: API formulae left out of it

    @property
    def percent(self) -> float:
        return 100.0 * self.installable / self.with_bottle if self.with_bottle else 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "with_bottle": self.with_bottle,
            "installable": self.installable,
            "coverage_percent": round(self.percent, 2),
            "no_bottle": self.no_bottle,
            "api_files": self.api_files,
            "api_expected": self.api_expected,
            "portable_ruby": self.portable_ruby,
            "portable_ruby_expected": self.portable_ruby_expected,
            "misses": [{"what": m.what, "url": m.url, "reason": m.reason} for m in self.misses],
            "known_misses": [
                {"what": m.what, "url": m.url, "reason": m.reason} for m in self.known_misses
            ],
            "outside_subset": self.outside_subset,
        }


class _Miss(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url, self.reason = url, reason


@dataclass
class _Walk:
    http: aiohttp.ClientSession
    base: str
    indexes: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    progress: Progress = field(default_factory=LogProgress)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    async def get(self, path: str, accept: str | None = None) -> bytes:
        url = self.url(path)
        try:
            return await get_once(self.http, url, accept=accept)
        except UpstreamError as exc:
            raise _Miss(url, str(exc)) from exc

    async def index(self, path: str) -> Any:
        """Each image index is fetched once, however many bottles it describes."""
        if path not in self.indexes:
            self.indexes[path] = asyncio.ensure_future(self._index(path))
        return await self.indexes[path]

    async def _index(self, path: str) -> Any:
        raw = await self.get(path, INDEX_MEDIA_TYPE)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Miss(self.url(path), f"image index is not JSON: {exc}") from exc

    async def blob(self, path: str, sha256: str) -> None:
        """GET without Authorization (the session sends none) and check the bytes."""
        url = self.url(path)
        digest = hashlib.sha256()

        def take(chunk: bytes) -> None:
            digest.update(chunk)
            self.progress.add_bytes(len(chunk))

        try:
            await get_once(self.http, url, on_chunk=take)
        except UpstreamError as exc:
            raise _Miss(url, str(exc)) from exc
        if digest.hexdigest() != sha256:
            raise _Miss(url, f"sha256 mismatch: expected {sha256}, got {digest.hexdigest()}")

    async def bottle(self, formula: Formula, file: BottleFile) -> None:
        # As brew asks: the image from the formula's name, the blob by its sha256.
        image = image_name(formula.name)
        if image is None:
            raise _Miss("", "the formula's name makes no OCI image name")
        index_path = index_key(image, manifest_ref(formula.pkg_version, formula.rebuild))
        index = await self.index(index_path)
        problem = descriptor_problem(
            index, file.sha256, ref_name(formula.pkg_version, file.tag, formula.rebuild)
        )
        if problem is not None:
            raise _Miss(self.url(index_path), problem)
        await self.blob(blob_key(image, file.sha256), file.sha256)


@dataclass(frozen=True, slots=True)
class _ApiFiles:
    served: int  # served and well-formed
    expected: int
    packages: Any  # the packages file's payload; None when it was not served
    misses: list[Miss]


@dataclass(frozen=True, slots=True)
class _Bottles:
    with_bottle: int
    installable: int
    no_bottle: int
    misses: list[Miss]
    known_misses: list[Miss]  # of bottles status.json lists as quarantined
    outside: int = 0  # formulae of the packages file outside the subset checked


@dataclass(frozen=True, slots=True)
class _Rubies:
    served: int
    expected: int
    misses: list[Miss]


async def check_client(
    http: aiohttp.ClientSession,
    base: str,
    target: str,
    *,
    ruby_versions: Sequence[str] = (),
    concurrency: int = 16,
    progress: Progress | None = None,
    status_key: str = "status.json",
    releases: Releases = DEFAULT_RELEASES,
    only: Collection[str] | None = None,
) -> Coverage:
    """``only``: the formulae of a subset (its closure on ``target``): the others the
    API files name are counted (``outside_subset``), not walked."""
    walk = _Walk(http, base.rstrip("/"), progress=progress or LogProgress())
    known = await _quarantined(walk, status_key)
    api = await _api_files(walk, target)
    bottles = await _bottles(walk, api.packages, target, known, releases, concurrency, only)
    rubies = await _rubies(walk, ruby_versions, target, releases)
    misses = api.misses + bottles.misses + rubies.misses
    return Coverage(
        target=target,
        with_bottle=bottles.with_bottle,
        installable=bottles.installable,
        no_bottle=bottles.no_bottle,
        api_files=api.served,
        api_expected=api.expected,
        portable_ruby=rubies.served,
        portable_ruby_expected=rubies.expected,
        misses=tuple(sorted(misses, key=lambda m: (m.what, m.url))),
        known_misses=tuple(sorted(bottles.known_misses, key=lambda m: (m.what, m.url))),
        outside_subset=bottles.outside if only is not None else None,
    )


async def _api_files(walk: _Walk, target: str) -> _ApiFiles:
    """Every API file brew reads for ``target``, each served and well-formed."""
    endpoints = api_endpoints([target])
    misses: list[Miss] = []
    served = 0
    packages: Any = None
    for endpoint in endpoints:
        path = f"api/{endpoint}"
        try:
            raw = await walk.get(path)
            document = jws_payload(raw, path) if endpoint.endswith(".jws.json") else None
        except _Miss as miss:
            misses.append(Miss(endpoint, miss.url, miss.reason))
            continue
        except InputError as exc:
            misses.append(Miss(endpoint, walk.url(path), str(exc)))
            continue
        served += 1
        if endpoint == packages_endpoint(target):
            packages = document
    return _ApiFiles(served, len(endpoints), packages, misses)


async def _bottles(
    walk: _Walk,
    packages: Any,
    target: str,
    known: set[str],
    releases: Releases,
    concurrency: int,
    only: Collection[str] | None = None,
) -> _Bottles:
    """The bottle brew would pour for each formula of the packages file (of ``only``,
    when given), fetched as brew fetches it; at most ``concurrency`` at once."""
    formulae: list[Formula] = []
    misses: list[Miss] = []
    if packages is not None:
        try:
            # As brew 6 builds bottle urls: under the artifact domain, here the mirror.
            formulae, rejected = packages_formulae(packages, packages_endpoint(target), walk.base)
        except InputError as exc:
            misses.append(Miss(packages_endpoint(target), "", str(exc)))
        else:
            misses += [Miss(r.name, "", r.reason) for r in rejected]
    listed = len(formulae)
    if only is not None:
        formulae = [f for f in formulae if f.name in only]
    chosen = [(f, file) for f in formulae if (file := select_file(f, target, releases)) is not None]

    async def one(pair: tuple[Formula, BottleFile]) -> Miss | None:
        formula, file = pair
        try:
            await walk.bottle(formula, file)
        except _Miss as miss:
            walk.progress.done(False)
            return Miss(formula.name, miss.url, miss.reason)
        walk.progress.done(True)
        return None

    walk.progress.start(len(chosen))
    try:
        found = await bounded(chosen, one, concurrency)
    finally:
        walk.progress.close()
    known_misses: list[Miss] = []
    for (_formula, file), miss in zip(chosen, found, strict=True):
        if miss is not None:
            (known_misses if file.sha256 in known else misses).append(miss)
    return _Bottles(
        with_bottle=len(chosen),
        installable=found.count(None),
        no_bottle=len(formulae) - len(chosen),
        misses=misses,
        known_misses=known_misses,
        outside=listed - len(formulae),
    )


async def _rubies(walk: _Walk, versions: Sequence[str], target: str, releases: Releases) -> _Rubies:
    """The portable Ruby blob of each version for ``target``, with the right sha256."""
    misses: list[Miss] = []
    if list(versions) == [RUBY_LATEST]:
        versions = await _latest_rubies(walk, misses)
    served = 0
    for version in versions:
        path = index_key(PORTABLE_RUBY, version)
        try:
            ruby = portable_ruby_formula(await walk.index(path), version, walk.base)
            file = select_file(ruby, target, releases)
            if file is None:
                raise _Miss(walk.url(path), f"no portable Ruby bottle for {target}")
            await walk.blob(blob_key(PORTABLE_RUBY, file.sha256), file.sha256)
            served += 1
        except _Miss as miss:
            misses.append(Miss(f"{PORTABLE_RUBY}-{version}", miss.url, miss.reason))
    return _Rubies(served, len(versions), misses)


async def _latest_rubies(walk: _Walk, misses: list[Miss]) -> list[str]:
    """``latest``: the newest versions the mirror's own tag list names. brew itself
    asks only for the blob whose sha256 its vendor/portable-ruby-* file holds, which
    the mirror cannot know; the sync keeps the newest two (this brew and the one
    before) and lists every version it holds there, as a registry would. A tag list
    missing, unreadable or naming no Ruby is a miss (added to ``misses``), and no
    version."""
    path = tags_key(PORTABLE_RUBY)
    try:
        found = newest_rubies(listed_tags(await walk.get(path), walk.url(path)))
    except _Miss as miss:
        misses.append(Miss(PORTABLE_RUBY, miss.url, miss.reason))
        return []
    except InputError as exc:
        misses.append(Miss(PORTABLE_RUBY, walk.url(path), str(exc)))
        return []
    if not found:
        misses.append(Miss(PORTABLE_RUBY, walk.url(path), "lists no portable Ruby"))
    return found


async def _quarantined(walk: _Walk, status_key: str) -> set[str]:
    """sha256s of the bottles the last complete sync quarantined, from the status.json
    the mirror serves beside the bottles; none when it is missing or unreadable (it only
    explains misses, it never hides one it does not name)."""
    try:
        status = orjson.loads(await walk.get(status_key))
    except (_Miss, orjson.JSONDecodeError):
        return set()
    listed = status.get("quarantined") if isinstance(status, dict) else None
    if not isinstance(listed, list):
        return set()
    return {
        q["expected_sha256"]
        for q in listed
        if isinstance(q, dict) and isinstance(q.get("expected_sha256"), str)
    }
