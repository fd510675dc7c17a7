"""`mirrord sync --shard K/N` (docs/design.md §12): N real processes share one job against
moto and a latency-bound emulator. Completeness, no blob fetched twice across shards, the
hash file under N concurrent writers, a killed shard resumed, and the bucket lock that
lets a job's shards run together while it keeps every other sync out."""

from __future__ import annotations

import asyncio
import hashlib
import signal

import orjson
import pytest
from conftest import DATE, days_ago, make_settings, run_cli, spawn_cli
from mirrord_dev.emulator import Emulator, Fault, synthetic_catalog

from mirrord.adapters.lock import BucketLock, Holder
from mirrord.adapters.web import fetch_catalog
from mirrord.app import App, open_app
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry
from mirrord.core.shards import Shard, ShardRecord, lock_key, record_key
from mirrord.services import checkpoint
from mirrord.services.checkpoint import Checkpointer, load_hashfile
from mirrord.services.sync import prepare

MiB = 2**20
JOB = "job-shards"
PLATFORMS = "arm64_tahoe,arm64_sequoia"
LATENCY = (0.02, 0.08)  # seconds before each answer: GHCR's first byte, scaled down


def env_for(bucket: str, emu: Emulator, **extra: str) -> dict[str, str]:
    return {
        "MIRRORD_BUCKET": bucket,
        "MIRRORD_API_URL": emu.api_url,
        "MIRRORD_PLATFORMS": PLATFORMS,
        "MIRRORD_CONCURRENCY": "4",
        "MIRRORD_BATCH_SIZE": "2",  # many checkpoints: the hash file's writers collide
        "MIRRORD_CHECKPOINT_SECONDS": "0.5",
        "MIRRORD_HEARTBEAT_SECONDS": "1",  # a dead holder's lease lapses in 3 s
        "MIRRORD_READ_TIMEOUT": "5",
        **extra,
    }


def shard_args(k: int, n: int, job: str = JOB) -> tuple[str, ...]:
    return ("sync", "--json", "--date", DATE, "--job-id", job, "--shard", f"{k}/{n}")


async def planned(app: App, emu: Emulator) -> dict[str, str]:
    """Object key → sha256 of every transfer the job plans on an empty mirror."""
    catalog = await fetch_catalog(app.http, emu.api_url, app.backoff)
    job = Job(JOB, DATE, platforms=tuple(PLATFORMS.split(",")))
    _, plan = prepare(catalog, HashFile(), job, None)
    return {t.key: t.bottle.sha256 for t in plan.transfers}


async def check_complete(app: App, emu: Emulator, env: dict[str, str]) -> None:
    """Every planned bottle is recorded in the hash file, its bytes verified; a plan on
    the result has nothing left to fetch."""
    hf, _ = await load_hashfile(app.store, "bottles_hash.json")
    recorded = {e.s3_key: e.sha256 for e in hf.bottles.values()}
    expected = await planned(app, emu)
    assert {k: recorded.get(k) for k in expected} == expected
    for key, sha in expected.items():
        found = await app.store.get(key)
        assert found is not None, key
        assert hashlib.sha256(found[0]).hexdigest() == sha, key
    plan = await run_cli("plan", "--json", "--date", DATE, env=env)
    assert plan.code == 0, plan.stderr[-1500:]
    assert plan.json()["transfers"] == 0
    deep = await run_cli("verify", "--deep", env=env)
    assert deep.code == 0, deep.stderr[-1500:]


async def read_record(app: App, shard: Shard) -> ShardRecord:
    found = await app.store.get(record_key(JOB, shard))
    assert found is not None, f"no record for shard {shard}"
    return ShardRecord.from_json(orjson.loads(found[0]), record_key(JOB, shard))


def conflicts(stderr: bytes) -> int:
    return sum(b'"hashfile_conflict"' in line for line in stderr.splitlines())


