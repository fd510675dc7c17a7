"""``check-client`` on a subset mirror: which formulae to walk, from the mirror alone.

The names come from ``--brewfile``/``--formula``, else from the subset the mirror's
status.json records (when the front serves it: CloudFront serves only ``v2/`` and
``api/``). Their closure is taken, per target, from the mirror's own
``api/formula.jws.json``, the formula.json brew itself reads there, so the check needs
neither the upstream nor the bucket's credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from mirrord.adapters.web import get_once
from mirrord.core.brew import jws_document
from mirrord.core.catalog import parse_catalog
from mirrord.core.closure import Closure, closure, dependency_index
from mirrord.core.errors import CatalogError, InputError, SettingsError, UpstreamError
from mirrord.core.releases import Releases
from mirrord.core.subset import recorded_subset


@dataclass(frozen=True, slots=True)
class MirrorSubset:
    found: Closure
    source: str  # "--brewfile/--formula" or "status.json"


async def recorded_roots(http: aiohttp.ClientSession, base: str, status_key: str) -> list[str]:
    """The roots of the subset the mirror's status.json records; none when it is not
    served, unreadable, or records a full mirror."""
    try:
        status = orjson.loads(await get_once(http, f"{base}/{status_key}"))
    except (UpstreamError, orjson.JSONDecodeError):
        return []
    subset = recorded_subset(status)
    return list(subset.roots) if subset is not None else []


async def mirror_subset(
    http: aiohttp.ClientSession,
    base: str,
    names: Sequence[str] | None,
    targets: Sequence[str],
    releases: Releases,
    *,
    status_key: str = "status.json",
) -> MirrorSubset | None:
    """The closure to check, or None: no names given and none recorded (check every
    formula). ``UpstreamError``/``InputError`` when the mirror's formula.jws.json cannot
    be read: a subset cannot be checked without it."""
    base = base.rstrip("/")
    source = "--brewfile/--formula"
    if not names:
        names, source = await recorded_roots(http, base, status_key), "status.json"
        if not names:
            return None
    path = "api/formula.jws.json"
    raw = await get_once(http, f"{base}/{path}")
    try:
        catalog = parse_catalog(jws_document(raw, path))
    except CatalogError as exc:
        raise InputError(f"{path}: {exc}") from exc
    found = closure(dependency_index(catalog), names, targets, releases)
    if not found.roots:  # checking nothing would pass: a usage error, as for a sync
        raise SettingsError(
            f"{source}: none of {', '.join(sorted(set(names)))} is in the mirror's {path}"
        )
    return MirrorSubset(found, source)
