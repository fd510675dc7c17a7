"""formula.json → frozen formulae, and brew's choice of bottle for each target machine.

Pure: bytes in, records out. A malformed formula is rejected on its own (the rest go on);
only a catalog that is not a JSON list of objects as a whole raises ``CatalogError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import orjson

from mirrord.core.errors import CatalogError, FormulaError, SettingsError
from mirrord.core.models import (
    MAX_JSON_INT,
    MAX_NAME_LEN,
    MAX_TAG_LEN,
    MAX_VERSION_LEN,
    NAME_RE,
    SHA256_RE,
    TAG_RE,
    VERSION_RE,
    Bottle,
    BottleFile,
    Formula,
    gc_paused,
)

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


@dataclass(frozen=True, slots=True)
class Catalog:
    formulae: tuple[Formula, ...]
    rejected: tuple[FormulaError, ...] = ()


# --- the fast path: msgspec decodes only the fields mirroring needs, skipping in C the
# rest of a 30 MB formula.json (caveats, dependencies, variations…) that orjson would
# first turn into Python objects. Any entry that breaks a rule sends the whole document
# down the slow path below, which rejects exactly that entry with its reason; both paths
# give the same Catalog (tests/test_catalog.py compares them).

_SCHEMES = ("https://", "http://")


class _File(msgspec.Struct):
    url: str
    # Checked in C while decoding: cheaper than any per-string check in Python.
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
    cellar: Any = ""


class _Stable(msgspec.Struct):
    files: dict[str, _File]
    # msgspec takes no bound beyond int64 (MAX_JSON_INT is larger): checked in _fast.
    rebuild: Annotated[int, msgspec.Meta(ge=0)] = 0


class _Bottle(msgspec.Struct):
    stable: _Stable | None = None


class _Versions(msgspec.Struct):
    stable: str


class _Entry(msgspec.Struct):
    name: str
    versions: _Versions
    revision: Annotated[int, msgspec.Meta(ge=0)] = 0
    bottle: _Bottle | None = None


_DECODER = msgspec.json.Decoder(list[_Entry])


def _fast(raw: bytes) -> Catalog | None:
    """The catalog when every entry is well-formed and names are unique, else None."""
    try:
        entries = _DECODER.decode(raw)
    except msgspec.MsgspecError:
        return None
    formulae: list[Formula] = []
    tags: dict[str, bool] = {}  # a catalog has a few dozen tags: check each once
    for e in entries:
        name, version = e.name, e.versions.stable
        if not (
            len(name) <= MAX_NAME_LEN
            and NAME_RE.fullmatch(name)
            and len(version) <= MAX_VERSION_LEN
            and VERSION_RE.fullmatch(version)
        ):
            return None
        if e.revision > MAX_JSON_INT:
            return None
        stable = e.bottle.stable if e.bottle is not None else None
        if stable is None:
            formulae.append(Formula(name, version, e.revision))
            continue
        if stable.rebuild > MAX_JSON_INT:
            return None
        files = []
        for tag, f in stable.files.items():
            ok = tags.get(tag)
            if ok is None:
                ok = tags[tag] = len(tag) <= MAX_TAG_LEN and TAG_RE.fullmatch(tag) is not None
            if not ok or not f.url.startswith(_SCHEMES):
                return None
            cellar = f.cellar if isinstance(f.cellar, str) else ""
            files.append(BottleFile(tag, f.url, f.sha256, cellar))
        formulae.append(Formula(name, version, e.revision, stable.rebuild, tuple(files)))
    if len({f.name for f in formulae}) != len(formulae):
        return None  # duplicates: the slow path reports which
    if len({f"{f.name}-{f.pkg_version}" for f in formulae}) != len(formulae):
        return None  # colliding keys: the slow path reports which
    return Catalog(tuple(formulae), ())


def parse_catalog(raw: bytes) -> Catalog:
    """Parse formula.json; bad entries go to ``rejected`` with the reason."""
    with gc_paused():
        fast = _fast(raw)
        if fast is not None and fast.formulae:
            return fast
        return _slow(raw)


def _slow(raw: bytes) -> Catalog:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CatalogError(
            f"formula.json is not valid JSON ({len(raw)} bytes; truncated?): {exc}"
        ) from exc
    if not isinstance(data, list):
        raise CatalogError(f"formula.json must be a JSON list, got {type(data).__name__}")
    formulae: list[Formula] = []
    rejected: list[FormulaError] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        try:
            formula = formula_from_api(entry, index)
        except FormulaError as exc:
            rejected.append(exc)
            continue
        if formula.name in seen:
            rejected.append(FormulaError(formula.name, "listed twice; first entry kept"))
            continue
        seen.add(formula.name)
        formulae.append(formula)
    formulae, collided = _without_collisions(formulae)
    rejected += collided
    if data and not formulae:
        raise CatalogError(f"formula.json has {len(data)} entries and none is usable")
    return Catalog(tuple(formulae), tuple(rejected))


def _without_collisions(formulae: list[Formula]) -> tuple[list[Formula], list[FormulaError]]:
    """Names and versions both hold '-': ``python`` at ``tk@3.12-3.12.1`` and
    ``python-tk@3.12`` at ``3.12.1`` spell one ``<name>-<pkg_version>``, so one hash key
    and one file name per tag. Which formula a key means cannot be told, and keeping
    either would drop the other unseen: both are refused."""
    by_stem: dict[str, list[Formula]] = {}
    for f in formulae:
        by_stem.setdefault(f"{f.name}-{f.pkg_version}", []).append(f)
    if len(by_stem) == len(formulae):
        return formulae, []
    kept: list[Formula] = []
    refused: list[FormulaError] = []
    for f in formulae:
        group = by_stem[f"{f.name}-{f.pkg_version}"]
        if len(group) == 1:
            kept.append(f)
            continue
        others = [g.name for g in group if g is not f]
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        refused.append(
            FormulaError(
                f.name,
                f"collides with formula {others[0]!r}{more}: the same <name>-<pkg_version>, "
                "so the same hash keys and file names; both refused",
            )
        )
    return kept, refused


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str, label: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormulaError(label, f"{where}{name} must be {kind.__name__}, got {value!r:.60}")
    return value


def _counter(value: Any, field: str, name: str) -> int:
    """revision and rebuild: a larger one would shape keys the hash file refuses, and
    the mirror would write a file that every later run stops at."""
    rule = f"{field} must be an int from 0 to {MAX_JSON_INT}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormulaError(name, f"{rule}, got {value!r:.60}")
    if not 0 <= value <= MAX_JSON_INT:
        # Its size, not its digits: str() of an int past 4,300 digits raises.
        small = abs(value) <= MAX_JSON_INT
        shown = str(value) if small else f"an int of {value.bit_length()} bits"
        raise FormulaError(name, f"{rule}, got {shown}")
    return value


def formula_from_api(entry: Any, index: int = 0) -> Formula:
    """One formula.json entry → ``Formula``; raises ``FormulaError`` naming the field."""
    if not isinstance(entry, dict):
        raise FormulaError(f"#{index}", f"entry must be an object, got {type(entry).__name__}")
    raw_name = entry.get("name")
    label = raw_name if isinstance(raw_name, str) else f"#{index}"
    name = _field(entry, "name", str, "", label)
    if len(name) > MAX_NAME_LEN or not NAME_RE.fullmatch(name):
        raise FormulaError(label[:MAX_NAME_LEN], "name has characters outside [A-Za-z0-9@+._-]")
    versions = _field(entry, "versions", dict, "", name)
    version = _field(versions, "stable", str, "versions.", name)
    if len(version) > MAX_VERSION_LEN or not VERSION_RE.fullmatch(version):
        raise FormulaError(name, f"versions.stable {version!r:.60} is not a safe version")
    revision = _counter(entry.get("revision", 0), "revision", name)

    bottle = entry.get("bottle") or {}
    if not isinstance(bottle, dict):
        raise FormulaError(name, "bottle must be an object")
    stable = bottle.get("stable")
    if not stable:
        return Formula(name, version, revision)
    if not isinstance(stable, dict):
        raise FormulaError(name, "bottle.stable must be an object")
    rebuild = _counter(stable.get("rebuild", 0), "bottle.stable.rebuild", name)
    files_raw = _field(stable, "files", dict, "bottle.stable.", name)
    files: list[BottleFile] = []
    for tag, spec in files_raw.items():  # dict order is the catalog's order: keep it
        where = f"bottle.stable.files.{tag}."
        if not isinstance(tag, str) or len(tag) > MAX_TAG_LEN or not TAG_RE.fullmatch(tag):
            raise FormulaError(name, f"bottle tag {tag!r:.60} is not a valid tag")
        if not isinstance(spec, dict):
            raise FormulaError(name, f"{where[:-1]} must be an object")
        url = _field(spec, "url", str, where, name)
        if not url.startswith(("https://", "http://")):
            raise FormulaError(name, f"{where}url must be http(s), got {url!r:.60}")
        sha256 = _field(spec, "sha256", str, where, name)
        if not SHA256_RE.fullmatch(sha256):
            raise FormulaError(name, f"{where}sha256 is not 64 lowercase hex digits")
        cellar = spec.get("cellar", "")
        files.append(BottleFile(tag, url, sha256, cellar if isinstance(cellar, str) else ""))
    return Formula(name, version, revision, rebuild, tuple(files))


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


def select_file(
    formula: Formula, target: str, releases: Releases = DEFAULT_RELEASES
) -> BottleFile | None:
    """The bottle brew installs on ``target``: exact tag, else ``all``, else the first
    tag in files order of the same architecture for an older macOS release."""
    return _select(formula, {f.tag: f for f in formula.files}, target, releases)


def _select(
    formula: Formula, by_tag: Mapping[str, BottleFile], target: str, releases: Releases
) -> BottleFile | None:
    if target in by_tag:
        return by_tag[target]
    if "all" in by_tag:
        return by_tag["all"]
    parse = releases.parse
    want = parse(target)
    if want.os != "macos":
        return None
    for file in formula.files:
        have = parse(file.tag)
        if have.os == "macos" and have.arch == want.arch and have.release < want.release:
            return file
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    bottles: tuple[Bottle, ...]  # unique by hash key, in catalog order
    no_bottle: int  # (formula, target) pairs with nothing for brew to pour


def select_bottles(
    formulae: Iterable[Formula], targets: Sequence[str], releases: Releases = DEFAULT_RELEASES
) -> Selection:
    """Every bottle the targets need; several targets sharing one file yield it once."""
    chosen: dict[str, Bottle] = {}
    no_bottle = 0
    for formula in formulae:
        by_tag = {f.tag: f for f in formula.files}
        picked: set[str] = set()
        for target in targets:
            file = _select(formula, by_tag, target, releases)
            if file is None:
                no_bottle += 1
            elif file.tag not in picked:  # several targets often share one bottle
                picked.add(file.tag)
                bottle = Bottle(
                    formula.name,
                    formula.pkg_version,
                    file.tag,
                    formula.rebuild,
                    file.sha256,
                    file.url,
                )
                chosen.setdefault(bottle.hash_key, bottle)
    return Selection(tuple(chosen.values()), no_bottle)


def filter_formulae(catalog: Catalog, names: Sequence[str] | None) -> tuple[Formula, ...]:
    """Restrict to ``names`` (None = all); an unknown name is a usage error."""
    if names is None:
        return catalog.formulae
    by_name = {f.name: f for f in catalog.formulae}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SettingsError(f"--formula: not in the catalog: {', '.join(sorted(unknown))}")
    return tuple(by_name[n] for n in dict.fromkeys(names))
