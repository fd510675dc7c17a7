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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from mirrord.adapters.registry import CHUNK, INDEX_MEDIA_TYPE
from mirrord.adapters.terminal import LogProgress
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
from mirrord.core.errors import InputError
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
        }


class _Miss(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url, self.reason = url, reason


@dataclass
class _Walk:
    http: aiohttp.ClientSession
    base: str
    misses: list[Miss] = field(default_factory=list)
    indexes: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    progress: Progress = field(default_factory=LogProgress)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    async def get(self, path: str, accept: str | None = None) -> bytes:
        url = self.url(path)
        headers = {"Accept": accept} if accept else {}
        try:
            async with self.http.get(url, headers=headers) as response:
                if response.status != 200:
                    raise _Miss(url, f"HTTP {response.status}")
                return await response.read()
        except aiohttp.ClientError as exc:
            raise _Miss(url, f"{type(exc).__name__}: {exc}") from exc

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
        try:
            async with self.http.get(url) as response:
                if response.status != 200:
                    raise _Miss(url, f"HTTP {response.status}")
                async for chunk in response.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    self.progress.add_bytes(len(chunk))
        except aiohttp.ClientError as exc:
            raise _Miss(url, f"{type(exc).__name__}: {exc}") from exc
        if digest.hexdigest() != sha256:
            raise _Miss(url, f"sha256 mismatch: expected {sha256}, got {digest.hexdigest()}")

    async def ruby_versions(self) -> list[str]:
        """``latest``: the newest versions the mirror's own tag list names. brew itself
        asks only for the blob whose sha256 its vendor/portable-ruby-* file holds, which
        the mirror cannot know; the sync keeps the newest two (this brew and the one
        before) and lists every version it holds there, as a registry would."""
        path = tags_key(PORTABLE_RUBY)
        try:
            found = newest_rubies(listed_tags(await self.get(path), self.url(path)))
        except _Miss as miss:
            self.misses.append(Miss(PORTABLE_RUBY, miss.url, miss.reason))
            return []
        except InputError as exc:
            self.misses.append(Miss(PORTABLE_RUBY, self.url(path), str(exc)))
            return []
        if not found:
            self.misses.append(Miss(PORTABLE_RUBY, self.url(path), "lists no portable Ruby"))
        return found

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
) -> Coverage:
    walk = _Walk(http, base.rstrip("/"), progress=progress or LogProgress())
    known = await _quarantined(walk, status_key)
    known_misses: list[Miss] = []
    endpoints = api_endpoints([target])
    api_ok = 0
    packages: Any = None
    for endpoint in endpoints:
        path = f"api/{endpoint}"
        try:
            raw = await walk.get(path)
            document = jws_payload(raw, path) if endpoint.endswith(".jws.json") else None
        except _Miss as miss:
            walk.misses.append(Miss(endpoint, miss.url, miss.reason))
            continue
        except InputError as exc:
            walk.misses.append(Miss(endpoint, walk.url(path), str(exc)))
            continue
        api_ok += 1
        if endpoint == packages_endpoint(target):
            packages = document

    formulae: list[Formula] = []
    if packages is not None:
        try:
            # As brew 6 builds bottle urls: under the artifact domain, here the mirror.
            formulae, rejected = packages_formulae(packages, packages_endpoint(target), walk.base)
        except InputError as exc:
            walk.misses.append(Miss(packages_endpoint(target), "", str(exc)))
        else:
            walk.misses += [Miss(r.name, "", r.reason) for r in rejected]
    chosen = [(f, file) for f in formulae if (file := select_file(f, target, releases)) is not None]
    walk.progress.start(len(chosen))
    installable = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(formula: Formula, file: BottleFile) -> None:
        nonlocal installable
        async with gate:
            try:
                await walk.bottle(formula, file)
            except _Miss as miss:
                found = Miss(formula.name, miss.url, miss.reason)
                (known_misses if file.sha256 in known else walk.misses).append(found)
                walk.progress.done(False)
                return
            installable += 1
            walk.progress.done(True)

    try:
        await asyncio.gather(*(one(f, file) for f, file in chosen))
    finally:
        walk.progress.close()

    rubies = 0
    if list(ruby_versions) == [RUBY_LATEST]:
        ruby_versions = await walk.ruby_versions()
    for version in ruby_versions:
        what = f"{PORTABLE_RUBY}-{version}"
        path = index_key(PORTABLE_RUBY, version)
        try:
            ruby = portable_ruby_formula(await walk.index(path), version, walk.base)
            file = select_file(ruby, target, releases)
            if file is None:
                raise _Miss(walk.url(path), f"no portable Ruby bottle for {target}")
            await walk.blob(blob_key(PORTABLE_RUBY, file.sha256), file.sha256)
            rubies += 1
        except _Miss as miss:
            walk.misses.append(Miss(what, miss.url, miss.reason))
    return Coverage(
        target=target,
        with_bottle=len(chosen),
        installable=installable,
        no_bottle=len(formulae) - len(chosen),
        api_files=api_ok,
        api_expected=len(endpoints),
        portable_ruby=rubies,
        portable_ruby_expected=len(ruby_versions),
        misses=tuple(sorted(walk.misses, key=lambda m: (m.what, m.url))),
        known_misses=tuple(sorted(known_misses, key=lambda m: (m.what, m.url))),
    )


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
