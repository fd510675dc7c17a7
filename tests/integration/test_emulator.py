"""The upstream emulator, exercised over real HTTP as a client would see it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from mirrord_dev.emulator import (
    INDEX_MEDIA_TYPE,
    Emulator,
    EmulatorCatalog,
    Fault,
    blob_bytes,
    catalog_from_entries,
    image_index,
    synthetic_catalog,
)

SIZE = 300_000  # > one 256 KiB write, so faults land mid-body
ANON = {"Authorization": "Bearer QQ=="}


def _entry(
    name: str,
    files: dict[str, str],
    rebuild: int = 0,
    *,
    version: str = "1.0",
    revision: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "full_name": name,
        "versions": {"stable": version, "head": None, "bottle": bool(files)},
        "revision": revision,
        "bottle": {
            "stable": {
                "rebuild": rebuild,
                "root_url": "https://ghcr.io/v2/homebrew/core",
                "files": {
                    tag: {"cellar": ":any", "url": f"https://ghcr.io/x/{sha}", "sha256": sha}
                    for tag, sha in files.items()
                },
            }
        }
        if files
        else {},
        "desc": "kept as is",
    }


ENTRIES = [
    _entry("jq", {"arm64_tahoe": "a" * 64, "sonoma": "b" * 64}),
    _entry("openssl@3", {"arm64_sonoma": "c" * 64, "arm64_ventura": "c" * 64, "all": "d" * 64}),
    _entry("libxml++", {"x86_64_linux": "e" * 64}),
    _entry("nobottle", {}),
]


@pytest.fixture(scope="module")
def catalog() -> EmulatorCatalog:
    return catalog_from_entries(ENTRIES, seed=7, default_size=SIZE)


@pytest_asyncio.fixture
async def emu(catalog: EmulatorCatalog) -> AsyncIterator[Emulator]:
    async with Emulator(catalog) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _file(catalog: EmulatorCatalog, index: int, tag: str) -> dict[str, str]:
    files: dict[str, dict[str, str]] = catalog.formulae[index]["bottle"]["stable"]["files"]
    return files[tag]


def _registry_url(emu: Emulator, index: int, tag: str) -> str:
    return _file(emu.catalog, index, tag)["url"].replace("{registry}", emu.registry_url)


async def _location(http: aiohttp.ClientSession, url: str, headers: dict[str, str] = ANON) -> str:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 307, await resp.text()
        return resp.headers["Location"]


async def _download(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> bytes:
    async with http.get(await _location(http, url), **kwargs) as resp:
        assert resp.status == 200
        return await resp.read()


@pytest.mark.asyncio
async def test_formula_json_points_at_registry_and_digests_match(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """formula.json urls lead to bytes whose sha256 is the one listed."""
    async with http.get(emu.api_url) as resp:
        assert resp.content_type == "application/json"
        formulae = orjson.loads(await resp.read())
    file = formulae[0]["bottle"]["stable"]["files"]["arm64_tahoe"]
    assert file["url"].startswith(f"{emu.registry_url}/v2/homebrew/core/jq/blobs/sha256:")
    assert formulae[0]["bottle"]["stable"]["root_url"] == f"{emu.registry_url}/v2/homebrew/core"
    data = await _download(http, file["url"])
    assert len(data) == SIZE
    assert hashlib.sha256(data).hexdigest() == file["sha256"]
    assert emu.stats(file["sha256"]).bytes_sent == SIZE
    assert emu.total_bytes_sent() == SIZE


@pytest.mark.asyncio
async def test_raw_api_is_served_verbatim(
    catalog: EmulatorCatalog, http: aiohttp.ClientSession
) -> None:
    """raw_api replaces formula.json byte for byte (for truncated catalogs)."""
    raw = b'[{"name": "jq", "bott'
    async with Emulator(catalog, raw_api=raw) as emu, http.get(emu.api_url) as resp:
        assert await resp.read() == raw


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer QQ"}, {"Authorization": "Basic QQ=="}]
)
async def test_anonymous_mode_requires_qq_token(
    emu: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Anonymous mode answers 401 unless Authorization is exactly Bearer QQ==."""
    async with http.get(
        _registry_url(emu, 0, "sonoma"), headers=headers, allow_redirects=False
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"
        assert "WWW-Authenticate" not in resp.headers


@pytest.mark.asyncio
async def test_unknown_digest_is_blob_unknown(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A digest not in the catalog gets an OCI 404 BLOB_UNKNOWN."""
    url = f"{emu.registry_url}/v2/homebrew/core/jq/blobs/sha256:{'0' * 64}"
    async with http.get(url, headers=ANON) as resp:
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"


@pytest.mark.asyncio
async def test_challenge_flow_token_then_redirect(
    catalog: EmulatorCatalog, http: aiohttp.ClientSession
) -> None:
    """Challenge mode: 401 with a Bearer challenge, anonymous token for the scope, then 307."""
    async with Emulator(catalog, auth="challenge") as emu:
        url = _registry_url(emu, 1, "arm64_sonoma")
        async with http.get(url, headers=ANON, allow_redirects=False) as resp:
            assert resp.status == 401
            challenge = resp.headers["WWW-Authenticate"]
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        assert params == {
            "realm": f"{emu.registry_url}/token",
            "service": "ghcr.io",
            "scope": "repository:homebrew/core/openssl/3:pull",
        }
        query = {"service": params["service"], "scope": params["scope"]}
        async with http.get(params["realm"], params=query) as resp:
            token = (await resp.json())["token"]
        location = await _location(http, url, {"Authorization": f"Bearer {token}"})
        assert location.startswith(f"{emu.blob_url}/blobs/sha256:")
        other = _registry_url(emu, 0, "sonoma")  # a token is good for its own scope only
        async with http.get(
            other, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
        ) as resp:
            assert resp.status == 401


@pytest.mark.asyncio
async def test_blob_origin_rejects_authorization_and_bad_signature(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """Blob storage answers 400 to an Authorization header and 403 to an unsigned url."""
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location, headers=ANON) as resp:
        assert resp.status == 400
    async with http.get(location.split("?")[0]) as resp:
        assert resp.status == 403


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=10-19", (10, 20)), ("bytes=299990-", (299_990, SIZE)), ("bytes=-5", (SIZE - 5, SIZE)),
     ("bytes=100-999999", (100, SIZE))],
)  # fmt: skip
async def test_range_returns_the_slice(
    emu: Emulator, http: aiohttp.ClientSession, header: str, span: tuple[int, int]
) -> None:
    """Range requests get 206 with the right bytes and Content-Range."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location, headers={"Range": header}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {span[0]}-{span[1] - 1}/{SIZE}"
        assert await resp.read() == emu.catalog.data(sha)[span[0] : span[1]]
    assert emu.stats(sha).bytes_sent == span[1] - span[0]


@pytest.mark.asyncio
async def test_unsatisfiable_range_is_416(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A range starting past the end gets 416 with bytes */size."""
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location, headers={"Range": f"bytes={SIZE}-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.asyncio
async def test_status_and_throttle_at_registry_then_recover(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """status and throttle faults hit the registry in order, `times` each, then it recovers."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    url = _registry_url(emu, 0, "sonoma")
    emu.set_faults(sha, [Fault("status", status=500, times=2), Fault("throttle", seconds=7)])
    seen = []
    for _ in range(4):
        async with http.get(url, headers=ANON, allow_redirects=False) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
    assert seen == [(500, None), (500, None), (429, "7"), (307, None)]
    assert emu.stats(sha).registry_requests == 4
    assert emu.stats(sha).requests == 0


@pytest.mark.asyncio
async def test_status_at_blob_origin(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """A status fault with origin=blob fails the storage request, not the registry."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("status", status=503, origin="blob")])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location) as resp:
        assert resp.status == 503
    assert len(await _download(http, _registry_url(emu, 0, "sonoma"))) == SIZE


@pytest.mark.asyncio
async def test_cut_closes_after_n_bytes(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """cut sends the full Content-Length, then closes after `after` bytes."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("cut", after=1000)])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location) as resp:
        assert resp.content_length == SIZE
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emu.stats(sha).bytes_sent == 1000
    assert len(await _download(http, _registry_url(emu, 0, "sonoma"))) == SIZE  # used up


@pytest.mark.asyncio
async def test_wrong_length_advertises_more_than_sent(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """wrong_length claims `extra` more bytes than it sends, then closes."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("wrong_length", extra=10)])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location) as resp:
        assert resp.content_length == SIZE + 10
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emu.stats(sha).bytes_sent == SIZE


@pytest.mark.asyncio
async def test_corrupt_keeps_length_changes_digest(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """corrupt serves the same length with other bytes, on every request."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("corrupt")])
    for _ in range(2):
        data = await _download(http, _registry_url(emu, 0, "sonoma"))
        assert len(data) == SIZE
        assert hashlib.sha256(data).hexdigest() != sha


@pytest.mark.asyncio
async def test_stall_triggers_client_read_timeout(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """stall sends `after` bytes then goes silent, so the client's read timeout fires."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("stall", after=500)])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(location, timeout=aiohttp.ClientTimeout(sock_read=0.2)) as resp:
        assert await resp.content.readexactly(500)
        with pytest.raises(asyncio.TimeoutError):
            await resp.read()
    assert emu.stats(sha).bytes_sent == 500


@pytest.mark.asyncio
async def test_trickle_paces_the_body(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """trickle sends at bytes_per_s."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("trickle", bytes_per_s=200_000)])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    started = time.monotonic()
    async with http.get(location, headers={"Range": "bytes=0-59999"}) as resp:
        assert len(await resp.read()) == 60_000
    assert 0.25 <= time.monotonic() - started < 2.0


@pytest.mark.asyncio
async def test_expire_token_rechallenges_a_valid_token(
    catalog: EmulatorCatalog, http: aiohttp.ClientSession
) -> None:
    """expire_token answers 401 with the challenge even to a valid token, `times` times."""
    async with Emulator(catalog, auth="challenge") as emu:
        sha = _file(catalog, 0, "sonoma")["sha256"]
        url = _registry_url(emu, 0, "sonoma")
        async with http.get(
            f"{emu.registry_url}/token", params={"scope": "repository:homebrew/core/jq:pull"}
        ) as resp:
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        emu.set_faults(sha, [Fault("expire_token")])
        async with http.get(url, headers=auth, allow_redirects=False) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer realm=")
        await _location(http, url, auth)


@pytest.mark.asyncio
async def test_dead_redirect_points_nowhere(emu: Emulator, http: aiohttp.ClientSession) -> None:
    """dead_redirect sends the client to a port where nothing listens."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    emu.set_faults(sha, [Fault("dead_redirect")])
    location = await _location(http, _registry_url(emu, 0, "sonoma"))
    assert not location.startswith(emu.blob_url)
    with pytest.raises(aiohttp.ClientConnectorError):
        async with http.get(location):
            pass
    assert len(await _download(http, _registry_url(emu, 0, "sonoma"))) == SIZE


@pytest.mark.asyncio
async def test_admin_endpoints_set_faults_report_and_reset(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """Another process can set faults, read stats and reset over HTTP."""
    sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    body = {sha: [{"kind": "status", "status": 404, "times": None}]}
    async with http.post(f"{emu.registry_url}/_emulator/faults", json=body) as resp:
        assert resp.status == 200
    for _ in range(2):
        async with http.get(_registry_url(emu, 0, "sonoma"), headers=ANON) as resp:
            assert resp.status == 404
    async with http.post(
        f"{emu.registry_url}/_emulator/faults", json={sha: [{"kind": "nope"}]}
    ) as resp:
        assert resp.status == 400
    async with http.post(f"{emu.registry_url}/_emulator/reset") as resp:
        assert resp.status == 200
    await _download(http, _registry_url(emu, 0, "sonoma"))
    async with http.get(f"{emu.registry_url}/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats == {
        "total_bytes_sent": SIZE,
        "blobs": {sha: {"requests": 1, "bytes_sent": SIZE, "registry_requests": 1}},
        "manifests": {},
    }


@pytest.mark.asyncio
async def test_bump_moves_a_formula_on_to_a_new_revision(http: aiohttp.ClientSession) -> None:
    """`POST /_emulator/bump` (run-local's "upstream moves on"): formula.json names the
    next revision, with new bottles whose bytes match their new sha256; the old bottle is
    still served, as GHCR keeps it; an unknown name is a 400."""
    async with Emulator(catalog_from_entries(ENTRIES, seed=7, default_size=SIZE)) as emu:
        await _bump(emu, http)


async def _bump(emu: Emulator, http: aiohttp.ClientSession) -> None:
    old_sha = _file(emu.catalog, 0, "sonoma")["sha256"]
    name = emu.catalog.formulae[0]["name"]
    async with http.post(f"{emu.registry_url}/_emulator/bump", json={"name": name}) as resp:
        assert resp.status == 200
        bumped = await resp.json()
    async with http.get(emu.api_url) as resp:
        served = next(e for e in await resp.json() if e["name"] == name)
    version = served["versions"]["stable"]
    assert bumped == {"name": name, "pkg_version": f"{version}_{served['revision']}"}
    assert served["revision"] == 1
    new = served["bottle"]["stable"]["files"]["sonoma"]
    assert new["sha256"] != old_sha
    fetched = await _download(http, new["url"].replace("{registry}", emu.registry_url))
    assert hashlib.sha256(fetched).hexdigest() == new["sha256"]
    old_url = new["url"].replace(new["sha256"], old_sha).replace("{registry}", emu.registry_url)
    assert hashlib.sha256(await _download(http, old_url)).hexdigest() == old_sha
    async with http.post(f"{emu.registry_url}/_emulator/bump", json={"name": "nope"}) as resp:
        assert resp.status == 400


def test_fault_json_round_trip_and_validation() -> None:
    """Faults parse from JSON with kind defaults and reject unknown kinds and fields."""
    assert Fault.from_json({"kind": "corrupt"}).times is None
    assert Fault.from_json({"kind": "cut", "after": 5}).times == 1
    assert Fault.from_json({"kind": "stall"}).seconds == 3600
    fault = Fault("throttle", seconds=2, times=3)
    assert Fault.from_json(fault.to_json()) == fault
    for bad in (
        {"kind": "nope"},
        {"kind": "cut", "bogus": 1},
        {"kind": "cut", "origin": "registry"},
    ):
        with pytest.raises(ValueError, match=r"."):
            Fault.from_json(bad)


def test_catalog_from_entries_rewrites_and_shares() -> None:
    """Files keep their order, images map @→/ and +→x, equal input digests share one blob."""
    cat = catalog_from_entries(ENTRIES, seed=7, default_size=1000)
    assert list(cat.formulae[1]["bottle"]["stable"]["files"]) == [
        "arm64_sonoma",
        "arm64_ventura",
        "all",
    ]
    sonoma, ventura = _file(cat, 1, "arm64_sonoma"), _file(cat, 1, "arm64_ventura")
    assert sonoma["sha256"] == ventura["sha256"]
    assert "/v2/homebrew/core/openssl/3/blobs/sha256:" in sonoma["url"]
    assert "/v2/homebrew/core/libxmlxx/blobs/" in _file(cat, 2, "x86_64_linux")["url"]
    assert cat.formulae[3]["bottle"] == {}
    assert cat.formulae[0]["desc"] == "kept as is"
    assert len(cat.blobs) == 5
    # The input is left untouched.
    assert ENTRIES[0]["bottle"]["stable"]["files"]["sonoma"]["sha256"] == "b" * 64
    for sha, blob in cat.blobs.items():
        assert hashlib.sha256(blob.data).hexdigest() == sha == blob.sha256
    again = catalog_from_entries(ENTRIES, seed=7, default_size=1000)
    assert again.formulae == cat.formulae


def test_catalog_from_entries_passes_malformed_through() -> None:
    """Bad names and odd shapes are kept (bottles rewritten where the shape allows)."""
    entries: list[Any] = [
        _entry("../x", {"arm64_tahoe": "1" * 64}),
        _entry("has space", {"sonoma": "2" * 64}),
        {"name": "nofiles", "bottle": {"stable": {"files": "oops"}}},
        {"bottle": {"stable": {"files": {"all": "not a dict", "sonoma": {"cellar": ":any"}}}}},
    ]
    cat = catalog_from_entries(entries, size_of=lambda name, tag: 10)
    assert cat.formulae[0]["name"] == "../x"
    assert "/core/../x/blobs/sha256:" in _file(cat, 0, "arm64_tahoe")["url"]
    assert cat.formulae[2] == entries[2]
    assert cat.formulae[3]["bottle"]["stable"]["files"]["all"] == "not a dict"
    assert len(_file(cat, 3, "sonoma")["sha256"]) == 64
    assert {b.size for b in cat.blobs.values()} == {10}


def test_synthetic_catalog_shapes_and_determinism() -> None:
    """synthetic_catalog is deterministic and has every shape brew meets."""
    args: dict[str, Any] = {"large_every": 40, "large_size": 4096, "sizes": (1000, 5000)}
    cat = synthetic_catalog(100, seed=3, **args)
    assert cat.formulae == synthetic_catalog(100, seed=3, **args).formulae
    assert cat.formulae != synthetic_catalog(100, seed=4, **args).formulae
    names = [f["name"] for f in cat.formulae]
    assert len(set(names)) == 100
    assert any("@" in n for n in names)
    assert any(n.endswith("++") for n in names)
    files_of = [f["bottle"].get("stable", {}).get("files", {}) for f in cat.formulae]
    tag_sets = [list(files) for files in files_of]
    assert ["all"] in tag_sets
    assert [] in tag_sets
    assert ["arm64_sequoia", "arm64_sonoma", "sonoma", "ventura"] in tag_sets
    assert any(f["revision"] > 0 for f in cat.formulae)
    assert any(f["bottle"] and f["bottle"]["stable"]["rebuild"] > 0 for f in cat.formulae)
    shared = [files for files in files_of if "arm64_ventura" in files]
    assert shared
    assert shared[0]["arm64_ventura"]["sha256"] == shared[0]["arm64_sonoma"]["sha256"]
    large = cat.formulae[39]["bottle"]["stable"]["files"]
    assert {cat.blobs[f["sha256"]].size for f in large.values()} == {4096}


def test_blob_bytes_is_deterministic() -> None:
    """Same seed and size give the same bytes; another seed gives others."""
    assert blob_bytes(1, 200_000) == blob_bytes(1, 200_000)
    assert blob_bytes(1, 200_000) != blob_bytes(2, 200_000)
    assert len(blob_bytes(1, 70_001)) == 70_001
    assert blob_bytes(1, 0) == b""


@pytest.mark.asyncio
async def test_cli_prints_urls_serves_and_exits_on_sigterm(http: aiohttp.ClientSession) -> None:
    """The CLI prints one JSON line once listening, serves, and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrord_dev.emulator", "--synthetic", "3", "--seed", "1"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        ready = orjson.loads(line)
        assert set(ready) == {"api_url", "registry_url", "blob_url", "formulae", "blobs", "bytes"}
        assert ready["formulae"] == 3
        async with http.get(ready["api_url"]) as resp:
            formulae = orjson.loads(await resp.read())
        assert len(formulae) == 3
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --- OCI image indexes ----------------------------------------------------------------------

INDEX_HEADERS = {**ANON, "Accept": INDEX_MEDIA_TYPE}
INDEX_ENTRIES = [
    _entry(
        "jq",
        {"arm64_tahoe": "1" * 64, "sonoma": "2" * 64, "x86_64_linux": "3" * 64},
        version="1.7.1",
        revision=1,
    ),
    _entry(
        "openssl@3",
        {"arm64_sequoia": "4" * 64, "arm64_sonoma": "4" * 64, "all": "5" * 64},
        rebuild=1,
        version="3.4.0",
    ),
    _entry("nobottle", {}),
]


@pytest_asyncio.fixture
async def index_emu() -> AsyncIterator[Emulator]:
    catalog = catalog_from_entries(INDEX_ENTRIES, seed=3, default_size=1000)
    async with Emulator(catalog) as emulator:
        yield emulator


def _manifest_url(emu: Emulator, image: str, ref: str) -> str:
    return f"{emu.registry_url}/v2/homebrew/core/{image}/manifests/{ref}"


async def _index(
    http: aiohttp.ClientSession, emu: Emulator, image: str, ref: str
) -> dict[str, Any]:
    async with http.get(_manifest_url(emu, image, ref), headers=INDEX_HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == INDEX_MEDIA_TYPE
        body = await resp.read()
        assert resp.headers["Docker-Content-Digest"] == f"sha256:{hashlib.sha256(body).hexdigest()}"
    index: dict[str, Any] = orjson.loads(body)
    return index


async def _manifest_status(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] = INDEX_HEADERS
) -> int:
    async with http.get(url, headers=headers) as resp:
        if resp.status == 404:
            assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        return resp.status


@pytest.mark.asyncio
async def test_index_served_at_pkg_version_and_rebuild_ref(
    index_emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """The index lives at <stable>_<revision> and <version>-<rebuild>; other refs are 404."""
    assert (await _index(http, index_emu, "jq", "1.7.1_1"))["schemaVersion"] == 2
    index = await _index(http, index_emu, "openssl/3", "3.4.0-1")
    assert index["annotations"] == {
        "com.github.package.type": "homebrew_bottle",
        "org.opencontainers.image.ref.name": "3.4.0-1",
        "org.opencontainers.image.title": "openssl@3",
        "org.opencontainers.image.version": "3.4.0",
    }
    for image, ref in [("jq", "1.7.1"), ("jq", "1.7.1_1-0"), ("openssl/3", "3.4.0"),
                       ("openssl@3", "3.4.0-1"), ("nobottle", "1.0"), ("nope", "1.0")]:  # fmt: skip
        assert await _manifest_status(http, _manifest_url(index_emu, image, ref)) == 404
    async with http.head(_manifest_url(index_emu, "jq", "1.7.1_1"), headers=INDEX_HEADERS) as resp:
        assert resp.status == 405


@pytest.mark.asyncio
async def test_index_describes_the_served_blobs(
    index_emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """One manifest per tag in files order; digest and size annotations match the blobs."""
    for i, (image, ref, rebuild) in enumerate(
        [("jq", "1.7.1_1", ""), ("openssl/3", "3.4.0-1", ".1")]
    ):
        version = ref.split("-")[0]
        files = index_emu.catalog.formulae[i]["bottle"]["stable"]["files"]
        manifests = (await _index(http, index_emu, image, ref))["manifests"]
        assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in manifests] == [
            f"{version}.{tag}{rebuild}" for tag in files
        ]
        for manifest, (tag, file) in zip(manifests, files.items(), strict=True):
            notes = manifest["annotations"]
            assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", manifest["digest"])
            assert notes["sh.brew.bottle.digest"] == file["sha256"]
            data = await _download(http, _registry_url(index_emu, i, tag))
            assert hashlib.sha256(data).hexdigest() == file["sha256"]
            assert notes["sh.brew.bottle.size"] == str(len(data)) == "1000"
            assert orjson.loads(notes["sh.brew.tab"])["built_as_bottle"] is True
    jq = (await _index(http, index_emu, "jq", "1.7.1_1"))["manifests"]
    assert [m["platform"] for m in jq] == [
        {"architecture": "arm64", "os": "darwin", "os.version": "macOS 26"},
        {"architecture": "amd64", "os": "darwin", "os.version": "macOS 14"},
        {"architecture": "amd64", "os": "linux", "os.version": "Ubuntu 22.04"},
    ]
    assert len({m["digest"] for m in jq}) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer QQ"}])
async def test_manifest_anonymous_auth(
    index_emu: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Anonymous mode answers 401 to a manifest GET without Bearer QQ==."""
    url = _manifest_url(index_emu, "jq", "1.7.1_1")
    async with http.get(url, headers={**headers, "Accept": INDEX_MEDIA_TYPE}) as resp:
        assert resp.status == 401
        assert "WWW-Authenticate" not in resp.headers


@pytest.mark.asyncio
async def test_manifest_challenge_auth(http: aiohttp.ClientSession) -> None:
    """Challenge mode: 401 with the image's scope, then its token fetches the index."""
    catalog = catalog_from_entries(INDEX_ENTRIES, seed=3, default_size=1000)
    async with Emulator(catalog, auth="challenge") as emu:
        url = _manifest_url(emu, "openssl/3", "3.4.0-1")
        async with http.get(url, headers=INDEX_HEADERS) as resp:
            assert resp.status == 401
            params = dict(re.findall(r'(\w+)="([^"]*)"', resp.headers["WWW-Authenticate"]))
        assert params["scope"] == "repository:homebrew/core/openssl/3:pull"
        async with http.get(params["realm"], params={"scope": params["scope"]}) as resp:
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        assert await _manifest_status(http, url, {**auth, "Accept": INDEX_MEDIA_TYPE}) == 200
        other = _manifest_url(emu, "jq", "1.7.1_1")
        assert await _manifest_status(http, other, {**auth, "Accept": INDEX_MEDIA_TYPE}) == 401


@pytest.mark.asyncio
async def test_manifest_needs_the_index_accept_type(
    index_emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """Like ghcr.io, an index is only handed to a client whose Accept names the index type."""
    url = _manifest_url(index_emu, "jq", "1.7.1_1")
    async with http.get(url, headers={**ANON, "Accept": "*/*"}) as resp:
        assert resp.status == 404
        assert "Accept header" in (await resp.json())["errors"][0]["message"]
    accept = f"application/vnd.oci.image.manifest.v1+json, {INDEX_MEDIA_TYPE}; q=0.9"
    assert await _manifest_status(http, url, {**ANON, "Accept": accept}) == 200


@pytest.mark.asyncio
async def test_hide_manifest_answers_404(index_emu: Emulator, http: aiohttp.ClientSession) -> None:
    """hide_manifest makes that formula's index 404 and leaves the others and its blobs."""
    index_emu.hide_manifest("openssl@3")
    assert await _manifest_status(http, _manifest_url(index_emu, "openssl/3", "3.4.0-1")) == 404
    assert await _manifest_status(http, _manifest_url(index_emu, "jq", "1.7.1_1")) == 200
    await _download(http, _registry_url(index_emu, 1, "all"))


@pytest.mark.asyncio
async def test_manifest_faults_in_order_then_recover(
    index_emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """status and throttle faults hit a formula's manifests in order, then it recovers."""
    index_emu.set_manifest_faults("jq", [Fault("status"), Fault("throttle", seconds=2)])
    url = _manifest_url(index_emu, "jq", "1.7.1_1")
    seen = []
    for _ in range(3):
        async with http.get(url, headers=INDEX_HEADERS) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
    assert seen == [(503, None), (429, "2"), (200, None)]
    assert await _manifest_status(http, _manifest_url(index_emu, "openssl/3", "3.4.0-1")) == 200
    for bad in (Fault("cut"), Fault("status", origin="blob")):
        with pytest.raises(ValueError, match="manifest"):
            index_emu.set_manifest_faults("jq", [bad])


@pytest.mark.asyncio
async def test_manifest_requests_are_counted_per_formula(
    index_emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """manifest_requests and the admin stats count every manifest GET, 401 and 404 included."""
    jq = _manifest_url(index_emu, "jq", "1.7.1_1")
    assert await _manifest_status(http, jq) == 200
    assert await _manifest_status(http, jq, {}) == 401
    assert await _manifest_status(http, _manifest_url(index_emu, "jq", "9")) == 404
    assert await _manifest_status(http, _manifest_url(index_emu, "openssl/3", "3.4.0-1")) == 200
    assert index_emu.manifest_requests("jq") == 3
    assert index_emu.manifest_requests("openssl@3") == 1
    assert index_emu.manifest_requests("nobottle") == 0
    async with http.get(f"{index_emu.registry_url}/_emulator/stats") as resp:
        assert (await resp.json())["manifests"] == {"jq": 3, "openssl@3": 1}
    index_emu.reset_stats()
    assert index_emu.manifest_requests("jq") == 0


def test_image_index_none_without_bottle_or_when_malformed() -> None:
    """Entries without a bottle or with a malformed shape have no index."""
    good = _entry("x", {"sonoma": "6" * 64}, version="2.0", revision=2)
    bad_rebuild = _entry("x", {"sonoma": "6" * 64}, rebuild=-1)
    bad_version = {**_entry("x", {"sonoma": "6" * 64}), "versions": {"stable": None}}
    bad_file = _entry("x", {"sonoma": "6" * 64})
    bad_file["bottle"]["stable"]["files"]["arm64_tahoe"] = "not a dict"
    entries: list[Any] = [good, bad_rebuild, bad_version, bad_file, _entry("y", {}), "junk"]
    cat = catalog_from_entries(entries, size_of=lambda name, tag: 10)
    found = image_index(cat.formulae[0], cat)
    assert found is not None
    assert found[0] == "2.0_2"
    assert [image_index(entry, cat) for entry in cat.formulae[1:]] == [None] * 5


def _payload(raw: bytes) -> Any:
    outer = orjson.loads(raw)
    assert isinstance(outer["signatures"], list)
    return orjson.loads(outer["payload"])


@pytest.mark.asyncio
async def test_api_files_are_jws_and_packages_keep_brews_bottle(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """formula.jws.json wraps formula.json; packages.<tag> is generate-internal-api's
    shape: per formula, flat fields and only the bottle brew pours on that tag (exact,
    all, older macOS) as bottle_checksum, with bottle_tag when it is another tag's and
    bottle_cellar when not :any_skip_relocation; unknown files are 404."""
    async with http.get(emu.api_url) as resp:
        served = orjson.loads(await resp.read())
    by_name = {e["name"]: e["bottle"].get("stable", {}).get("files", {}) for e in served}
    async with http.get(f"{emu.registry_url}/api/formula.jws.json") as resp:
        assert resp.status == 200
        assert _payload(await resp.read()) == served
    async with http.get(f"{emu.registry_url}/api/internal/packages.tahoe.jws.json") as resp:
        document = _payload(await resp.read())
    assert list(document) == [
        "metadata", "formulae", "casks", "formula_aliases", "formula_renames", "cask_renames",
        "formula_tap_git_head", "cask_tap_git_head", "formula_tap_migrations",
        "cask_tap_migrations",
    ]  # fmt: skip
    assert document["metadata"]["bottle_tag"] == "tahoe"
    assert isinstance(document["metadata"]["generated_at"], int)
    formulae = document["formulae"]
    assert formulae["jq"] == {
        "desc": "kept as is",
        "stable_version": "1.0",
        "bottle_tag": ":sonoma",
        "bottle_cellar": ":any",
        "bottle_checksum": by_name["jq"]["sonoma"]["sha256"],
    }
    assert formulae["openssl@3"]["bottle_tag"] == ":all"
    assert "bottle_checksum" not in formulae["libxml++"]  # a Linux bottle only
    assert formulae["nobottle"] == {"desc": "kept as is", "stable_version": "1.0"}
    assert not any("bottle" in f or "url" in str(f) for f in formulae.values())
    async with http.get(f"{emu.registry_url}/api/internal/executables.txt") as resp:
        assert "jq:jq" in (await resp.text()).splitlines()
    for missing in ("internal/packages.arm64_nowhere.jws.json", "nope.json"):
        async with http.get(f"{emu.registry_url}/api/{missing}") as resp:
            assert resp.status == 404, missing


@pytest.mark.asyncio
async def test_portable_ruby_is_served_and_every_request_is_counted(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """portable Ruby has an image index and blobs like a formula; total_requests counts
    every request at either origin, and reset_stats clears it."""
    emu.reset_stats()
    url = f"{emu.registry_url}/v2/homebrew/core/portable-ruby/manifests/4.0.7_1"
    async with http.get(url, headers={**ANON, "Accept": INDEX_MEDIA_TYPE}) as resp:
        index = orjson.loads(await resp.read())
    notes = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert set(notes) >= {"4.0.7_1.arm64_big_sur", "4.0.7_1.catalina"}
    sha = notes["4.0.7_1.arm64_big_sur"]["annotations"]["sh.brew.bottle.digest"]
    blob = f"{emu.registry_url}/v2/homebrew/core/portable-ruby/blobs/sha256:{sha}"
    async with http.get(blob, headers=ANON) as resp:
        assert hashlib.sha256(await resp.read()).hexdigest() == sha
    assert emu.total_requests() == 3  # index, registry blob (307), storage
    emu.reset_stats()
    assert emu.total_requests() == 0


@pytest.mark.asyncio
async def test_tags_list_as_oci_distribution_serves_it(http: aiohttp.ClientSession) -> None:
    """GET /v2/<name>/tags/list: {"name", "tags"} in lexical order, behind the image's
    token challenge like its manifests; an image the registry has none of is 404."""
    catalog = catalog_from_entries(INDEX_ENTRIES, seed=3, default_size=1000)
    rubies = ("4.0.9", "4.0.10", "4.0.7_1")
    async with Emulator(catalog, auth="challenge", portable_ruby_versions=rubies) as emu:
        url = f"{emu.registry_url}/v2/homebrew/core/portable-ruby/tags/list"
        async with http.get(url, headers=ANON) as resp:
            assert resp.status == 401
            params = dict(re.findall(r'(\w+)="([^"]*)"', resp.headers["WWW-Authenticate"]))
        assert params["scope"] == "repository:homebrew/core/portable-ruby:pull"
        async with http.get(params["realm"], params={"scope": params["scope"]}) as resp:
            auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        async with http.get(url, headers=auth) as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "name": "homebrew/core/portable-ruby",
                "tags": ["4.0.10", "4.0.7_1", "4.0.9"],
            }
    async with Emulator(catalog) as emu:
        async with http.get(
            f"{emu.registry_url}/v2/homebrew/core/openssl/3/tags/list", headers=ANON
        ) as resp:
            assert (await resp.json())["tags"] == ["3.4.0-1"]
        async with http.get(
            f"{emu.registry_url}/v2/homebrew/core/nothing/tags/list", headers=ANON
        ) as resp:
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"


@pytest.mark.asyncio
async def test_api_catalog_serves_a_republished_api_and_both_sets_of_bottles(
    http: aiohttp.ClientSession,
) -> None:
    """formula.json as first read, the API files from what was republished since: the
    registry serves the bottles and image indexes of both."""
    old = catalog_from_entries(INDEX_ENTRIES, seed=3, default_size=1000)
    bumped = [{**e, "versions": {**e["versions"], "stable": "9.9"}} for e in INDEX_ENTRIES]
    new = catalog_from_entries(bumped, seed=3, default_size=1001)  # rebuilt: other bytes
    async with Emulator(old, api_catalog=new) as emu:
        async with http.get(emu.api_url) as resp:
            assert "9.9" not in {e["versions"]["stable"] for e in await resp.json()}
        async with http.get(f"{emu.registry_url}/api/internal/packages.sonoma.jws.json") as resp:
            jq = orjson.loads(orjson.loads(await resp.read())["payload"])["formulae"]["jq"]
        new_sha = new.formulae[0]["bottle"]["stable"]["files"]["sonoma"]["sha256"]
        assert (jq["stable_version"], jq["bottle_checksum"]) == ("9.9", new_sha)
        assert new_sha not in old.blobs
        blob = f"{emu.registry_url}/v2/homebrew/core/jq/blobs/sha256:{new_sha}"
        async with http.get(blob, headers=ANON) as resp:
            assert hashlib.sha256(await resp.read()).hexdigest() == new_sha
        for ref in ("1.7.1_1", "9.9_1"):
            async with http.get(_manifest_url(emu, "jq", ref), headers=INDEX_HEADERS) as resp:
                assert resp.status == 200, ref
