"""A small hostile upstream for tests: formula.json, image indexes and bottle blobs over
real HTTP on loopback, each bottle answered the way a red-team review found harmful.

The registry paths are GHCR's (``/v2/homebrew/core/<image>/blobs/sha256:<hex>`` and
``…/manifests/<ref>``), so mirrord treats the server as a registry: the anonymous token,
image indexes for announced sizes, a 401 challenge where asked for. Each bottle has one
``Behaviour``; the server counts requests and body bytes sent per digest, so a test can
say how much a hostile answer cost.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
import zlib
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal

import orjson
from aiohttp import web
from conftest import loopback

Behaviour = Literal[
    "ok",  # 200, Content-Length, the bytes
    "gzip_label",  # the stored .tar.gz with Content-Encoding: gzip (Apache's AddEncoding)
    "gzip_bomb",  # Content-Encoding: gzip, a stream inflating ~1000:1, never ending
    "endless",  # the bytes, then junk forever (chunked, no Content-Length)
    "huge_length",  # Content-Length of 10 GiB, then the bytes and junk until the client leaves
    "challenge",  # 401 with a token realm at ``realm`` (another host, a metadata address)
    "redirect_loop",  # 307 to itself, forever
    "redirect_to",  # 307 to ``location`` (a link-local address, say)
    "retry_after",  # 503 with Retry-After ``retry_after`` once, then the bytes
    "trickle",  # one byte every half second: never silent long enough for a read timeout
    "cut_every",  # ``cut_bytes`` from the Range asked, then the connection closes
]

JUNK = bytes(range(256)) * 256  # 64 KiB a write
# A raw deflate block inflating to 16 MiB of zeros, closed by a full flush, so it can be
# repeated as is: gzip's header, then this block forever, is an endless 1000:1 bomb.
_ZEROS = zlib.compressobj(9, zlib.DEFLATED, -15)
BOMB_BLOCK = _ZEROS.compress(bytes(16 << 20)) + _ZEROS.flush(zlib.Z_FULL_FLUSH)
GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])


def tar_gz(name: str, size: int) -> bytes:
    """A real bottle-shaped file: a gzip'd tar holding ``size`` bytes under ``name``/."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"{name}/1.0/bin/{name}")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(i % 251 for i in range(size))))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Bottle:
    name: str
    version: str = "1.0"
    tag: str = "arm64_tahoe"
    rebuild: int = 0
    data: bytes = b""
    behaviour: Behaviour = "ok"
    announce: bool = True  # list it in its image index (sh.brew.bottle.size)
    size_note: str = ""  # what the index says its size is, when not the truth
    cut_bytes: int = 100  # cut_every: bytes sent before each cut
    realm: str = ""
    location: str = ""
    retry_after: str = ""
    url_prefix: str = ""  # e.g. "http://user:secret@" instead of "http://"
    url_query: str = ""  # e.g. "?token=secret"

    def __post_init__(self) -> None:
        self.data = self.data or tar_gz(self.name, 300_000)

    @property
    def file_name(self) -> str:
        rebuild = f".{self.rebuild}" if self.rebuild else ""
        return f"{self.name}-{self.version}.{self.tag}.bottle{rebuild}.tar.gz"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def image(self) -> str:
        return self.name.replace("@", "/").replace("+", "x")


