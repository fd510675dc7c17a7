"""``bottles_hash.json``: the model, v1→v2 migration, merge and serialisation. No I/O.

Entries are facts ("this object holds these bytes"), so a writer that lost a conditional
write merges by union. Where it and the file disagree about one key, the writer's entry
wins: it comes from the catalog of the running sync (one sync holds the bucket at a time),
while the file's may be a rebuild the catalog has moved on from, stored the same day.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

from mirrord.errors import HashFileError
from mirrord.models import (
    MAX_JSON_INT,
    SHA256_RE,
    HashEntry,
    gc_paused,
    is_bottle_key,
    is_date,
    is_hash_key,
)

VERSION = 2


@dataclass(frozen=True, slots=True)
class HashFile:
    bottles: Mapping[str, HashEntry] = field(default_factory=dict)
    last_updated: str = ""
    migrated_from: int | None = None  # 1 when read from a v1 file

    def by_sha256(self) -> dict[str, HashEntry]:
        """sha256 → an entry whose object already holds those bytes (first seen wins)."""
        index: dict[str, HashEntry] = {}
        for entry in self.bottles.values():
            index.setdefault(entry.sha256, entry)
        return index


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _v1_key(key: str, date: str) -> str:
    # v1 entries carry no s3_key. The hash key is "<name>-<pkg_version>-<tag>" and tags
    # hold no '-', so the file name is recoverable but for the rebuild, which v1 never had.
    prefix, _, tag = key.rpartition("-")
    return f"{date}/{prefix}.{tag}.bottle.tar.gz"


def _checked(key: str, sha256: Any, date: Any, size: Any, s3_key: Any) -> HashEntry:
    """The one rule for an entry, applied by both readers below, so the msgspec path and
    the checked path cannot drift apart (tests/test_fuzz.py holds them to it)."""
    where = f"bottles[{key!r:.80}]"
    if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
        raise HashFileError(f"{where}.sha256 is not 64 lowercase hex digits")
    if not isinstance(date, str) or not is_date(date):
        raise HashFileError(f"{where}.download_date must be a date YYYY-MM-DD")
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_JSON_INT
    ):
        raise HashFileError(f"{where}.file_size must be an integer from 0 to {MAX_JSON_INT}")
    if not isinstance(s3_key, str) or not is_bottle_key(s3_key):
        raise HashFileError(
            f"{where}.s3_key must be a bottle key of the bucket layout "
            "(YYYY-MM-DD/<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz)"
        )
    if not is_hash_key(key):
        raise HashFileError(f"{where}: the key must be <name>-<pkg_version>-<tag>")
    return HashEntry(sha256, date, size, s3_key)


def _entry(key: str, raw: Any, version: int) -> HashEntry:
    if not isinstance(raw, dict):
        raise HashFileError(f"bottles[{key!r:.80}] must be an object")
    date, s3_key = raw.get("download_date"), raw.get("s3_key")
    if s3_key is None and version == 1 and isinstance(date, str) and is_date(date):
        s3_key = _v1_key(key, date)
    return _checked(key, raw.get("sha256"), date, raw.get("file_size"), s3_key)


# msgspec checks only the types, in C; the rules are _checked's, for both paths.
class _Entry(msgspec.Struct):
    sha256: str
    download_date: str
    s3_key: str
    file_size: int | None = None


class _V2(msgspec.Struct):
    version: Literal[2]
    bottles: dict[str, _Entry]
    last_updated: Any = ""


_DECODER = msgspec.json.Decoder(_V2)


def _fast(raw: bytes) -> HashFile | None:
    """A well-formed v2 file, decoded in C; None sends the document to the slow path,
    which names what is wrong (or reads a v1 file)."""
    try:
        data = _DECODER.decode(raw)
    except msgspec.MsgspecError:
        return None
    entries: dict[str, HashEntry] = {}
    try:
        for key, e in data.bottles.items():
            entries[key] = _checked(key, e.sha256, e.download_date, e.file_size, e.s3_key)
    except HashFileError:
        return None
    last = data.last_updated
    return HashFile(entries, last if isinstance(last, str) else "", None)


def parse(raw: bytes, *, source: str = "bottles_hash.json") -> HashFile:
    """Read a v1 or v2 file; anything else is a ``HashFileError`` naming the problem."""
    with gc_paused():
        return _fast(raw) or _slow(raw, source)


def _slow(raw: bytes, source: str) -> HashFile:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HashFileError(f"{source}: not valid JSON ({len(raw)} bytes): {exc}") from exc
    if not isinstance(data, dict):
        raise HashFileError(f"{source}: top level must be an object")
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in (1, VERSION):
        raise HashFileError(f"{source}: unsupported version {version!r:.20}")
    bottles = data.get("bottles")
    if bottles is None and version == 1:
        # The oldest scripts wrote the entries at the top level.
        bottles = {k: v for k, v in data.items() if k not in ("version", "last_updated")}
    if not isinstance(bottles, dict):
        raise HashFileError(f"{source}: bottles must be an object")
    try:
        entries = {k: _entry(k, v, version) for k, v in bottles.items()}
    except HashFileError as exc:
        raise HashFileError(f"{source}: {exc}") from None
    last = data.get("last_updated", "")
    return HashFile(entries, last if isinstance(last, str) else "", 1 if version == 1 else None)


def entry_problem(key: str, entry: HashEntry) -> str | None:
    """Why the reader would refuse ``key`` → ``entry``, or None: its own rules, so a
    writer can check an entry before it goes into a file every later run must read."""
    try:
        _checked(key, entry.sha256, entry.download_date, entry.file_size, entry.s3_key)
    except HashFileError as exc:
        return str(exc)
    return None


# A checkpoint writes the whole file (~50,000 entries) up to hundreds of times a run;
# the rules cost ~9 µs an entry (the bottle-key pattern backtracks), 0.45 s a write, and
# nearly every entry was checked at the checkpoint before.
@functools.lru_cache(maxsize=1 << 17)
def _cached_problem(key: str, entry: HashEntry) -> str | None:
    return entry_problem(key, entry)


def dumps(hf: HashFile) -> bytes:
    """Serialise ``hf``; raises ``HashFileError`` naming the first entry the reader would
    refuse, since a file it cannot read back stops every later sync and verify."""
    for key, entry in hf.bottles.items():
        try:
            problem = _cached_problem(key, entry)
        except TypeError:  # a field no reader yields, unhashable: refused all the same
            problem = entry_problem(key, entry)
        if problem is not None:
            raise HashFileError(f"refusing to write a hash file the reader would refuse: {problem}")
    body = {
        "version": VERSION,
        "last_updated": hf.last_updated or utc_now(),
        "bottles": {
            key: {
                "sha256": e.sha256,
                "download_date": e.download_date,
                "file_size": e.file_size,
                "s3_key": e.s3_key,
            }
            for key, e in sorted(hf.bottles.items())
        },
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def merge(base: HashFile, *others: Mapping[str, HashEntry], now: str | None = None) -> HashFile:
    """Union of entries; where a key is in several, the last one given wins (the running
    sync's own entries go last: its catalog names the bottle that is current)."""
    merged = dict(base.bottles)
    for entries in others:
        merged.update(entries)
    return HashFile(merged, now or utc_now())


def missing_from(hf: HashFile, entries: Mapping[str, HashEntry]) -> dict[str, HashEntry]:
    """The entries ``hf`` does not already hold exactly (what a save still has to add)."""
    return {k: e for k, e in entries.items() if hf.bottles.get(k) != e}
