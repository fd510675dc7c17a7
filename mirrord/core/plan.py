"""Selected bottles × hash file → what to fetch, what to link, what to skip. Pure."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from mirrord.core.hashfile import HashFile
from mirrord.core.models import Bottle, HashEntry
from mirrord.core.oci import descriptors, manifest_ref


@dataclass(frozen=True, slots=True)
class Transfer:
    """One download. ``aliases`` are other hash keys with the same bytes: they are
    recorded pointing at this object once it is stored, never fetched again."""

    bottle: Bottle
    key: str
    size_hint: int = 0
    aliases: tuple[Bottle, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    date: str
    transfers: tuple[Transfer, ...]  # largest known first
    links: Mapping[str, HashEntry] = field(default_factory=dict)
    skipped: int = 0  # bottles whose sha256 the hash file already holds (links included)
    no_bottle: int = 0

    @property
    def known_bytes(self) -> int:
        return sum(t.size_hint for t in self.transfers)


def _size_hints(hf: HashFile, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(name, tag) → newest known size, from previous versions' entries, for ``wanted``.

    Hash keys are ``<name>-<pkg_version>-<tag>``; names and versions may both hold '-',
    so every key beginning with ``<name>-`` and ending with ``-<tag>`` counts, found by
    bisecting the sorted keys: a weekly plan wants a few hundred of ~50,000.
    """
    if not wanted:
        return {}
    keys = sorted(hf.bottles)
    hints: dict[tuple[str, str], int] = {}
    for name, tag in wanted:
        prefix, suffix = f"{name}-", f"-{tag}"
        newest = ""
        for key in islice(keys, bisect_left(keys, prefix), None):
            if not key.startswith(prefix):
                break
            entry = hf.bottles[key]
            if (
                key.endswith(suffix)
                and len(key) > len(prefix) + len(suffix)
                and entry.file_size is not None
                and entry.download_date > newest
            ):
                newest, hints[(name, tag)] = entry.download_date, entry.file_size
    return hints


def make_plan(
    bottles: tuple[Bottle, ...],
    hf: HashFile,
    date: str,
    no_bottle: int = 0,
    *,
    external: HashFile | None = None,
) -> Plan:
    """``external``: another mirror's hash file. Bottles it lists are skipped; they are
    never linked, since their objects live in another bucket."""
    stored = hf.by_sha256()
    elsewhere = {e.sha256 for e in external.bottles.values()} if external else set()
    links: dict[str, HashEntry] = {}
    skipped = 0
    primaries: dict[str, Bottle] = {}
    aliases: dict[str, list[Bottle]] = {}
    for bottle in bottles:
        entry = hf.bottles.get(bottle.hash_key)
        if entry is not None and entry.sha256 == bottle.sha256:
            skipped += 1
        elif bottle.sha256 in stored:
            links[bottle.hash_key] = stored[bottle.sha256]
            skipped += 1
        elif bottle.sha256 in elsewhere:
            skipped += 1
        elif bottle.sha256 in primaries:
            aliases[bottle.sha256].append(bottle)
        else:
            primaries[bottle.sha256] = bottle
            aliases[bottle.sha256] = []
    hints = _size_hints(hf, {(b.name, b.tag) for b in primaries.values()})
    transfers = [
        Transfer(b, b.s3_key(date), hints.get((b.name, b.tag), 0), tuple(aliases[sha]))
        for sha, b in primaries.items()
    ]
    # Largest first, so the long transfers do not start last and stretch the run.
    transfers.sort(key=lambda t: t.size_hint, reverse=True)
    return Plan(date, tuple(transfers), links, skipped, no_bottle)


# --- size estimate (the enqueuer's routing decision) -----------------------------------

_BLOB_SUFFIX = re.compile(r"/blobs/sha256:[0-9a-f]{64}$")


def index_url(bottle: Bottle) -> str | None:
    """Where the registry keeps the OCI image index describing ``bottle``:
    ``…/<image>/manifests/<pkg_version>[-<rebuild>]``. None for a catalog url that is not
    a registry blob."""
    if not _BLOB_SUFFIX.search(bottle.url):
        return None
    return _BLOB_SUFFIX.sub(
        f"/manifests/{manifest_ref(bottle.pkg_version, bottle.rebuild)}", bottle.url
    )


# ASCII digits only (str.isdigit() takes '²', which int() refuses), and few enough for
# int(): 15 digits are a petabyte, past any bottle.
_SIZE = re.compile(r"[0-9]{1,15}")


def sizes_from_index(index: Mapping[str, Any]) -> dict[str, int]:
    """sha256 → bytes, from the ``sh.brew.bottle.digest``/``.size`` annotations. The
    index is the registry's word: a value that is not a plain number is left out."""
    return {
        d.digest: int(d.size)
        for d in descriptors(index) or ()
        if d.digest is not None and d.size is not None and _SIZE.fullmatch(d.size)
    }


@dataclass(frozen=True, slots=True)
class Estimate:
    bytes: int
    from_index: int  # bottles sized by their image index
    from_history: int  # …by the previous version in the hash file
    unknown: int  # neither: counted as 0 bytes

    def to_dict(self) -> dict[str, int]:
        return {
            "bytes": self.bytes,
            "from_index": self.from_index,
            "from_history": self.from_history,
            "unknown": self.unknown,
        }


def estimate(plan: Plan, index_sizes: Mapping[str, int]) -> Estimate:
    """Bytes the plan will fetch: image-index sizes first, the previous version's size
    of the same formula/tag where the index is missing."""
    total = by_index = by_history = unknown = 0
    for t in plan.transfers:
        if t.bottle.sha256 in index_sizes:
            total += index_sizes[t.bottle.sha256]
            by_index += 1
        elif t.size_hint:
            total += t.size_hint
            by_history += 1
        else:
            unknown += 1
    return Estimate(total, by_index, by_history, unknown)
