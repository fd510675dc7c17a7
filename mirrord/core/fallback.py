"""The fallback upstreams (MIRRORD_FALLBACK_URLS): other mirrors' flat ``bottles/``
directories, tried in order when the registry fails a bottle after its retries. Pure:
the settings' rules and the URL of a bottle in such a directory.

A fallback is another party's server, so its URLs are held to the rules of the external
hash file (adapters/web.py's guard): https:// only and public addresses only, unless
MIRRORD_FALLBACK_ALLOW_HTTP / MIRRORD_FALLBACK_ALLOW_PRIVATE say otherwise. A literal
address is judged here, at start; a name is judged by the guarded resolver when it is
resolved. Whatever a fallback serves goes through the same sha256 check and size cap as
the registry's bytes before anything is visible.

The layout is the one TUNA's and USTC's ``homebrew-bottles`` mirrors keep (and the seed's):
``<base>/<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz``, which is
``Bottle.filename``; the name is percent-encoded in the URL as brew's ``url_encode`` does
(``openssl@3`` → ``openssl%403``), the file on the server keeps its ``@`` and ``+``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mirrord.core import values as v
from mirrord.core.errors import SettingsError
from mirrord.core.models import Bottle

MAX_FALLBACKS = 8
URLS, ALLOW_HTTP, ALLOW_PRIVATE = (
    "MIRRORD_FALLBACK_URLS",
    "MIRRORD_FALLBACK_ALLOW_HTTP",
    "MIRRORD_FALLBACK_ALLOW_PRIVATE",
)


def _shown(url: str) -> str:
    """``url`` for an error message: a ``user:password@`` in it is a credential."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable URL)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="…@" + parts.netloc.rpartition("@")[2]))


def parse_fallback_urls(text: str, name: str = URLS) -> tuple[str, ...]:
    """A comma list of base URLs, each ``http(s)://host[:port][/path]`` of printable ASCII
    with no query or fragment (a file name is appended to it); a trailing ``/`` is
    dropped, repeats are dropped, at most ``MAX_FALLBACKS``."""
    bases: list[str] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        shown = f"{_shown(item)!r:.80}"
        parts = urlsplit(v.url(item, name, shown=shown, limit=1024))
        if parts.query or parts.fragment or item.endswith(("?", "#")):
            raise SettingsError(
                f"{name}: {shown} has a query or fragment: give the folder's URL only"
            )
        base = item.rstrip("/")
        if base not in bases:
            bases.append(base)
    if len(bases) > MAX_FALLBACKS:
        raise SettingsError(f"{name}: {len(bases)} URLs, at most {MAX_FALLBACKS}")
    return tuple(bases)


def fallback_problem(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Why a fallback base URL is refused at start, or None. Link-local and metadata
    addresses are refused whatever is allowed, as the guard refuses them."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not allow_http:
        return f"plain http refused ({ALLOW_HTTP}=true allows it)"
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return None  # a name: the guarded resolver judges what it resolves to
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or str(ip) == "fd00:ec2::254":
        return f"{ip} is a link-local, multicast, unspecified or metadata address: never allowed"
    if not ip.is_global and not allow_private:
        return f"{ip} is not a public address ({ALLOW_PRIVATE}=true allows it)"
    return None


def check_fallbacks(values: Mapping[str, Any]) -> None:
    """Settings' ``values`` (field → value): ``SettingsError`` naming MIRRORD_FALLBACK_URLS
    and the setting that would allow it, for the first fallback URL refused."""
    allow_http = bool(values.get("fallback_allow_http", False))
    allow_private = bool(values.get("fallback_allow_private", False))
    for url in values.get("fallback_urls", ()):
        problem = fallback_problem(url, allow_http=allow_http, allow_private=allow_private)
        if problem is not None:
            raise SettingsError(f"{URLS}: {_shown(url)!r:.80}: {problem}")


def fallback_url(base: str, bottle: Bottle) -> str:
    """Where a flat ``bottles/`` directory at ``base`` keeps ``bottle``."""
    return f"{base}/{quote(bottle.filename, safe='')}"
