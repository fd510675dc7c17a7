"""``bottles_hash.json``: the model, v1→v2 migration, merge and serialisation. No I/O.

Entries are facts ("this object holds these bytes"), so a writer that lost a conditional
write merges by union. Where it and the file disagree about one key, the writer's entry
wins: it comes from the catalog of the running sync (one sync holds the bucket at a time),
while the file's may be a rebuild the catalog has moved on from, stored the same day.

Beside ``bottles``, a ``quarantine`` object (omitted while empty) holds the bottles whose
bytes failed verification in consecutive runs (``Suspect``): the state that lets a bottle
corrupt upstream be quarantined instead of failing every week. Readers that predate it
ignore it (msgspec skips unknown fields; the checked reader reads ``bottles`` only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import orjson

from mirrord.core.errors import HashFileError
from mirrord.core.models import (
    MAX_JSON_INT,
    SHA256_RE,
    HashEntry,
    gc_paused,
    is_bottle_key,
    is_date,
    is_hash_key,
)

VERSION = 2
# Runs in a row whose bytes of one bottle failed verification before it is quarantined:
# one bad run is a glitch, three weekly ones are a bottle broken upstream.
QUARANTINE_AFTER = 3
TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # jobs.JOB_ID_RE


@dataclass(frozen=True, slots=True)
class Suspect:
    """A bottle whose bytes failed verification (sha256 mismatch, or a body past its size
    cap) in ``count`` consecutive runs; quarantined from ``QUARANTINE_AFTER`` on. A run is
    a job: one handed on (Lambda to daemon) or delivered again counts once."""

    expected_sha256: str  # the catalog's
    actual_sha256: str | None  # what was served; None when cut off past its size cap
    first_seen: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    last_seen: str
    count: int
    last_job: str  # the job that counted last

    @property
    def quarantined(self) -> bool:
        return self.count >= QUARANTINE_AFTER


def note_failure(
    current: Suspect | None, expected: str, actual: str | None, job_id: str, now: str
) -> Suspect:
    """``current`` after one more failed verification in job ``job_id``. Other bytes
    expected (a new rebuild under the same key) start a new count."""
    if current is None or current.expected_sha256 != expected:
        return Suspect(expected, actual, now, now, 1, job_id)
    count = current.count if current.last_job == job_id else current.count + 1
    return replace(current, actual_sha256=actual, last_seen=now, count=count, last_job=job_id)


@dataclass(frozen=True, slots=True)
class HashFile:
    bottles: Mapping[str, HashEntry] = field(default_factory=dict)
    last_updated: str = ""
    migrated_from: int | None = None  # 1 when read from a v1 file
    quarantine: Mapping[str, Suspect] = field(default_factory=dict)

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


def _suspect(
    key: str,
    expected: Any,
    actual: Any,
    first_seen: Any,
    last_seen: Any,
    count: Any,
    last_job: Any,
) -> Suspect:
    """The one rule for a quarantine record, for both readers, like ``_checked``."""
    where = f"quarantine[{key!r:.80}]"
    if not is_hash_key(key):
        raise HashFileError(f"{where}: the key must be <name>-<pkg_version>-<tag>")
    if not isinstance(expected, str) or not SHA256_RE.fullmatch(expected):
        raise HashFileError(f"{where}.expected_sha256 is not 64 lowercase hex digits")
    if actual is not None and (not isinstance(actual, str) or not SHA256_RE.fullmatch(actual)):
        raise HashFileError(f"{where}.actual_sha256 is not null or 64 lowercase hex digits")
    for name, value in (("first_seen", first_seen), ("last_seen", last_seen)):
        if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
            raise HashFileError(f"{where}.{name} must be a UTC time YYYY-MM-DDTHH:MM:SSZ")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_JSON_INT:
        raise HashFileError(f"{where}.count must be an integer from 1 to {MAX_JSON_INT}")
    if not isinstance(last_job, str) or not _JOB_ID_RE.fullmatch(last_job):
        raise HashFileError(f"{where}.last_job must be a job id ([A-Za-z0-9._:-], 1-128)")
    return Suspect(expected, actual, first_seen, last_seen, count, last_job)


def suspect_problem(key: str, s: Suspect) -> str | None:
    """Why the reader would refuse ``key`` → ``s``, or None (see ``entry_problem``)."""
    try:
        _suspect(
            key, s.expected_sha256, s.actual_sha256, s.first_seen, s.last_seen, s.count, s.last_job
        )
    except HashFileError as exc:
        return str(exc)
    return None


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


class _Suspect(msgspec.Struct):
    expected_sha256: str
    first_seen: str
    last_seen: str
    count: int
    last_job: str
    actual_sha256: str | None = None


class _V2(msgspec.Struct):
    version: Literal[2]
    bottles: dict[str, _Entry]
    last_updated: Any = ""
    quarantine: dict[str, _Suspect] = {}


_DECODER = msgspec.json.Decoder(_V2)


def _fast(raw: bytes) -> HashFile | None:
    """A well-formed v2 file, decoded in C; None sends the document to the slow path,
    which names what is wrong (or reads a v1 file)."""
    try:
        data = _DECODER.decode(raw)
    except msgspec.MsgspecError:
        return None
    entries: dict[str, HashEntry] = {}
    quarantine: dict[str, Suspect] = {}
    try:
        for key, e in data.bottles.items():
            entries[key] = _checked(key, e.sha256, e.download_date, e.file_size, e.s3_key)
        for key, q in data.quarantine.items():
            quarantine[key] = _suspect(
                key,
                q.expected_sha256,
                q.actual_sha256,
                q.first_seen,
                q.last_seen,
                q.count,
                q.last_job,
            )
    except HashFileError:
        return None
    last = data.last_updated
    return HashFile(entries, last if isinstance(last, str) else "", None, quarantine)


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
    raw_quarantine = data.get("quarantine", {}) if version == VERSION else {}
    if not isinstance(raw_quarantine, dict):
        raise HashFileError(f"{source}: quarantine must be an object")
    try:
        entries = {k: _entry(k, v, version) for k, v in bottles.items()}
        quarantine = {k: _quarantine_record(k, v) for k, v in raw_quarantine.items()}
    except HashFileError as exc:
        raise HashFileError(f"{source}: {exc}") from None
    last = data.get("last_updated", "")
    return HashFile(
        entries, last if isinstance(last, str) else "", 1 if version == 1 else None, quarantine
    )


def _quarantine_record(key: str, raw: Any) -> Suspect:
    if not isinstance(raw, dict):
        raise HashFileError(f"quarantine[{key!r:.80}] must be an object")
    return _suspect(
        key,
        raw.get("expected_sha256"),
        raw.get("actual_sha256"),
        raw.get("first_seen"),
        raw.get("last_seen"),
        raw.get("count"),
        raw.get("last_job"),
    )


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


def _exact(key: str, entry: HashEntry) -> bool:
    """Fields of exactly the types a reader yields, so equal means identical: the cache
    must not answer for ``file_size`` 5.0 or True what it found for 5 or 1 (equal and
    hashing alike, yet 5.0 would be written as a float the reader refuses)."""
    size = entry.file_size
    return (
        type(key) is str
        and type(entry.sha256) is str
        and type(entry.download_date) is str
        and type(entry.s3_key) is str
        and (size is None or type(size) is int)
    )


def dumps(hf: HashFile) -> bytes:
    """Serialise ``hf``; raises ``HashFileError`` naming the first entry the reader would
    refuse, since a file it cannot read back stops every later sync and verify."""
    for key, entry in hf.bottles.items():
        problem = (_cached_problem if _exact(key, entry) else entry_problem)(key, entry)
        if problem is not None:
            raise HashFileError(f"refusing to write a hash file the reader would refuse: {problem}")
    for key, suspect in hf.quarantine.items():  # a handful: no cache needed
        if (problem := suspect_problem(key, suspect)) is not None:
            raise HashFileError(f"refusing to write a hash file the reader would refuse: {problem}")
    body: dict[str, Any] = {
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
    if hf.quarantine:  # absent while empty: files stay as they were for every mirror
        body["quarantine"] = {
            key: {
                "expected_sha256": q.expected_sha256,
                "actual_sha256": q.actual_sha256,
                "first_seen": q.first_seen,
                "last_seen": q.last_seen,
                "count": q.count,
                "last_job": q.last_job,
            }
            for key, q in sorted(hf.quarantine.items())
        }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def merge(
    base: HashFile,
    *others: Mapping[str, HashEntry],
    now: str | None = None,
    quarantine: Mapping[str, Suspect | None] | None = None,
) -> HashFile:
    """Union of entries; where a key is in several, the last one given wins (the running
    sync's own entries go last: its catalog names the bottle that is current).

    ``quarantine``: the running sync's records, which win the same way; None removes a
    key's record (its bottle verified). A record whose key now holds the bytes it
    expected is dropped whoever wrote it: that bottle is in the mirror."""
    merged = dict(base.bottles)
    for entries in others:
        merged.update(entries)
    held = dict(base.quarantine)
    for key, suspect in (quarantine or {}).items():
        if suspect is None:
            held.pop(key, None)
        else:
            held[key] = suspect
    kept = {
        k: q
        for k, q in held.items()
        if (e := merged.get(k)) is None or e.sha256 != q.expected_sha256
    }
    return HashFile(merged, now or utc_now(), quarantine=kept)


def quarantine_missing(hf: HashFile, records: Mapping[str, Suspect | None]) -> bool:
    """Whether ``hf`` lacks any of ``records`` (None: holds a record it should not)."""
    return any(hf.quarantine.get(k) != q for k, q in records.items())


def missing_from(hf: HashFile, entries: Mapping[str, HashEntry]) -> dict[str, HashEntry]:
    """The entries ``hf`` does not already hold exactly (what a save still has to add)."""
    return {k: e for k, e in entries.items() if hf.bottles.get(k) != e}
