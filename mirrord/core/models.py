"""Frozen records shared by every layer. No I/O, no behaviour beyond naming."""

from __future__ import annotations

import functools
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date as Date

# Every pattern is ASCII-only ([0-9], never \d, which also takes fullwidth and other
# digits) and is used with fullmatch only, so no trailing newline slips through a `$`.
_NAME = r"[A-Za-z0-9][A-Za-z0-9@+._-]*"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9@+._,-]*"  # brew's versions: a name's characters and ','
_TAG = r"[a-z0-9]+(?:_[a-z0-9]+)*"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"

# docs/design.md §4: a name that does not match never shapes an S3 key or a path.
NAME_RE = re.compile(_NAME)
VERSION_RE = re.compile(_VERSION)
TAG_RE = re.compile(_TAG)
SHA256_RE = re.compile(r"[0-9a-f]{64}")
DATE_RE = re.compile(_DATE)
# S3's bucket naming rules, loosely: refuse what would break a URL or a key.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Keeps every key well under S3's 1,024-byte limit.
MAX_NAME_LEN = 128
MAX_VERSION_LEN = 64
MAX_TAG_LEN = 32  # the longest real tag, arm64_golden_gate, has 17
# The largest integer orjson reads as an int (beyond it, a float) and can write; msgspec
# reads any. Every integer from outside is held to it, so both readers of a document agree.
MAX_JSON_INT = 2**64 - 1
# pkg_version adds "_<revision>" and a file name ".<rebuild>" (real ones stay below 100).
# The catalog refuses more than MAX_JSON_INT, so every formula it accepts names keys that
# fit the two lengths below, which the hash-file reader accepts.
MAX_COUNTER_DIGITS = len(str(MAX_JSON_INT))
MAX_HASH_KEY_LEN = MAX_NAME_LEN + MAX_VERSION_LEN + MAX_TAG_LEN + 2 + 1 + MAX_COUNTER_DIGITS
MAX_BOTTLE_KEY_LEN = 11 + MAX_HASH_KEY_LEN + len(".bottle.tar.gz") + 1 + MAX_COUNTER_DIGITS

# The bucket layout (docs/design.md §6) as full-match rules. A hash file may name only keys of
# these shapes: no "..", no second "/", no "%2F", NUL or look-alike characters, ever.
# The lengths are checked first, which also bounds the regex's backtracking.
HASH_KEY_RE = re.compile(rf"{_NAME}-{_VERSION}-{_TAG}")
BOTTLE_KEY_RE = re.compile(rf"({_DATE})/{_NAME}-{_VERSION}\.{_TAG}\.bottle(?:\.[0-9]+)?\.tar\.gz")


def is_formula_name(name: str) -> bool:
    """A formula name mirrord takes (in a job, a Brewfile, a setting or a catalog)."""
    return len(name) <= MAX_NAME_LEN and NAME_RE.fullmatch(name) is not None


def is_date(text: str) -> bool:
    """YYYY-MM-DD, ASCII digits, and a day that exists."""
    return DATE_RE.fullmatch(text) is not None and _calendar_day(text)


@functools.lru_cache(maxsize=4096)  # a hash file holds a few hundred distinct dates
def _calendar_day(text: str) -> bool:
    try:
        Date.fromisoformat(text)
    except ValueError:
        return False
    return True


def is_hash_key(key: str) -> bool:
    """``<name>-<pkg_version>-<tag>``, as ``Bottle.hash_key`` makes it."""
    return len(key) <= MAX_HASH_KEY_LEN and HASH_KEY_RE.fullmatch(key) is not None


def is_bottle_key(key: str) -> bool:
    """``YYYY-MM-DD/<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz``."""
    if len(key) > MAX_BOTTLE_KEY_LEN:
        return False
    match = BOTTLE_KEY_RE.fullmatch(key)
    return match is not None and _calendar_day(match.group(1))


@dataclass(frozen=True, slots=True)
class BottleFile:
    """One entry of ``bottle.stable.files``: the bottle for one tag."""

    tag: str
    url: str
    sha256: str
    cellar: str = ""


@dataclass(frozen=True, slots=True)
class Formula:
    """A formula as far as mirroring is concerned; ``files`` keeps the catalog's order."""

    name: str
    version: str
    revision: int = 0
    rebuild: int = 0
    files: tuple[BottleFile, ...] = ()

    @property
    def pkg_version(self) -> str:
        return f"{self.version}_{self.revision}" if self.revision > 0 else self.version


@dataclass(frozen=True, slots=True)
class Bottle:
    """A bottle file chosen for the mirror: what to fetch and how to name it."""

    name: str
    pkg_version: str
    tag: str
    rebuild: int
    sha256: str
    url: str

    @property
    def hash_key(self) -> str:
        """Key in ``bottles_hash.json``: ``<name>-<pkg_version>-<tag>``."""
        return f"{self.name}-{self.pkg_version}-{self.tag}"

    @property
    def filename(self) -> str:
        """``<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz`` as brew names it."""
        rebuild = f".{self.rebuild}" if self.rebuild > 0 else ""
        return f"{self.name}-{self.pkg_version}.{self.tag}.bottle{rebuild}.tar.gz"

    def s3_key(self, date: str) -> str:
        return f"{date}/{self.filename}"


@dataclass(frozen=True, slots=True)
class HashEntry:
    """One bottle the mirror holds. ``file_size`` is None only for migrated v1 entries."""

    sha256: str
    download_date: str
    file_size: int | None
    s3_key: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD or a listing says about a stored object."""

    key: str
    size: int
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)
    modified: float | None = None  # a listing's LastModified, epoch seconds


@contextmanager
def gc_paused() -> Iterator[None]:
    """For parsing catalogs and hash files: ~10⁵ new objects and no cycles. Left on, the
    cyclic collector runs hundreds of times over the growing result (measured: 40 % of
    the time to parse a 30 MB formula.json)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
