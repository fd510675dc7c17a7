"""The GHCR client against the emulator over real HTTP: auth, redirect, retries, resume."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from mirrord_dev.emulator import Emulator, Fault, catalog_from_entries

from mirrord.adapters.registry import Registry, parse_challenge
from mirrord.adapters.web import fetch_catalog
from mirrord.core.errors import CatalogError, FatalUpstreamError, RetryableError
from mirrord.core.retry import Backoff, RetryPolicy

MiB = 2**20


def real_entries() -> list[dict[str, Any]]:
    def files(*tags: str) -> dict[str, Any]:
        return {
            t: {"cellar": ":any", "url": "https://ghcr.io/x", "sha256": f"{i:064x}"}
            for i, t in enumerate(tags)
        }

    return [
        {
            "name": "jq",
            "versions": {"stable": "1.7.1"},
            "revision": 1,
            "bottle": {"stable": {"rebuild": 0, "files": files("arm64_tahoe", "sonoma")}},
        },
        {
            "name": "openssl@3",
            "versions": {"stable": "3.4.0"},
            "revision": 0,
            "bottle": {"stable": {"rebuild": 1, "files": files("arm64_tahoe")}},
        },
    ]


class Sleeps:
    """An injected clock: records requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


EmuFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def emulator() -> AsyncIterator[EmuFactory]:
    started: list[Emulator] = []

    async def make(**kw: Any) -> Emulator:
        sizes = kw.pop("sizes", {})
        cat = catalog_from_entries(real_entries(), size_of=lambda n, t: sizes.get((n, t), 300_000))
        emu = Emulator(cat, **kw)
        await emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        await emu.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=None, connect=2, sock_read=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def url_of(emu: Emulator, name: str, tag: str) -> tuple[str, str]:
    entry = next(e for e in emu.catalog.formulae if e["name"] == name)
    file = entry["bottle"]["stable"]["files"][tag]
    return file["url"].replace("{registry}", emu.registry_url), file["sha256"]


async def fetch(registry: Registry, url: str) -> bytes:
    return b"".join([c async for c in registry.stream(url)])


def make_registry(http: aiohttp.ClientSession, attempts: int = 4) -> tuple[Registry, Sleeps]:
    sleeps = Sleeps()
    return Registry(
        http, Backoff(RetryPolicy(max_attempts=attempts), sleeps, random.Random(0))
    ), sleeps


async def test_anonymous_token_and_redirect_without_authorization(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """Bearer QQ== at the registry; the 307 to storage is followed without it (the
    emulator's storage answers 400 to any Authorization)."""
    emu = await emulator()
    registry, sleeps = make_registry(http)
    url, sha = url_of(emu, "openssl@3", "arm64_tahoe")
    assert "/openssl/3/blobs/" in url
    assert hashlib.sha256(await fetch(registry, url)).hexdigest() == sha
    assert sleeps.waits == []
    assert emu.stats(sha).registry_requests == 1
    assert emu.stats(sha).requests == 1


async def test_token_challenge_is_answered_once_and_reused(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """A 401 challenge → token from the realm → retried; later blobs reuse the token."""
    emu = await emulator(auth="challenge")
    registry, _ = make_registry(http)
    url, sha = url_of(emu, "jq", "arm64_tahoe")
    url2, sha2 = url_of(emu, "jq", "sonoma")
    assert hashlib.sha256(await fetch(registry, url)).hexdigest() == sha
    assert hashlib.sha256(await fetch(registry, url2)).hexdigest() == sha2
    assert emu.stats(sha).registry_requests == 2  # 401, then with the token
    assert emu.stats(sha2).registry_requests == 1  # same scope: token reused


async def test_expired_token_is_refreshed(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """A token the registry stops accepting is fetched anew."""
    emu = await emulator(auth="challenge")
    registry, _ = make_registry(http)
    url, sha = url_of(emu, "jq", "arm64_tahoe")
    await fetch(registry, url)
    emu.set_faults(sha, [Fault("expire_token", times=1)])
    assert hashlib.sha256(await fetch(registry, url)).hexdigest() == sha


async def test_5xx_then_success_retries_with_backoff(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """Two 503s, then the blob: two jittered waits within the policy's bounds."""
    emu = await emulator()
    registry, sleeps = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("status", status=503, times=2)])
    assert hashlib.sha256(await fetch(registry, url)).hexdigest() == sha
    assert len(sleeps.waits) == 2
    assert all(0 <= w <= 1.0 for w in sleeps.waits)


async def test_429_honours_retry_after(emulator: EmuFactory, http: aiohttp.ClientSession) -> None:
    """A 429 with Retry-After: 7 waits exactly 7 s (on the injected clock)."""
    emu = await emulator()
    registry, sleeps = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("throttle", seconds=7, times=1)])
    await fetch(registry, url)
    assert sleeps.waits == [7.0]


