"""What brew 6 asks a mirror for, and what the Homebrew API files tell it. Pure.

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
both left out and reported. The stage that writes them is services/publish.py.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from mirrord.core.catalog import Catalog, parse_catalog, select_file
from mirrord.core.errors import CatalogError, FormulaError, InputError, MirrordError
from mirrord.core.models import (
    MAX_JSON_INT,
    MAX_NAME_LEN,
    MAX_TAG_LEN,
    MAX_VERSION_LEN,
    SHA256_RE,
    TAG_RE,
    VERSION_RE,
    Bottle,
    BottleFile,
    Formula,
    HashEntry,
    is_formula_name,
)
from mirrord.core.oci import (
    OCI_PREFIX,
    blob_key,
    descriptors,
    image_name,
    index_key,
    manifest_ref,
)
from mirrord.core.plan import index_url
from mirrord.core.releases import DEFAULT_RELEASES, Releases
from mirrord.core.report import Failure

API_PREFIX = "api/"
GHCR = "https://ghcr.io"  # brew's default artifact domain
PORTABLE_RUBY = "portable-ruby"
# MIRRORD_PORTABLE_RUBY's default: the newest RUBY_NEWEST versions the registry lists
# (the brew being rolled out and the one before it), so an upgrade upstream is followed.
RUBY_LATEST = "latest"
RUBY_NEWEST = 2
# The files brew 6 fetches from HOMEBREW_API_DOMAIN, besides internal/packages.<tag>.jws.json.
API_ENDPOINTS = (
    "formula.jws.json",
    "cask.jws.json",
    "formula_tap_migrations.jws.json",
    "cask_tap_migrations.jws.json",
    "internal/executables.txt",
)


def packages_endpoint(tag: str) -> str:
    return f"internal/packages.{tag}.jws.json"


def api_endpoints(targets: Iterable[str]) -> tuple[str, ...]:
    return (*API_ENDPOINTS, *(packages_endpoint(t) for t in dict.fromkeys(targets)))


def content_type(endpoint: str) -> str:
    return "text/plain; charset=utf-8" if endpoint.endswith(".txt") else "application/json"


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
    if not is_formula_name(name):
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


@dataclass(frozen=True, slots=True)
class ApiBottle:
    """A bottle an API file sends a target machine to, and the file that names it."""

    endpoint: str
    bottle: Bottle


def api_bottles(
    files: Mapping[str, bytes],
    targets: Sequence[str],
    root: str = GHCR,
    releases: Releases = DEFAULT_RELEASES,
) -> list[ApiBottle]:
    """Every bottle the API files send a target machine to, once each per file:
    formula.jws.json's by brew's choice for each target, and each packages file's own
    (generated for its tag, it names the one bottle brew pours there)."""
    found: dict[ApiBottle, None] = {}
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
                found[ApiBottle(endpoint, bottle)] = None
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
        f"{found.bottle.hash_key} ({found.endpoint})"
        for found in api_bottles(files, targets, releases=releases)
        if found.bottle.sha256 not in stored and found.bottle.sha256 not in known
    ]


def api_hold(
    files: Mapping[str, bytes],
    targets: Sequence[str],
    stored: Mapping[str, HashEntry],
    *,
    clean: bool,
    problems: Sequence[Failure],
    known: Collection[str],
    releases: Releases,
) -> str | None:
    """Why the API files must not go out (``kept: <why>``, as the report says it), or
    None: they may. Only after a clean sync (every formula, no failure, no stop), with
    every bottle they name in the mirror and no publication problem."""
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
    return None


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
    for found in api_bottles(files, targets, root, releases):
        bottle = found.bottle
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


# --- portable Ruby -------------------------------------------------------------------------


def portable_ruby_formula(index: Any, version: str, root: str) -> Formula:
    """portable Ruby's image index as a formula whose files are its bottles, in index
    order, so brew's choice of bottle (``select_file``) applies to it unchanged. A
    descriptor whose digest is no sha256 or whose tag is no bottle tag is left out: the
    digest names a key."""
    files: list[BottleFile] = []
    for d in descriptors(index) or ():
        if d.ref_name is None or d.digest is None:
            continue
        tag = d.ref_name.removeprefix(f"{version}.")
        if not (SHA256_RE.fullmatch(d.digest) and TAG_RE.fullmatch(tag)):
            continue
        url = f"{root}/{blob_key(PORTABLE_RUBY, d.digest)}"
        files.append(BottleFile(tag, url, d.digest))
    return Formula(PORTABLE_RUBY, version, files=tuple(files))


def ruby_index_url(root: str, version: str) -> str:
    return f"{root}/{index_key(PORTABLE_RUBY, version)}"


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


def held_rubies(present: Collection[str]) -> set[str]:
    """The portable Ruby versions whose index the mirror holds (written last of each)."""
    prefix = index_key(PORTABLE_RUBY, "")
    return {k.removeprefix(prefix) for k in present if k.startswith(prefix)}


# --- formula versions: one image index each --------------------------------------------------


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


def reader_headers(token: str | None) -> dict[str, str]:
    """What a brew client of a token-restricted mirror sends (infra/README.md, "CloudFront
    options"): the token as ``Authorization: Bearer`` (HOMEBREW_DOCKER_REGISTRY_TOKEN, on
    every v2/ request) and as ``X-Mirror-Token`` (the HOMEBREW_CURLRC header, which also
    covers api/). None: an open mirror, no header."""
    if token is None:
        return {}
    return {"Authorization": f"Bearer {token}", "X-Mirror-Token": token}
