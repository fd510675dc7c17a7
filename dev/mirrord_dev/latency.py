"""A latency-bound front for the emulator's blob origin, as GHCR's storage looks from one
task (issue 16's bench): every blob GET waits before its first byte (drawn from
``first_byte`` seconds, seeded, so runs compare), and its body is paced to
``bytes_per_s``, a cap per connection (one response at a time on a connection).

It is a separate server in front of the emulator, not a change to it: ``slow_blobs(emu)``
starts it and points the registry's redirects at it; the emulator's own counters still
see every blob request (``emu.stats``, ``/_emulator/stats``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from mirrord_dev.emulator.server import Emulator

_CHUNK = 64 * 1024
_PASSED = ("Content-Length", "Content-Range", "Content-Type", "ETag", "Accept-Ranges")


@dataclass(frozen=True, slots=True)
class Latency:
    first_byte: tuple[float, float] = (0.05, 0.2)  # seconds before a response starts
    bytes_per_s: int | None = 8 * 10**6  # per response; None: as fast as the origin
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.first_byte
        if not 0 <= low <= high or (self.bytes_per_s is not None and self.bytes_per_s <= 0):
            raise ValueError(f"latency: need 0 ≤ low ≤ high and a positive rate, got {self}")


class LatencyFront:
    """Forwards ``GET <path>`` to ``upstream`` + path, late and paced (see the module)."""

    def __init__(self, upstream: str, latency: Latency, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.latency = latency
        self.url = ""
        self.requests = 0
        self._host = host
        self._rng = random.Random(latency.seed)  # noqa: S311 - delays, not secrets
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self._host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.requests += 1
        await asyncio.sleep(self._rng.uniform(*self.latency.first_byte))
        headers = {k: v for k, v in request.headers.items() if k in ("Range", "Authorization")}
        async with self._session.get(
            self.upstream + request.path_qs, headers=headers, allow_redirects=False
        ) as up:
            resp = web.StreamResponse(status=up.status)
            for name in _PASSED:
                if name in up.headers:
                    resp.headers[name] = up.headers[name]
            await resp.prepare(request)
            started, sent = time.monotonic(), 0
            rate = self.latency.bytes_per_s
            try:
                async for chunk in up.content.iter_chunked(_CHUNK):
                    await resp.write(chunk)
                    sent += len(chunk)
                    if rate is not None:  # never ahead of the cap
                        ahead = sent / rate - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            except (aiohttp.ClientError, ConnectionResetError):
                return resp  # the origin cut it (a fault) or the client left: so do we
            await resp.write_eof()
            return resp


@asynccontextmanager
async def slow_blobs(emu: Emulator, latency: Latency | None = None) -> AsyncIterator[LatencyFront]:
    """``emu``'s blobs through a ``LatencyFront`` for the block's duration."""
    front = LatencyFront(emu.blob_url, latency or Latency())
    await front.start()
    direct, emu.blob_url = emu.blob_url, front.url
    try:
        yield front
    finally:
        emu.blob_url = direct
        await front.close()
