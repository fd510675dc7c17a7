"""HTTP for every upstream request: aiohttp's errors translated into core.errors (in
``translated``, the one place), whole documents fetched with the retry rules (the catalog,
the API files, the external hash file), and the SSRF guard every connection goes through.

No SSRF: a URL someone else controls (MIRRORD_EXTERNAL_HASH_URL), or a redirect it answers
with, must not reach the instance metadata service (169.254.169.254), the VPC or the task
itself. Every address a name resolves to is checked and the connection goes only to those
checked addresses (GuardedResolver: one resolution, so no DNS rebinding between check and
connect); literal addresses, which aiohttp never resolves, are checked per hop; redirects
are followed here, each checked. The upstream session (catalog, registry, storage) goes
through the same resolver with private addresses allowed, so it never reaches link-local
or metadata addresses either.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from mirrord.core.catalog import Catalog, parse_catalog
from mirrord.core.errors import FatalUpstreamError, RefusedAddress, RetryableError, UpstreamError
from mirrord.core.retry import Backoff, is_retryable_status, parse_retry_after, retrying

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK = 1 << 20
_URL_SAFE = ":/@!$&'()*+,;=~%[]"

log = structlog.get_logger("mirrord.adapters.web")

# What a broken connection looks like from aiohttp; all are worth another attempt.
_TRANSIENT = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


def shown_url(url: str) -> str:
    """``url`` as a log line may show it: no ``user:password@`` and no query, which can
    carry a signature or a token (a presigned URL); the path stays, to find the file."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}" + (
        "?…" if parts.query else ""
    )


def source_url(url: str) -> str:
    """``url`` as it may be stored where others read it (object metadata, reports): no
    ``user:password@`` and no query at all (a token or a signature)."""
    # Percent-encoded: S3 metadata travels in an HTTP header, printable ASCII only.
    return quote(shown_url(url).removesuffix("?…"), safe=_URL_SAFE)


@contextmanager
def translated(url: str, what: str = "", *, every: bool = False) -> Iterator[None]:
    """aiohttp's errors as core.errors, for every request and body read: a broken
    connection or a timeout is a ``RetryableError``, a URL aiohttp cannot use a
    ``FatalUpstreamError``. ``what`` names the request in the message. ``every``: any
    other aiohttp error too, as a ``FatalUpstreamError`` (check-client, where every
    failure is a miss to report; the sync lets such a surprise end the job)."""
    try:
        yield
    except _TRANSIENT as exc:
        raise RetryableError(f"{what}{type(exc).__name__}: {exc}", url=url) from exc
    except (aiohttp.InvalidURL, ValueError) as exc:
        # aiohttp's message may be the URL itself: shown without credentials or query.
        reason = str(exc).replace(url, shown_url(url))
        raise FatalUpstreamError(f"bad URL {shown_url(url)}: {reason}", url=url) from exc
    except aiohttp.ClientError as exc:
        if not every:
            raise
        raise FatalUpstreamError(f"{what}{type(exc).__name__}: {exc}", url=url) from exc


def status_error(response: aiohttp.ClientResponse, url: str) -> UpstreamError:
    """An answer other than the one asked for, as retryable (with the server's
    Retry-After) or not, by its status."""
    status = response.status
    message = f"HTTP {status} {response.reason or ''}".strip()
    if is_retryable_status(status):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return RetryableError(message, url=url, status=status, retry_after=retry_after)
    return FatalUpstreamError(message, url=url, status=status)


def redirect_target(response: aiohttp.ClientResponse, url: str) -> str | None:
    """Where a redirect answer points (relative to the URL it came from); None when the
    answer is no redirect."""
    if response.status not in REDIRECTS:
        return None
    location = response.headers.get("Location")
    if not location:
        raise FatalUpstreamError(
            f"redirect {response.status} without Location", url=url, status=response.status
        )
    return urljoin(str(response.url), location)


