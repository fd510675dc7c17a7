"""formula.json → frozen formulae, and brew's choice of bottle for each target machine
(what each tag means: core/releases.py).

Pure: bytes in, records out. A malformed formula is rejected on its own (the rest go on);
only a catalog that is not a JSON list of objects as a whole raises ``CatalogError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import msgspec
import orjson

from mirrord.core.errors import CatalogError, FormulaError, SettingsError
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
    gc_paused,
    is_formula_name,
)
from mirrord.core.releases import DEFAULT_RELEASES, Releases


@dataclass(frozen=True, slots=True)
class Catalog:
    formulae: tuple[Formula, ...]
    rejected: tuple[FormulaError, ...] = ()
    # formula.json as fetched: core/closure.py decodes the dependency fields from it only
    # when a job names formulae, so a whole-catalog sync never pays for them.
    source: bytes = field(default=b"", repr=False, compare=False)


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
            is_formula_name(name)
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
            return replace(fast, source=raw)
        return replace(_slow(raw), source=raw)


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
    if not is_formula_name(name):
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
