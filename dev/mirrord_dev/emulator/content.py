"""Deterministic bottle bytes and formula catalogs for the upstream emulator.

Pure apart from reading the packaged sample catalog. Everything derives from integer seeds, so the same arguments always give the
same bytes, digests and formula.json.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import math
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

REGISTRY = "{registry}"
_POOL = 1 << 16


def blob_bytes(seed: int, size: int) -> bytes:
    """Return `size` pseudo-random bytes determined by `seed`.

    Python's generator only makes ~150 MB/s, so only a 64 KiB pool is drawn from it and the
    rest is made of rotations of that pool at random offsets (~600 MB/s). The result is
    still incompressible for gzip-sized windows and differs for every seed.
    """
    rng = random.Random(seed)  # noqa: S311  # nosec B311  # test data, not crypto
    pool = rng.randbytes(min(size, _POOL))
    if size <= _POOL:
        return pool
    doubled = pool + pool
    full, rest = divmod(size - _POOL, _POOL)
    parts = [pool]
    parts += [doubled[k : k + _POOL] for k in (rng.randrange(_POOL) for _ in range(full))]
    if rest:
        k = rng.randrange(_POOL)
        parts.append(doubled[k : k + rest])
    return b"".join(parts)


def derive_seed(seed: int, name: str, tag: str) -> int:
    # Not hash(): that is salted per process, and digests must be stable across runs.
    material = f"{seed}\0{name}\0{tag}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")


def image_name(name: str) -> str:
    """GHCR repository name of a formula: openssl@3 → openssl/3, libxml++ → libxmlxx."""
    return name.replace("@", "/").replace("+", "x")


def blob_url(name: str, sha256: str) -> str:
    return f"{REGISTRY}/v2/homebrew/core/{image_name(name)}/blobs/sha256:{sha256}"


@dataclass(frozen=True, slots=True)
class Blob:
    name: str  # formula that first listed it
    tag: str
    size: int
    seed: int
    sha256: str

    @property
    def data(self) -> bytes:
        """The content, regenerated on each access; use EmulatorCatalog.data to cache."""
        return blob_bytes(self.seed, self.size)


@dataclass
class EmulatorCatalog:
    formulae: list[dict[str, Any]]
    blobs: dict[str, Blob]
    # Bounds memory for catalogs larger than RAM; evicted blobs are regenerated on demand.
    cache_limit: int = 1 << 30
    _cache: OrderedDict[str, bytes] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    _cached_bytes: int = field(default=0, init=False, repr=False, compare=False)
    # The server generates blobs in worker threads so a 1 GiB blob does not stall the loop.
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @property
    def total_size(self) -> int:
        return sum(blob.size for blob in self.blobs.values())

    def data(self, sha256: str) -> bytes:
        """The blob's bytes; KeyError for an unknown digest."""
        with self._lock:
            hit = self._cache.get(sha256)
            if hit is not None:
                self._cache.move_to_end(sha256)
                return hit
        blob = self.blobs[sha256]
        data = blob_bytes(blob.seed, blob.size)
        self._remember(sha256, data)
        return data

    def add_blob(self, name: str, tag: str, size: int, seed: int) -> Blob:
        """Generate, hash and register a blob; identical content yields the existing Blob."""
        data = blob_bytes(seed, size)
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self.blobs.setdefault(sha256, Blob(name, tag, size, seed, sha256))
        self._remember(sha256, data)
        return blob

    def _remember(self, sha256: str, data: bytes) -> None:
        with self._lock:
            if sha256 in self._cache:
                return
            self._cache[sha256] = data
            self._cached_bytes += len(data)
            # Always keep the newest entry, even when it alone exceeds the limit.
            while self._cached_bytes > self.cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)


# Tag sets in brew's `files` order (newest first); the order drives brew's fallback.
_FULL = ("arm64_tahoe", "arm64_sequoia", "arm64_sonoma", "sonoma", "arm64_linux", "x86_64_linux")
_STALE = ("arm64_sequoia", "arm64_sonoma", "sonoma", "ventura")
_SHARED = (
    "arm64_tahoe",
    "arm64_sequoia",
    "arm64_sonoma",
    "arm64_ventura",
    "sonoma",
    "x86_64_linux",
)
_WORDS = (
    "curl", "zstd", "lua", "ruby", "node", "gnutls", "libpng", "libyaml", "pcre", "sqlite",
    "gettext", "readline", "ncurses", "glib", "cairo", "harfbuzz", "ffmpeg", "protobuf", "boost",
    "llvm", "cmake", "ninja", "meson", "pkgconf", "xz", "lz4", "brotli", "icu4c", "nettle", "gmp",
)  # fmt: skip


