"""Frozen records shared by every layer. No I/O, no behaviour beyond naming."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# DESIGN.md §3: a name that does not match never shapes an S3 key or a path.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@+._-]*$")
# Versions shape keys too; brew's versions use the same characters as names (plus ',').
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@+._,-]*$")
TAG_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# S3's bucket naming rules, loosely: refuse what would break a URL or a key.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Keeps every key well under S3's 1,024-byte limit.
MAX_NAME_LEN = 128
MAX_VERSION_LEN = 64


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
