"""Whole syncs against a moto server and the emulator: layout, integrity, faults,
resume, crash safety, concurrent writers, and the CLI's contracts."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import tracemalloc
from asyncio.subprocess import DEVNULL
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from conftest import (
    DATE,
    REPORT_FIELDS,
    MakeWorld,
    days_ago,
    loopback,
    make_settings,
    run_cli,
    spawn_cli,
)
from mirrord_dev.emulator import (
    Emulator,
    Fault,
    catalog_from_entries,
    sample_catalog,
    synthetic_catalog,
)

from mirrord.adapters.lock import BucketLock
from mirrord.adapters.web import fetch_catalog
from mirrord.app import App, open_app
from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.errors import StoreError
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry
from mirrord.core.releases import auto_targets
from mirrord.services.checkpoint import Checkpointer, load_hashfile
from mirrord.services.sync import Tuning, run_sync
from mirrord.services.transfer import transfer

MiB = 2**20


@dataclass
class World:
    app: App
    emu: Emulator

    @property
    def store(self) -> Any:
        return self.app.store

    async def catalog(self) -> Any:
        return await fetch_catalog(self.app.http, self.emu.api_url, self.app.backoff)

    async def sync(
        self, *, batch: int = 100, concurrency: int = 4, job_id: str = "t", **kw: Any
    ) -> Any:
        return await run_sync(
            Job(job_id, kw.pop("date", DATE), kw.pop("platforms", None)),
            await self.catalog(),
            self.store,
            self.app.registry,
            Tuning(concurrency, kw.pop("part_size", 5 * MiB), batch, kw.pop("interval", 60.0)),
            hash_key="bottles_hash.json",
            **kw,
        )

    async def hashfile(self) -> HashFile:
        hf, _ = await load_hashfile(self.store, "bottles_hash.json")
        return hf

    async def object(self, key: str) -> bytes:
        found = await self.store.get(key)
        assert found is not None, key
        return found[0]

    def expected(self) -> dict[str, Any]:
        """hash key → bottle, as brew would pick them, from the served catalog."""
        raw = orjson.dumps(self.emu.catalog.formulae).replace(
            b"{registry}", self.emu.registry_url.encode()
        )
        formulae = parse_catalog(raw).formulae
        return {b.hash_key: b for b in select_bottles(formulae, auto_targets(formulae)).bottles}


@pytest.fixture
async def world(make_world: MakeWorld) -> World:
    made = await make_world()
    return World(made.app, made.emu)


async def test_full_sync_layout_bytes_metadata_and_hash_file(world: World) -> None:
    """Every bottle brew would pick is stored once under the job date with brew's file
    name, the exact bytes and the metadata; the hash file describes each; a second run
    downloads nothing."""
    report = await world.sync()
    expected = world.expected()
    shas = {b.sha256 for b in expected.values()}
    assert report.exit_code == 0
    assert report.failed == ()
    assert report.downloaded == report.planned == len(shas) > 5
    hf = await world.hashfile()
    assert set(hf.bottles) == set(expected)
    for key, bottle in expected.items():
        entry = hf.bottles[key]
        assert entry.sha256 == bottle.sha256
        assert entry.download_date == DATE
        assert entry.s3_key.startswith(f"{DATE}/")
        assert entry.s3_key.endswith(".tar.gz")
        body = await world.object(entry.s3_key)
        assert hashlib.sha256(body).hexdigest() == bottle.sha256
        assert len(body) == entry.file_size
        head = await world.store.head(entry.s3_key)
        assert head.metadata["sha256"] == bottle.sha256
        if entry.s3_key == bottle.s3_key(DATE):  # an alias's object names its primary
            assert head.metadata == {
                "sha256": bottle.sha256,
                "formula": bottle.name,
                "version": bottle.pkg_version,
                "platform": bottle.tag,
                "source-url": bottle.url,
            }
    # brew's names, rebuild suffix included (openssl@3 has rebuild 1 in the sample).
    assert any(k.endswith(".bottle.1.tar.gz") for k in (e.s3_key for e in hf.bottles.values()))
    # The 20 MiB bottle went through multipart (ETag "<md5>-<parts>").
    big = [
        await world.store.head(e.s3_key)
        for e in hf.bottles.values()
        if (e.file_size or 0) > 10 * MiB
    ]
    assert big
    assert all(h.etag.strip('"').endswith("-4") for h in big)
    assert await world.store.open_uploads() == []

    sent = world.emu.total_bytes_sent()
    again = await world.sync()
    assert (again.planned, again.downloaded, again.skipped) == (0, 0, len(expected))
    assert world.emu.total_bytes_sent() == sent


async def test_corrupt_bottles_never_visible_and_reported(world: World) -> None:
    """Corrupt bytes (small and multipart-sized): not in the bucket, not in the hash
    file, listed in failed, exit 1; every other bottle stored; no upload left open."""
    expected = world.expected()
    by_size = sorted(expected.values(), key=lambda b: world.emu.catalog.blobs[b.sha256].size)
    small, large = by_size[0], by_size[-1]
    assert world.emu.catalog.blobs[large.sha256].size > 5 * MiB
    for b in (small, large):
        world.emu.set_faults(b.sha256, [Fault("corrupt", times=None)])
    report = await world.sync()
    assert report.exit_code == 1
    assert {f.key for f in report.failed} == {small.hash_key, large.hash_key}
    assert all("sha256 mismatch" in f.error for f in report.failed)
    hf = await world.hashfile()
    assert set(hf.bottles) == set(expected) - {small.hash_key, large.hash_key}
    keys = {o.key async for o in world.store.list_objects()}
    assert small.s3_key(DATE) not in keys
    assert large.s3_key(DATE) not in keys
    assert await world.store.open_uploads() == []


async def test_transient_faults_still_store_everything(world: World) -> None:
    """5xx, 429, cuts (incl. mid-multipart), a dead redirect: all bottles stored."""
    expected = list(world.expected().values())
    large = max(expected, key=lambda b: world.emu.catalog.blobs[b.sha256].size)
    world.emu.set_faults(large.sha256, [Fault("cut", after=7 * MiB, times=1)])
    faults = [
        [Fault("status", status=502, times=2)],
        [Fault("throttle", seconds=0, times=1)],
        [Fault("cut", after=1000, times=1)],
        [Fault("dead_redirect", times=1)],
    ]
    for b, f in zip([b for b in expected if b is not large], faults, strict=False):
        world.emu.set_faults(b.sha256, f)
    report = await world.sync()
    assert report.exit_code == 0
    assert report.downloaded == report.planned
    assert (
        world.emu.stats(large.sha256).bytes_sent < 1.5 * world.emu.catalog.blobs[large.sha256].size
    )


async def test_checkpoints_on_time_as_well_as_on_batch(world: World) -> None:
    """With a batch larger than the job, the hash file is still written every
    checkpoint interval while bottles complete, not only at the end."""
    for sha in world.emu.catalog.blobs:
        world.emu.set_faults(sha, [Fault("trickle", bytes_per_s=4 * MiB, times=None)])
    # One at a time, so completions spread over seconds by construction: with 8 in
    # flight the small bottles could all land inside one interval on a warm moto.
    report = await world.sync(batch=10_000, interval=0.3, concurrency=1)
    assert report.exit_code == 0
    assert report.checkpoints >= 3  # at least two on time, plus the final one


async def test_unsafe_names_are_rejected_and_the_rest_synced(bucket_name: str) -> None:
    """A catalog with `../../x` and `a b`: both reported as rejected, never shape a key;
    every good formula is stored; exit 0."""
    good = {
        "name": "jq",
        "versions": {"stable": "1.7.1"},
        "revision": 1,
        "bottle": {
            "stable": {
                "rebuild": 0,
                "files": {
                    "arm64_tahoe": {"cellar": ":any", "url": "https://x", "sha256": "1" * 64}
                },
            }
        },
    }
    bad = [{**good, "name": name} for name in ("../../x", "a b")]
    for i, entry in enumerate(bad):
        entry["bottle"] = {
            "stable": {
                "rebuild": 0,
                "files": {
                    "arm64_tahoe": {"cellar": ":any", "url": "https://x", "sha256": f"{i + 2:064x}"}
                },
            }
        }
    catalog = catalog_from_entries([bad[0], good, bad[1]])
    async with Emulator(catalog) as emu, open_app(make_settings(bucket_name, emu.api_url)) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        report = await World(app, emu).sync(platforms=("arm64_tahoe",))
        keys = {o.key async for o in app.store.list_objects()}
    assert report.exit_code == 0
    assert sorted(r.name for r in report.rejected) == ["../../x", "a b"]
    assert keys == {"bottles_hash.json", f"{DATE}/jq-1.7.1_1.arm64_tahoe.bottle.tar.gz"}


async def test_full_sync_through_a_token_challenge(bucket_name: str) -> None:
    """A registry that answers 401 with a Bearer challenge: one token per repository,
    every bottle stored."""
    catalog = sample_catalog()
    async with (
        Emulator(catalog, auth="challenge") as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        world = World(app, emu)
        report = await world.sync()
        assert report.exit_code == 0
        assert report.downloaded == len({b.sha256 for b in world.expected().values()})


async def test_adopts_stored_object_and_links_known_sha(world: World) -> None:
    """After a crash the object is in the bucket but not the file: HEAD adopts it without
    downloading. A sha256 already stored under another key is linked, not fetched."""
    expected = list(world.expected().values())
    first, second = expected[0], expected[1]
    data = world.emu.catalog.data(first.sha256)
    await world.store.put_verified(
        first.s3_key(DATE), io.BytesIO(data), first.sha256, {"sha256": first.sha256}
    )
    await world.store.put_if(
        "bottles_hash.json",
        orjson.dumps(
            {
                "version": 2,
                "bottles": {
                    "renamed-0-arm64_tahoe": {
                        "sha256": second.sha256,
                        "download_date": "2026-01-01",
                        "file_size": 1,
                        "s3_key": "2026-01-01/renamed-0.arm64_tahoe.bottle.tar.gz",
                    }
                },
            }
        ),
        etag=None,
        content_type="application/json",
    )
    report = await world.sync()
    assert report.adopted == 1
    assert report.exit_code == 0
    assert world.emu.stats(first.sha256).requests == 0
    assert world.emu.stats(second.sha256).requests == 0
    hf = await world.hashfile()
    assert hf.bottles[second.hash_key].s3_key == "2026-01-01/renamed-0.arm64_tahoe.bottle.tar.gz"
    assert hf.bottles[first.hash_key].s3_key == first.s3_key(DATE)


async def test_concurrent_hash_file_writers_lose_nothing(world: World) -> None:
    """Writers starting from the same ETag: 412s are resolved by reload-merge-write and
    every writer's entries end up in the file."""
    hf, etag = await load_hashfile(world.store, "bottles_hash.json")
    writers = [
        Checkpointer(world.store, "bottles_hash.json", hf, etag, batch_size=1) for _ in range(6)
    ]
    for i, w in enumerate(writers):
        for j in range(5):
            w.add(
                {
                    f"f{i}-{j}-1.0-sonoma": HashEntry(
                        f"{i * 10 + j:064x}", DATE, j, f"{DATE}/f{i}-{j}-1.0.sonoma.bottle.tar.gz"
                    )
                }
            )
    await asyncio.gather(*(w.flush() for w in writers))
    final = await world.hashfile()
    assert len(final.bottles) == 30
    assert sum(w.saves for w in writers) == 6