@pytest.mark.parametrize("count", [3, 8])
async def test_n_shards_fill_the_mirror_once(bucket_name: str, count: int) -> None:
    """N concurrent shard processes: each exits 0 with its record, the hash file holds
    every bottle (N writers merged, none lost), every object verifies, no blob is fetched
    twice across shards, and the job's shared bucket lock is released by the last."""
    catalog = synthetic_catalog(40, seed=3, sizes=(20_000, 200_000))
    async with (
        Emulator(catalog, latency=LATENCY) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        env = env_for(bucket_name, emu)
        results = await asyncio.gather(
            *(run_cli(*shard_args(k, count), env=env) for k in range(1, count + 1))
        )
        for k, result in enumerate(results, 1):
            assert result.code == 0, (k, result.stderr[-2000:])
            assert result.json()["shard"] == f"{k}/{count}"
        expected = await planned(app, emu)
        records = [await read_record(app, Shard(k, count)) for k in range(1, count + 1)]
        assert all(r.state == "done" and not r.failed for r in records)
        assert sum(r.stored for r in records) == len(expected)
        # Each shard stored exactly what split() gives it, by object key.
        for record in records:
            mine = [key for key in expected if record.shard.owns(key)]
            assert record.stored == len(mine)
        fetched = {sha: emu.stats(sha).requests for sha in set(expected.values())}
        assert max(fetched.values()) == 1, "a blob fetched twice"
        await check_complete(app, emu, env)
        assert await BucketLock(app.store, "probe", 3).holder() is None
        lost = sum(conflicts(r.stderr) for r in results)
        print(f"\nN={count}: {len(expected)} bottles, {lost} hash-file races lost and merged")


async def test_killed_shard_resumes_and_loses_nothing(bucket_name: str) -> None:
    """Shard 2 of 3 is SIGKILLed after its second checkpoint; its siblings finish and
    release the job's lock (a dead shard on this host is no live sibling); rerun, it takes
    its own lock over at once, adopts what it stored unrecorded, refetches at most its
    transfers in flight, and the mirror is complete."""
    catalog = synthetic_catalog(40, seed=5, sizes=(20_000, 200_000))
    async with (
        Emulator(catalog, latency=LATENCY) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        env = env_for(bucket_name, emu)
        killed = env_for(
            bucket_name, emu, MIRRORD_CRASH_AT="after_checkpoint:2", MIRRORD_CRASH_SIGNAL="kill"
        )
        results = await asyncio.gather(
            run_cli(*shard_args(1, 3), env=env),
            run_cli(*shard_args(2, 3), env=killed),
            run_cli(*shard_args(3, 3), env=env),
        )
        assert [r.code for r in results] == [0, -9, 0], results[1].stderr[-1500:]
        assert await app.store.get(record_key(JOB, Shard(2, 3))) is None
        hf_at_kill, _ = await load_hashfile(app.store, "bottles_hash.json")
        assert await BucketLock(app.store, "probe", 3).holder() is None

        before = {sha: emu.stats(sha).requests for sha in catalog.blobs}
        rerun = await run_cli(*shard_args(2, 3), env=env)
        assert rerun.code == 0, rerun.stderr[-2000:]
        refetched = [s for s in catalog.blobs if before[s] and emu.stats(s).requests > before[s]]
        assert len(refetched) <= 4  # MIRRORD_CONCURRENCY: the transfers in flight at the kill
        expected = await planned(app, emu)
        record = await read_record(app, Shard(2, 3))
        # What the rerun stored (fetched or adopted): its part less what was recorded.
        recorded = {e.s3_key for e in hf_at_kill.bottles.values()}
        left = [key for key in expected if Shard(2, 3).owns(key) and key not in recorded]
        assert 0 < record.stored == len(left)
        final, _ = await load_hashfile(app.store, "bottles_hash.json")
        assert set(hf_at_kill.bottles) <= set(final.bottles)
        await check_complete(app, emu, env)
        assert all(emu.stats(s).requests <= 1 for s in catalog.blobs if s not in refetched)
        # Run once more (a duplicate delivery, once done): its record, and no fetch.
        total = emu.total_requests()
        again = await run_cli(*shard_args(2, 3), env=env)
        assert again.code == 0
        assert again.json()["stored"] == record.stored
        assert emu.total_requests() == total


async def wait_for_shared(app: App) -> Holder:
    probe = BucketLock(app.store, "probe", 3)
    for _ in range(400):
        holder = await probe.holder()
        if holder is not None and holder.shared:
            return holder
        await asyncio.sleep(0.05)
    raise AssertionError("the shard never took the bucket lock")


async def test_shards_exclude_other_jobs_and_their_own_duplicates(bucket_name: str) -> None:
    """While shard 1/2 runs: a plain sync, a shard of another job and a second copy of
    shard 1/2 are refused; shard 2/2 of the same job runs beside it."""
    catalog = synthetic_catalog(12, seed=9, sizes=(20_000, 60_000))
    async with (
        Emulator(catalog) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        env = env_for(bucket_name, emu)
        slow = Fault("trickle", bytes_per_s=20_000, times=None)
        for sha in catalog.blobs:
            emu.set_faults(sha, [slow])
        first = await spawn_cli(*shard_args(1, 2), env=env)
        try:
            holder = await wait_for_shared(app)
            assert holder.job_id == JOB
            plain = await run_cli("sync", "--date", DATE, "--job-id", "other", env=env)
            assert plain.code == 1
            assert b"another sync holds the bucket" in plain.stderr
            assert JOB.encode() in plain.stderr
            other = await run_cli(*shard_args(1, 2, job="other"), env=env)
            assert other.code == 1
            assert b"another sync holds the bucket" in other.stderr
            other_day = await run_cli(
                *shard_args(2, 2)[:3], days_ago(3), *shard_args(2, 2)[4:], env=env
            )
            assert other_day.code == 1
            assert b"every shard of a job needs the same --date" in other_day.stderr
            twin = await run_cli(*shard_args(1, 2), env=env)
            assert twin.code == 1
            assert b"another sync holds the bucket" in twin.stderr
            emu.clear_faults()
            sibling = await run_cli(*shard_args(2, 2), env=env)
            assert sibling.code == 0, sibling.stderr[-1500:]
            out, err = await asyncio.wait_for(first.communicate(), 120)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        assert first.returncode == 0, err[-1500:]
        assert orjson.loads(out)["shard"] == "1/2"
        assert await BucketLock(app.store, "probe", 3).holder() is None


async def test_a_plain_sync_keeps_shards_out(app: App) -> None:
    """A plain sync's lock is no shared lease: a shard cannot join it, and a shard's
    lease cannot be taken by a plain sync of the same job id either."""
    plain = BucketLock(app.store, "plain", 30)
    assert await plain.acquire(JOB) is None
    shard = BucketLock(app.store, "shard", 30, shared=DATE)
    busy = await shard.acquire(JOB)
    assert busy is not None
    assert busy.owner == "plain"
    await plain.release()
    assert await shard.acquire(JOB) is None
    sibling = BucketLock(app.store, "sibling", 30, shared=DATE)
    assert await sibling.acquire(JOB) is None  # joined
    assert await BucketLock(app.store, "plain", 30).acquire(JOB) is not None
    assert await BucketLock(app.store, "x", 30, shared=DATE).acquire("another") is not None
    # The same job with another date plans other keys: it may not join.
    assert await BucketLock(app.store, "x", 30, shared=days_ago(3)).acquire(JOB) is not None
    await shard.renew()
    await sibling.renew()

    async def live() -> bool:
        return True

    async def gone() -> bool:
        return False

    await shard.leave(live)  # a sibling is live: the lease stays
    assert (await BucketLock(app.store, "probe", 30).holder()) is not None
    await sibling.leave(gone)  # the last one out releases it
    assert await BucketLock(app.store, "probe", 30).holder() is None


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/65"])
async def test_bad_shard_or_missing_job_id_is_a_usage_error(text: str) -> None:
    result = await run_cli(
        "sync", "--shard", text, "--job-id", "j", env={"MIRRORD_BUCKET": "some-bucket"}
    )
    assert result.code == 2
    assert b"--shard" in result.stderr


async def test_a_shard_without_job_id_is_a_usage_error() -> None:
    """Shards of one job must name it alike: no default id, refused before any request."""
    missing = await run_cli("sync", "--shard", "1/2", env={"MIRRORD_BUCKET": "some-bucket"})
    assert missing.code == 2
    assert b"needs --job-id" in missing.stderr


def test_lock_keys_stay_out_of_the_records_folder() -> None:
    """The fan-in lists jobs/<job>/shards/ for records: a shard's lock lives elsewhere."""
    assert "/shards/" not in lock_key(JOB, Shard(1, 2))
    assert lock_key(JOB, Shard(1, 2)) != lock_key(JOB, Shard(2, 2))


async def test_eight_checkpointers_on_one_hash_file_lose_nothing(app: App) -> None:
    """8 writers flush 25 one-entry batches each at once into one hash file (far more
    often than shards do: a batch is 100 bottles): every entry is there at the end, and
    no flush came near its attempt limit. Measured: races lost, the longest losing
    streak. (Without the jittered pause, retrying at once, one writer lost 30 in a row.)"""
    key = "bottles_hash.json"

    async def writer(w: int) -> Checkpointer:
        hf, etag = await load_hashfile(app.store, key)
        ours = Checkpointer(app.store, key, hf, etag, batch_size=1)
        for i in range(25):
            name = f"w{w}n{i}"
            sha = hashlib.sha256(name.encode()).hexdigest()
            ours.add(
                {
                    f"{name}-1.0-arm64_tahoe": HashEntry(
                        sha, DATE, 100, f"{DATE}/{name}-1.0.arm64_tahoe.bottle.tar.gz"
                    )
                }
            )
            await ours.flush()
        return ours

    writers = await asyncio.gather(*(writer(w) for w in range(8)))
    final, _ = await load_hashfile(app.store, key)
    assert len(final.bottles) == 8 * 25
    lost = sum(w.conflicts for w in writers)
    streak = max(w.longest_streak for w in writers)
    print(f"\n8 writers × 25 flushes: {lost} races lost, longest streak {streak}")
    assert streak < checkpoint.SAVE_ATTEMPTS // 2


async def test_a_stopped_shard_writes_no_record_and_leaves_the_lock(bucket_name: str) -> None:
    """SIGTERM: in-flight transfers finish, the checkpoint is written, no record (the
    fan-in must not count an unfinished shard), exit 1, and the job's lease released."""
    catalog = synthetic_catalog(12, seed=11, sizes=(20_000, 60_000))
    async with (
        Emulator(catalog, bytes_per_s=40_000) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        proc = await spawn_cli(*shard_args(1, 1), env=env_for(bucket_name, emu))
        try:
            await wait_for_shared(app)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 1, err[-1500:]
        assert b"running it again resumes it" in err
        assert out == b""
        assert await app.store.get(record_key(JOB, Shard(1, 1))) is None
        assert await BucketLock(app.store, "probe", 3).holder() is None


async def test_a_release_after_its_renewal_landed_late_still_releases(bucket_name: str) -> None:
    """A renewal cancelled on the way out may still land after the ETag the lock knew;
    the release then reads the lock and, still ours, releases it on the ETag it has now
    (else a sharded job's last shard took it for a live sibling and kept the job's lease
    until it expired). A lock another took over is left to them."""
    async with open_app(make_settings(bucket_name, "http://127.0.0.1:9/api/formula.json")) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        key = lock_key("job", Shard(1, 2))
        for rival in (False, True):
            lock = BucketLock(app.store, "me", 30, key=key)
            assert await lock.acquire("job") is None
            found = await app.store.read(key)
            assert found is not None
            body = orjson.loads(found.body)
            body["expires_at"] += 1  # what a renewal changes (else the ETag, an MD5, would not)
            if rival:  # a lease that lapsed and was taken by another process
                body.update(owner="rival", process=None)
            json = "application/json"
            await app.store.put_if(key, orjson.dumps(body), etag=found.etag, content_type=json)
            await lock.release()
            holder = await lock.holder()
            assert (holder.owner if holder else None) == ("rival" if rival else None)
