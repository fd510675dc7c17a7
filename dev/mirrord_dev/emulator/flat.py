"""A TUNA- or USTC-style bottle mirror: the emulator catalog's bottle files in one flat
``bottles/`` folder, served as a static web server serves files (GET, Range, 404), with
the bottle file names those mirrors use:
``<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz`` (ustclug/ustcmirror-images,
homebrew-bottles). A test may make a file missing (404), corrupt (same length, one byte
flipped per file), answer with a status or redirect elsewhere. Imports nothing of mirrord."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from mirrord_dev.emulator.content import EmulatorCatalog
from mirrord_dev.emulator.server import parse_range


def bottle_filename(entry: dict[str, Any], tag: str) -> str:
    """The flat file name of ``entry``'s bottle for ``tag``, as the mirrors name it."""
    version = entry["versions"]["stable"]
    revision = int(entry.get("revision") or 0)
    pkg = f"{version}_{revision}" if revision else version
    rebuild = int(entry["bottle"]["stable"].get("rebuild") or 0)
    suffix = f".{rebuild}" if rebuild else ""
    return f"{entry['name']}-{pkg}.{tag}.bottle{suffix}.tar.gz"


def bottle_files(catalog: EmulatorCatalog) -> dict[str, str]:
    """File name → sha256 of every bottle the catalog lists."""
    files: dict[str, str] = {}
    for entry in catalog.formulae:
        stable = (entry.get("bottle") or {}).get("stable") or {}
        for tag, file in (stable.get("files") or {}).items():
            files[bottle_filename(entry, tag)] = file["sha256"]
    return files


class FlatMirror:
    """``url`` is the folder's base URL (``http://127.0.0.1:<port>/bottles``)."""

    def __init__(self, catalog: EmulatorCatalog, *, host: str = "127.0.0.1") -> None:
        self.catalog = catalog
        self.host = host
        self.files = bottle_files(catalog)
        self.missing: set[str] = set()  # file names answered with 404
        self.corrupt: set[str] = set()  # file names served with a byte flipped
        self.status: dict[str, int] = {}  # file name → a status to answer with
        self.redirect: dict[str, str] = {}  # file name → a Location to answer 302 with
        self.requests: Counter[str] = Counter()  # file name (as decoded) → GETs
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FlatMirror:
        app = web.Application()
        app.router.add_get("/bottles/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.url = f"http://{self.host}:{self._runner.addresses[0][1]}/bottles"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]  # percent-decoded, as a file server maps it
        self.requests[name] += 1
        if name in self.redirect:
            raise web.HTTPFound(self.redirect[name])
        if name in self.status:
            return web.Response(status=self.status[name], text="injected")
        sha256 = self.files.get(name)
        if sha256 is None or name in self.missing:
            return web.Response(status=404, text="404 Not Found")
        data = self.catalog.data(sha256)
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        span = parse_range(request.headers.get("Range"), len(data))
        if span is None:
            return web.Response(body=data, content_type="application/octet-stream")
        start, end = span
        return web.Response(
            status=206,
            body=data[start:end],
            content_type="application/octet-stream",
            headers={"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"},
        )
