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
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from mirrord.catalog import Catalog, parse_catalog
from mirrord.errors import FatalUpstreamError, RefusedAddress, RetryableError, UpstreamError
from mirrord.retry import Backoff, is_retryable_status, parse_retry_after

ANONYMOUS_TOKEN = "QQ=="  # noqa: S105  # nosec B105  # GHCR's public anonymous token, as brew sends it
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
CHUNK = 1 << 20
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_BLOB_PATH = re.compile(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

log = structlog.get_logger("mirrord.upstream")

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


def _is_registry_blob(url: str) -> bool:
    return bool(_BLOB_PATH.match(urlsplit(url).path))


def parse_challenge(header: str) -> dict[str, str] | None:
    """``Bearer realm="…",service="…",scope="…"`` → its parameters; None if not Bearer."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = dict(_CHALLENGE_PARAM.findall(params))
    return found if "realm" in found else None


class Registry:
    """Streams blobs. Owns no session: the composition root passes one in."""

    def __init__(self, session: aiohttp.ClientSession, backoff: Backoff) -> None:
        self._session = session
        self._backoff = backoff
        self._tokens: dict[str, str] = {}  # scope → token from a challenge

    async def stream(self, url: str) -> AsyncIterator[bytes]:
        """Yield the body of ``url`` in order, resuming after cuts; raise
        ``UpstreamError`` once attempts are spent. A run that makes progress earns its
        attempts back, so a long transfer survives many short outages."""
        offset = 0
        failures = 0
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
            failures = 1 if offset > start else failures + 1
            log.info("blob_retry", url=url, offset=offset, attempt=attempt, error=str(error))
            assert isinstance(error, RetryableError)
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
        response = await self._get(url, {**headers, **auth})
        try:
            if response.status == 401 and auth:
                response = await self._answer_challenge(url, response, headers)
            hops = 0
            while response.status in REDIRECTS:
                hops += 1
                location = response.headers.get("Location")
                if not location or hops > MAX_REDIRECTS:
                    raise FatalUpstreamError(
                        f"redirect {response.status} without usable Location",
                        url=url,
                        status=response.status,
                    )
                response.release()
                # Storage rejects Authorization: the redirect is followed with Range only.
                response = await self._get(urljoin(str(response.url), location), headers)
            if offset and response.status == 416:
                # Resuming at the very end of a body whose length was over-announced:
                # nothing more to read, and the sha256 check decides.
                raise _EndOfBody
            if response.status not in (200, 206):
                raise _status_error(response, url)
            skip = offset if response.status == 200 else 0
            if response.status == 206 and not _range_starts_at(response, offset):
                raise RetryableError(f"206 does not start at byte {offset}", url=url)
            yield response, skip
        finally:
            response.release()

    async def _get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        try:
            return await self._session.get(url, headers=headers, allow_redirects=False)
        except _TRANSIENT as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}", url=url) from exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise FatalUpstreamError(f"bad URL: {exc}", url=url) from exc

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
        it unchanged), or None on 404; refused over ``limit`` bytes."""
        headers = {"Accept": INDEX_MEDIA_TYPE}
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
                    length = response.content_length
                    if length is not None and length > limit:
                        raise FatalUpstreamError(f"image index over {limit} bytes", url=url)
                    body = await response.read()
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

    async def _answer_challenge(
        self, url: str, response: aiohttp.ClientResponse, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return response
        response.release()
        params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        try:
            async with self._session.get(challenge["realm"], params=params) as token_response:
                if token_response.status != 200:
                    raise _status_error(token_response, challenge["realm"])
                body = await token_response.json(content_type=None)
        except _TRANSIENT as exc:
            raise RetryableError(f"token endpoint: {exc}", url=challenge["realm"]) from exc
        except ValueError as exc:
            raise RetryableError(f"token endpoint sent no JSON: {exc}", url=url) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise FatalUpstreamError("token endpoint answered without a token", url=url)
        self._tokens[_scope_of(url)] = token
        return await self._get(url, {**headers, "Authorization": f"Bearer {token}"})


class _EndOfBody(Exception):  # control flow inside this module only
    pass


def _scope_of(url: str) -> str:
    path = urlsplit(url).path
    for marker in ("/blobs/", "/manifests/"):
        path = path.partition(marker)[0]
    return path.removeprefix("/v2/")


def _range_starts_at(response: aiohttp.ClientResponse, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
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


async def fetch_bytes(
    session: aiohttp.ClientSession, url: str, backoff: Backoff, *, limit: int
) -> bytes:
    """GET a whole document (the catalog) with the same retry rules; refuse over ``limit``."""
    for attempt in count(1):
        try:
            async with session.get(url) as response:
                if response.status != 200:
                    raise _status_error(response, url)
                return await _read_capped(response, url, limit)
        except _TRANSIENT as exc:
            error = RetryableError(f"{type(exc).__name__}: {exc}", url=url)
        except RetryableError as exc:
            error = exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise FatalUpstreamError(f"bad URL: {exc}", url=url) from exc
        log.info("fetch_retry", url=shown_url(url), attempt=attempt, error=str(error))
        await backoff.pause(attempt, error)
    raise AssertionError("unreachable")


# --- a document from a URL someone else controls (MIRRORD_EXTERNAL_HASH_URL) -----------
#
# No SSRF: such a URL, or a redirect it answers with, must not reach the instance metadata
# service (169.254.169.254), the VPC or the task itself. Every address a name resolves to
# is checked and the connection goes only to those checked addresses (PublicResolver: one
# resolution, so no DNS rebinding between check and connect); literal addresses, which
# aiohttp never resolves, are checked per hop; redirects are followed here, each checked.


def address_problem(address: str) -> str | None:
    """Why a connection to this IP is refused, or None for a public unicast address."""
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
    for candidate in candidates:
        for attribute, word in _KINDS:
            if getattr(candidate, attribute):
                return word
        if not candidate.is_global:
            return "not globally routable"
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),  # last: Python counts most of the above as private too
)


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name if ANY of its addresses is not public; aiohttp
    then connects only to the addresses returned here."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            problem = address_problem(result["host"])
            if problem is not None:
                raise RefusedAddress(f"{host} resolves to {result['host']}, a {problem} address")
        return found

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(
    *, connect_timeout: float, read_timeout: float, allow_private: bool, user_agent: str
) -> aiohttp.ClientSession:
    """A session for untrusted URLs only: its own connector, resolver and no DNS cache."""
    connector = aiohttp.TCPConnector(
        limit=2,
        use_dns_cache=False,
        resolver=ThreadedResolver() if allow_private else PublicResolver(),
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
    host = parts.hostname
    if not host:
        raise RefusedAddress("no host", url=url)
    if allow_private:
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: PublicResolver checks what it resolves to
    problem = address_problem(host)
    if problem is not None:
        raise RefusedAddress(f"{host} is a {problem} address", url=url)


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
    https:// only (http:// with ``allow_http``), redirects followed here and each target
    checked, no private/loopback/link-local/multicast/reserved address (unless
    ``allow_private``), the body refused past ``limit`` bytes. ``RefusedAddress`` (an
    ``UpstreamError``) names the reason; it is never retried."""
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
            raise FatalUpstreamError(f"bad URL: {exc}", url=target) from exc
        log.info("fetch_retry", url=shown_url(target), attempt=attempt, error=str(error))
        await backoff.pause(attempt, error)
    raise AssertionError("unreachable")


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
