"""Subset mirrors: a Brewfile's formulae and the runtime dependency closure brew would
install on each target machine (docs/design.md §4).

Pure. The catalog keeps formula.json's bytes (``Catalog.source``); the dependency fields
are decoded from them only when a job names formulae, so a full sync pays nothing.

brew's rules, as ``Formulary`` loads a formula from the API: the variation of the
machine's own bottle tag overrides the top-level fields; ``dependencies`` and
``recommended_dependencies`` are runtime (``build_``/``test_``/``optional_`` are not);
``uses_from_macos`` is a dependency on Linux, and on macOS only below its ``since``
bound; a name is a formula's name, else one of its ``aliases``, else one of its old names
(``oldnames``, or the older ``oldname``). Cycles and unknown names are reported, never
fatal, except a job none of whose roots exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from mirrord.core.catalog import Catalog, Selection, select_bottles
from mirrord.core.errors import CatalogError, SettingsError
from mirrord.core.models import MAX_NAME_LEN, Bottle, Formula, is_formula_name
from mirrord.core.releases import DEFAULT_RELEASES, Releases

CORE_TAP = "homebrew/core/"

# --- Brewfile ---------------------------------------------------------------------
# homebrew-bundle's DSL is Ruby; this reads the entries it writes (`brew bundle dump`)
# and people type: `brew "name"`, `brew "user/tap/name", args: [...]`, options after a
# comma, a trailing `if OS.mac?`, comments. Anything else is reported, never guessed at.

_ENTRY = re.compile(r"""\s*([a-z_]+)[\s(]+(["'])([^"']*)\2(.*)""")
_SKIPPED_KINDS = {
    "cask": "a cask, not a formula",
    "mas": "a Mac App Store app",
    "vscode": "a Visual Studio Code extension",
    "whalebrew": "a Whalebrew image",
    "go": "a Go package",
    "cargo": "a Cargo package",
    "uv": "a uv tool",
}


@dataclass(frozen=True, slots=True)
class Brewfile:
    names: tuple[str, ...]  # homebrew/core formulae, as written (unresolved), in order
    skipped: tuple[str, ...]  # "line N: <entry>: why", for every line not taken


def parse_brewfile(text: str) -> Brewfile:
    """The ``brew`` entries of homebrew/core; taps, casks, mas, vscode and the like are
    listed in ``skipped`` with their line numbers."""
    names: dict[str, None] = {}
    skipped: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        shown = f"line {number}: {stripped[:80]}"
        if stripped.startswith("cask_args"):
            continue  # settings for casks, which are not mirrored anyway
        match = _ENTRY.fullmatch(line)
        if match is None:
            skipped.append(f"{shown}: not a Brewfile entry mirrord reads")
            continue
        kind, value = match.group(1), match.group(3)
        if kind == "tap":
            if value not in ("homebrew/core", "homebrew/cask", "homebrew/bundle"):
                skipped.append(f"{shown}: a tap other than homebrew/core is not mirrored")
            continue
        if kind != "brew":
            why = _SKIPPED_KINDS.get(kind, f"{kind!r} entries are not formulae")
            skipped.append(f"{shown}: {why}")
            continue
        name = value.removeprefix(CORE_TAP)
        if "/" in name:
            skipped.append(f"{shown}: from the tap {name.rsplit('/', 1)[0]}, not homebrew/core")
        elif not is_formula_name(name):
            skipped.append(f"{shown}: {name[:60]!r} is not a formula name")
        else:
            names.setdefault(name)
    return Brewfile(tuple(names), tuple(skipped))


# --- the dependency fields of formula.json ------------------------------------------


class _Variation(msgspec.Struct):
    dependencies: Any = None
    recommended_dependencies: Any = None
    uses_from_macos: Any = None
    uses_from_macos_bounds: Any = None


class _Links(msgspec.Struct):
    name: Any = None
    aliases: Any = None
    oldnames: Any = None
    oldname: Any = None
    dependencies: Any = None
    recommended_dependencies: Any = None
    uses_from_macos: Any = None
    uses_from_macos_bounds: Any = None
    variations: Any = None


_LINKS = msgspec.json.Decoder(list[_Links])


@dataclass(frozen=True, slots=True)
class Deps:
    """One formula's runtime dependencies as its JSON states them (before a target)."""

    dependencies: tuple[str, ...] = ()
    recommended: tuple[str, ...] = ()
    macos: tuple[tuple[str, str | None], ...] = ()  # uses_from_macos: (name, since or None)
    variations: Mapping[str, Deps] | None = None  # by bottle tag

    @property
    def needs(self) -> tuple[str, ...]:
        return self.dependencies + self.recommended


@dataclass(frozen=True, slots=True)
class DepIndex:
    deps: Mapping[str, Deps]  # by formula name
    names: Mapping[str, str]  # alias or old name → formula name


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and len(v) <= 2 * MAX_NAME_LEN)


def _uses(value: Any, bounds: Any) -> tuple[tuple[str, str | None], ...]:
    """``uses_from_macos``: a name, or ``{name: "build" | [tags]}``; build and test
    uses are dropped. ``uses_from_macos_bounds`` runs beside it: ``{"since": codename}``."""
    if not isinstance(value, list):
        return ()
    bounds = bounds if isinstance(bounds, list) else []
    out: list[tuple[str, str | None]] = []
    for i, use in enumerate(value):
        bound = bounds[i] if i < len(bounds) and isinstance(bounds[i], dict) else {}
        since = bound.get("since")
        since = since if isinstance(since, str) else None
        if isinstance(use, str):
            out.append((use, since))
        elif isinstance(use, dict) and len(use) == 1:
            ((name, tags),) = use.items()
            tags = [tags] if isinstance(tags, str) else tags if isinstance(tags, list) else []
            if isinstance(name, str) and not {"build", "test"} & {str(t) for t in tags}:
                out.append((name, since))
    return tuple(out)


def _deps(entry: _Links | _Variation, base: Deps | None = None) -> Deps:
    """A formula's fields, or a variation's over ``base``: a variation names only the
    fields that differ on its tag; one it leaves out is the formula's."""
    base = base or Deps()
    dependencies, recommended, macos = base.dependencies, base.recommended, base.macos
    if entry.dependencies is not None:
        dependencies = _strings(entry.dependencies)
    if entry.recommended_dependencies is not None:
        recommended = _strings(entry.recommended_dependencies)
    if entry.uses_from_macos is not None:
        macos = _uses(entry.uses_from_macos, entry.uses_from_macos_bounds)
    return Deps(dependencies, recommended, macos)


def _each(source: bytes) -> list[_Links]:
    try:
        data = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        raise CatalogError(f"formula.json: the dependency fields cannot be read: {exc}") from exc
    if not isinstance(data, list):
        raise CatalogError("formula.json: the dependency fields cannot be read: not a list")
    return [msgspec.convert(e, _Links) for e in data if isinstance(e, dict)]


def dependency_index(catalog: Catalog) -> DepIndex:
    """The dependency fields of every formula the catalog accepted (a rejected one is
    not in the mirror: depending on it is reported as missing)."""
    try:
        entries = _LINKS.decode(catalog.source)
    except msgspec.MsgspecError:
        entries = _each(catalog.source)  # an entry that is no object: the catalog refused it
    accepted = {f.name for f in catalog.formulae}
    deps: dict[str, Deps] = {}
    names: dict[str, str] = {}
    for e in entries:
        if not isinstance(e.name, str) or e.name not in accepted or e.name in deps:
            continue
        base = _deps(e)
        variations: dict[str, Deps] = {}
        if isinstance(e.variations, dict):
            for tag, body in e.variations.items():
                if isinstance(tag, str) and isinstance(body, dict):
                    variation = msgspec.convert(body, _Variation, strict=False)
                    variations[tag] = _deps(variation, base)
        deps[e.name] = Deps(base.dependencies, base.recommended, base.macos, variations or None)
        old = _strings(e.oldnames) + ((e.oldname,) if isinstance(e.oldname, str) else ())
        for other in (*_strings(e.aliases), *old):
            names.setdefault(other, e.name)
    return DepIndex(deps, names)


# --- the closure ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Closure:
    roots: tuple[str, ...]  # the formulae asked for, resolved, in order
    renamed: tuple[tuple[str, str], ...]  # (as asked, formula) for aliases and old names
    missing: tuple[tuple[str, str], ...]  # (name, needed by: a formula or "(asked)")
    cycles: tuple[tuple[str, ...], ...]  # each once: a → b → … → a
    by_target: Mapping[str, tuple[str, ...]]  # every formula of the closure, per target

    @property
    def added(self) -> tuple[str, ...]:
        """Dependencies the roots pulled in, on any target, sorted."""
        roots = set(self.roots)
        return tuple(sorted({n for ns in self.by_target.values() for n in ns} - roots))


def resolve(index: DepIndex, name: str) -> str | None:
    """The formula brew means by ``name``: itself, an alias, an old name."""
    name = name.removeprefix(CORE_TAP)
    if name in index.deps:
        return name
    return index.names.get(name)


def _needs(deps: Deps, target: str, releases: Releases) -> tuple[str, ...]:
    chosen = deps.variations.get(target, deps) if deps.variations else deps
    platform = releases.parse(target)
    extra: list[str] = []
    for name, since in chosen.macos:
        if platform.os == "linux":
            extra.append(name)
        elif platform.os == "macos" and since is not None:
            bound = releases.get(since)
            if bound is not None and platform.release < bound:
                extra.append(name)  # older than the macOS that ships it
    return chosen.needs + tuple(extra)


DONE = -1
MAX_CYCLES = 100  # per target


def _walk(
    index: DepIndex, roots: Sequence[str], target: str, releases: Releases
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, ...]]]:
    """Depth first from each root, without recursion (a hostile catalog's chain can be
    thousands long): the formulae reached, the missing names, the cycles met."""
    order: list[str] = []
    state: dict[str, int] = {}  # its place on the current path, or DONE
    missing: list[tuple[str, str]] = []
    cycles: list[tuple[str, ...]] = []
    for root in roots:
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[list[str]] = [list(reversed(_needs(index.deps[root], target, releases)))]
        state[root] = 0
        while stack:
            if not stack[-1]:
                done = path.pop()
                stack.pop()
                state[done] = DONE
                order.append(done)
                continue
            wanted = stack[-1].pop()
            name = resolve(index, wanted)
            if name is None:
                missing.append((wanted, path[-1]))
            elif state.get(name, DONE) != DONE:
                if len(cycles) < MAX_CYCLES:  # a hostile catalog's: bounded
                    cycles.append((*path[state[name] :], name))
            elif name not in state:
                state[name] = len(path)
                path.append(name)
                stack.append(list(reversed(_needs(index.deps[name], target, releases))))
    return order, missing, cycles


