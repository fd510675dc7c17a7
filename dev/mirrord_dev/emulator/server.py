"""Offline formulae.brew.sh + ghcr.io + blob storage over real HTTP on loopback.

The registry serves bottle blobs (as a redirect to storage) and each formula version's OCI
image index, both behind GHCR's anonymous-token auth.

Two servers, because GHCR redirects blob downloads to storage on another origin and a
client must drop its Authorization header on the way there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
import secrets
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import orjson
from aiohttp import web

from mirrord_dev.emulator.content import (
    INDEX_MEDIA_TYPE,
    PORTABLE_RUBY_IMAGE,
    Blob,
    EmulatorCatalog,
    api_file,
    blob_bytes,
    blob_url,
    derive_seed,
    image_index,
    image_name,
    portable_ruby,
)

# brew's Library/Homebrew/vendor/portable-ruby-version in late 2026.
PORTABLE_RUBY_VERSIONS = ("4.0.7_1",)

FaultKind = Literal[
    "status", "throttle", "cut", "corrupt", "trickle", "stall", "wrong_length",
    "expire_token", "dead_redirect",
]  # fmt: skip
Origin = Literal["registry", "blob"]

_REGISTRY_ONLY = frozenset({"expire_token", "dead_redirect"})
_EITHER = frozenset({"status", "throttle"})  # registry by default; the only manifest faults
_FOREVER_BY_DEFAULT = frozenset({"corrupt", "trickle"})
_DEFAULT = -1  # sentinel: "use the kind's default", resolved in __post_init__
_CHUNK = 256 * 1024
_URL_TTL = 1200  # seconds a signed blob url stays valid, like GHCR's storage links


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one digest. JSON: {"kind": "cut", "after": 1000, "times": 2}.

    times: requests it hits (None = every request; omitted = 1, corrupt/trickle: None).
    seconds: Retry-After for throttle (default 1, sent rounded to whole seconds), silence for
    stall (default 3600; the rest of the body follows it).
    after: body bytes sent before cut/stall. extra: wrong_length's surplus Content-Length.
    origin: where status/throttle apply ("registry" by default, or "blob").
    """

    kind: FaultKind
    times: int | None = _DEFAULT
    status: int = 503
    seconds: float = _DEFAULT
    after: int = 0
    bytes_per_s: int = 64 * 1024
    extra: int = 1
    origin: Origin | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.times == _DEFAULT:
            object.__setattr__(self, "times", None if self.kind in _FOREVER_BY_DEFAULT else 1)
        if self.seconds == _DEFAULT:
            object.__setattr__(self, "seconds", 1.0 if self.kind == "throttle" else 3600.0)
        natural: Origin = "registry" if self.kind in _REGISTRY_ONLY | _EITHER else "blob"
        if self.origin is None:
            object.__setattr__(self, "origin", natural)
        elif self.origin not in get_args(Origin):
            raise ValueError(f"unknown fault origin {self.origin!r}")
        elif self.origin != natural and self.kind not in _EITHER:
            raise ValueError(f"fault {self.kind!r} cannot apply at the {self.origin}")
        if self.bytes_per_s <= 0 or self.after < 0 or self.extra < 1:
            raise ValueError("bytes_per_s and extra must be positive, after non-negative")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Fault:
        """Parse a fault object; ValueError naming the problem."""
        if not isinstance(obj, Mapping) or "kind" not in obj:
            raise ValueError(f"a fault is an object with a 'kind', got {obj!r}")
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        for key, value in obj.items():
            if key not in ("kind", "origin", "times") and not isinstance(value, int | float):
                raise ValueError(f"fault field {key!r} must be a number")
        if obj.get("times") is not None and not isinstance(obj["times"], int):
            raise ValueError("fault field 'times' must be an integer or null")
        return cls(**obj)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def faults_from_json(obj: Any) -> dict[str, list[Fault]]:
    """Parse {"<sha256>": [fault, ...]}, as the admin endpoint and the CLI take it."""
    if not isinstance(obj, dict):
        raise ValueError("faults must be an object mapping sha256 to a list of faults")
    out: dict[str, list[Fault]] = {}
    for sha256, faults in obj.items():
        if not isinstance(faults, list):
            raise ValueError(f"faults for {sha256} must be a list")
        out[sha256] = [Fault.from_json(f) for f in faults]
    return out