async def read_capped(response: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    """The body, refused once it is known to be over ``limit``: from Content-Length before
    reading anything, else as soon as the bytes read pass it (no more is read)."""
    length = response.content_length
    if length is not None and length > limit:
        raise FatalUpstreamError(f"{length} bytes is over the {limit}-byte cap", url=url)
    body = bytearray()
    with translated(url):
        async for chunk in response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                raise FatalUpstreamError(f"body over the {limit}-byte cap", url=url)
    return bytes(body)


# --- the SSRF guard ---------------------------------------------------------------------


def address_problem(address: str, *, allow_private: bool = False) -> str | None:
    """Why a connection to this IP is refused, or None for a public unicast address.
    ``allow_private`` (the upstream, a hash file on the LAN) still refuses what nothing
    of mirrord's may reach: link-local (the instance and task metadata services),
    unspecified, multicast, and the IPv6 metadata address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 host: judged first, so
        # the reason names it (::ffff:169.254.169.254 is "link-local", not "reserved").
        embedded = [ip.ipv4_mapped, ip.sixtofour]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        candidates += [e for e in embedded if e is not None]
    candidates.append(ip)
    kinds = _NEVER if allow_private else _KINDS
    for candidate in candidates:
        if candidate in _METADATA:
            return "instance metadata"
        for attribute, word in kinds:
            if getattr(candidate, attribute):
                return word
        if not allow_private and not candidate.is_global:
            return "not globally routable"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# EC2's IMDS over IPv6 is a unique-local address, private rather than link-local.
_METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254")})
_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),  # last: Python counts most of the above as private too
)
_NEVER = tuple(k for k in _KINDS if k[1] in ("unspecified", "link-local", "multicast"))


def literal_problem(url: str, *, allow_private: bool = True) -> None:
    """Refuse a URL whose host is an IP literal that ``address_problem`` refuses: aiohttp
    connects to literals without asking the resolver, so each hop is checked here."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return  # aiohttp refuses it as a bad URL
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    problem = address_problem(host, allow_private=allow_private)
    if problem is not None:
        raise RefusedAddress(f"{host} is a {problem} address", url=url)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name if ANY of its addresses is refused (see
    ``address_problem``); aiohttp then connects only to the addresses returned here, so
    nothing can rebind the name between the check and the connection."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            problem = address_problem(result["host"], allow_private=self._allow_private)
            if problem is not None:
                raise RefusedAddress(f"{host} resolves to {result['host']}, a {problem} address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def upstream_connector(limit: int) -> aiohttp.TCPConnector:
    """The connector of the session every upstream request goes through (catalog, API
    files, registry, blob storage, Slack): private and loopback addresses are fine (a
    registry on the LAN, the emulator), link-local and metadata addresses never."""
    return aiohttp.TCPConnector(
        limit=limit, ttl_dns_cache=300, resolver=GuardedResolver(allow_private=True)
    )


def guarded_session(
    *,
    connect_timeout: float,
    read_timeout: float,
    allow_private: bool,
    user_agent: str,
    limit: int = 2,
) -> aiohttp.ClientSession:
    """A session for untrusted URLs only: its own connector, resolver and no DNS cache."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        use_dns_cache=False,
        resolver=GuardedResolver(allow_private=allow_private),
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
    # trust_env stays False: no proxy from the environment carries the request elsewhere.
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": user_agent}
    )


def check_target(
    url: str, *, allow_http: bool, allow_private: bool, opt_in: str = "MIRRORD_EXTERNAL_HASH"
) -> None:
    """Refuse one hop to an untrusted server: its scheme (https:// only, unless
    ``allow_http``) and a literal address (``address_problem``); ``opt_in`` names the
    settings that would allow it (``<opt_in>_ALLOW_HTTP``)."""
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        hint = f" ({opt_in}_ALLOW_HTTP)" if parts.scheme == "http" else ""
        raise RefusedAddress(
            f"{parts.scheme or 'a schemeless'}:// refused{hint}: only https:// is allowed",
            url=url,
        )
    if not parts.hostname:
        raise RefusedAddress("no host", url=url)
    literal_problem(url, allow_private=allow_private)


# --- whole documents ----------------------------------------------------------------------


async def fetch_bytes(
    session: aiohttp.ClientSession,
    url: str,
    backoff: Backoff,
    *,
    limit: int,
    allow_http: bool = True,
    allow_private: bool = True,
) -> bytes:
    """GET a whole document (the catalog, an API file) with the retry rules; redirects
    are followed here and each hop checked (``check_target``), the body refused past
    ``limit`` bytes."""

    async def attempt() -> bytes:
        target = url
        for _hop in range(MAX_REDIRECTS + 1):
            with translated(target):
                check_target(target, allow_http=allow_http, allow_private=allow_private)
                async with session.get(target, allow_redirects=False) as response:
                    found = redirect_target(response, target)
                    if found is None:
                        if response.status != 200:
                            raise status_error(response, target)
                        return await read_capped(response, target, limit)
            target = found
        raise FatalUpstreamError(f"more than {MAX_REDIRECTS} redirects", url=url)

    def logged(attempt: int, error: RetryableError) -> None:
        log.info("fetch_retry", url=shown_url(error.url), attempt=attempt, error=str(error))

    return await retrying(backoff, attempt, on_retry=logged)


async def get_once(
    session: aiohttp.ClientSession,
    url: str,
    *,
    accept: str | None = None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> bytes:
    """One GET as a client makes it (redirects followed, no retry, no cap): the body, or
    an ``UpstreamError`` naming the status (``HTTP 404``) or the failure. With
    ``on_chunk`` the body is handed over as it arrives instead, and b"" returned."""
    headers = {"Accept": accept} if accept else {}
    with translated(url, every=True):
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                raise FatalUpstreamError(f"HTTP {response.status}", url=url, status=response.status)
            if on_chunk is None:
                return await response.read()
            async for chunk in response.content.iter_chunked(CHUNK):
                on_chunk(chunk)
    return b""


async def fetch_untrusted(
    session: aiohttp.ClientSession,
    url: str,
    backoff: Backoff,
    *,
    limit: int,
    allow_http: bool = False,
    allow_private: bool = False,
) -> bytes:
    """GET a document from a URL someone else controls, through a ``guarded_session``:
    https:// only (http:// with ``allow_http``), every redirect target checked, no
    private/loopback/link-local/multicast/reserved address (unless ``allow_private``),
    the body refused past ``limit`` bytes. ``RefusedAddress`` (an ``UpstreamError``)
    names the reason; it is never retried."""
    return await fetch_bytes(
        session, url, backoff, limit=limit, allow_http=allow_http, allow_private=allow_private
    )


async def fetch_catalog(
    session: aiohttp.ClientSession, url: str, backoff: Backoff, *, limit: int = 256 * 2**20
) -> Catalog:
    """formula.json from the Homebrew API (about 30 MB in 2026)."""
    raw = await fetch_bytes(session, url, backoff, limit=limit)
    catalog = parse_catalog(raw)
    log.info(
        "catalog_loaded",
        url=shown_url(url),
        bytes=len(raw),
        formulae=len(catalog.formulae),
        rejected=len(catalog.rejected),
    )
    return catalog
