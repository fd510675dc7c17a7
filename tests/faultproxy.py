"""A small HTTP proxy in front of the moto server that breaks S3 on purpose.

It recognises the S3 operation of each request (path-style, as botocore addresses a
custom endpoint) and, for the next N requests of an operation, answers with a fault
instead of forwarding: 503 SlowDown, 500 InternalError (S3's XML error bodies), 412
PreconditionFailed, or a connection reset (the transport aborted before any answer).
Everything else is forwarded to moto with bodies streamed both ways. It counts requests
and injected faults per operation: the figures of docs/reliability.md.

``chaos`` injects at random instead (seeded), for the soak.
"""

from __future__ import annotations

import random
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web
from conftest import loopback

Op = Literal["create", "part", "complete", "abort", "list_uploads", "put", "hashfile", "other"]
Kind = Literal["slowdown", "internal", "reset", "precondition"]
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect", "host"}
)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "precondition": (
        412,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    ),
}


def operation(method: str, path: str, query: dict[str, str], hash_key: str) -> Op:
    """The S3 operation a request is, from its method, path and query alone."""
    if method == "POST" and "uploads" in query:
        return "create"
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "part"
    if method == "POST" and "uploadId" in query:
        return "complete"
    if method == "DELETE" and "uploadId" in query:
        return "abort"
    if method == "GET" and "uploads" in query:
        return "list_uploads"
    if method == "PUT" and not query:
        # /<bucket>/<key>: only bottles and the hash file count; the lock, status.json
        # and the brew files are "other" so that a fault aimed at bottles hits bottles.
        key = path.lstrip("/").partition("/")[2]
        if key == hash_key:
            return "hashfile"
        if key.endswith(".tar.gz"):
            return "put"
    return "other"


@dataclass
class Rule:
    op: Op
    kind: Kind
    times: int  # the next N matching requests


@dataclass
class FaultProxy:
    upstream: str
    hash_key: str = "bottles_hash.json"
    rules: list[Rule] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    url: str = ""
    # chaos: every request of these operations fails with this probability, kind at random.
    chaos_rate: float = 0.0
    chaos_ops: frozenset[str] = frozenset()
    chaos_kinds: tuple[Kind, ...] = ()
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _served: AsyncExitStack = field(default_factory=AsyncExitStack)
    _session: aiohttp.ClientSession | None = None

    def inject(self, op: Op, kind: Kind, times: int = 1) -> None:
        self.rules.append(Rule(op, kind, times))

    def chaos(self, rate: float, ops: set[str], kinds: tuple[Kind, ...], seed: int) -> None:
        self.chaos_rate, self.chaos_ops, self.chaos_kinds = rate, frozenset(ops), kinds
        self.rng = random.Random(seed)

    def clear(self) -> None:
        self.rules.clear()
        self.chaos_rate = 0.0

    async def __aenter__(self) -> FaultProxy:
        # auto_decompress off: bytes pass through exactly as moto sent them.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        )
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.url = await self._served.enter_async_context(loopback(app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._served.aclose()
        if self._session is not None:
            await self._session.close()

    def _fault_for(self, op: str) -> Kind | None:
        for rule in self.rules:
            if rule.op == op and rule.times > 0:
                rule.times -= 1
                return rule.kind
        if op in self.chaos_ops and self.rng.random() < self.chaos_rate:
            return self.rng.choice(self.chaos_kinds)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = operation(request.method, request.path, dict(request.query), self.hash_key)
        self.requests[op] += 1
        kind = self._fault_for(op)
        if kind is not None:
            self.injected[op] += 1
            if kind == "reset":
                # Before reading the body, as a load balancer dropping the connection.
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never sent: the transport is gone
            status, code, message = _ERRORS[kind]
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>faultproxy</RequestId></Error>"
            )
            return web.Response(status=status, text=body, content_type="application/xml")
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = request.host  # the signature covers it
        body = request.content.iter_chunked(1 << 20) if request.can_read_body else None
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding", "Accept"),
        ) as upstream:
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    out.headers.add(k, v)
            if upstream.content_length is not None:
                out.content_length = upstream.content_length
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(1 << 20):
                    await out.write(chunk)
            await out.write_eof()
            return out
