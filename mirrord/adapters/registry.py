"""Upstream over HTTP: the Homebrew API's formula.json, and bottle blobs from GHCR (or
any URL in the catalog), fetched exactly as brew fetches them.

* ``Authorization: Bearer QQ==`` (GHCR's anonymous token) on registry blob URLs only.
* A 401 with a ``WWW-Authenticate: Bearer realm=…`` challenge: fetch a token from the
  realm and retry once with it; tokens are kept per scope.
* The 307 to signed blob storage is followed at once WITHOUT Authorization (storage
  rejects requests that carry one), and is asked again on every attempt: the signature
  is short-lived.
* A body cut mid-way resumes with ``Range: bytes=<offset>-``: the consumer only sees one
  continuous stream, so its hash state and open upload carry on.
* Bodies are never decoded: a ``Content-Encoding: gzip`` label (Apache's stock
  ``AddEncoding`` on ``.tar.gz`` files) or a gzip bomb reaches the consumer as the bytes
  sent, which is what brew's curl stores and what the sha256 is of.
* No upstream connection reaches a link-local or instance-metadata address, and a 401
  challenge's token realm must be on the registry's own host (or an allowed one): a
  hostile registry cannot make mirrord fetch, or send tokens, elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from itertools import count
from typing import Any
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import aiohttp
import orjson
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from mirrord.core.catalog import Catalog, parse_catalog
from mirrord.core.errors import FatalUpstreamError, RefusedAddress, RetryableError, UpstreamError
from mirrord.core.retry import Backoff, is_retryable_status, parse_retry_after

ANONYMOUS_TOKEN = "QQ=="  # noqa: S105  # nosec B105  # GHCR's public anonymous token, as brew sends it
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK = 1 << 20
# A body attempt that delivered less than this earns no attempt back: a server that cuts
# every 100 bytes must not keep a bottle alive forever (measured before: 214 requests a
# minute with MIRRORD_MAX_ATTEMPTS=3).
MIN_PROGRESS = 1 << 20
# However much progress is made, a bottle's body gets at most this many times
# MIRRORD_MAX_ATTEMPTS requests (20 with the default 5).
ATTEMPTS_FACTOR = 4
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_BLOB_PATH = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-")
_URL_SAFE = ":/@!$&'()*+,;=~%[]"
TOKEN_LIMIT = 1 << 20  # a registry token answer is a few KB

log = structlog.get_logger("mirrord.adapters.registry")

# What a broken connection looks like from aiohttp; all are worth resuming.
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


def _is_registry_blob(url: str) -> bool:
    """A registry blob that gets the anonymous token; a URL carrying its own
    ``user:password@`` is sent with those (Basic) instead, as curl would."""
    parts = urlsplit(url)
    return bool(_BLOB_PATH.match(parts.path)) and parts.username is None


def parse_challenge(header: str) -> dict[str, str] | None:
    """``Bearer realm="…",service="…",scope="…"`` → its parameters; None if not Bearer."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_CHALLENGE_PARAM.findall(params))
    return found if "realm" in found else None


