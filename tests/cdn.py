"""A stand-in for CloudFront with Origin Access Control in front of a private bucket.

moto, like a private bucket, refuses anonymous GETs. CloudFront with OAC signs its own
request to the bucket (SigV4, its service principal) and does not forward the viewer's
Authorization header; this front does the same with the test's credentials: every GET or
HEAD becomes a signed GetObject of the key that is the path, and the viewer's headers are
dropped. It counts viewers that sent an Authorization header, which brew never does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.exceptions import ClientError


@dataclass
class Front:
    url: str = ""
    requests: int = 0
    with_authorization: int = 0
    paths: list[str] = field(default_factory=list)


@asynccontextmanager
async def cdn_front(s3: Any, bucket: str) -> AsyncIterator[Front]:
    """Serve ``bucket`` on 127.0.0.1:<free port> through the signed client ``s3``."""
    front = Front()

    async def handle(request: web.Request) -> web.StreamResponse:
        front.requests += 1
        front.paths.append(request.path)
        if "Authorization" in request.headers:
            front.with_authorization += 1  # and it goes no further, as with OAC
        key = unquote(request.path.lstrip("/"))
        try:
            found = await s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            # The OAC policy grants s3:ListBucket too, so a missing key is a 404, not 403.
            status = 404 if code in ("NoSuchKey", "404", "NotFound") else 502
            return web.Response(status=status, text=code)
        async with found["Body"] as body:
            data = await body.read()
        return web.Response(
            body=data if request.method == "GET" else None,
            headers={"Content-Type": found.get("ContentType", "application/octet-stream")},
        )

    app = web.Application()
    app.router.add_route("GET", "/{key:.*}", handle)
    app.router.add_route("HEAD", "/{key:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    front.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield front
    finally:
        await runner.cleanup()