@dataclass
class BlobStats:
    requests: int = 0  # at the blob origin
    bytes_sent: int = 0  # body bytes handed to the transport
    registry_requests: int = 0


class _Armed:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


def _oci_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"errors": [{"code": code, "message": message}]})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _manifest_unknown(message: str = "manifest unknown") -> web.Response:
    return _oci_error(404, "MANIFEST_UNKNOWN", message)


def _accepts_index(accept: str) -> bool:
    """Whether an Accept header names the OCI index type. */* does not count: like
    distribution-based registries, ghcr.io only hands out an index to a client that asks for
    one, so a client that forgets the header must fail here too."""
    types = (part.split(";")[0].strip().lower() for part in accept.split(","))
    return INDEX_MEDIA_TYPE in types


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


# ASCII digits, and few enough for int() (it refuses over 4,300): a longer number is no
# range this server can hold, so the header is ignored, as with any it cannot parse.
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """Half-open byte span asked for, None for the whole body (as RFC 9110 says to do
    with a header it cannot parse); raises 416 for a range outside the body."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        start, end = max(0, total - int(last)), total
        if int(last) == 0 or total == 0:
            start = end = total
    else:
        start = int(first)
        if last != "" and int(last) < start:
            return None
        end = total if last == "" else min(int(last) + 1, total)
    if start >= total:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{total}"})
    return start, end


class Emulator:
    """Registry origin (api + /v2 + /token + /_emulator admin) and blob origin."""

    def __init__(
        self,
        catalog: EmulatorCatalog,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        blob_port: int = 0,
        auth: Literal["anonymous", "challenge"] = "anonymous",
        raw_api: bytes | None = None,
        portable_ruby_versions: Iterable[str] = PORTABLE_RUBY_VERSIONS,
        api_catalog: EmulatorCatalog | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
        bytes_per_s: int = 0,
    ) -> None:
        """``api_catalog``: what formulae.brew.sh republished after ``catalog``'s
        formula.json was read (it does so every few minutes): the API files are made from
        it, and the registry serves the bottles and image indexes of both.
        ``latency``: (low, high) seconds each request waits before its answer starts,
        uniformly drawn (GHCR: 50–200 ms to a blob's first byte); ``bytes_per_s``: each
        blob answer's pace (0: as fast as the loopback goes), like GHCR's per-connection
        speed. Both off by default; admin requests are never delayed."""
        if not 0 <= latency[0] <= latency[1] or bytes_per_s < 0:
            raise ValueError("latency must be 0 ≤ low ≤ high seconds, bytes_per_s ≥ 0")
        self.latency = latency
        self.bytes_per_s = bytes_per_s
        self._rng = random.Random()  # noqa: S311  # nosec B311  # a delay, not a secret
        self.catalog = catalog
        self.api_catalog = api_catalog
        self.host = host
        self.auth = auth
        self._ports = (port, blob_port)
        self._raw_api = raw_api
        self._api_body = b""
        self._api_source = b""  # the formula.json the API files are made from
        self._generated_at = 0  # metadata.generated_at of the packages files
        self._api_files: dict[str, bytes | None] = {}  # endpoint → body (None: 404), lazily
        self._ruby_versions = tuple(portable_ruby_versions)
        # Blobs outside the formula catalog (portable Ruby): small, kept as bytes.
        self._extra: dict[str, tuple[Blob, bytes]] = {}
        self.requests: Counter[str] = Counter()  # every request but /_emulator, by origin
        self._faults: dict[str, list[_Armed]] = {}
        self._stats: defaultdict[str, BlobStats] = defaultdict(BlobStats)
        # Manifests are keyed by image (what the url names), reported by formula name.
        self._indexes: dict[tuple[str, str], tuple[bytes, str]] = {}  # → (body, digest)
        self._names: dict[str, str] = {}  # image → formula name
        self._hidden: set[str] = set()
        self._manifest_faults: dict[str, list[_Armed]] = {}
        self._manifest_requests: Counter[str] = Counter()
        self._tokens: dict[str, str] = {}  # token → scope
        self._secret = secrets.token_bytes(16)
        self._runners: list[web.AppRunner] = []
        self._dead: socket.socket | None = None
        self.registry_url = self.api_url = self.blob_url = self._dead_url = ""

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        registry = web.Application(middlewares=[self._count("registry")])
        registry.router.add_get("/api/formula.json", self._api)
        registry.router.add_get("/api/{endpoint:.+}", self._api_other)
        registry.router.add_get("/token", self._token)
        registry.router.add_get(
            "/v2/homebrew/core/{image:.+}/blobs/sha256:{digest}", self._registry_blob
        )
        registry.router.add_get(
            "/v2/homebrew/core/{image:.+}/manifests/{ref}", self._manifest, allow_head=False
        )
        registry.router.add_get("/v2/homebrew/core/{image:.+}/tags/list", self._tags)
        registry.router.add_post("/_emulator/faults", self._admin_faults)
        registry.router.add_post("/_emulator/reset", self._admin_reset)
        registry.router.add_post("/_emulator/bump", self._admin_bump)
        registry.router.add_get("/_emulator/stats", self._admin_stats)
        storage = web.Application(middlewares=[self._count("blob")])
        storage.router.add_get("/blobs/sha256:{digest}", self._blob)
        try:
            ports = [
                await self._serve(app, port)
                for app, port in zip((registry, storage), self._ports, strict=True)
            ]
            # Bound but never listening: connecting is refused, and no one else can take
            # the port while we hold it.
            self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._dead.bind((self.host, 0))
        except BaseException:
            await self.close()
            raise
        self.registry_url = f"http://{self.host}:{ports[0]}"
        self.api_url = f"{self.registry_url}/api/formula.json"
        self.blob_url = f"http://{self.host}:{ports[1]}"
        self._dead_url = f"http://{self.host}:{self._dead.getsockname()[1]}"
        # A plain byte replace is safe: the url holds nothing JSON would escape.
        self._api_body = self._raw_api if self._raw_api is not None else self._served(self.catalog)
        self._api_source = (
            self._served(self.api_catalog) if self.api_catalog is not None else self._api_body
        )
        self._generated_at = int(time.time())
        self._index_manifests()

    def _served(self, catalog: EmulatorCatalog) -> bytes:
        return orjson.dumps(catalog.formulae).replace(b"{registry}", self.registry_url.encode())

    def _catalogs(self) -> tuple[EmulatorCatalog, ...]:
        return (self.catalog,) if self.api_catalog is None else (self.catalog, self.api_catalog)

    def _catalog_of(self, digest: str) -> EmulatorCatalog | None:
        """The catalog holding this blob, if any."""
        return next((c for c in self._catalogs() if digest in c.blobs), None)

    def _index_manifests(self) -> None:
        # Encoded once: a client asks for the same few indexes over and over. Two names can
        # share an image (foo+ and foox); the first in the catalog wins, as neither is real.
        for catalog, entry in ((c, e) for c in self._catalogs() for e in c.formulae):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            image = image_name(name)
            self._names.setdefault(image, name)
            # portable Ruby's repository holds portable Ruby alone on ghcr.io: a catalog
            # entry that names it is the hostile input, and the registry knows no such push.
            if image == PORTABLE_RUBY_IMAGE and self._ruby_versions:
                continue
            found = image_index(entry, catalog)
            if found is None or (image, found[0]) in self._indexes:
                continue
            # Indented like the JSON.pretty_generate output brew pushes, so a client cannot
            # come to rely on compact bodies.
            body = orjson.dumps(found[1], option=orjson.OPT_INDENT_2)
            digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
            self._indexes[(image, found[0])] = (body, digest)
        for version in self._ruby_versions:
            blobs, index = portable_ruby(version)
            for sha256, blob in blobs.items():
                self._extra[sha256] = (blob, blob_bytes(blob.seed, blob.size))
            body = orjson.dumps(index, option=orjson.OPT_INDENT_2)
            digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
            self._indexes[(PORTABLE_RUBY_IMAGE, version)] = (body, digest)
            self._names.setdefault(PORTABLE_RUBY_IMAGE, PORTABLE_RUBY_IMAGE)

    def _count(self, origin: str) -> Any:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            if not request.path.startswith("/_emulator/"):
                self.requests[origin] += 1
                if self.latency[1] > 0:
                    await asyncio.sleep(self._rng.uniform(*self.latency))
            response: web.StreamResponse = await handler(request)
            return response

        return count

    def total_requests(self) -> int:
        """Requests either origin received (the admin endpoints aside), any answer."""
        return sum(self.requests.values())

    def portable_ruby_blobs(self) -> dict[str, Blob]:
        """sha256 → portable Ruby blob, for every version served."""
        return {sha256: blob for sha256, (blob, _) in self._extra.items()}

    async def _serve(self, app: web.Application, port: int) -> int:
        # handler_cancellation: a stalled or trickling handler ends when its client leaves.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.host, port).start()
        return int(runner.addresses[0][1])

    async def close(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()
        if self._dead is not None:
            self._dead.close()
            self._dead = None

    # --- control -------------------------------------------------------------------------

    def set_faults(self, sha256: str, faults: list[Fault]) -> None:
        """Replace the faults of one digest; they are used up in list order."""
        self._faults[sha256] = [_Armed(f) for f in faults]

    def set_manifest_faults(self, name: str, faults: list[Fault]) -> None:
        """Replace the faults of one formula's image indexes (any ref), used in list order.

        Only status and throttle at the registry make sense for a small JSON answer.
        """
        for fault in faults:
            if fault.kind not in _EITHER or fault.origin != "registry":
                raise ValueError(
                    f"fault {fault.kind!r} at the {fault.origin} cannot hit a manifest"
                )
        self._manifest_faults[image_name(name)] = [_Armed(f) for f in faults]

    def hide_manifest(self, name: str) -> None:
        """Answer 404 for every index of this formula, as for one GHCR is missing."""
        self._hidden.add(image_name(name))

    def bump(self, name: str) -> str:
        """Upstream moves on: ``name``'s revision goes up by one and every bottle of it is
        rebuilt (new bytes, new sha256, rebuild 0), as a homebrew/core revision bump does;
        formula.json, the API files and the image indexes follow. The old bottles stay
        served (GHCR keeps them). Returns the new pkg_version; KeyError for no such name."""
        entry = next(e for e in self.catalog.formulae if e.get("name") == name)
        entry["revision"] = revision = int(entry.get("revision") or 0) + 1
        stable = entry["bottle"]["stable"]
        stable["rebuild"] = 0
        rebuilt: dict[str, Blob] = {}  # an old digest → its new blob (an `all` bottle is shared)
        for tag, file in stable["files"].items():
            old = self.catalog.blobs[file["sha256"]]
            seed = derive_seed(old.seed, name, f"revision {revision}")
            blob = rebuilt.setdefault(old.sha256, self.catalog.add_blob(name, tag, old.size, seed))
            file["sha256"], file["url"] = blob.sha256, blob_url(name, blob.sha256)
        if self._raw_api is None:
            self._api_body = self._served(self.catalog)
        if self.api_catalog is None:
            self._api_source = self._api_body
        self._generated_at = int(time.time())
        self._api_files.clear()
        self._index_manifests()
        return f"{entry['versions']['stable']}_{revision}"

    def clear_faults(self) -> None:
        self._faults.clear()
        self._manifest_faults.clear()

    def stats(self, sha256: str) -> BlobStats:
        """A snapshot of the counters for one digest."""
        current = self._stats.get(sha256)
        return BlobStats(**asdict(current)) if current is not None else BlobStats()

    def manifest_requests(self, name: str) -> int:
        """Manifest GETs for this formula's image, any ref and any answer (401 and 404 too)."""
        return self._manifest_requests[image_name(name)]

    def reset_stats(self) -> None:
        self._stats.clear()
        self._manifest_requests.clear()
        self.requests.clear()

    def total_bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self._stats.values())

    def _take(self, sha256: str, origin: Origin) -> Fault | None:
        return _take(self._faults.get(sha256, ()), origin)

    # --- registry origin -----------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        return web.Response(body=self._api_body, content_type="application/json")

    async def _api_other(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        if endpoint not in self._api_files:
            try:
                self._api_files[endpoint] = api_file(
                    self._api_source, endpoint, generated_at=self._generated_at
                )
            except orjson.JSONDecodeError:
                self._api_files[endpoint] = None
        body = self._api_files[endpoint]
        if body is None:
            return web.Response(status=404, text="Not Found")
        kind = "text/plain" if endpoint.endswith(".txt") else "application/json"
        return web.Response(body=body, content_type=kind)

    async def _token(self, request: web.Request) -> web.Response:
        # Anonymous, like ghcr.io for public images: no credentials needed.
        token = secrets.token_urlsafe(24)
        self._tokens[token] = request.query.get("scope", "")
        return _json({"token": token})

    def _authorized(self, request: web.Request, scope: str) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "anonymous":
            return header == "Bearer QQ=="
        scheme, _, token = header.partition(" ")
        return scheme == "Bearer" and self._tokens.get(token) == scope

    def _unauthorized(self, scope: str) -> web.Response:
        headers = {}
        if self.auth == "challenge":
            headers["WWW-Authenticate"] = (
                f'Bearer realm="{self.registry_url}/token",service="ghcr.io",scope="{scope}"'
            )
        return _oci_error(401, "UNAUTHORIZED", "authentication required", headers)

    async def _registry_blob(self, request: web.Request) -> web.Response:
        image, digest = request.match_info["image"], request.match_info["digest"]
        self._stats[digest].registry_requests += 1
        scope = f"repository:homebrew/core/{image}:pull"
        if not self._authorized(request, scope):
            return self._unauthorized(scope)
        fault = self._take(digest, "registry")
        if fault is not None and fault.kind == "expire_token":
            return self._unauthorized(scope)
        response = _fault_response(fault) if fault is not None else None
        if response is not None:
            return response
        if self._catalog_of(digest) is None and digest not in self._extra:
            return _oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        dead = fault is not None and fault.kind == "dead_redirect"
        base = self._dead_url if dead else self.blob_url
        expiry = int(time.time()) + _URL_TTL
        location = f"{base}/blobs/sha256:{digest}?se={expiry}&sig={self._sign(digest, expiry)}"
        return web.Response(status=307, headers={"Location": location})

    async def _manifest(self, request: web.Request) -> web.Response:
        image, ref = request.match_info["image"], request.match_info["ref"]
        self._manifest_requests[image] += 1
        scope = f"repository:homebrew/core/{image}:pull"
        if not self._authorized(request, scope):
            return self._unauthorized(scope)
        fault = _take(self._manifest_faults.get(image, ()), "registry")
        response = _fault_response(fault) if fault is not None else None
        if response is not None:
            return response
        found = None if image in self._hidden else self._indexes.get((image, ref))
        if found is None:
            return _manifest_unknown()
        if not _accepts_index(",".join(request.headers.getall("Accept", ()))):
            return _manifest_unknown(
                "OCI index found, but Accept header does not support OCI indexes"
            )
        body, digest = found
        return web.Response(
            body=body, content_type=INDEX_MEDIA_TYPE, headers={"Docker-Content-Digest": digest}
        )

    async def _tags(self, request: web.Request) -> web.Response:
        """OCI distribution's tag listing, ``{"name": …, "tags": […]}`` in lexical order
        (as distribution returns it), behind the same auth as the image's manifests."""
        image = request.match_info["image"]
        scope = f"repository:homebrew/core/{image}:pull"
        if not self._authorized(request, scope):
            return self._unauthorized(scope)
        tags = sorted(ref for known, ref in self._indexes if known == image)
        if not tags or image in self._hidden:
            return _oci_error(404, "NAME_UNKNOWN", "repository name not known to registry")
        return _json({"name": f"homebrew/core/{image}", "tags": tags})

    def _sign(self, digest: str, expiry: int) -> str:
        mac = hmac.new(self._secret, f"{digest}:{expiry}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    # --- admin ---------------------------------------------------------------------------

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            parsed = faults_from_json(orjson.loads(await request.read()))
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            return web.Response(status=400, text=str(exc))
        for sha256, faults in parsed.items():
            self.set_faults(sha256, faults)
        return _json({"ok": True})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.clear_faults()
        self.reset_stats()
        return _json({"ok": True})

    async def _admin_bump(self, request: web.Request) -> web.Response:
        try:
            name = orjson.loads(await request.read())["name"]
            return _json({"name": name, "pkg_version": self.bump(name)})
        except (ValueError, TypeError, KeyError, StopIteration) as exc:
            return web.Response(status=400, text=f"bump: {exc!r}")

    async def _admin_stats(self, request: web.Request) -> web.Response:
        blobs = {sha: asdict(s) for sha, s in self._stats.items()}
        manifests = {
            self._names.get(image, image): n for image, n in self._manifest_requests.items()
        }
        return _json(
            {"total_bytes_sent": self.total_bytes_sent(), "blobs": blobs, "manifests": manifests}
        )

    # --- blob origin ---------------------------------------------------------------------

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        stats = self._stats[digest]
        stats.requests += 1
        if "Authorization" in request.headers:
            # Signed storage rejects a second credential, as real blob storage does.
            return web.Response(
                status=400,
                text="InvalidAuthenticationInfo: Authorization header not allowed with a signed url",
            )
        try:
            expiry = int(request.query.get("se", ""))
        except ValueError:
            expiry = 0
        sig = request.query.get("sig", "")
        if expiry < time.time() or not hmac.compare_digest(sig, self._sign(digest, expiry)):
            return web.Response(
                status=403, text="AuthenticationFailed: signature missing, invalid or expired"
            )
        catalog = self._catalog_of(digest)
        extra = self._extra.get(digest)
        if catalog is not None:
            blob = catalog.blobs[digest]
        elif extra is not None:
            blob = extra[0]
        else:
            return web.Response(status=404, text="BlobNotFound")
        fault = self._take(digest, "blob")
        response = _fault_response(fault) if fault is not None else None
        if response is not None:
            return response
        span = parse_range(request.headers.get("Range"), blob.size)
        start, end = span if span is not None else (0, blob.size)
        # Generation can take seconds for a large evicted blob: keep the loop serving.
        if catalog is not None:
            data = await asyncio.get_running_loop().run_in_executor(None, catalog.data, digest)
        else:
            assert extra is not None  # checked above: one of the two holds it
            data = extra[1]
        body = memoryview(data)[start:end]
        resp = web.StreamResponse(status=200 if span is None else 206)
        resp.content_type = "application/octet-stream"
        resp.headers["Accept-Ranges"] = "bytes"
        if span is not None:
            resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        lie = fault.extra if fault is not None and fault.kind == "wrong_length" else 0
        resp.content_length = len(body) + lie
        await resp.prepare(request)
        try:
            await _send(resp, body, fault, stats, self.bytes_per_s)
        except ConnectionError:
            return resp  # the client left; nothing to finish
        if fault is not None and fault.kind in ("cut", "wrong_length") and request.transport:
            request.transport.close()  # flushes what was written, then EOF mid-body
        return resp


def _take(armed_faults: Iterable[_Armed], origin: Origin) -> Fault | None:
    """The first fault still armed for this origin, used up by one."""
    for armed in armed_faults:
        if armed.fault.origin != origin or armed.remaining == 0:
            continue
        if armed.remaining is not None:
            armed.remaining -= 1
        return armed.fault
    return None


def _fault_response(fault: Fault) -> web.Response | None:
    if fault.kind == "status":
        return _oci_error(fault.status, "UNAVAILABLE", "injected failure")
    if fault.kind == "throttle":
        retry = str(max(0, round(fault.seconds)))
        return _oci_error(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": retry})
    return None


async def _send(
    resp: web.StreamResponse,
    body: memoryview,
    fault: Fault | None,
    stats: BlobStats,
    bytes_per_s: int = 0,
) -> None:
    limit, chunk_size = len(body), _CHUNK
    stall_at, rate, corrupt = -1, bytes_per_s, False
    if rate:
        chunk_size = max(1, min(_CHUNK, rate // 20))
    if fault is not None:
        if fault.kind == "cut":
            limit = min(fault.after, limit)
        elif fault.kind == "stall":
            stall_at = fault.after
        elif fault.kind == "trickle":
            rate = fault.bytes_per_s
            chunk_size = max(1, min(_CHUNK, rate // 20))  # ~20 writes a second
        corrupt = fault.kind == "corrupt"
    loop = asyncio.get_running_loop()
    started = loop.time()
    pos = 0
    while pos < limit:
        if pos == stall_at and fault is not None:
            await asyncio.sleep(fault.seconds)  # then resume: a link that came back
        stop = min(pos + chunk_size, limit)
        if pos < stall_at < stop:
            stop = stall_at
        chunk: bytes | memoryview = body[pos:stop]
        if corrupt:  # one flipped byte per chunk: same length, wrong digest
            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
        await resp.write(chunk)
        pos = stop
        stats.bytes_sent += len(chunk)
        if rate:
            # Pace against the start time so per-write overhead does not add up.
            delay = started + pos / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