async def test_404_is_not_retried(emulator: EmuFactory, http: aiohttp.ClientSession) -> None:
    """An unknown blob fails at once with FatalUpstreamError."""
    emu = await emulator()
    registry, sleeps = make_registry(http)
    url = f"{emu.registry_url}/v2/homebrew/core/jq/blobs/sha256:{'f' * 64}"
    with pytest.raises(FatalUpstreamError, match="404"):
        await fetch(registry, url)
    assert sleeps.waits == []


async def test_persistent_5xx_gives_up_after_max_attempts(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """Retries are bounded: max_attempts requests, then RetryableError with the attempt."""
    emu = await emulator()
    registry, sleeps = make_registry(http, attempts=3)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("status", status=500, times=None)])
    with pytest.raises(RetryableError) as info:
        await fetch(registry, url)
    assert info.value.attempt == 3
    assert len(sleeps.waits) == 2
    assert emu.stats(sha).registry_requests == 3


async def test_cut_mid_body_resumes_with_range(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """Cut twice mid-body: the stream resumes where it broke; bytes served < 1.5 × size."""
    size = 12 * MiB
    emu = await emulator(sizes={("jq", "sonoma"): size})
    registry, _ = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(
        sha, [Fault("cut", after=3 * MiB + 17, times=1), Fault("cut", after=2 * MiB, times=1)]
    )
    data = await fetch(registry, url)
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == sha
    stats = emu.stats(sha)
    assert stats.requests == 3
    assert stats.bytes_sent < 1.5 * size


async def test_stalled_body_times_out_and_resumes(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """No bytes for longer than the read timeout: the attempt is dropped and resumed."""
    emu = await emulator()
    registry, _ = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("stall", after=100_000, seconds=30, times=1)])
    data = await fetch(registry, url)
    assert hashlib.sha256(data).hexdigest() == sha
    assert emu.stats(sha).requests == 2


async def test_over_announced_length_ends_cleanly(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """Content-Length larger than the body: resume hits 416, stream ends; bytes intact."""
    emu = await emulator()
    registry, _ = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("wrong_length", extra=5000, times=None)])
    data = await fetch(registry, url)
    assert hashlib.sha256(data).hexdigest() == sha


async def test_dead_redirect_is_retried(emulator: EmuFactory, http: aiohttp.ClientSession) -> None:
    """A redirect to a storage host that refuses connections is a retryable failure."""
    emu = await emulator()
    registry, sleeps = make_registry(http)
    url, sha = url_of(emu, "jq", "sonoma")
    emu.set_faults(sha, [Fault("dead_redirect", times=1)])
    assert hashlib.sha256(await fetch(registry, url)).hexdigest() == sha
    assert len(sleeps.waits) == 1


async def test_catalog_fetch_and_truncated_catalog(
    emulator: EmuFactory, http: aiohttp.ClientSession
) -> None:
    """formula.json parses; a truncated one is one CatalogError."""
    emu = await emulator()
    backoff = Backoff(RetryPolicy(max_attempts=2), Sleeps())
    catalog = await fetch_catalog(http, emu.api_url, backoff)
    assert [f.name for f in catalog.formulae] == ["jq", "openssl@3"]
    raw = orjson.dumps(emu.catalog.formulae)
    broken = Emulator(emu.catalog, raw_api=raw[: len(raw) // 2])
    async with broken:
        with pytest.raises(CatalogError, match="truncated"):
            await fetch_catalog(http, broken.api_url, backoff)


def test_parse_challenge() -> None:
    """The WWW-Authenticate Bearer parameters, and None for other schemes."""
    got = parse_challenge(
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:homebrew/core/jq:pull"'
    )
    assert got == {
        "realm": "https://ghcr.io/token",
        "service": "ghcr.io",
        "scope": "repository:homebrew/core/jq:pull",
    }
    assert parse_challenge('Basic realm="x"') is None
