"""``mirrord prune``: which bottle objects a mirror may delete, and in what order. Pure.

A bottle object (``YYYY-MM-DD/<file>``, its hash-file entry, its brew-6 blob
``v2/homebrew/core/<image>/blobs/sha256:<d>`` and its version's image index) goes only
when all of these hold (docs/design.md §13):

* no current catalog entry names it (its hash key or its sha256, any tag);
* no API file the mirror publishes names it (same test: brew clients holding those
  files ask for it);
* it is not among the last ``keep_versions`` versions of its formula for its bottle tag
  (newest first by the date the mirror stored them);
* it is at least ``keep_days`` days old by its hash-entry date (an unrecorded object: by
  its folder's date).

Objects no hash-file entry names (a prune that died after cutting the hash file) are
judged by the same rules, so a rerun finishes what a crash left; an old rebuild whose
key the file records at another object (a rebottle superseded it) is kept only while
the catalog or the API files name its bytes, and for ``keep_days``. A dated object goes only when no kept entry names it (links), a blob
only when no kept bottle has its digest, an index only when no kept bottle is of its
version. The service cuts the hash file first, then deletes the ``v2/`` keys, then the
dated objects: a crash anywhere leaves nothing recorded that is gone, and the dated
objects last, so a rerun still finds every companion key it has to delete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from mirrord.core.brew import PORTABLE_RUBY
from mirrord.core.models import BOTTLE_KEY_RE, Formula, HashEntry, is_bottle_key
from mirrord.core.oci import OCI_PREFIX, blob_key, image_name, index_key, manifest_ref

KEEP_VERSIONS = 2
KEEP_DAYS = 30
MAX_KEEP_DAYS = 3650
_BOTTLE_SUFFIX = re.compile(r"\.bottle(?:\.([0-9]+))?\.tar\.gz")


@dataclass(frozen=True, slots=True)
class Rules:
    keep_versions: int = KEEP_VERSIONS  # ≥ 1
    keep_days: int = KEEP_DAYS  # 0..3650
    today: str = ""  # YYYY-MM-DD, UTC

    @property
    def cutoff(self) -> str:
        """The newest date an object may carry and still go (``keep_days`` days ago)."""
        return (date.fromisoformat(self.today) - timedelta(days=self.keep_days)).isoformat()


@dataclass(frozen=True, slots=True)
class Named:
    """What must stay whatever its age: hash keys and sha256s the catalog or the
    published API files name, and the formula names they know (to read keys by)."""

    hash_keys: frozenset[str] = frozenset()
    sha256s: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()


def named_by(formulae: Iterable[Formula]) -> Named:
    """Every bottle of every tag of ``formulae`` (a catalog, or an API file's)."""
    keys: set[str] = set()
    shas: set[str] = set()
    names: set[str] = set()
    for formula in formulae:
        names.add(formula.name)
        for file in formula.files:
            keys.add(f"{formula.name}-{formula.pkg_version}-{file.tag}")
            shas.add(file.sha256)
    return Named(frozenset(keys), frozenset(shas), frozenset(names))


def joined(*parts: Named) -> Named:
    return Named(
        frozenset().union(*(p.hash_keys for p in parts)),
        frozenset().union(*(p.sha256s for p in parts)),
        frozenset().union(*(p.names for p in parts)),
    )


@dataclass(frozen=True, slots=True)
class Held:
    """One bottle the mirror holds: a hash-file entry (``key`` set), or a dated object no
    entry names (``key`` None; ``sha256`` from its metadata, None when it has none)."""

    s3_key: str
    sha256: str | None
    date: str
    size: int
    key: str | None = None
    present: bool = True  # the object is there (an entry may outlive it: verify's "missing")

    @property
    def recorded(self) -> bool:
        return self.key is not None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A bottle key read: the file's ``<name>-<pkg_version>`` stem, tag and rebuild, and
    the name and version when a known name (or the digit rule) splits the stem."""

    stem: str
    tag: str
    rebuild: int
    name: str | None
    pkg_version: str | None

    @property
    def hash_key(self) -> str:
        return f"{self.stem}-{self.tag}"


def split_stem(stem: str, names: frozenset[str]) -> tuple[str, str] | None:
    """``<name>-<pkg_version>`` → (name, pkg_version): the longest known name the stem
    starts with (names and versions both hold '-': ``ca-certificates-2024-03-11``), else
    at the first '-' before a digit (a formula gone from the catalog and the API files),
    else None."""
    for i in range(len(stem) - 1, 0, -1):
        if stem[i] == "-" and stem[:i] in names:
            return stem[:i], stem[i + 1 :]
    for i, ch in enumerate(stem[:-1]):
        if ch == "-" and stem[i + 1].isascii() and stem[i + 1].isdigit() and i > 0:
            return stem[:i], stem[i + 1 :]
    return None


def parse_bottle_key(s3_key: str, names: frozenset[str]) -> Parsed | None:
    """``YYYY-MM-DD/<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz`` read, or None
    for any other key (never a key prune acts on)."""
    if not is_bottle_key(s3_key):
        return None
    file = s3_key.partition("/")[2]
    suffix = _BOTTLE_SUFFIX.search(file)
    if suffix is None:
        return None
    stem, _, tag = file[: suffix.start()].rpartition(".")  # tags hold no '.'
    split = split_stem(stem, names)
    name, version = split if split is not None else (None, None)
    return Parsed(stem, tag, int(suffix.group(1) or 0), name, version)


def read_held(held: Held, names: frozenset[str]) -> Parsed | None:
    """A bottle read by its hash key when it has one (a link's object is another
    bottle's file: its name says nothing of this one), else by its object's key."""
    from_key = parse_bottle_key(held.s3_key, names)
    if held.key is None or from_key is None:
        return from_key
    stem, _, tag = held.key.rpartition("-")  # tags hold no '-'
    if (stem, tag) == (from_key.stem, from_key.tag):
        return from_key
    split = split_stem(stem, names)
    name, version = split if split is not None else (None, None)
    return Parsed(stem, tag, 0, name, version)  # a link: its own rebuild is not known


def folder_date(s3_key: str) -> str:
    match = BOTTLE_KEY_RE.fullmatch(s3_key)
    return match.group(1) if match else ""


@dataclass(frozen=True, slots=True)
class Verdict:
    held: Held
    parsed: Parsed | None
    why: str  # "gone", or why it stays: named, recent, latest, unreadable


@dataclass
class PrunePlan:
    """What a prune removes, in the order it removes it, and what stays by reason."""

    entries: dict[str, HashEntry] = field(default_factory=dict)  # cut from the hash file
    v2: list[str] = field(default_factory=list)  # indexes and blobs, deleted second
    objects: list[str] = field(default_factory=list)  # dated objects, deleted last
    bytes: int = 0  # of the dated objects (blob copies double it; not counted)
    v2_bytes: int = 0  # of the blob copies, where the listing gave their size
    kept: dict[str, int] = field(default_factory=dict)  # reason → bottles
    unrecorded: int = 0  # of ``objects``: no entry named them (a crash's leftovers)
    sizes: dict[str, int] = field(default_factory=dict)  # key → bytes, of what goes

    @property
    def freed(self) -> int:
        return self.bytes + self.v2_bytes


def _version_order(pkg_version: str) -> tuple[tuple[int, int | str], ...]:
    """A tie-break between versions stored on one day: numbers compare as numbers."""
    parts = re.findall(r"[0-9]+|[A-Za-z]+", pkg_version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def latest_versions(
    verdicts: Iterable[tuple[Held, Parsed]], keep: int
) -> set[tuple[str, str, str]]:
    """(name, tag, pkg_version) of the last ``keep`` versions of each formula per bottle
    tag: newest first by the newest date the mirror stored one of its bottles."""
    newest: dict[tuple[str, str], dict[str, str]] = {}
    for held, parsed in verdicts:
        if parsed.name is None or parsed.pkg_version is None:
            continue
        seen = newest.setdefault((parsed.name, parsed.tag), {})
        seen[parsed.pkg_version] = max(seen.get(parsed.pkg_version, ""), held.date)
    latest: set[tuple[str, str, str]] = set()
    for (name, tag), seen in newest.items():
        order = sorted(seen, key=lambda v: (seen[v], _version_order(v)), reverse=True)
        latest.update((name, tag, v) for v in order[:keep])
    return latest


def judge(held: Sequence[Held], named: Named, rules: Rules) -> list[Verdict]:
    """Each bottle's fate by the rules above, in ``held``'s order."""
    parsed = [read_held(h, named.names) for h in held]
    latest = latest_versions(
        ((h, p) for h, p in zip(held, parsed, strict=True) if p is not None), rules.keep_versions
    )
    recorded = {h.key for h in held if h.key is not None}
    cutoff = rules.cutoff
    return [
        Verdict(h, p, _why(h, p, named, latest, cutoff, recorded))
        for h, p in zip(held, parsed, strict=True)
    ]


def _why(
    h: Held,
    p: Parsed | None,
    named: Named,
    latest: set[tuple[str, str, str]],
    cutoff: str,
    recorded: set[str],
) -> str:
    # An unrecorded object whose hash key the file records elsewhere is a rebuild the
    # entry has moved on from (verify's "superseded"): neither the key nor the version
    # keeps it, only its own bytes being named (a sync that died holding the new one).
    superseded = not h.recorded and p is not None and p.hash_key in recorded
    if not superseded and p is not None and p.hash_key in named.hash_keys:
        return "named"
    if h.sha256 is not None and h.sha256 in named.sha256s:
        return "named"
    if p is None or p.name is None or p.pkg_version is None or h.sha256 is None:
        return "unreadable"  # no name to group by, or (unrecorded) no digest to name a blob
    if not superseded and (p.name, p.tag, p.pkg_version) in latest:
        return "latest"
    if h.date > cutoff:
        return "recent"
    return "gone"


def _v2_keys(p: Parsed, sha256: str | None) -> list[str]:
    """The index, then the blob, a bottle has at the brew-6 keys (none for a name that
    makes no image, and never portable Ruby's, which no hash entry describes)."""
    image = image_name(p.name) if p.name else None
    if image is None or image == PORTABLE_RUBY or p.pkg_version is None:
        return []
    keys = [index_key(image, manifest_ref(p.pkg_version, p.rebuild))]
    if sha256 is not None:
        keys.append(blob_key(image, sha256))
    return keys


def plan_prune(
    held: Sequence[Held],
    named: Named,
    rules: Rules,
    v2_sizes: Mapping[str, int] | None = None,
) -> PrunePlan:
    """What goes: hash entries, the ``v2/`` keys no kept bottle shares, and the dated
    objects no kept entry names. ``v2_sizes``: a listing of ``v2/`` (key → size), to
    skip keys already gone and count the blob copies' bytes; None: every key computed."""
    plan = PrunePlan()
    verdicts = judge(held, named, rules)
    kept_objects: set[str] = set()
    kept_v2: set[str] = set()
    for v in verdicts:
        if v.why != "gone":
            plan.kept[v.why] = plan.kept.get(v.why, 0) + 1
            kept_objects.add(v.held.s3_key)
            if v.parsed is not None:
                kept_v2.update(_v2_keys(v.parsed, v.held.sha256))
    v2: dict[str, None] = {}
    objects: dict[str, int] = {}
    for v in verdicts:
        if v.why != "gone" or v.parsed is None:
            continue
        h = v.held
        if h.key is not None and h.sha256 is not None:
            plan.entries[h.key] = HashEntry(h.sha256, h.date, h.size, h.s3_key)
        v2.update(dict.fromkeys(k for k in _v2_keys(v.parsed, h.sha256) if k not in kept_v2))
        if h.present and h.s3_key not in kept_objects and h.s3_key not in objects:
            objects[h.s3_key] = h.size
            plan.unrecorded += not h.recorded
    plan.v2 = [k for k in v2 if k.startswith(OCI_PREFIX) and (v2_sizes is None or k in v2_sizes)]
    plan.sizes = {k: (v2_sizes or {}).get(k, 0) for k in plan.v2 if "/blobs/" in k}
    plan.v2_bytes = sum(plan.sizes.values())
    plan.objects = sorted(objects)
    plan.sizes.update(objects)
    plan.bytes = sum(objects.values())
    return plan


def held_bottles(
    entries: Mapping[str, HashEntry],
    listing: Mapping[str, int],
    unrecorded_sha256: Mapping[str, str | None],
) -> list[Held]:
    """Every bottle the mirror holds: the hash file's entries (sizes from the listing
    where the entry has none; an entry whose object is not there is judged all the
    same, its cut is what a rerun owes) and the listed dated objects no entry names,
    with the sha256 their metadata gave (``unrecorded_sha256``)."""
    held = [
        Held(
            e.s3_key,
            e.sha256,
            e.download_date,
            listing.get(e.s3_key, e.file_size or 0),
            k,
            e.s3_key in listing,
        )
        for k, e in entries.items()
    ]
    recorded = {e.s3_key for e in entries.values()}
    for s3_key, size in listing.items():
        if s3_key not in recorded and is_bottle_key(s3_key):
            sha = unrecorded_sha256.get(s3_key)
            held.append(Held(s3_key, sha, folder_date(s3_key), size))
    return held