def closure(
    index: DepIndex, asked: Iterable[str], targets: Sequence[str], releases: Releases
) -> Closure:
    roots: dict[str, None] = {}
    renamed: list[tuple[str, str]] = []
    missing: dict[tuple[str, str], None] = {}
    for name in asked:
        found = resolve(index, name)
        if found is None:
            missing.setdefault((name, "(asked)"))
            continue
        if found != name.removeprefix(CORE_TAP):
            renamed.append((name, found))
        roots.setdefault(found)
    by_target: dict[str, tuple[str, ...]] = {}
    cycles: dict[frozenset[str], tuple[str, ...]] = {}
    for target in targets:
        reached, lost, looped = _walk(index, tuple(roots), target, releases)
        by_target[target] = tuple(reached)
        for pair in lost:
            missing.setdefault(pair)
        for cycle in looped:
            cycles.setdefault(frozenset(cycle), cycle)
    return Closure(tuple(roots), tuple(renamed), tuple(missing), tuple(cycles.values()), by_target)


def select_closure(
    catalog: Catalog, found: Closure, releases: Releases = DEFAULT_RELEASES
) -> Selection:
    """The bottles each target needs for its own closure, each once, in catalog order."""
    wanted: dict[str, list[str]] = {}
    for target, names in found.by_target.items():
        for name in names:
            wanted.setdefault(name, []).append(target)
    chosen: dict[str, Bottle] = {}
    no_bottle = 0
    for formula in catalog.formulae:
        targets = wanted.get(formula.name)
        if targets:
            one = select_bottles((formula,), targets, releases)
            no_bottle += one.no_bottle
            for bottle in one.bottles:
                chosen.setdefault(bottle.hash_key, bottle)
    return Selection(tuple(chosen.values()), no_bottle)


def job_closure(
    catalog: Catalog,
    names: Sequence[str] | None,
    targets: Sequence[str],
    releases: Releases = DEFAULT_RELEASES,
) -> Closure | None:
    """The closure of a job's formulae (None: the job mirrors the whole catalog). A job
    none of whose names exists is a usage error: it would mirror nothing, silently."""
    if names is None:
        return None
    found = closure(dependency_index(catalog), names, targets, releases)
    if not found.roots:
        raise SettingsError(f"--formula: not in the catalog: {', '.join(sorted(set(names)))}")
    return found


def job_selection(
    catalog: Catalog,
    names: Sequence[str] | None,
    targets: Sequence[str],
    releases: Releases = DEFAULT_RELEASES,
) -> Selection:
    """What a job fetches: every bottle, or its formulae's closure on each target."""
    found = job_closure(catalog, names, targets, releases)
    if found is None:
        return select_bottles(catalog.formulae, targets, releases)
    return select_closure(catalog, found, releases)


def closure_formulae(catalog: Catalog, found: Closure) -> tuple[Formula, ...]:
    """The closure's formulae on any target, in catalog order."""
    names = {n for ns in found.by_target.values() for n in ns}
    return tuple(f for f in catalog.formulae if f.name in names)
