"""The fallback upstream (issue 17, item 2): when the registry fails a bottle after its
retries, the fallback mirrors (MIRRORD_FALLBACK_URLS, flat ``bottles/`` folders as TUNA
and USTC keep them) are tried in order, their bytes verified exactly as the registry's.
Real peers: the emulator as GHCR (its faults), FlatMirror as the other mirrors, moto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pytest
from conftest import DATE, MakeWorld, run_cli
from mirrord_dev.emulator import Emulator, Fault, sample_catalog
from mirrord_dev.emulator.flat import FlatMirror

from mirrord.app import App
from mirrord.core.jobs import Job
from mirrord.core.report import Report
from mirrord.core.shards import Shard
from mirrord.services.fanin import finalize_if_last
from mirrord.services.job import run_job
from mirrord.services.shard import run_shard

TARGET = "arm64_tahoe"
FILE = "xz-5.8.1.arm64_tahoe.bottle.tar.gz"
KEY = "xz-5.8.1-arm64_tahoe"
OBJECT = f"{DATE}/{FILE}"


@dataclass
class Mirrors:
    app: App
    emu: Emulator
    flats: list[FlatMirror]
    sha256: str  # xz's bottle for TARGET (xz has no dependencies: a job of one bottle)

    async def sync(self, job_id: str = "fb") -> Report:
        return await run_job(self.app, Job(job_id, DATE, formulae=("xz",)), route="test")

    def ghcr_fails(self, status: int) -> None:
        self.emu.set_faults(self.sha256, [Fault("status", status=status, times=None)])

    async def hashfile(self) -> dict[str, Any]:
        found = await self.app.store.get("bottles_hash.json")
        assert found is not None
        return dict(orjson.loads(found[0]))


class MakeMirrors(Protocol):
    async def __call__(
        self, count: int = 1, *, host: str = "127.0.0.1", allow_private: bool = True
    ) -> Mirrors: ...


@pytest.fixture
async def make_mirrors(make_world: MakeWorld) -> AsyncIterator[MakeMirrors]:
    """``await make_mirrors(count)``: the emulator, ``count`` flat mirrors of its catalog
    listed in order (their URLs naming ``host``), and the app configured with them."""
    async with AsyncExitStack() as stack:

        async def make(
            count: int = 1, *, host: str = "127.0.0.1", allow_private: bool = True
        ) -> Mirrors:
            catalog = sample_catalog()
            flats = [await stack.enter_async_context(FlatMirror(catalog)) for _ in range(count)]
            world = await make_world(
                catalog,
                platforms=(TARGET,),
                brew_mirror=False,
                max_attempts=2,
                fallback_urls=tuple(f.url.replace("127.0.0.1", host) for f in flats),
                fallback_allow_http=True,
                fallback_allow_private=allow_private,
            )
            xz = next(e for e in catalog.formulae if e["name"] == "xz")
            sha256 = xz["bottle"]["stable"]["files"][TARGET]["sha256"]
            return Mirrors(world.app, world.emu, flats, sha256)

        yield make


@pytest.fixture
async def mirrors(make_mirrors: MakeMirrors) -> Mirrors:
    return await make_mirrors()


async def test_the_registry_serving_is_never_asked_of_a_fallback(mirrors: Mirrors) -> None:
    report = await mirrors.sync()
    assert (report.downloaded, report.failed) == (1, ())
    assert mirrors.flats[0].requests == {}
    assert report.fallback is not None
    assert report.fallback.served == report.fallback.misses == ()
    head = await mirrors.app.store.head(OBJECT)
    assert head is not None
    assert "source" not in head.metadata
    assert head.metadata["source-url"].endswith(f"/blobs/sha256:{mirrors.sha256}")


@pytest.mark.parametrize("status", [503, 404])
async def test_a_bottle_the_registry_fails_is_stored_from_the_fallback(
    mirrors: Mirrors, status: int
) -> None:
    """GHCR answers 5xx (after its retries) or 404: the fallback's file is fetched,
    verified and stored; the object's metadata and the report name the fallback."""
    mirrors.ghcr_fails(status)
    report = await mirrors.sync()
    assert report.failed == ()
    assert report.complete
    assert mirrors.emu.stats(mirrors.sha256).registry_requests >= 1  # GHCR first
    flat = mirrors.flats[0]
    assert flat.requests == {FILE: 1}
    head = await mirrors.app.store.head(OBJECT)
    assert head is not None
    assert head.metadata["sha256"] == mirrors.sha256
    assert head.metadata["source"] == "fallback"
    assert head.metadata["source-url"] == f"{flat.url}/{FILE}"
    assert (await mirrors.hashfile())["bottles"][KEY]["s3_key"] == OBJECT
    body = report.to_dict()["fallback"]
    assert body["served_by_source"] == {flat.url: 1}
    [served] = body["served"]
    assert (served["key"], served["source"]) == (KEY, flat.url)
    assert f"HTTP {status}" in served["upstream_error"]


