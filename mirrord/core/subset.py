"""Subset mirrors and the Homebrew API files (issue 17, item 3). Pure.

The API files are signed: a mirror publishes them unchanged, so on a subset mirror they
name every formula, most of them outside the subset. They may still go out once every
bottle of the *closure* is in the mirror: brew installs the subset from the mirror, and
a formula outside it fails (``HOMEBREW_ARTIFACT_DOMAIN_NO_FALLBACK``) or comes from
ghcr.io, as it would have without a mirror. So the API check of a subset job ignores the
bottles the API files send a machine to for formulae outside that machine's closure.

What a subset job leaves in status.json (``Subset``) is what ``check-client`` and
``mirrord status`` read back: the roots, and how many formulae the closure holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mirrord.core.brew import GHCR, api_formulae, packages_tag
from mirrord.core.catalog import select_file
from mirrord.core.closure import Closure
from mirrord.core.releases import DEFAULT_RELEASES, Releases
from mirrord.core.report import Subset

SUBSET_OF_FULL = (
    "kept: a subset sync of a mirror whose last complete job mirrored every formula "
    "(its API files would name newer bottles of formulae it holds); the next full sync "
    "publishes them"
)


def subset_of(found: Closure) -> Subset:
    """What the report and status.json say of a subset job's closure."""
    names = {n for ns in found.by_target.values() for n in ns}
    return Subset(found.roots, len(names), {t: len(ns) for t, ns in found.by_target.items()})


def recorded_subset(status: Any) -> Subset | None:
    """The subset status.json's last complete job mirrored, or None (a full mirror, no
    status.json, or a record this version cannot read)."""
    found = status.get("subset") if isinstance(status, dict) else None
    if not isinstance(found, dict):
        return None
    roots = found.get("roots")
    count = found.get("formulae")
    per_target = found.get("per_target")
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        return None
    if isinstance(count, bool) or not isinstance(count, int):
        return None
    targets = per_target if isinstance(per_target, dict) else {}
    return Subset(
        tuple(roots),
        count,
        {str(t): n for t, n in targets.items() if isinstance(n, int) and not isinstance(n, bool)},
    )


def last_job_was_full(status: Any) -> bool:
    """status.json records a complete job that mirrored every formula (a version that
    wrote no ``subset`` field mirrored subsets only with the API files held back, so a
    ``last_success`` without one is a full job's)."""
    if not isinstance(status, dict) or "last_success" not in status:
        return False
    return status.get("subset") is None


def outside_sha256s(
    files: Mapping[str, bytes],
    by_target: Mapping[str, Collection[str]],
    targets: Sequence[str],
    root: str = GHCR,
    releases: Releases = DEFAULT_RELEASES,
) -> set[str]:
    """sha256s of the bottles the API files send a target machine to for formulae
    outside that target's closure, and for no formula inside any: the API check of a
    subset job ignores them. ``InputError`` when an API file is unusable."""
    inside: set[str] = set()
    outside: set[str] = set()
    for endpoint, raw in files.items():
        formulae = api_formulae(endpoint, raw, root)
        if formulae is None:
            continue
        machines = targets if endpoint == "formula.jws.json" else (packages_tag(endpoint),)
        for formula in formulae:
            for target in machines:
                if endpoint == "formula.jws.json":
                    file = select_file(formula, target, releases)
                else:
                    file = formula.files[0] if formula.files else None
                if file is None:
                    continue
                wanted = formula.name in by_target.get(target, ())
                (inside if wanted else outside).add(file.sha256)
    return outside - inside


def outside_formulae(names: Collection[str], closure_names: Collection[str]) -> int:
    """How many formulae the published API names that lie outside the subset."""
    return len(set(names) - set(closure_names))