def _cellar(tag: str, portable: bool) -> str:
    if portable or tag == "all":
        return ":any_skip_relocation" if tag == "all" else ":any"
    if tag.endswith("_linux"):
        return "/home/linuxbrew/.linuxbrew/Cellar"
    return "/opt/homebrew/Cellar" if tag.startswith("arm64_") else "/usr/local/Cellar"


def _synthetic_name(i: int, rng: random.Random) -> str:
    base = f"{rng.choice(_WORDS)}{i}"  # the index keeps names unique
    if i % 16 == 5:
        return f"{base}@{1 + i % 4}"  # like openssl@3
    if i % 16 == 9:
        return f"{base}@3.{i % 14}"  # like python@3.13
    if i % 25 == 13:
        return f"lib{base}++"  # like libxml++
    return base


def synthetic_catalog(
    n: int,
    *,
    seed: int = 0,
    large_every: int = 0,
    large_size: int = 150 * 2**20,
    sizes: tuple[int, int] = (100_000, 5_000_000),
) -> EmulatorCatalog:
    """`n` formulae shaped like formula.json, bottle sizes log-uniform within `sizes`.

    The mix of shapes follows the index (not the seed) so even a small catalog has all of
    them: 3% without bottle, 10% `all` only, 10% stale tags only, 2% with one blob under two
    tags; every `large_every`-th formula has bottles of `large_size`.
    """
    rng = random.Random(seed)  # noqa: S311  # nosec B311  # test data, not crypto
    catalog = EmulatorCatalog([], {})
    lo, hi = math.log(max(sizes[0], 1)), math.log(max(sizes[1], sizes[0], 1))
    for i in range(n):
        name = _synthetic_name(i, rng)
        version = f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
        revision = 1 + i % 3 if i % 7 == 2 else 0
        rebuild = 1 + i % 2 if i % 11 == 4 else 0
        portable = rng.random() < 0.4
        large = large_every > 0 and i % large_every == large_every - 1
        if i % 33 == 32:
            tags: tuple[str, ...] = ()
        elif i % 10 == 3:
            tags = ("all",)
        elif i % 10 == 6:
            tags = _STALE
        elif i % 50 == 21:
            tags = _SHARED
        else:
            tags = _FULL
        files: dict[str, dict[str, str]] = {}
        for tag in tags:
            if tag == "arm64_ventura":  # same bottle as arm64_sonoma, as real catalogs have
                files[tag] = {**files["arm64_sonoma"], "cellar": _cellar(tag, portable)}
                continue
            size = large_size if large else int(math.exp(rng.uniform(lo, hi)))
            blob = catalog.add_blob(name, tag, size, derive_seed(seed, name, tag))
            files[tag] = {
                "cellar": _cellar(tag, portable),
                "url": blob_url(name, blob.sha256),
                "sha256": blob.sha256,
            }
        bottle = (
            {
                "stable": {
                    "rebuild": rebuild,
                    "root_url": f"{REGISTRY}/v2/homebrew/core",
                    "files": files,
                }
            }
            if files
            else {}
        )
        catalog.formulae.append(
            {
                "name": name,
                "full_name": name,
                "tap": "homebrew/core",
                "oldnames": [],
                "aliases": [],
                "desc": f"Synthetic formula number {i}",
                "license": "MIT",
                "homepage": f"https://example.invalid/{image_name(name)}",
                "versions": {"stable": version, "head": None, "bottle": bool(files)},
                "revision": revision,
                "version_scheme": 0,
                "bottle": bottle,
                "keg_only": False,
                "dependencies": [],
                "deprecated": False,
                "disabled": False,
            }
        )
    return catalog


def _bottle_files(entry: Any) -> dict[Any, Any] | None:
    if not isinstance(entry, dict):
        return None
    bottle = entry.get("bottle")
    stable = bottle.get("stable") if isinstance(bottle, dict) else None
    files = stable.get("files") if isinstance(stable, dict) else None
    return files if isinstance(files, dict) else None


