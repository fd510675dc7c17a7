"""Clients the harness times besides mirrord, each run as its own process:

* ``null``:   origin → /dev/null with aiohttp at the same concurrency (the download limit);
* ``fetch``:  origin → files (set-up for the upload-from-local-files limit; not timed);
* ``upload``: local files → S3 with aiobotocore, same concurrency and part size, no hashing
  (the upload limit as the SDK mirrord uses can reach it);

``python -m bench.clients <mode> …``; each prints one JSON line (bytes, objects).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mirrord.core.catalog import parse_catalog, select_bottles


def bottles(api_url: str, date: str) -> list[tuple[str, str]]:
    """(url, key) of every bottle the corpus serves, keyed as mirrord names them."""
    with urllib.request.urlopen(api_url) as r:  # noqa: S310 - loopback origin
        catalog = parse_catalog(r.read())
    sel = select_bottles(catalog.formulae, ["arm64_tahoe"])
    return [(b.url, b.s3_key(date)) for b in sel.bottles]


async def _pool(items: list[Any], concurrency: int, work: Any) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def null(api_url: str, concurrency: int, out: Path | None) -> dict[str, int]:
    todo = bottles(api_url, "bench")
    total = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as http:

        async def one(item: tuple[str, str]) -> None:
            nonlocal total
            url, key = item
            # The 307 to blob storage must not carry the registry's credential.
            auth = {"Authorization": "Bearer QQ=="}
            async with http.get(url, headers=auth, allow_redirects=False) as first:
                location = first.headers["Location"]
            async with http.get(location) as resp:
                resp.raise_for_status()
                if out is None:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        total += len(chunk)
                else:
                    path = out / key.rpartition("/")[2]
                    with path.open("wb") as f:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            f.write(chunk)
                            total += len(chunk)

        await _pool(todo, concurrency, one)
    return {"bytes": total, "objects": len(todo)}


async def upload(folder: Path, bucket: str, concurrency: int, part_size: int) -> dict[str, int]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    files = sorted(p for p in folder.iterdir() if p.is_file())  # noqa: ASYNC240 - set-up
    total = 0
    config = AioConfig(max_pool_connections=concurrency * 2, s3={"payload_signing_enabled": False})
    async with get_session().create_client("s3", config=config) as s3:

        async def one(path: Path) -> None:
            nonlocal total
            key = f"bench/{path.name}"
            size = path.stat().st_size  # noqa: ASYNC240 - tmpfs, as a plain SDK script does
            with path.open("rb") as f:
                if size <= part_size:
                    await s3.put_object(Bucket=bucket, Key=key, Body=f.read())
                else:
                    up = await s3.create_multipart_upload(Bucket=bucket, Key=key)
                    parts = []
                    n = 1
                    while data := f.read(part_size):
                        r = await s3.upload_part(
                            Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data
                        )
                        parts.append({"PartNumber": n, "ETag": r["ETag"]})
                        n += 1
                    await s3.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=up["UploadId"],
                        MultipartUpload={"Parts": parts},
                    )
            total += size

        await _pool(files, concurrency, one)
    return {"bytes": total, "objects": len(files)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.clients")
    p.add_argument("mode", choices=("null", "fetch", "upload"))
    p.add_argument("--api-url")
    p.add_argument("--dir", type=Path)
    p.add_argument("--bucket")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--part-size", type=int, default=16 << 20)
    a = p.parse_args(argv)
    if a.mode == "null":
        result = asyncio.run(null(a.api_url, a.concurrency, None))
    elif a.mode == "fetch":
        a.dir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(null(a.api_url, a.concurrency, a.dir))
    else:
        result = asyncio.run(upload(a.dir, a.bucket, a.concurrency, a.part_size))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.exit(main())