class Registry:
    """Streams blobs. Owns no session: the composition root passes one in (built with
    ``upstream_connector``, so no name resolves to a link-local or metadata address).

    ``max_bytes``: a body announced (Content-Length) as longer is refused before a byte
    is read. ``realm_hosts``: hosts besides the registry's own that may issue tokens."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        backoff: Backoff,
        *,
        max_bytes: int | None = None,
        realm_hosts: Iterable[str] = (),
    ) -> None:
        self._session = session
        self._backoff = backoff
        self._max_bytes = max_bytes
        self._realm_hosts = frozenset(h.lower() for h in realm_hosts)
        self._tokens: dict[str, str] = {}  # scope → token from a challenge

    async def stream(self, url: str) -> AsyncIterator[bytes]:
        """Yield the body of ``url`` in order, resuming after cuts; raise
        ``UpstreamError`` once attempts are spent. An attempt that delivered at least
        ``MIN_PROGRESS`` bytes earns its attempts back, so a long transfer survives many
        short outages; but never more than ``ATTEMPTS_FACTOR`` × max attempts in all."""
        offset = 0
        failures = 0
        ceiling = self._backoff.policy.max_attempts * ATTEMPTS_FACTOR
        for attempt in count(1):
            start = offset
            try:
                async with self._open(url, offset) as (response, skip):
                    # Whatever the socket delivered, as delivered: iter_chunked(n) would
                    # join small reads into a new buffer first, one more copy per byte.
                    async for chunk in response.content.iter_any():
                        if skip:  # the server ignored Range: drop what we already have
                            drop = min(skip, len(chunk))
                            chunk, skip = chunk[drop:], skip - drop
                            if not chunk:
                                continue
                        offset += len(chunk)
                        yield chunk
                return
            except _EndOfBody:
                return
            except _TRANSIENT as exc:
                error: UpstreamError = RetryableError(
                    f"connection broken at byte {offset}: {type(exc).__name__}: {exc}",
                    url=url,
                )
            except RetryableError as exc:
                error = exc
            failures = 1 if offset - start >= MIN_PROGRESS else failures + 1
            log.info(
                "blob_retry", url=shown_url(url), offset=offset, attempt=attempt, error=str(error)
            )
            assert isinstance(error, RetryableError)
            if attempt >= ceiling:
                raise RetryableError(
                    f"gave up after {attempt} requests ({offset} bytes received): {error}",
                    url=url,
                    status=error.status,
                    attempt=attempt,
                )
            await self._backoff.pause(failures, error)

    @asynccontextmanager
    async def _open(
        self, url: str, offset: int
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int]]:
        """One attempt: registry → (token) → redirect → the response carrying the body,
        and how many leading bytes of it to drop (when the server ignored Range)."""
        # identity: the sha256 is of the bytes as stored, never of a re-encoding.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        auth = {"Authorization": f"Bearer {self._token(url)}"} if _is_registry_blob(url) else {}
        response = await self._get(url, {**headers, **auth}, decode=False)
        try:
            if response.status == 401 and auth:
                response = await self._answer_challenge(url, response, headers, decode=False)
            hops = 0
            while response.status in REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise FatalUpstreamError(
                        f"redirect {response.status} without Location",
                        url=url,
                        status=response.status,
                    )
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise FatalUpstreamError(
                        f"more than {MAX_REDIRECTS} redirects", url=url, status=response.status
                    )
                response.release()
                # Storage rejects Authorization: the redirect is followed with Range only.
                target = urljoin(str(response.url), location)
                response = await self._get(target, headers, decode=False)
            if offset and response.status == 416:
                # Resuming at the very end of a body whose length was over-announced:
                # nothing more to read, and the sha256 check decides.
                raise _EndOfBody
            if response.status not in (200, 206):
                raise _status_error(response, url)
            skip = offset if response.status == 200 else 0
            if response.status == 206 and not _range_starts_at(response, offset):
                raise RetryableError(f"206 does not start at byte {offset}", url=url)
            length = response.content_length
            if self._max_bytes is not None and length is not None:
                total = length + offset - skip
                if total > self._max_bytes:
                    raise FatalUpstreamError(
                        f"announces {total} bytes, over MIRRORD_MAX_BOTTLE_BYTES "
                        f"({self._max_bytes})",
                        url=url,
                    )
            yield response, skip
        finally:
            response.release()

    async def _get(
        self, url: str, headers: dict[str, str], *, decode: bool = True
    ) -> aiohttp.ClientResponse:
        """One GET, redirects left to the caller. ``decode=False`` for bottle bodies:
        aiohttp otherwise inflates any ``Content-Encoding: gzip`` answer, whatever
        Accept-Encoding said."""
        literal_problem(url)
        try:
            return await self._session.get(
                url, headers=headers, allow_redirects=False, auto_decompress=decode
            )
        except _TRANSIENT as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}", url=url) from exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise _bad_url(url, exc) from exc

    async def image_index(self, url: str) -> dict[str, Any] | None:
        """The OCI image index at ``url`` (a ``…/manifests/<ref>`` URL), or None when
        the registry has none (404). Same auth and retry rules as blobs."""
        body = await self.index_bytes(url)
        if body is None:
            return None
        try:
            index = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FatalUpstreamError(f"image index is not JSON: {exc}", url=url) from exc
        return index if isinstance(index, dict) else None

    async def index_bytes(self, url: str, *, limit: int = 16 * 2**20) -> bytes | None:
        """The image index at ``url`` exactly as the registry sent it (a mirror serves
        it unchanged), or None on 404; refused over ``limit`` bytes, decoded or not."""
        return await self.document(url, accept=INDEX_MEDIA_TYPE, limit=limit)

    async def document(self, url: str, *, accept: str, limit: int) -> bytes | None:
        """A small registry answer (an image index, a ``…/tags/list``) as sent, or None
        on 404: the token and retry rules of blobs, read whole up to ``limit`` bytes."""
        headers = {"Accept": accept}
        for attempt in count(1):
            try:
                response = await self._get(
                    url, {**headers, "Authorization": f"Bearer {self._token(url)}"}
                )
                try:
                    if response.status == 401:
                        response = await self._answer_challenge(url, response, headers)
                    if response.status == 404:
                        return None
                    if response.status != 200:
                        raise _status_error(response, url)
                    body = await _read_capped(response, url, limit)
                finally:
                    response.release()
            except _TRANSIENT as exc:
                error = RetryableError(f"{type(exc).__name__}: {exc}", url=url)
            except RetryableError as exc:
                error = exc
            else:
                return body
            await self._backoff.pause(attempt, error)
        raise AssertionError("unreachable")

    def _token(self, url: str) -> str:
        return self._tokens.get(_scope_of(url), ANONYMOUS_TOKEN)

    def _check_realm(self, realm: str, url: str) -> None:
        """A token realm on the registry's own origin (as ghcr.io's is), or on a host the
        operator allowed; nothing else is asked, and no token goes anywhere else."""
        try:
            parts, registry = urlsplit(realm), urlsplit(url)
            origin = (parts.scheme, (parts.hostname or "").lower(), _port(parts))
            home = (registry.scheme, (registry.hostname or "").lower(), _port(registry))
        except ValueError:
            raise RefusedAddress("token realm is not a URL", url=url) from None
        if origin != home and not (
            parts.scheme in ("https", registry.scheme) and origin[1] in self._realm_hosts
        ):
            raise RefusedAddress(
                f"token realm {shown_url(realm)} is not on the registry's origin "
                "(MIRRORD_AUTH_REALM_HOSTS allows other hosts)",
                url=url,
            )

    async def _answer_challenge(
        self,
        url: str,
        response: aiohttp.ClientResponse,
        headers: dict[str, str],
        *,
        decode: bool = True,
    ) -> aiohttp.ClientResponse:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return response
        response.release()
        realm = challenge["realm"]
        self._check_realm(realm, url)
        literal_problem(realm)
        params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        try:
            async with self._session.get(
                realm, params=params, allow_redirects=False
            ) as token_response:
                if token_response.status != 200:
                    raise _status_error(token_response, realm)
                body = orjson.loads(await _read_capped(token_response, realm, TOKEN_LIMIT))
        except _TRANSIENT as exc:
            raise RetryableError(f"token endpoint: {exc}", url=realm) from exc
        except ValueError as exc:  # orjson.JSONDecodeError, and aiohttp's bad-URL errors
            raise RetryableError(f"token endpoint sent no JSON: {exc}", url=url) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise FatalUpstreamError("token endpoint answered without a token", url=url)
        self._tokens[_scope_of(url)] = token
        return await self._get(url, {**headers, "Authorization": f"Bearer {token}"}, decode=decode)


def _bad_url(url: str, exc: Exception) -> FatalUpstreamError:
    # aiohttp's message may be the URL itself: shown without credentials or query.
    reason = str(exc).replace(url, shown_url(url))
    return FatalUpstreamError(f"bad URL {shown_url(url)}: {reason}", url=url)


class _EndOfBody(Exception):  # control flow inside this module only
    pass


def _port(parts: SplitResult) -> int | None:
    return parts.port or {"https": 443, "http": 80}.get(parts.scheme)


def _scope_of(url: str) -> str:
    path = urlsplit(url).path
    for marker in ("/blobs/", "/manifests/"):
        path = path.partition(marker)[0]
    return path.removeprefix("/v2/")


def _range_starts_at(response: aiohttp.ClientResponse, offset: int) -> bool:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset


def _status_error(response: aiohttp.ClientResponse, url: str) -> UpstreamError:
    status = response.status
    message = f"HTTP {status} {response.reason or ''}".strip()
    if is_retryable_status(status):
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return RetryableError(message, url=url, status=status, retry_after=retry_after)
    return FatalUpstreamError(message, url=url, status=status)


async def _read_capped(response: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    """The body, refused once it is known to be over ``limit``: from Content-Length before
    reading anything, else as soon as the bytes read pass it (no more is read)."""
    length = response.content_length
    if length is not None and length > limit:
        raise FatalUpstreamError(f"{length} bytes is over the {limit}-byte cap", url=url)
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        body += chunk
        if len(body) > limit:
            raise FatalUpstreamError(f"body over the {limit}-byte cap", url=url)
    return bytes(body)


# --- a document from a URL someone else controls (MIRRORD_EXTERNAL_HASH_URL) -----------
#
# No SSRF: such a URL, or a redirect it answers with, must not reach the instance metadata
# service (169.254.169.254), the VPC or the task itself. Every address a name resolves to
# is checked and the connection goes only to those checked addresses (GuardedResolver: one
# resolution, so no DNS rebinding between check and connect); literal addresses, which
# aiohttp never resolves, are checked per hop; redirects are followed here, each checked.
# The upstream session (catalog, registry, storage) goes through the same resolver with
# private addresses allowed, so it never reaches link-local or metadata addresses either.


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
    *, connect_timeout: float, read_timeout: float, allow_private: bool, user_agent: str
) -> aiohttp.ClientSession:
    """A session for untrusted URLs only: its own connector, resolver and no DNS cache."""
    connector = aiohttp.TCPConnector(
        limit=2,
        use_dns_cache=False,
        resolver=GuardedResolver(allow_private=allow_private),
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
    # trust_env stays False: no proxy from the environment carries the request elsewhere.
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": user_agent}
    )


def _check_target(url: str, *, allow_http: bool, allow_private: bool) -> None:
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        hint = " (MIRRORD_EXTERNAL_HASH_ALLOW_HTTP)" if parts.scheme == "http" else ""
        raise RefusedAddress(
            f"{parts.scheme or 'a schemeless'}:// refused{hint}: only https:// is allowed",
            url=url,
        )
    if not parts.hostname:
        raise RefusedAddress("no host", url=url)
    literal_problem(url, allow_private=allow_private)


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
    are followed here and each hop checked (``_check_target``), the body refused past
    ``limit`` bytes."""
    for attempt in count(1):
        target = url
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                _check_target(target, allow_http=allow_http, allow_private=allow_private)
                async with session.get(target, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise FatalUpstreamError("redirect without Location", url=target)
                        target = urljoin(str(response.url), location)
                        continue
                    if response.status != 200:
                        raise _status_error(response, target)
                    return await _read_capped(response, target, limit)
            raise FatalUpstreamError(f"more than {MAX_REDIRECTS} redirects", url=url)
        except _TRANSIENT as exc:
            error = RetryableError(f"{type(exc).__name__}: {exc}", url=target)
        except RetryableError as exc:
            error = exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise _bad_url(target, exc) from exc
        log.info("fetch_retry", url=shown_url(target), attempt=attempt, error=str(error))
        await backoff.pause(attempt, error)
    raise AssertionError("unreachable")


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