@dataclass
class HostileUpstream:
    bottles: list[Bottle]
    requests: Counter[str] = field(default_factory=Counter)  # digest → blob requests
    sent: Counter[str] = field(default_factory=Counter)  # digest → body bytes written
    url: str = ""
    _served: AsyncExitStack = field(default_factory=AsyncExitStack)
    _retried: set[str] = field(default_factory=set)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/formula.json"

    def blob_url(self, b: Bottle) -> str:
        base = self.url.replace("http://", b.url_prefix or "http://", 1)
        return f"{base}/v2/homebrew/core/{b.image}/blobs/sha256:{b.sha256}{b.url_query}"

    def catalog(self) -> bytes:
        return orjson.dumps(
            [
                {
                    "name": b.name,
                    "versions": {"stable": b.version},
                    "revision": 0,
                    "bottle": {
                        "stable": {
                            "rebuild": b.rebuild,
                            "files": {
                                b.tag: {
                                    "cellar": ":any",
                                    "url": self.blob_url(b),
                                    "sha256": b.sha256,
                                }
                            },
                        }
                    },
                }
                for b in self.bottles
            ]
        )

    async def __aenter__(self) -> HostileUpstream:
        app = web.Application()
        app.router.add_get("/api/formula.json", self._catalog)
        app.router.add_get("/v2/homebrew/core/{image:.+}/blobs/sha256:{digest}", self._blob)
        app.router.add_get("/v2/homebrew/core/{image:.+}/manifests/{ref}", self._index)
        self.url = await self._served.enter_async_context(loopback(app, handler_cancellation=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._served.aclose()

    async def _catalog(self, request: web.Request) -> web.Response:
        return web.Response(body=self.catalog(), content_type="application/json")

    async def _index(self, request: web.Request) -> web.Response:
        image, ref = request.match_info["image"], request.match_info["ref"]
        found = [b for b in self.bottles if b.image == image and b.version == ref and b.announce]
        if not found:
            return web.Response(status=404, text='{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        manifests = [
            {
                "annotations": {
                    "org.opencontainers.image.ref.name": f"{b.version}.{b.tag}",
                    "sh.brew.bottle.digest": f"sha256:{b.sha256}",
                    "sh.brew.bottle.size": b.size_note or str(len(b.data)),
                }
            }
            for b in found
        ]
        return web.Response(
            body=orjson.dumps({"schemaVersion": 2, "manifests": manifests}),
            content_type="application/vnd.oci.image.index.v1+json",
        )

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        self.requests[digest] += 1
        bottle = next((b for b in self.bottles if b.sha256 == digest), None)
        if bottle is None:
            return web.Response(status=404)
        kind = bottle.behaviour
        if kind == "challenge":
            realm = f'Bearer realm="{bottle.realm}",service="ghcr.io",scope="x"'
            return web.Response(status=401, headers={"WWW-Authenticate": realm})
        if kind == "redirect_loop":
            return web.Response(status=307, headers={"Location": request.path_qs})
        if kind == "redirect_to":
            return web.Response(status=307, headers={"Location": bottle.location})
        if kind == "retry_after" and digest not in self._retried:
            self._retried.add(digest)
            return web.Response(status=503, headers={"Retry-After": bottle.retry_after})
        if kind == "cut_every":
            return await self._cut(request, digest, bottle.data, bottle.cut_bytes)
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        if kind in ("gzip_label", "gzip_bomb"):
            resp.headers["Content-Encoding"] = "gzip"
        if kind in ("ok", "gzip_label", "retry_after"):
            resp.content_length = len(bottle.data)
        elif kind == "huge_length":
            resp.content_length = 10 * 2**30
        await resp.prepare(request)
        try:
            if kind == "trickle":
                for i in range(len(bottle.data)):
                    await self._write(resp, digest, bottle.data[i : i + 1])
                    await asyncio.sleep(0.5)
            if kind == "gzip_bomb":
                await self._write(resp, digest, GZIP_HEADER)
                while True:
                    await self._write(resp, digest, BOMB_BLOCK)
            elif kind != "gzip_bomb":
                await self._write(resp, digest, bottle.data)
            while kind in ("endless", "huge_length"):
                await self._write(resp, digest, JUNK)
        except ConnectionError:
            return resp  # the client left: what a hostile server would see
        await resp.write_eof()
        return resp

    async def _cut(
        self, request: web.Request, digest: str, data: bytes, size: int
    ) -> web.StreamResponse:
        start = 0
        asked = request.headers.get("Range", "")
        if asked.startswith("bytes=") and asked.endswith("-"):
            start = int(asked[6:-1])
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(data) - start
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        await self._write(resp, digest, data[start : start + size])
        if request.transport is not None:
            request.transport.close()  # mid-body: the client sees a cut
        return resp

    async def _write(self, resp: web.StreamResponse, digest: str, data: bytes) -> None:
        await resp.write(data)
        self.sent[digest] += len(data)