async def test_wrong_bytes_from_a_fallback_are_rejected_and_the_next_one_tried(
    make_mirrors: MakeMirrors,
) -> None:
    """The first fallback serves xz corrupt: rejected by the sha256 check (nothing
    stored), reported as its miss; the second serves it right and it is stored."""
    mirrors = await make_mirrors(2)
    first, second = mirrors.flats
    first.corrupt.add(FILE)
    mirrors.ghcr_fails(503)
    report = await mirrors.sync()
    assert report.failed == ()
    assert (first.requests[FILE], second.requests[FILE]) == (1, 1)
    head = await mirrors.app.store.head(OBJECT)
    assert head is not None
    assert head.metadata["source-url"] == f"{second.url}/{FILE}"
    body = report.to_dict()["fallback"]
    assert body["served_by_source"] == {first.url: 0, second.url: 1}
    assert body["misses_by_source"] == {first.url: 1, second.url: 0}
    assert body["misses"][0]["key"] == KEY
    assert "sha256 mismatch" in body["misses"][0]["error"]


async def test_wrong_bytes_from_the_only_fallback_fail_the_bottle_with_both_reasons(
    mirrors: Mirrors,
) -> None:
    """Nothing of the bad bytes is visible; the failure names GHCR's reason and the
    fallback's; a fallback's bad bytes are no count toward quarantine (GHCR's are)."""
    mirrors.flats[0].corrupt.add(FILE)
    mirrors.ghcr_fails(404)
    report = await mirrors.sync()
    [failure] = report.failed
    assert failure.key == KEY
    assert failure.error.startswith("HTTP 404")
    assert f"fallback {mirrors.flats[0].url}: sha256 mismatch" in failure.error
    assert report.exit_code == 1
    assert await mirrors.app.store.head(OBJECT) is None
    listing = await mirrors.app.s3.list_objects_v2(Bucket=mirrors.app.settings.bucket)
    # No object, and no hash file: no entry, and no quarantine record counting the bytes;
    # status.json says the run failed (its last_run).
    assert [o["Key"] for o in listing.get("Contents", [])] == ["status.json"]


async def test_a_fallback_that_404s_leaves_the_original_failure_with_both_reasons(
    mirrors: Mirrors,
) -> None:
    mirrors.flats[0].missing.add(FILE)
    mirrors.ghcr_fails(503)
    report = await mirrors.sync()
    [failure] = report.failed
    assert failure.error.startswith("HTTP 503")
    assert f"fallback {mirrors.flats[0].url}: HTTP 404" in failure.error
    assert failure.url.endswith(f"/blobs/sha256:{mirrors.sha256}")  # the catalog's URL
    assert report.to_dict()["fallback"]["misses_by_source"] == {mirrors.flats[0].url: 1}


async def test_a_fallback_name_on_a_private_address_is_refused_when_not_allowed(
    make_mirrors: MakeMirrors,
) -> None:
    """Settings judge literal addresses; a name is judged by the guarded resolver when it
    resolves: ``localhost`` without MIRRORD_FALLBACK_ALLOW_PRIVATE is never connected to,
    and the refusal is the fallback's reason in the bottle's failure."""
    mirrors = await make_mirrors(host="localhost", allow_private=False)
    mirrors.ghcr_fails(404)
    report = await mirrors.sync()
    [failure] = report.failed
    assert "fallback http://localhost:" in failure.error
    assert "resolves to 127.0.0.1, a loopback address" in failure.error
    assert mirrors.flats[0].requests == {}