def catalog_from_entries(
    entries: list[dict[str, Any]],
    *,
    seed: int = 0,
    size_of: Callable[[str, str], int] | None = None,
    default_size: int = 200_000,
) -> EmulatorCatalog:
    """Serve real-shaped formula.json entries with generated bottles.

    Urls and sha256 are rewritten to point at the emulator; everything else, malformed or
    not, passes through untouched so the client under test sees it as given.
    """
    catalog = EmulatorCatalog(copy.deepcopy(entries), {})
    by_original: dict[str, Blob] = {}
    for entry in catalog.formulae:
        files = _bottle_files(entry)
        if files is None:
            continue
        raw_name = entry.get("name")
        name = raw_name if isinstance(raw_name, str) else str(raw_name)
        stable = entry["bottle"]["stable"]
        if "root_url" in stable:
            stable["root_url"] = f"{REGISTRY}/v2/homebrew/core"
        for tag, file in files.items():
            if not isinstance(file, dict):
                continue
            tag_str = str(tag)
            original = file.get("sha256")
            blob = by_original.get(original) if isinstance(original, str) else None
            if blob is None:
                size = size_of(name, tag_str) if size_of is not None else default_size
                blob = catalog.add_blob(name, tag_str, size, derive_seed(seed, name, tag_str))
                if isinstance(original, str):
                    by_original[original] = blob
            file["url"] = blob_url(name, blob.sha256)
            file["sha256"] = blob.sha256
    return catalog


SAMPLE_LARGE = ("python@3.13", "arm64_tahoe")  # ~20 MiB so run-local exercises multipart


def sample_catalog(*, seed: int = 0) -> EmulatorCatalog:
    """The packaged sample_catalog.json (real formulae), one bottle large."""
    text = resources.files(__package__).joinpath("sample_catalog.json").read_bytes()
    return catalog_from_entries(
        orjson.loads(text),
        seed=seed,
        size_of=lambda name, tag: 20 * 2**20 if (name, tag) == SAMPLE_LARGE else 200_000,
    )


# --- OCI image indexes, as `brew pr-upload` pushes them to ghcr.io --------------------------

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_MANIFEST_SIZE = 2000  # the per-tag manifests are never served, so any plausible size does
# Releases by number, as brew's MacOSVersion spells them in "os.version".
_MACOS = {
    "golden_gate": "27", "tahoe": "26", "sequoia": "15", "sonoma": "14", "ventura": "13",
    "monterey": "12", "big_sur": "11", "catalina": "10.15", "mojave": "10.14",
    "high_sierra": "10.13", "sierra": "10.12", "el_capitan": "10.11",
}  # fmt: skip
# brew's fallbacks when a tab does not say: OS::LINUX_CI_OS_VERSION, LINUX_GLIBC_CI_VERSION and
# Hardware::CPU::INTEL_64BIT_OLDEST_CPU.
_LINUX_OS_VERSION, _LINUX_GLIBC, _INTEL_CPU = "Ubuntu 22.04", "2.35", "core2"
_INVALID_TAG_CHARS = re.compile(r"[^a-zA-Z0-9._-]")
_VALID_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def _count(value: Any) -> int | None:
    """A revision or rebuild: absent is 0; anything but a non-negative int is malformed."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _platform(tag: str) -> dict[str, str]:
    """OCI platform of a bottle tag, as brew derives it from the bottle's tab.

    `all` bottles are built on Homebrew's Apple Silicon CI, so their tab (and platform) says
    arm64/darwin; which macOS built them is not knowable here, so "os.version" is left out,
    as it is for codenames this table does not know.
    """
    arch = "arm64" if tag == "all" or tag.startswith("arm64_") else "amd64"
    if tag.endswith("_linux"):
        return {"architecture": arch, "os": "linux", "os.version": _LINUX_OS_VERSION}
    platform = {"architecture": arch, "os": "darwin"}
    release = _MACOS.get(tag.removeprefix("arm64_"))
    if release is not None:
        platform["os.version"] = f"macOS {release}"
    return platform


@functools.lru_cache(maxsize=256)
def _tag_facts(tag: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(platform, annotations) that depend on the tag alone; cached, as catalogs repeat a
    dozen tags tens of thousands of times."""
    platform = _platform(tag)
    linux = platform["os"] == "linux"
    amd64 = platform["architecture"] == "amd64"
    built_on = {"os": "Linux" if linux else "Macintosh"}
    if "os.version" in platform:
        built_on["os_version"] = platform["os.version"]
    tab = {
        "homebrew_version": "4.6.0",
        "built_as_bottle": True,
        "poured_from_bottle": False,
        "arch": "x86_64" if amd64 else "arm64",
        "built_on": built_on,
    }
    # brew drops blank annotations (compact_blank): cpu variant and glibc are Linux-only.
    annotations = [("sh.brew.bottle.cpu.variant", _INTEL_CPU)] if linux and amd64 else []
    if linux:
        annotations.append(("sh.brew.bottle.glibc.version", _LINUX_GLIBC))
    annotations.append(("sh.brew.tab", orjson.dumps(tab).decode()))
    return tuple(platform.items()), tuple(annotations)


