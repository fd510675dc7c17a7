"""macOS releases and the machines a mirror is for: what a bottle tag means (which macOS,
which architecture), which tags name real machines, and the targets ``auto`` picks from
the catalog. Pure: ``Releases`` is a value handed to whatever reads a tag."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mirrord.core.errors import SettingsError
from mirrord.core.models import MAX_TAG_LEN, Formula

# docs/design.md §4. Codenames before big_sur only ever appear as fallbacks in old data.
# The built-in table; MIRRORD_MACOS_RELEASES extends it (``Releases.extended``) so that a
# new macOS needs no new mirrord release.
MACOS_RELEASES: Mapping[str, float] = {
    "golden_gate": 27,
    "tahoe": 26,
    "sequoia": 15,
    "sonoma": 14,
    "ventura": 13,
    "monterey": 12,
    "big_sur": 11,
    "catalina": 10.15,
    "mojave": 10.14,
    "high_sierra": 10.13,
    "sierra": 10.12,
    "el_capitan": 10.11,
    "yosemite": 10.10,
}
OLDEST_TARGET = 10.15  # catalina; older codenames are only ever fallbacks
FIRST_APPLE_SILICON = 11.0  # big_sur
LAST_INTEL = 26.0  # tahoe
AUTO_RELEASES = 3
LINUX_TAGS = frozenset({"x86_64_linux", "arm64_linux"})
# What a macOS bottle tag looks like (brew: ``arm64_`` plus the codename, or the codename
# alone for Intel): lowercase ASCII words joined by '_'. No digits, which keeps
# x86_64_linux out; arm64_linux and all are refused by name (NOT_CODENAMES).
CODENAME_RE = re.compile(r"[a-z]+(?:_[a-z]+)*")
NOT_CODENAMES = frozenset({"all", "linux"})
_PARSED_MAX = 1024  # tags one Releases remembers; a real catalog holds a few dozen

Arch = Literal["arm64", "x86_64"]


@dataclass(frozen=True, slots=True)
class Platform:
    """What a bottle tag means: a macOS release on one architecture, Linux, or ``all``."""

    tag: str
    os: Literal["macos", "linux", "all", "unknown"]
    arch: Arch | None = None
    release: float = 0.0


def macos_looking(tag: str) -> bool:
    """A tag shaped like a macOS bottle tag, known or not (``arm64_redwood``, ``redwood``)."""
    codename = tag.removeprefix("arm64_")
    return codename not in NOT_CODENAMES and CODENAME_RE.fullmatch(codename) is not None


class Releases:
    """macOS codename → release number: the table every reading of a tag goes by.

    A value, handed to each function that reads tags (no module state is consulted), so
    ``MIRRORD_MACOS_RELEASES`` reaches them through Settings. Each instance remembers
    what its tags mean: a catalog holds a few dozen distinct tags, read ~10⁵ times.
    """

    __slots__ = ("_by_name", "_by_number", "_key", "_parsed")

    def __init__(self, table: Mapping[str, float]) -> None:
        self._by_name = dict(table)
        self._by_number = {number: name for name, number in self._by_name.items()}
        if len(self._by_number) != len(self._by_name):
            raise ValueError("two codenames share one release number")
        self._key = frozenset(self._by_name.items())
        self._parsed: dict[str, Platform] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Releases) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"Releases({self.spec()})"

    def spec(self) -> str:
        """``golden_gate=27,tahoe=26,…``, newest first: MIRRORD_MACOS_RELEASES' format."""
        ordered = sorted(self._by_name.items(), key=lambda item: -item[1])
        return ",".join(f"{name}={number:g}" for name, number in ordered)

    def get(self, codename: str) -> float | None:
        return self._by_name.get(codename)

    def codename(self, release: float) -> str:
        return self._by_number[release]

    def parse(self, tag: str) -> Platform:
        found = self._parsed.get(tag)
        if found is None:
            found = self._parse(tag)
            if len(self._parsed) < _PARSED_MAX:  # a hostile catalog's tags: bounded
                self._parsed[tag] = found
        return found

    def _parse(self, tag: str) -> Platform:
        if tag == "all":
            return Platform(tag, "all")
        if tag in LINUX_TAGS:
            return Platform(tag, "linux", "arm64" if tag.startswith("arm64") else "x86_64")
        arch: Arch = "x86_64"
        codename = tag
        if tag.startswith("arm64_"):
            arch, codename = "arm64", tag.removeprefix("arm64_")
        release = self._by_name.get(codename)
        if release is None:
            return Platform(tag, "unknown")
        return Platform(tag, "macos", arch, release)

    def extended(self, extra: Mapping[str, float]) -> Releases:
        """This table plus ``extra``; ``SettingsError`` for a codename that is no
        codename, or one that would give a known codename or release another meaning."""
        table = dict(self._by_name)
        numbers = dict(self._by_number)
        for name, number in extra.items():
            if not macos_looking(name) or name.startswith("arm64_"):
                raise SettingsError(f"{name!r:.40} is not a macOS codename (e.g. redwood)")
            if len(name) + len("arm64_") > MAX_TAG_LEN:
                raise SettingsError(f"{name[:40]!r}: longer than a bottle tag may be")
            if table.get(name, number) != number:
                raise SettingsError(
                    f"{name} is macOS {table[name]:g} already; it cannot be redefined as {number:g}"
                )
            if numbers.get(number, name) != name:
                raise SettingsError(f"release {number:g} is {numbers[number]} already, not {name}")
            table[name], numbers[number] = number, name
        return Releases(table)