async def test_a_sharded_job_carries_what_the_fallbacks_did_into_the_fan_in(
    mirrors: Mirrors,
) -> None:
    """Each shard's record holds its fallback section; the fan-in's report joins them."""
    job = Job("fb-sharded", DATE, formulae=("xz",))
    mirrors.ghcr_fails(503)
    records = [await run_shard(mirrors.app, job, Shard(k, 2), owner="t") for k in (1, 2)]
    assert [r.stored for r in records].count(1) == 1
    stored = next(r for r in records if r.stored)
    assert stored.fallback is not None
    assert [b.key for b in stored.fallback.served] == [KEY]
    report = await finalize_if_last(mirrors.app, job, 2, route="test")
    assert report is not None
    assert report.complete
    body = report.to_dict()["fallback"]
    assert body["served_by_source"] == {mirrors.flats[0].url: 1}
    assert [b["key"] for b in body["served"]] == [KEY]


async def test_a_fallback_redirect_to_the_metadata_address_is_refused(mirrors: Mirrors) -> None:
    """Every hop is checked: even with private addresses allowed, a fallback answering
    302 to the instance metadata service is a miss, and nothing is fetched there."""
    mirrors.flats[0].redirect[FILE] = "http://169.254.169.254/latest/meta-data/"
    mirrors.ghcr_fails(404)
    report = await mirrors.sync()
    [failure] = report.failed
    assert "169.254.169.254 is a link-local address" in failure.error
    assert report.to_dict()["fallback"]["misses_by_source"] == {mirrors.flats[0].url: 1}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({}, "MIRRORD_FALLBACK_ALLOW_HTTP=true allows it"),
        ({"MIRRORD_FALLBACK_ALLOW_HTTP": "true"}, "MIRRORD_FALLBACK_ALLOW_PRIVATE=true allows it"),
    ],
)
async def test_the_cli_refuses_http_and_private_fallbacks_at_start(
    bucket: str, extra: dict[str, str], says: str
) -> None:
    """A clear settings error before anything runs: one line naming the variable and the
    opt-in, exit 2."""
    env = {"MIRRORD_BUCKET": bucket, "MIRRORD_FALLBACK_URLS": "http://10.0.0.7/bottles", **extra}
    result = await run_cli("sync", "--json", env=env)
    assert result.code == 2
    assert result.stdout == b""
    err = result.stderr.decode()
    assert "MIRRORD_FALLBACK_URLS: 'http://10.0.0.7/bottles'" in err
    assert says in err


async def test_a_cli_sync_with_a_fallback_mirror_while_ghcr_fails(mirrors: Mirrors) -> None:
    """The runbook's command (docs/operations.md, "When GHCR fails"): `mirrord sync
    --json` with MIRRORD_FALLBACK_URLS, as a separate process; GHCR 503s xz's bottle."""
    mirrors.ghcr_fails(503)
    flat = mirrors.flats[0]
    s = mirrors.app.settings
    env = {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_PLATFORMS": TARGET,
        "MIRRORD_BREW_MIRROR": "false",
        "MIRRORD_MAX_ATTEMPTS": "2",
        "MIRRORD_FALLBACK_URLS": flat.url,
        "MIRRORD_FALLBACK_ALLOW_HTTP": "true",
        "MIRRORD_FALLBACK_ALLOW_PRIVATE": "true",
    }
    result = await run_cli("sync", "--json", "--wait", "--formula", "xz", env=env)
    assert result.code == 0, result.stderr.decode()[-2000:]
    report = result.json()
    assert report["fallback"]["served_by_source"] == {flat.url: 1}
    assert report["failed"] == []
    stored = (await mirrors.hashfile())["bottles"][KEY]["s3_key"]  # under today's date
    head = await mirrors.app.store.head(stored)
    assert head is not None
    assert head.metadata["source"] == "fallback"
