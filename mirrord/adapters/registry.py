"""The GHCR (OCI registry) client: bottle blobs from GHCR (or any URL in the catalog) and
image indexes, fetched exactly as brew fetches them.

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
* No upstream connection reaches a link-local or instance-metadata address (the session
  is built on ``web.upstream_connector``), and a 401 challenge's token realm must be on
  the registry's own host (or an allowed one): a hostile registry cannot make mirrord
  fetch, or send tokens, elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import SplitResult, urlsplit

import aiohttp
import orjson
import structlog

from mirrord.adapters.web import (
    MAX_REDIRECTS,
    literal_problem,
    read_capped,
    redirect_target,
    shown_url,
    status_error,
    translated,
)
from mirrord.core.errors import FatalUpstreamError, RefusedAddress, RetryableError
from mirrord.core.retry import Attempts, Backoff, retrying

ANONYMOUS_TOKEN = "QQ=="  # noqa: S105  # nosec B105  # GHCR's public anonymous token, as brew sends it
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
TOKEN_LIMIT = 1 << 20  # a registry token answer is a few KB

log = structlog.get_logger("mirrord.adapters.registry")


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
    is read. ``realm_hosts``: hosts besides the registry's own that may issue tokens.
    ``check``: refuses a URL before each request (every hop); by default a link-local or
    metadata literal (a fallback mirror's streamer checks more: web.check_target)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        backoff: Backoff,
        *,
        max_bytes: int | None = None,
        realm_hosts: Iterable[str] = (),
        check: Callable[[str], None] = literal_problem,
    ) -> None:
        self._session = session
        self._check = check
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
        attempts = Attempts(
            self._backoff, ceiling=self._backoff.policy.max_attempts * ATTEMPTS_FACTOR
        )
        for attempt in attempts:
            start = offset
            try:
                async with (
                    self._open(url, offset) as (response, skip),
                    aclosing(_body(response, url, offset, skip)) as body,
                ):
                    async for chunk in body:
                        offset += len(chunk)
                        yield chunk
                return
            except _EndOfBody:
                return
            except RetryableError as error:
                log.info(
                    "blob_retry",
                    url=shown_url(url),
                    offset=offset,
                    attempt=attempt,
                    error=str(error),
                )
                await attempts.failed(
                    error,
                    progressed=offset - start >= MIN_PROGRESS,
                    received=f" ({offset} bytes received)",
                )

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
            while (target := redirect_target(response, url)) is not None:
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise FatalUpstreamError(
                        f"more than {MAX_REDIRECTS} redirects", url=url, status=response.status
                    )
                response.release()
                # Storage rejects Authorization: the redirect is followed with Range only.
                response = await self._get(target, headers, decode=False)
            yield response, self._skip(response, url, offset)
        finally:
            response.release()

    def _skip(self, response: aiohttp.ClientResponse, url: str, offset: int) -> int:
        """How many leading bytes of the body to drop (the server ignored Range), once the
        final answer is one to read a body from, of an acceptable length."""
        if offset and response.status == 416:
            # Resuming at the very end of a body whose length was over-announced:
            # nothing more to read, and the sha256 check decides.
            raise _EndOfBody
        if response.status not in (200, 206):
            raise status_error(response, url)
        skip = offset if response.status == 200 else 0
        if response.status == 206 and not _range_starts_at(response, offset):
            raise RetryableError(f"206 does not start at byte {offset}", url=url)
        length = response.content_length
        if self._max_bytes is not None and length is not None:
            total = length + offset - skip
            if total > self._max_bytes:
                raise FatalUpstreamError(
                    f"announces {total} bytes, over MIRRORD_MAX_BOTTLE_BYTES ({self._max_bytes})",
                    url=url,
                )
        return skip

    async def _get(
        self, url: str, headers: dict[str, str], *, decode: bool = True
    ) -> aiohttp.ClientResponse:
        """One GET, redirects left to the caller. ``decode=False`` for bottle bodies:
        aiohttp otherwise inflates any ``Content-Encoding: gzip`` answer, whatever
        Accept-Encoding said."""
        with translated(url):
            self._check(url)
            return await self._session.get(
                url, headers=headers, allow_redirects=False, auto_decompress=decode
            )

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

        async def attempt() -> bytes | None:
            response = await self._get(
                url, {**headers, "Authorization": f"Bearer {self._token(url)}"}
            )
            try:
                if response.status == 401:
                    response = await self._answer_challenge(url, response, headers)
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise status_error(response, url)
                return await read_capped(response, url, limit)
            finally:
                response.release()

        return await retrying(self._backoff, attempt)

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
        with translated(realm, "token endpoint: "):
            async with self._session.get(
                realm, params=params, allow_redirects=False
            ) as token_response:
                if token_response.status != 200:
                    raise status_error(token_response, realm)
                raw = await read_capped(token_response, realm, TOKEN_LIMIT)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RetryableError(f"token endpoint sent no JSON: {exc}", url=url) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise FatalUpstreamError("token endpoint answered without a token", url=url)
        self._tokens[_scope_of(url)] = token
        return await self._get(url, {**headers, "Authorization": f"Bearer {token}"}, decode=decode)


async def _body(
    response: aiohttp.ClientResponse, url: str, offset: int, skip: int
) -> AsyncGenerator[bytes, None]:
    """The body from byte ``offset`` on, whatever the socket delivered as delivered:
    iter_chunked(n) would join small reads into a new buffer first, one more copy per
    byte. ``skip`` leading bytes are dropped (the server ignored Range)."""
    try:
        with translated(url):
            async for chunk in response.content.iter_any():
                if skip:  # the server ignored Range: drop what we already have
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                    if not chunk:
                        continue
                offset += len(chunk)
                yield chunk
    except RetryableError as exc:
        raise RetryableError(f"connection broken at byte {offset}: {exc}", url=url) from exc


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