DEFAULT_RELEASES = Releases(MACOS_RELEASES)


def parse_tag(tag: str, releases: Releases = DEFAULT_RELEASES) -> Platform:
    return releases.parse(tag)


def is_machine(p: Platform) -> bool:
    """True for tags that name a machine that exists (no arm64 catalina, no Intel 27)."""
    if p.os == "linux":
        return True
    if p.os != "macos" or p.release < OLDEST_TARGET:
        return False
    if p.arch == "arm64":
        return p.release >= FIRST_APPLE_SILICON
    return p.release <= LAST_INTEL


def catalog_tags(formulae: Iterable[Formula]) -> set[str]:
    """Every distinct bottle tag of the catalog (a few dozen among ~45,000 files)."""
    return {file.tag for formula in formulae for file in formula.files}


def auto_targets(
    formulae: Iterable[Formula], releases: Releases = DEFAULT_RELEASES
) -> tuple[str, ...]:
    """The three newest macOS releases seen in the catalog, as machine tags.

    Apple Silicon for each, Intel too where that release runs on Intel.
    """
    found: set[float] = set()
    for tag in catalog_tags(formulae):
        platform = releases.parse(tag)
        if platform.os == "macos" and platform.release >= OLDEST_TARGET:
            found.add(platform.release)
    targets: list[str] = []
    for release in sorted(found, reverse=True)[:AUTO_RELEASES]:
        codename = releases.codename(release)
        for tag in (f"arm64_{codename}", codename):
            if is_machine(releases.parse(tag)):
                targets.append(tag)
    return tuple(targets)


def unknown_tags(
    formulae: Iterable[Formula], releases: Releases = DEFAULT_RELEASES
) -> tuple[str, ...]:
    """The catalog's macOS-looking tags (``macos_looking``) whose codename ``releases``
    does not know, sorted: a new macOS that ``auto`` cannot see until it is added."""
    return tuple(
        sorted(
            tag
            for tag in catalog_tags(formulae)
            if macos_looking(tag) and releases.parse(tag).os == "unknown"
        )
    )


def validate_targets(tags: Sequence[str], releases: Releases = DEFAULT_RELEASES) -> tuple[str, ...]:
    """Explicit target tags must name real machines; raises ``SettingsError``."""
    if not tags:
        raise SettingsError("MIRRORD_PLATFORMS: no platform given")
    for tag in tags:
        if not is_machine(releases.parse(tag)):
            hint = ""
            if macos_looking(tag) and releases.parse(tag).os == "unknown":
                hint = "; a macOS mirrord does not know yet: add it to MIRRORD_MACOS_RELEASES"
            raise SettingsError(
                f"MIRRORD_PLATFORMS: {tag!r:.40} is not a machine tag "
                f"(e.g. arm64_tahoe, sequoia, x86_64_linux){hint}"
            )
    return tuple(dict.fromkeys(tags))