def _descriptor(name: str, version: str, rebuild: int, tag: str, blob: Blob) -> dict[str, Any]:
    ref_name = f"{version}.{tag}" + (f".{rebuild}" if rebuild else "")
    platform, extra = _tag_facts(tag)
    annotations = {
        "org.opencontainers.image.ref.name": ref_name,
        "sh.brew.bottle.digest": blob.sha256,
        "sh.brew.bottle.size": str(blob.size),
        **dict(extra),
    }
    # A stand-in for the digest of the per-tag manifest brew would have pushed: stable and
    # distinct per (formula, tag, bottle), which is all a client can rely on.
    material = f"{name}\0{ref_name}\0{blob.sha256}".encode("utf-8", "surrogatepass")
    return {
        "mediaType": _MANIFEST_MEDIA_TYPE,
        "digest": f"sha256:{hashlib.sha256(material).hexdigest()}",
        "size": _MANIFEST_SIZE,
        "platform": dict(platform),
        "annotations": annotations,
    }


def image_index(entry: Any, catalog: EmulatorCatalog) -> tuple[str, dict[str, Any]] | None:
    """(ref, OCI image index) GHCR holds for this formula.json entry, or None if it has none.

    ref is what brew puts in `…/<image>/manifests/<ref>`: pkg_version (stable, plus
    `_<revision>` when revision > 0), plus `-<rebuild>` when rebuild > 0, with characters an
    OCI tag cannot hold turned into "." as brew does. The index describes the catalog's
    (rewritten) bottles, one manifest per tag in `files` order. An entry without a bottle or
    of any malformed shape, including a file whose sha256 is not a catalog blob, has none.
    """
    files = _bottle_files(entry)
    if not files:
        return None
    name, versions = entry.get("name"), entry.get("versions")
    stable = versions.get("stable") if isinstance(versions, dict) else None
    revision = _count(entry.get("revision"))
    rebuild = _count(entry["bottle"]["stable"].get("rebuild"))
    if not (isinstance(name, str) and name and isinstance(stable, str) and stable):
        return None
    if revision is None or rebuild is None:
        return None
    version = f"{stable}_{revision}" if revision else stable
    version_rebuild = f"{version}-{rebuild}" if rebuild else version
    manifests = []
    for tag, file in files.items():
        sha256 = file.get("sha256") if isinstance(file, dict) else None
        blob = catalog.blobs.get(sha256) if isinstance(sha256, str) else None
        if not isinstance(tag, str) or blob is None:
            return None
        manifests.append(_descriptor(name, version, rebuild, tag, blob))
    ref = version_rebuild
    if not _VALID_TAG.fullmatch(ref):
        ref = _INVALID_TAG_CHARS.sub(".", ref)
    return ref, _index(name, version, version_rebuild, manifests)