async def test_cancelled_multipart_transfer_is_aborted(world: World) -> None:
    """Cancelling mid-multipart leaves no open upload and no object."""
    large = max(world.expected().values(), key=lambda b: world.emu.catalog.blobs[b.sha256].size)
    world.emu.set_faults(large.sha256, [Fault("trickle", bytes_per_s=40 * MiB, times=None)])
    task = asyncio.create_task(
        transfer(large, "cancel/me.tar.gz", world.app.registry, world.store, 5 * MiB)
    )
    for _ in range(200):
        await asyncio.sleep(0.05)
        if await world.store.open_uploads():
            break
    assert await world.store.open_uploads(), "multipart upload never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await world.store.open_uploads() == []
    assert await world.store.head("cancel/me.tar.gz") is None


async def test_memory_stays_within_two_parts_per_transfer(bucket_name: str) -> None:
    """Peak Python memory while syncing 40 MiB bottles stays under about
    concurrency × 2 × part size (measured with tracemalloc; the catalog is tiny)."""
    entries = [
        {
            "name": f"big{i}",
            "versions": {"stable": "1.0"},
            "bottle": {
                "stable": {"files": {"arm64_tahoe": {"url": "https://x", "sha256": f"{i:064x}"}}}
            },
        }
        for i in range(4)
    ]
    catalog = catalog_from_entries(entries, size_of=lambda n, t: 40 * MiB)
    for sha in catalog.blobs:
        catalog.data(sha)  # generate the emulator's bytes before measuring
    part, concurrency = 8 * MiB, 2
    async with Emulator(catalog) as emu, open_app(make_settings(bucket_name, emu.api_url)) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        world = World(app, emu)
        tracemalloc.start()
        try:
            report = await world.sync(
                concurrency=concurrency, part_size=part, platforms=("arm64_tahoe",)
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert report.downloaded == 4
    assert peak < concurrency * 3 * part, f"peak {peak / MiB:.1f} MiB"


async def test_checksums_hold_against_a_checking_server(
    seaweed_url: str, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against SeaweedFS, which verifies ChecksumSHA256 and part CRC32Cs: a whole sync
    (multipart included) is accepted, and a wrong sha256 is refused by the server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed_url)
    async with (
        Emulator(sample_catalog()) as emu,
        open_app(make_settings(bucket_name, emu.api_url, read_timeout=15.0)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        world = World(app, emu)
        report = await world.sync()
        assert report.failed == ()
        assert report.downloaded > 5
        for entry in (await world.hashfile()).bottles.values():
            assert hashlib.sha256(await world.object(entry.s3_key)).hexdigest() == entry.sha256
        with pytest.raises(StoreError, match="BadDigest"):
            await app.store.put_verified("wrong.tar.gz", io.BytesIO(b"abc"), "0" * 64, {})
        assert await app.store.head("wrong.tar.gz") is None


# --- the command line -------------------------------------------------------------------


def cli_env(world: World, **extra: str) -> dict[str, str]:
    return {
        "MIRRORD_BUCKET": world.store.bucket,
        "MIRRORD_API_URL": world.emu.api_url,
        "MIRRORD_PART_SIZE": "5MiB",
        "MIRRORD_READ_TIMEOUT": "2",
        **extra,
    }


async def test_cli_sync_json_report_and_exit_codes(world: World) -> None:
    """`sync --json`: the report alone on stdout with docs/design.md §10's fields; logs JSON on
    stderr; exit 0, then exit 1 when a bottle is corrupt."""
    result = await run_cli("sync", "--json", "--date", DATE, env=cli_env(world))
    assert result.code == 0, result.stderr[-2000:]
    report = result.json()
    assert set(report) >= REPORT_FIELDS
    assert report["date"] == DATE
    assert report["downloaded"] == report["planned"] > 0
    assert any(line.get("event") == "sync_done" for line in result.logs())

    victim = next(iter(world.expected().values()))
    await world.app.s3.delete_object(Bucket=world.store.bucket, Key="bottles_hash.json")
    await world.app.s3.delete_object(Bucket=world.store.bucket, Key=victim.s3_key(DATE))
    world.emu.set_faults(victim.sha256, [Fault("corrupt", times=None)])
    result = await run_cli("sync", "--json", "--date", DATE, env=cli_env(world))
    assert result.code == 1
    assert [f["key"] for f in result.json()["failed"]] == [victim.hash_key]
    assert result.json()["adopted"] == result.json()["planned"] - 1  # the rest was in the bucket


@pytest.mark.parametrize(
    ("env", "args", "needle"),
    [
        ({"MIRRORD_BUCKET": ""}, (), "MIRRORD_BUCKET"),
        ({"MIRRORD_CONCURRENCY": "lots"}, (), "MIRRORD_CONCURRENCY"),
        ({}, ("--platform", "arm64_windows"), "--platform:"),  # as typed, not the field
        ({}, ("--formula", "no-such-formula"), "no-such-formula"),
        ({"AWS_DEFAULT_REGION": ""}, (), "AWS_DEFAULT_REGION"),
    ],
)
async def test_cli_bad_settings_exit_2_with_one_line(
    world: World, env: dict[str, str], args: tuple[str, ...], needle: str
) -> None:
    """A bad setting or flag: exit 2, one line on stderr naming it, nothing written."""
    result = await run_cli("sync", *args, env=cli_env(world, **env))
    assert result.code == 2
    said = [line for line in result.stderr.decode().splitlines() if not line.startswith("{")]
    assert len(said) == 1
    assert said[0].startswith("mirrord: ")
    assert needle in said[0]
    # At most the released bucket lock; no bottle, no hash file.
    assert {o.key async for o in world.store.list_objects()} <= {"sync.lock"}


async def test_cli_malformed_catalog_loses_nothing(world: World, bucket_name: str) -> None:
    """A truncated formula.json: exit 1 with one clear error; the bucket is untouched."""
    await world.sync()
    before = await world.object("bottles_hash.json")
    raw = orjson.dumps(world.emu.catalog.formulae)
    async with Emulator(world.emu.catalog, raw_api=raw[:-100]) as broken:
        result = await run_cli("sync", env=cli_env(world, MIRRORD_API_URL=broken.api_url))
    assert result.code == 1
    assert b"not valid JSON" in result.stderr
    assert await world.object("bottles_hash.json") == before


async def test_cli_corrupt_hash_file_is_kept_then_rebuilt(world: World) -> None:
    """A corrupt bottles_hash.json stops the sync (exit 1, file untouched, nothing
    downloaded); `rebuild-hash` restores it from object metadata exactly."""
    await world.sync()
    good = await world.hashfile()
    await world.app.s3.put_object(
        Bucket=world.store.bucket,
        Key="bottles_hash.json",
        Body=b'{"version": 2, "bottles": {"x": 1',
    )
    sent = world.emu.total_bytes_sent()
    result = await run_cli("sync", "--date", days_ago(8), env=cli_env(world))
    assert result.code == 1
    assert b"bottles_hash.json" in result.stderr
    assert await world.object("bottles_hash.json") == b'{"version": 2, "bottles": {"x": 1'
    assert world.emu.total_bytes_sent() == sent

    result = await run_cli("rebuild-hash", "--json", env=cli_env(world))
    assert result.code == 0
    assert result.json()["replaced_corrupt"] is True
    rebuilt = await world.hashfile()
    assert rebuilt.bottles == good.bottles


async def test_cli_verify_finds_missing_orphaned_and_tampered(world: World) -> None:
    """verify: clean → 0; a deleted object, a stray bottle and (with --deep) bytes that no
    longer match their sha256 → exit 1 naming each."""
    await world.sync()
    assert (await run_cli("verify", env=cli_env(world))).code == 0
    hf = await world.hashfile()
    gone, tampered = sorted(hf.bottles.items())[:2]
    client, bucket = world.app.s3, world.store.bucket
    await client.delete_object(Bucket=bucket, Key=gone[1].s3_key)
    size = tampered[1].file_size
    await client.put_object(
        Bucket=bucket,
        Key=tampered[1].s3_key,
        Body=b"\0" * size,
        Metadata={"sha256": tampered[1].sha256},
    )
    await client.put_object(Bucket=bucket, Key=f"{DATE}/stray-1.0.sonoma.bottle.tar.gz", Body=b"x")
    shallow = await run_cli("verify", "--json", env=cli_env(world))
    deep = await run_cli("verify", "--json", "--deep", env=cli_env(world))
    assert shallow.code == deep.code == 1
    kinds = lambda r: {(p["kind"], p["key"]) for p in r.json()["problems"]}  # noqa: E731
    assert kinds(shallow) == {
        ("missing", gone[0]),
        ("orphaned", f"{DATE}/stray-1.0.sonoma.bottle.tar.gz"),
    }
    assert kinds(deep) == kinds(shallow) | {("sha256", tampered[0])}


async def test_cli_plan_writes_nothing(world: World) -> None:
    """plan lists what a sync would fetch and writes nothing to the bucket."""
    result = await run_cli("plan", "--json", "--date", DATE, env=cli_env(world))
    assert result.code == 0
    body = result.json()
    assert body["transfers"] == len({b.sha256 for b in world.expected().values()})
    assert all(b["key"].startswith(f"{DATE}/") for b in body["bottles"])
    assert [o async for o in world.store.list_objects()] == []


async def test_crash_mid_sync_then_resume(bucket_name: str) -> None:
    """SIGKILL mid-sync, run again: complete and consistent, and no more than one batch
    plus the transfers in flight are fetched a second time."""
    catalog = synthetic_catalog(40, seed=7)
    async with Emulator(catalog) as emu, open_app(make_settings(bucket_name, emu.api_url)) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        for sha in catalog.blobs:
            emu.set_faults(sha, [Fault("trickle", bytes_per_s=2 * MiB, times=None)])
        env = {
            "MIRRORD_BUCKET": bucket_name,
            "MIRRORD_API_URL": emu.api_url,
            "MIRRORD_BATCH_SIZE": "5",
            "MIRRORD_CONCURRENCY": "4",
            "MIRRORD_PLATFORMS": "arm64_tahoe",
            # The killed run's bucket lock lapses after 3 heartbeats: keep that short.
            "MIRRORD_HEARTBEAT_SECONDS": "1",
        }
        proc = await spawn_cli("sync", "--date", DATE, env=env, stdout=DEVNULL, stderr=DEVNULL)
        for _ in range(600):  # until at least two checkpoints are in
            await asyncio.sleep(0.05)
            hf, _ = await load_hashfile(app.store, "bottles_hash.json")
            if len(hf.bottles) >= 10:
                break
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        hf_at_kill, _ = await load_hashfile(app.store, "bottles_hash.json")
        stored = {o.key async for o in app.store.list_objects()} - {
            "bottles_hash.json",
            "sync.lock",
        }
        unrecorded = stored - {e.s3_key for e in hf_at_kill.bottles.values()}
        assert hf_at_kill.bottles, "killed before the first checkpoint"
        assert len(stored) < len(catalog.blobs), "kill came too late"

        emu.clear_faults()
        probe = BucketLock(app.store, "probe", ttl=1)
        for _ in range(100):  # until the dead run's lock lease has expired, by S3's clock
            if await probe.holder() is None:
                break
            await asyncio.sleep(0.1)
        before = {sha: emu.stats(sha).requests for sha in catalog.blobs}
        result = await run_cli("sync", "--json", "--date", DATE, env=env)
        assert result.code == 0, result.stderr[-2000:]
        report = result.json()
        # Stored but not yet checkpointed: adopted by HEAD, not downloaded again.
        assert report["adopted"] == len(unrecorded)
        # Fetched twice = started before the kill and not stored: the in-flight ones only.
        refetched = [s for s in catalog.blobs if before[s] and emu.stats(s).requests > before[s]]
        assert len(refetched) <= 4
        final, _ = await load_hashfile(app.store, "bottles_hash.json")
        assert set(hf_at_kill.bottles) <= set(final.bottles)
        for entry in final.bottles.values():
            body = (await app.store.get(entry.s3_key))[0]
            assert hashlib.sha256(body).hexdigest() == entry.sha256
        verify = await run_cli("verify", env=env)
        assert verify.code == 0


async def test_uploads_send_their_body_without_waiting_for_100_continue(
    bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PutObject and UploadPart go out whole: no `Expect: 100-continue`, which costs a
    round trip and a response per upload (botocore adds it to every body it sends)."""
    from aiohttp import web

    seen: list[tuple[str, str | None]] = []

    async def s3(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("Expect")))
        await request.read()
        return web.Response(headers={"ETag": '"0"'})

    server = web.Application()
    server.router.add_route("*", "/{path:.*}", s3)
    async with loopback(server) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        async with open_app(make_settings(bucket_name, "http://127.0.0.1:9")) as app:
            await app.s3.put_object(Bucket=bucket_name, Key="k", Body=io.BytesIO(b"abc"))
            await app.s3.upload_part(
                Bucket=bucket_name, Key="k", UploadId="u", PartNumber=1, Body=io.BytesIO(b"a")
            )
    assert seen == [("PUT", None), ("PUT", None)]