def _index(name: str, version: str, ref_name: str, manifests: list[Any]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
        "annotations": {
            "com.github.package.type": "homebrew_bottle",
            "org.opencontainers.image.ref.name": ref_name,
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    }


# --- portable Ruby: `brew vendor-install ruby` fetches one blob of homebrew/core/portable-ruby ---

PORTABLE_RUBY_IMAGE = "portable-ruby"
# The tags brew's Library/Homebrew/vendor/portable-ruby-<arch>-<os> files name.
PORTABLE_RUBY_TAGS = ("arm64_big_sur", "catalina", "arm64_linux", "x86_64_linux")
_PORTABLE_RUBY_SIZE = 300_000  # the real ones are ~12 MB; the size changes nothing here


def portable_ruby(version: str, *, seed: int = 0) -> tuple[dict[str, Blob], dict[str, Any]]:
    """(blobs by sha256, image index) of one portable Ruby release, as GHCR holds them
    under ``homebrew/core/portable-ruby/manifests/<version>``."""
    blobs: dict[str, Blob] = {}
    manifests = []
    for tag in PORTABLE_RUBY_TAGS:
        blob_seed = derive_seed(seed, PORTABLE_RUBY_IMAGE, f"{version}\0{tag}")
        data = blob_bytes(blob_seed, _PORTABLE_RUBY_SIZE)
        sha256 = hashlib.sha256(data).hexdigest()
        blob = Blob(PORTABLE_RUBY_IMAGE, tag, len(data), blob_seed, sha256)
        blobs[sha256] = blob
        manifests.append(_descriptor(PORTABLE_RUBY_IMAGE, version, 0, tag, blob))
    return blobs, _index(PORTABLE_RUBY_IMAGE, version, version, manifests)


# --- the Homebrew API files brew 6 reads (HOMEBREW_API_DOMAIN) --------------------------------
#
# Each *.jws.json is a JSON Web Signature in JSON serialization: {"payload": "<the JSON
# document as a string>", "signatures": [...]}; brew checks the signature with its own
# public key and parses the payload. The emulator's signature is a stand-in (no real
# key): a mirror must serve the bytes unchanged, so it never looks inside anyway.
#
# internal/packages.<tag>.jws.json is what brew's `generate-internal-api` writes for one
# bottle tag (formulae.brew.sh runs it on macOS, so brew's older-macOS fallback applies):
# {"metadata": {...}, "formulae": {name: hash}, "casks": {...}, aliases, renames, tap git
# heads and migrations}. Each formula hash is FormulaStruct#serialize for that tag: flat
# fields, blank ones (empty, nil, false, 0) left out, symbols written as ":name", and of
# the bottles only the one brew pours on that tag, as `bottle_checksum` (plus
# `bottle_tag` when it is another tag's bottle, `bottle_cellar` when the cellar is not
# :any_skip_relocation). No `bottle.stable.files`, no url: brew builds the url from its
# bottle domain, the formula's name and the checksum.

API_ENDPOINTS = (
    "formula.jws.json",
    "cask.jws.json",
    "formula_tap_migrations.jws.json",
    "cask_tap_migrations.jws.json",
    "internal/executables.txt",
)
HOMEBREW_VERSION = "6.0.0"  # metadata.homebrew_version of the files served
_DEFAULT_CELLAR = ":any_skip_relocation"  # FormulaStruct::DEFAULT_CELLAR, left out when chosen


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jws(payload: bytes) -> bytes:
    """A JWS (JSON serialization) around ``payload``, shaped like formulae.brew.sh's."""
    protected = _b64url(orjson.dumps({"alg": "PS512", "kid": "emulator"}))
    signature = _b64url(hashlib.sha512(protected.encode() + b"." + payload).digest())
    return orjson.dumps(
        {
            "payload": payload.decode(),
            "signatures": [{"protected": protected, "signature": signature}],
        }
    )


def _release(tag: str) -> tuple[str, tuple[int, ...]] | None:
    """(arch, release) of a macOS bottle tag; None for all, Linux or unknown tags."""
    arch = "arm64" if tag.startswith("arm64_") else "x86_64"
    number = _MACOS.get(tag.removeprefix("arm64_"))
    if number is None:
        return None
    return arch, tuple(int(p) for p in number.split("."))


def machine_tags() -> tuple[str, ...]:
    """Every tag the packages endpoint answers for: macOS codenames (both arches) and Linux."""
    return (*(f"arm64_{c}" for c in _MACOS), *_MACOS, "arm64_linux", "x86_64_linux")


def pick_bottle(files: dict[str, Any], tag: str) -> str | None:
    """brew's choice on ``tag``: the exact tag, else ``all``, else the first tag in files
    order of the same architecture for an older macOS release."""
    if tag in files:
        return tag
    if "all" in files:
        return "all"
    want = _release(tag)
    if want is None:
        return None
    for have_tag in files:
        have = _release(have_tag) if isinstance(have_tag, str) else None
        if have is not None and have[0] == want[0] and have[1] < want[1]:
            return str(have_tag)
    return None


def _blank(value: Any) -> bool:
    """Utils.deep_compact_blank's test: nil, false, 0, and empty strings, lists, hashes."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def _symbol(text: str) -> str:
    """A symbol as Utils.deep_stringify_symbols writes it."""
    return text if text.startswith(":") else f":{text}"


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    # Malformed entries are served too (the hostile tests): only what brew could write.
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def packages_formula(entry: dict[str, Any], tag: str) -> dict[str, Any]:
    """One formula.json entry as its ``formulae`` hash in packages.<tag>: the fields of
    FormulaStruct this emulator knows, in the struct's order, blank ones left out."""
    versions = _object(entry.get("versions"))
    stable_url = _object(_object(entry.get("urls")).get("stable"))
    stable = _object(_object(entry.get("bottle")).get("stable"))
    url_specs = {k: stable_url.get(k) for k in ("tag", "revision", "using")}
    item: dict[str, Any] = {
        "aliases": entry.get("aliases"),
        "bottle_rebuild": stable.get("rebuild"),
        "desc": entry.get("desc"),
        "homepage": entry.get("homepage"),
        "license": entry.get("license"),
        "oldnames": entry.get("oldnames"),
        "revision": entry.get("revision"),
        "ruby_source_checksum": _object(entry.get("ruby_source_checksum")).get("sha256"),
        "stable_dependencies": [
            *_strings(entry.get("dependencies")),
            *({dep: ":build"} for dep in _strings(entry.get("build_dependencies"))),
        ],
        "stable_checksum": stable_url.get("checksum"),
        # [url, specs]; an empty specs hash is blank, so only [url] is left.
        "stable_url_args": [
            stable_url.get("url"),
            {
                k: _symbol(v) if k == "using" and isinstance(v, str) else v
                for k, v in url_specs.items()
                if v
            },
        ],
        "stable_version": versions.get("stable"),
        "version_scheme": entry.get("version_scheme"),
        "versioned_formulae": entry.get("versioned_formulae"),
    }
    files = _bottle_files(entry)
    chosen = pick_bottle(files, tag) if files else None
    spec = files.get(chosen) if files is not None and chosen is not None else None
    if isinstance(spec, dict):
        cellar = spec.get("cellar")
        item["bottle_tag"] = _symbol(chosen) if chosen != tag and chosen else None
        item["bottle_cellar"] = cellar if cellar != _DEFAULT_CELLAR else None
        item["bottle_checksum"] = spec.get("sha256")
    item["stable_url_args"] = [a for a in item["stable_url_args"] if not _blank(a)]
    return {k: v for k, v in item.items() if not _blank(v)}


def packages_payload(
    formulae: list[Any], tag: str, *, generated_at: int = 0, git_head: str = "0" * 40
) -> dict[str, Any]:
    """The document inside internal/packages.<tag>.jws.json, from formula.json entries,
    with generate-internal-api's keys in its order."""
    out = {
        entry["name"]: packages_formula(entry, tag)
        for entry in formulae
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    }
    return {
        "metadata": {
            "homebrew_version": HOMEBREW_VERSION,
            "bottle_tag": tag,
            "generated_at": generated_at,
        },
        "formulae": out,
        "casks": {},
        "formula_aliases": {},
        "formula_renames": {},
        "cask_renames": {},
        "formula_tap_git_head": git_head,
        "cask_tap_git_head": git_head,
        "formula_tap_migrations": {},
        "cask_tap_migrations": {},
    }


def api_file(formulae_json: bytes, endpoint: str, *, generated_at: int = 0) -> bytes | None:
    """The body of ``api/<endpoint>`` for the served formula.json, or None if unknown."""
    if endpoint == "formula.jws.json":
        return jws(formulae_json)
    if endpoint == "cask.jws.json":
        return jws(b"[]")
    if endpoint in ("formula_tap_migrations.jws.json", "cask_tap_migrations.jws.json"):
        return jws(b"{}")
    formulae = orjson.loads(formulae_json)
    entries = formulae if isinstance(formulae, list) else []
    if endpoint == "internal/executables.txt":
        names = [
            e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
        ]
        return "".join(f"{n}:{n.partition('@')[0]}\n" for n in names).encode()
    match = re.fullmatch(r"internal/packages\.([a-z0-9_]+)\.jws\.json", endpoint)
    if match is None or match.group(1) not in machine_tags():
        return None
    payload = packages_payload(entries, match.group(1), generated_at=generated_at)
    return jws(orjson.dumps(payload))
