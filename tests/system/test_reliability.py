"""Reliability, proven (docs/internals.md "Guarantees", docs/reliability.md).

1. Nothing unverified is ever visible: a bottle object exists only if its bytes hash to
   the catalog's sha256.
2. Nothing stored is ever forgotten: every verified object is in bottles_hash.json or
   adopted on the next run; the hash file never loses an entry.
3. Progress is never lost by more than one batch plus the transfers in flight.
4. Bad input never stops the service: it is reported and the rest goes on.

Three parts, each against real peers (moto, the emulator, a fault proxy in front of moto):
the fault matrix (faults × pipeline stage), the crash-point sweep (`mirrord sync` killed
or stopped at named points, then run again) and the soak (the daemon through 50+ jobs
with random faults, its memory and file descriptors sampled from /proc).

A few rows of each run in `make test`; the whole set is marked ``reliability`` and runs
in `make reliability`, which also writes docs/reliability.md from what it measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import statistics
from asyncio.subprocess import DEVNULL
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from aiobotocore.session import get_session
from conftest import DATE, Ledger, days_ago, make_settings, run_cli, spawn_cli
from faultproxy import FaultProxy, Kind, Op
from mirrord_dev.emulator import Emulator, EmulatorCatalog, Fault, sample_catalog, synthetic_catalog

from mirrord.adapters.lock import BucketLock
from mirrord.adapters.web import fetch_catalog
from mirrord.app import App, open_app
from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.errors import SettingsError
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.models import Bottle
from mirrord.core.releases import auto_targets
from mirrord.core.settings import CRASH_POINTS, from_env
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.job import crash_hook
from mirrord.services.sync import Tuning, run_sync
from mirrord.services.transfer import no_hook

MiB = 2**20
HASH_KEY = "bottles_hash.json"
full = pytest.mark.reliability


# --- what the full run measured, for docs/reliability.md ---------------------------------


@pytest.fixture(scope="module", autouse=True)
def report_writer(ledger: Ledger) -> None:
    """After a run of the whole set (make reliability, which also runs
    tests/integration/test_hostile_upstream.py), the session writes the report: only a run of the
    whole set describes the whole set."""

    def write_if_whole(path: Path, book: Ledger) -> None:
        if (
            len(book.matrix) == len(ROWS)
            and len(book.crashes) == len(SWEEP)
            and book.soak
            and book.hostile
        ):
            write_report(path, book)

    ledger.writer = write_if_whole


# --- the guarantees, checked against the bucket --------------------------------------------


def expected_bottles(emu: Emulator, targets: tuple[str, ...] | None = None) -> list[Bottle]:
    raw = orjson.dumps(emu.catalog.formulae).replace(b"{registry}", emu.registry_url.encode())
    formulae = parse_catalog(raw).formulae
    return list(select_bottles(formulae, targets or auto_targets(formulae)).bottles)


async def bottle_objects(app: App) -> dict[str, str]:
    """key → sha256 of the bytes actually stored, for every bottle object in the bucket."""
    found = {}
    async for obj in app.store.list_objects():
        if obj.key.endswith(".tar.gz"):
            got = await app.store.get(obj.key)
            assert got is not None, obj.key
            found[obj.key] = hashlib.sha256(got[0]).hexdigest()
    return found


async def guarantee_1(app: App, bottles: list[Bottle]) -> dict[str, str]:
    """Every visible bottle object hashes to the catalog's sha256 for its name."""
    catalog_sha = {b.s3_key(DATE): b.sha256 for b in bottles}
    stored = await bottle_objects(app)
    for key, digest in stored.items():
        assert key in catalog_sha, f"an object no plan names: {key}"
        assert digest == catalog_sha[key], f"unverified bytes visible at {key}"
    return stored


async def guarantee_2(app: App, stored: dict[str, str], before: HashFile | None = None) -> None:
    """Every stored object is recorded, every record points at matching bytes, no entry
    of an earlier file was lost, and no multipart upload is left open."""
    hf, _ = await load_hashfile(app.store, HASH_KEY)
    recorded = {e.s3_key: e.sha256 for e in hf.bottles.values()}
    assert set(stored) <= set(recorded), f"stored, not recorded: {set(stored) - set(recorded)}"
    for key, sha in recorded.items():
        assert stored.get(key) == sha, f"recorded, not stored as such: {key}"
    if before is not None:
        lost = set(before.bottles) - set(hf.bottles)
        assert not lost, f"entries lost: {lost}"
    assert await app.store.open_uploads() == []


# --- the fault matrix ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    fault: str
    stage: str
    expected: str  # "stored": all stored after retries; "failed": the victims fail, the rest stored
    arm: Callable[[Emulator, FaultProxy, list[Bottle], random.Random], None]
    victims: str = "both"  # which bottles the fault aims at: "both", "small", "large", "none"
    auth: Literal["anonymous", "challenge"] = "anonymous"
    batch: int = 100
    fast: bool = False


def upstream(*faults: Callable[[random.Random, int], Fault]) -> Any:
    def arm(emu: Emulator, proxy: FaultProxy, victims: list[Bottle], rng: random.Random) -> None:
        for b in victims:
            size = emu.catalog.blobs[b.sha256].size
            emu.set_faults(b.sha256, [f(rng, size) for f in faults])

    return arm


def s3(op: Op, kind: Kind, times: int) -> Any:
    def arm(emu: Emulator, proxy: FaultProxy, victims: list[Bottle], rng: random.Random) -> None:
        proxy.inject(op, kind, times)

    return arm


def fixed(fault: Fault) -> Callable[[random.Random, int], Fault]:
    return lambda rng, size: fault


def cut_at_random(rng: random.Random, size: int) -> Fault:
    return Fault("cut", after=rng.randrange(1, size), times=1)


def stall_at_random(rng: random.Random, size: int) -> Fault:
    # 10 s of silence against the tests' 2 s read timeout.
    return Fault("stall", after=rng.randrange(1, size), seconds=10, times=1)


ROWS = [
    Row("registry 503 ×2", "registry GET", "stored", upstream(fixed(Fault("status", status=503, times=2))), fast=True),
    Row("registry 429 Retry-After 1 ×1", "registry GET", "stored", upstream(fixed(Fault("throttle", seconds=1, times=1)))),
    Row("registry 401 expired token ×1", "registry GET", "stored", upstream(fixed(Fault("expire_token", times=1))), auth="challenge"),
    Row("redirect to a dead blob host ×1", "blob GET", "stored", upstream(fixed(Fault("dead_redirect", times=1)))),
    Row("cut mid-body at 2 random offsets", "blob body", "stored", upstream(cut_at_random, cut_at_random), fast=True),
    Row("stalled body (10 s > 2 s read timeout)", "blob body", "stored", upstream(stall_at_random)),
    Row("Content-Length 5000 too large", "blob body", "stored", upstream(fixed(Fault("wrong_length", extra=5000, times=None)))),
    Row("corrupt bytes", "blob body", "failed", upstream(fixed(Fault("corrupt", times=None))), fast=True),
    Row("registry 500 on every attempt", "registry GET", "failed", upstream(fixed(Fault("status", status=500, times=None)))),
    Row("registry 404", "registry GET", "failed", upstream(fixed(Fault("status", status=404, times=None)))),
    Row("503 SlowDown ×2", "CreateMultipartUpload", "stored", s3("create", "slowdown", 2), victims="none"),
    Row("500 InternalError ×2", "CreateMultipartUpload", "stored", s3("create", "internal", 2), victims="none"),
    Row("connection reset ×2", "CreateMultipartUpload", "stored", s3("create", "reset", 2), victims="none"),
    Row("503 SlowDown ×2", "UploadPart", "stored", s3("part", "slowdown", 2), victims="none"),
    Row("500 InternalError ×2", "UploadPart", "stored", s3("part", "internal", 2), victims="none"),
    Row("connection reset ×2", "UploadPart", "stored", s3("part", "reset", 2), victims="none", fast=True),
    Row("503 SlowDown on every attempt", "UploadPart", "failed", s3("part", "slowdown", 1000), victims="large"),
    Row("503 SlowDown ×2", "CompleteMultipartUpload", "stored", s3("complete", "slowdown", 2), victims="none"),
    Row("500 InternalError ×2", "CompleteMultipartUpload", "stored", s3("complete", "internal", 2), victims="none"),
    Row("connection reset ×2", "CompleteMultipartUpload", "stored", s3("complete", "reset", 2), victims="none"),
    Row("connection reset on every attempt", "CompleteMultipartUpload", "failed", s3("complete", "reset", 1000), victims="large"),
    Row("503 SlowDown ×2", "PutObject (bottle)", "stored", s3("put", "slowdown", 2), victims="none"),
    Row("500 InternalError ×2", "PutObject (bottle)", "stored", s3("put", "internal", 2), victims="none"),
    Row("connection reset ×2", "PutObject (bottle)", "stored", s3("put", "reset", 2), victims="none"),
    Row("500 InternalError on every attempt", "PutObject (bottle)", "failed", s3("put", "internal", 1000), victims="small"),
    # The orphan sweep is housekeeping: a store that cannot list uploads (rclone serve s3
    # answers NoSuchUpload) must not stop the sync.
    Row("500 InternalError on every attempt", "ListMultipartUploads (orphan sweep)", "stored", s3("list_uploads", "internal", 1000), victims="none", fast=True),
    Row("412 PreconditionFailed ×1", "PutObject bottles_hash.json", "stored", s3("hashfile", "precondition", 1), victims="none", fast=True),
    # As many faults as one checkpoint has attempts: the first flush fails whole and keeps
    # its entries queued, the next writes them (how many, not when, decides the outcome).
    Row("503 SlowDown ×4 (a whole checkpoint fails)", "PutObject bottles_hash.json", "stored", s3("hashfile", "slowdown", 4), victims="none", batch=2),
    Row("connection reset ×2", "PutObject bottles_hash.json", "stored", s3("hashfile", "reset", 2), victims="none"),
]  # fmt: skip


def _row_params() -> list[Any]:
    return [
        pytest.param(
            row, id=f"{row.stage}: {row.fault}".replace("×", "x"), marks=() if row.fast else full
        )
        for row in ROWS
    ]


@pytest.mark.parametrize("row", _row_params())
async def test_fault_matrix(row: Row, bucket_name: str, moto_url: str, ledger: Ledger) -> None:
    """One fault at one stage of a whole sync of the sample catalog (small bottles by
    PutObject, a 20 MiB one by multipart): the expected outcome for the bottles hit, the
    rest stored, and guarantees 1 and 2 on the bucket afterwards."""
    rng = random.Random(f"{row.stage}/{row.fault}")
    async with (
        Emulator(sample_catalog(), auth=row.auth) as emu,
        FaultProxy(moto_url) as proxy,
        open_app(make_settings(bucket_name, emu.api_url), endpoint_url=proxy.url) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        bottles = expected_bottles(emu)
        primaries = {b.sha256: b for b in reversed(bottles)}  # one per stored object
        by_size = sorted(primaries.values(), key=lambda b: emu.catalog.blobs[b.sha256].size)
        small, large = by_size[0], by_size[-1]
        assert emu.catalog.blobs[large.sha256].size > 5 * MiB  # goes multipart
        victims = {
            "both": [small, large],
            "small": [b for b in by_size if emu.catalog.blobs[b.sha256].size <= 5 * MiB],
            "large": [large],
            "none": [],
        }[row.victims]
        row.arm(emu, proxy, victims, rng)

        report = await run_sync(
            Job("matrix", DATE, None),
            await fetch_catalog(app.http, emu.api_url, app.backoff),
            app.store,
            app.registry,
            Tuning(4, 5 * MiB, row.batch, 60.0),
            hash_key=HASH_KEY,
        )
        emu.clear_faults()
        proxy.clear()

        failed_keys = {f.key for f in report.failed}
        victim_keys = {b.hash_key for b in victims}
        if row.expected == "stored":
            outcome_holds = not report.failed and report.downloaded == report.planned
        else:
            # The bottles hit fail (by their own key or an alias's), every other is stored.
            victim_shas = {b.sha256 for b in victims}
            failed_shas = {b.sha256 for b in bottles if b.hash_key in failed_keys}
            outcome_holds = (
                failed_shas == victim_shas
                and report.downloaded == report.planned - len(victim_shas)
                and bool(victim_keys)
            )
        if row.stage.startswith(("registry", "blob")):
            per = {
                sha: emu.stats(sha).requests + emu.stats(sha).registry_requests for sha in primaries
            }
            clean = [n for sha, n in per.items() if sha not in {b.sha256 for b in victims}]
            retried = sum(max(0, per[b.sha256] - min(clean)) for b in victims)
        else:
            retried = sum(proxy.injected.values())
        stored = await guarantee_1(app, bottles)
        await guarantee_2(app, stored)
        ledger.matrix.append(
            {
                "fault": row.fault,
                "stage": row.stage,
                "expected": "all stored after retries"
                if row.expected == "stored"
                else "bottles hit fail, rest stored",
                "stored": report.downloaded,
                "failed": len(report.failed),
                "retried": retried,
                "s3_requests": dict(proxy.requests),
                "holds": outcome_holds,
            }
        )
        assert outcome_holds, report.to_dict()
        if row.expected == "stored":
            assert retried >= 1, "the fault never fired"


# --- the crash-point sweep -------------------------------------------------------------

SWEEP_BATCH = 2
SWEEP_CONCURRENCY = 3


@dataclass(frozen=True)
class Crash:
    point: str
    nth: int
    signal: str  # KILL or TERM
    fast: bool = False


SWEEP = [
    *(Crash("after_part_upload", n, "KILL", fast=n == 2) for n in (1, 2, 5, 9, 14)),
    *(Crash("before_complete", n, "KILL") for n in (1, 3, 5, 6)),
    *(Crash("after_complete_before_checkpoint", n, "KILL", fast=n == 6) for n in (1, 6, 12, 18)),
    *(Crash("during_hashfile_write", n, "KILL") for n in (1, 2, 3, 4)),
    *(Crash("after_checkpoint", n, "KILL") for n in (1, 2, 3, 4)),
    *(Crash(p, n, "TERM", fast=p == "during_hashfile_write" and n == 2) for p in CRASH_POINTS for n in (1, 2)),
]  # fmt: skip


def sweep_catalog() -> EmulatorCatalog:
    # 24 formulae, 24 bottles for arm64_tahoe, every 4th of 11 MiB (three 5 MiB parts).
    return synthetic_catalog(
        24, seed=11, large_every=4, large_size=11 * MiB, sizes=(50_000, 1_500_000)
    )


def _crash_params() -> list[Any]:
    return [
        pytest.param(c, id=f"{c.signal}-{c.point}-{c.nth}", marks=() if c.fast else full)
        for c in SWEEP
    ]


def _sweep_env(bucket: str, api_url: str, batch: int) -> dict[str, str]:
    """`mirrord sync` of the sweep catalog for arm64_tahoe, bottles only."""
    return {
        "MIRRORD_BUCKET": bucket,
        "MIRRORD_API_URL": api_url,
        "MIRRORD_BATCH_SIZE": str(batch),
        "MIRRORD_CONCURRENCY": str(SWEEP_CONCURRENCY),
        "MIRRORD_PLATFORMS": "arm64_tahoe",
        "MIRRORD_BREW_MIRROR": "false",
        "MIRRORD_HEARTBEAT_SECONDS": "0.5",  # a killed run's lock lapses in 1.5 s
    }


@pytest.mark.slow
@pytest.mark.parametrize("crash", _crash_params())
async def test_crash_sweep(crash: Crash, bucket_name: str, ledger: Ledger) -> None:
    """`mirrord sync` signalled at the nth pass through a named point; then run again.
    KILL: the next run completes, adopting what was stored and not recorded, and
    guarantees 1-3 hold. TERM: a clean exit (0 when nothing remains, else 1), with every
    stored object already in the checkpoint and no upload left open."""
    catalog = sweep_catalog()
    async with Emulator(catalog) as emu, open_app(make_settings(bucket_name, emu.api_url)) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        bottles = expected_bottles(emu, ("arm64_tahoe",))
        env = {
            **_sweep_env(bucket_name, emu.api_url, SWEEP_BATCH),
            "MIRRORD_PART_SIZE": "5MiB",
            "MIRRORD_STOP_GRACE": "30",
        }
        first = await run_cli(
            "sync",
            "--json",
            "--date",
            DATE,
            env={
                **env,
                "MIRRORD_CRASH_AT": f"{crash.point}:{crash.nth}",
                "MIRRORD_CRASH_SIGNAL": crash.signal,
            },
        )
        logs = first.logs()
        assert any(line.get("event") == "crash_hook" for line in logs), (
            "the point was never reached"
        )
        at_crash, _ = await load_hashfile(app.store, HASH_KEY)
        stored_at_crash = await guarantee_1(app, bottles)  # G1 right after the crash
        open_at_crash = len(await app.store.open_uploads())
        recorded = {e.s3_key for e in at_crash.bottles.values()}
        unrecorded = set(stored_at_crash) - recorded
        requests_before = {sha: emu.stats(sha).requests for sha in catalog.blobs}

        if crash.signal == "KILL":
            assert first.code == -signal.SIGKILL, first.stderr[-2000:]
        else:
            report = first.json()
            assert report["stopped"] is True
            # docs/design.md §10: 0 when every planned bottle is in the bucket, else 1.
            assert first.code == (0 if report["remaining"] == 0 and not report["failed"] else 1)
            assert not unrecorded, f"TERM exit without checkpoint of {unrecorded}"
            assert open_at_crash == 0, "TERM left a multipart upload open"
            await _wait_lock_released(app)

        await _wait_lock_expired(app)
        again = await run_cli("sync", "--json", "--date", DATE, env=env)
        assert again.code == 0, again.stderr[-2000:]
        rerun = again.json()
        stored = await guarantee_1(app, bottles)
        await guarantee_2(app, stored, before=at_crash)
        # G2: what was stored but not recorded is adopted, not fetched again.
        assert rerun["adopted"] == len(unrecorded)
        # G3: fetched a second time = started before the crash and not kept.
        refetched = [sha for sha, n in requests_before.items() if n and emu.stats(sha).requests > n]
        assert len(refetched) <= SWEEP_BATCH + SWEEP_CONCURRENCY
        assert len(
            {e.sha256 for e in (await load_hashfile(app.store, HASH_KEY))[0].bottles.values()}
        ) == len({b.sha256 for b in bottles})
        ledger.crashes.append(
            {
                "point": crash.point,
                "nth": crash.nth,
                "signal": crash.signal,
                "exit": first.code,
                "stored": len(stored_at_crash),
                "recorded": len(recorded),
                "open_uploads": open_at_crash,
                "adopted": rerun["adopted"],
                "refetched": len(refetched),
                "rerun_downloaded": rerun["downloaded"],
            }
        )


async def _wait_lock_released(app: App) -> None:
    found = await app.store.get("sync.lock")
    lock = None if found is None else orjson.loads(found[0])
    assert lock is None or lock["expires_at"] == 0, "TERM exit without releasing the lock"


async def _wait_lock_expired(app: App) -> None:
    """Until the crashed run's lease has run out (by S3's clock, as the lock judges it)."""
    probe = BucketLock(app.store, "probe", ttl=1)
    for _ in range(200):
        if await probe.holder() is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the bucket lock never expired")


# --- the soak ----------------------------------------------------------------------------

SOAK_JOBS = 80
SOAK_PER_JOB = 3  # formulae per job
CHAOS_OPS = {"create", "part", "complete", "put", "hashfile"}


def _proc_sample(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


@full
@pytest.mark.slow
async def test_soak_daemon_80_jobs_with_random_faults(
    bucket_name: str, moto_url: str, ledger: Ledger
) -> None:
    """The daemon (a real `mirrord daemon` process, SQS and S3 on moto, S3 behind the fault
    proxy) works through 80 jobs while upstream and S3 fail at random. Every job is done
    and deleted, guarantees 1 and 2 hold on the whole bucket, and the process's memory and
    open file descriptors stay flat: the mean of the last quarter of jobs is within
    30 MiB / 8 fds of the first quarter's."""
    rng = random.Random(2026)
    catalog = synthetic_catalog(
        SOAK_JOBS * SOAK_PER_JOB,
        seed=5,
        sizes=(20_000, 800_000),
        large_every=13,
        large_size=6 * MiB,
    )
    upstream_faults = [
        lambda size: Fault("status", status=503, times=1),
        lambda size: Fault("throttle", seconds=0, times=1),
        lambda size: Fault("cut", after=rng.randrange(1, size), times=1),
        lambda size: Fault("dead_redirect", times=1),
        lambda size: Fault("corrupt", times=None),
    ]  # fmt: skip
    async with (
        Emulator(catalog) as emu,
        FaultProxy(moto_url) as proxy,
        get_session().create_client("sqs") as sqs,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        queue = (await sqs.create_queue(QueueName=bucket_name))["QueueUrl"]
        names = [f["name"] for f in catalog.formulae]
        armed = 0
        targeted = {b.sha256 for b in expected_bottles(emu, ("arm64_tahoe",))}
        for sha, blob in sorted(catalog.blobs.items()):
            if sha in targeted and rng.random() < 0.3:
                # One in ten corrupt (the job reports it, the rest goes on); else recoverable.
                make = (
                    upstream_faults[-1] if rng.random() < 0.1 else rng.choice(upstream_faults[:-1])
                )
                emu.set_faults(sha, [make(blob.size)])
                armed += 1
        proxy.chaos(
            0.05,
            {"create", "part", "complete", "put", "hashfile"},
            ("slowdown", "internal", "reset"),
            seed=7,
        )
        for i in range(SOAK_JOBS):
            job = Job(
                f"soak-{i:02d}",
                DATE,
                ("arm64_tahoe",),
                tuple(names[i * SOAK_PER_JOB : (i + 1) * SOAK_PER_JOB]),
            )
            await sqs.send_message(QueueUrl=queue, MessageBody=job.body().decode())
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ENDPOINT_URL_S3": proxy.url,  # S3 through the fault proxy, SQS direct
            "MIRRORD_BUCKET": bucket_name,
            "MIRRORD_API_URL": emu.api_url,
            "MIRRORD_QUEUE_URL": queue,
            "MIRRORD_BREW_MIRROR": "false",
            "MIRRORD_HEARTBEAT_SECONDS": "2",
            "MIRRORD_CONCURRENCY": "4",
            "MIRRORD_PART_SIZE": "5MiB",
            "MIRRORD_READ_TIMEOUT": "5",
            "MIRRORD_LOG_LEVEL": "info",
        }
        proc = await spawn_cli("daemon", env=env, stdout=DEVNULL)
        assert proc.stderr is not None
        samples: list[tuple[int, float, int]] = []
        reports: list[dict[str, Any]] = []
        try:
            # One sample per finished job: the daemon logs sync_done as each ends.
            async with asyncio.timeout(600):
                while len(reports) < SOAK_JOBS:
                    line = await proc.stderr.readline()
                    assert line, "the daemon exited"
                    event = orjson.loads(line) if line.startswith(b"{") else {}
                    if event.get("event") == "sync_done":
                        reports.append(event)
                        rss, fds = _proc_sample(proc.pid)
                        samples.append((len(reports), rss, fds))
            # The last job's message is deleted just after its sync_done line.
            async with asyncio.timeout(60):
                while await _depth(sqs, queue):
                    await asyncio.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(60):
                    await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 0
        proxy.clear()
        emu.clear_faults()

        bottles = expected_bottles(emu, ("arm64_tahoe",))
        stored = await guarantee_1(app, bottles)
        await guarantee_2(app, stored)
        failed = sum(r["failed"] for r in reports)
        downloaded = sum(r["downloaded"] for r in reports)
        assert downloaded + failed == sum(r["planned"] for r in reports)
        assert len(stored) == downloaded
        quarter = max(1, len(samples) // 4)
        first_rss = statistics.mean(s[1] for s in samples[:quarter])
        last_rss = statistics.mean(s[1] for s in samples[-quarter:])
        first_fds = statistics.mean(s[2] for s in samples[:quarter])
        last_fds = statistics.mean(s[2] for s in samples[-quarter:])
        ledger.soak = {
            "jobs": len(reports),
            "bottles_stored": downloaded,
            "bottles_failed": failed,
            "upstream_faults_armed": armed,
            "s3_faults_injected": sum(proxy.injected.values()),
            "s3_requests": sum(n for op, n in proxy.requests.items() if op in CHAOS_OPS),
            "rss_first_quarter_mib": round(first_rss, 1),
            "rss_last_quarter_mib": round(last_rss, 1),
            "rss_max_mib": round(max(s[1] for s in samples), 1),
            "fds_first_quarter": round(first_fds, 1),
            "fds_last_quarter": round(last_fds, 1),
            "fds_max": max(s[2] for s in samples),
            "samples": samples,
        }
        assert last_rss - first_rss <= 30, ledger.soak
        assert last_fds - first_fds <= 8, ledger.soak


async def _depth(sqs: Any, queue: str) -> int:
    attrs = await sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return sum(int(v) for v in attrs["Attributes"].values())


# --- docs/reliability.md -----------------------------------------------------------------


def write_report(path: Path, book: Ledger) -> None:
    svg = path.with_name("reliability-soak.svg")
    svg.write_text(soak_svg(book.soak["samples"]))
    m = book.matrix
    lines = [
        "# Reliability, measured",
        "",
        "Written by `make reliability` (tests/system/test_reliability.py) from what it measured;",
        'do not edit by hand. The guarantees are stated in docs/internals.md ("Guarantees").',
        "Peers: a moto server (behind tests/faultproxy.py for S3 faults), the emulator for",
        "GHCR, real sockets. Part size 5 MiB; 4 attempts per request (`MIRRORD_MAX_ATTEMPTS`).",
        "",
        "## Fault matrix",
        "",
        "One whole sync of the sample catalog per row (small bottles by PutObject, one 20 MiB",
        "bottle by multipart). *stored* / *failed*: bottles of the sync; *retried*: for upstream",
        "faults the requests the bottles hit needed beyond a clean fetch, for S3 faults the",
        "requests the proxy failed (each one re-sent by the SDK or given up). Every row also",
        "checks guarantees 1 and 2 on the bucket: every object read back and hashed against the",
        "catalog, every object recorded, no multipart upload left open.",
        "",
        "| fault | stage | expected | stored | failed | retried | holds |",
        "|---|---|---|---:|---:|---:|---|",
        *(
            f"| {r['fault']} | {r['stage']} | {r['expected']} | {r['stored']} | {r['failed']} "
            f"| {r['retried']} | {'yes' if r['holds'] else '**no**'} |"
            for r in m
        ),
        "",
        f"{sum(r['holds'] for r in m)} of {len(m)} rows hold.",
        "",
        "Where an S3 row's *retried* is below bottles × attempts, botocore's standard retry",
        "mode stopped retrying once its retry quota ran out (500 tokens, 5 per retry, 10 per",
        "connection error; refilled as requests succeed): a storm of failures is not",
        "multiplied by retries, and the bottles are reported failed and retried next run.",
        "",
        "## Hostile upstream",
        "",
        "tests/integration/test_hostile_upstream.py: a loopback server (tests/hostile.py) answering one",
        "bottle the way a red-team review found harmful, beside a well-behaved neighbour, in",
        "one whole job into moto. *read*: body bytes mirrord read for the hostile bottle;",
        "*sent*: what the server wrote to the socket (kernel buffers hold the difference);",
        "*s*: the whole job; *requests*: blob GETs of the hostile bottle. In every row the",
        "neighbour is stored and no multipart upload is left open. Defaults in production:",
        "`MIRRORD_MAX_BOTTLE_BYTES` 4 GiB, `MIRRORD_BOTTLE_TIMEOUT` 3600 s, 5 attempts (at",
        "most 20 requests a bottle however much progress it makes).",
        "",
        "| upstream answer | before (review) | outcome | read bytes | sent bytes | s | requests |",
        "|---|---|---|---:|---:|---:|---:|",
        *(
            f"| {h['answer']} | {h['before']} | {h['outcome']} | {h['read']:,} "
            f"| {h['sent']:,} | {h['seconds']} | {h['requests']} |"
            for h in book.hostile
        ),
        "",
        "## Crash-point sweep",
        "",
        f"`mirrord sync` of {len(sweep_bottles())} bottles for arm64_tahoe (every 4th of 11 MiB, three",
        f"parts), batch {SWEEP_BATCH}, concurrency {SWEEP_CONCURRENCY}, signalled at the nth pass",
        "through a named point (`MIRRORD_CRASH_AT`, `MIRRORD_CRASH_SIGNAL`), then run again",
        "without faults. *stored* / *recorded*: bottle objects and hash-file entries' objects",
        "right after the crash; *open*: multipart uploads left open by it (aborted by the next",
        "run); *adopted*: stored-but-unrecorded objects the next run took by HEAD;",
        "*refetched*: bottles downloaded again (bound: batch + in flight = "
        f"{SWEEP_BATCH + SWEEP_CONCURRENCY}). Each row holds guarantees 1-3; a TERM row also",
        "exits cleanly (0 when nothing remains, else 1) with everything stored already recorded.",
        "",
        "| signal | point | nth | exit | stored | recorded | open | adopted | refetched |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {c['signal']} | {c['point']} | {c['nth']} | {c['exit']} | {c['stored']} "
            f"| {c['recorded']} | {c['open_uploads']} | {c['adopted']} | {c['refetched']} |"
            for c in book.crashes
        ),
        "",
        f"{len(book.crashes)} crashes; at most {max(c['refetched'] for c in book.crashes)} "
        f"bottles fetched twice, {sum(c['adopted'] for c in book.crashes)} adopted in all, "
        f"{sum(c['open_uploads'] for c in book.crashes)} orphaned uploads found and aborted.",
        "",
        "## Soak",
        "",
    ]
    s = book.soak
    lines += [
        f"A `mirrord daemon` process served {s['jobs']} jobs in a row from SQS (3 formulae",
        "each), with random faults: about 30 % of the bottles with an upstream fault (503,",
        "429, a cut, a dead redirect; one in ten of those corrupt) and 5 % of S3 bottle and",
        "hash-file requests failed by the proxy (SlowDown, InternalError, reset).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| jobs done (messages deleted) | {s['jobs']} |",
        f"| bottles stored / failed | {s['bottles_stored']} / {s['bottles_failed']} |",
        f"| upstream faults armed | {s['upstream_faults_armed']} |",
        f"| S3 bottle and hash-file requests / failed by the proxy | {s['s3_requests']} / {s['s3_faults_injected']} |",
        f"| RSS, mean of first / last quarter of jobs | {s['rss_first_quarter_mib']} / {s['rss_last_quarter_mib']} MiB |",
        f"| RSS, max | {s['rss_max_mib']} MiB |",
        f"| open fds, mean of first / last quarter | {s['fds_first_quarter']} / {s['fds_last_quarter']} |",
        f"| open fds, max | {s['fds_max']} |",
        "",
        "Bound asserted: last quarter within 30 MiB and 8 fds of the first.",
        "",
        f"![RSS and open file descriptors per job]({svg.name})",
        "",
    ]
    path.write_text("\n".join(lines))


def sweep_bottles() -> list[str]:
    catalog = sweep_catalog()
    raw = orjson.dumps(catalog.formulae).replace(b"{registry}", b"http://x")
    formulae = parse_catalog(raw).formulae
    return [b.hash_key for b in select_bottles(formulae, ("arm64_tahoe",)).bottles]


def soak_svg(samples: list[tuple[int, float, int]]) -> str:
    """RSS (MiB, left axis) and open fds (right axis) per job, as a plain SVG."""
    w, h, pad = 640, 300, 50
    jobs = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    rss_top = max(rss) * 1.2
    fds_top = max(fds) * 1.5

    def x(j: float) -> float:
        return pad + (j - 1) / max(1, max(jobs) - 1) * (w - 2 * pad)

    def y(v: float, top: float) -> float:
        return h - pad - v / top * (h - 2 * pad)

    def line(values: list[float], top: float, colour: str) -> str:
        points = " ".join(f"{x(j):.1f},{y(v, top):.1f}" for j, v in zip(jobs, values, strict=True))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'

    ticks = []
    for i in range(5):
        v = rss_top * i / 4
        ticks.append(
            f'<text x="{pad - 6}" y="{y(v, rss_top) + 4:.1f}" text-anchor="end">{v:.0f}</text>'
        )
        f = fds_top * i / 4
        ticks.append(f'<text x="{w - pad + 6}" y="{y(f, fds_top) + 4:.1f}">{f:.0f}</text>')
    for j in range(0, max(jobs) + 1, 10):
        if j:
            ticks.append(f'<text x="{x(j):.1f}" y="{h - pad + 16}" text-anchor="middle">{j}</text>')
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
            f'<rect width="{w}" height="{h}" fill="white"/>',
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
            f'<line x1="{w - pad}" y1="{pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
            *ticks,
            line(rss, rss_top, "#1f77b4"),
            line([float(f) for f in fds], fds_top, "#d62728"),
            f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="13">mirrord daemon: RSS and open fds after each job (soak)</text>',
            f'<text x="{pad}" y="{pad - 8}" fill="#1f77b4">RSS (MiB)</text>',
            f'<text x="{w - pad}" y="{pad - 8}" fill="#d62728" text-anchor="end">open fds</text>',
            f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">job</text>',
            "</svg>",
            "",
        ]
    )  # fmt: skip


async def test_crash_then_resume_on_a_later_date_adopts(bucket_name: str) -> None:
    """A run killed before its checkpoint, resumed by a run of a later job date (`mirrord
    sync` from cron without --date, the next day): what the dead run stored is adopted
    where it lies, not fetched again into the new folder and forgotten (guarantee 2)."""
    later = days_ago(8)
    catalog = sweep_catalog()
    async with Emulator(catalog) as emu, open_app(make_settings(bucket_name, emu.api_url)) as app:
        await app.s3.create_bucket(Bucket=bucket_name)
        bottles = expected_bottles(emu, ("arm64_tahoe",))
        env = _sweep_env(bucket_name, emu.api_url, batch=100)  # no checkpoint before the kill
        first = await run_cli(
            "sync",
            "--date",
            DATE,
            env={**env, "MIRRORD_CRASH_AT": "after_complete_before_checkpoint:5"},
        )
        assert first.code == -signal.SIGKILL, first.stderr[-2000:]
        dead = await guarantee_1(app, bottles)
        assert len(dead) >= 5
        await _wait_lock_expired(app)
        again = await run_cli("sync", "--json", "--date", later, env=env)
        assert again.code == 0, again.stderr[-2000:]
        assert again.json()["adopted"] == len(dead)
        hf, _ = await load_hashfile(app.store, HASH_KEY)
        recorded = {e.s3_key for e in hf.bottles.values()}
        assert set(dead) <= recorded
        # Every object in the bucket is recorded: nothing was stored twice and forgotten.
        keys = {o.key async for o in app.store.list_objects() if o.key.endswith(".tar.gz")}
        assert keys == recorded


def test_crash_settings_parse_and_default_to_no_hook() -> None:
    """MIRRORD_CRASH_AT names a point and a pass; anything else stops at start with a
    line naming the variable; unset, the hook is the no-op one."""
    base = {"MIRRORD_BUCKET": "a-bucket"}
    assert crash_hook(from_env(base)) is no_hook
    s = from_env({**base, "MIRRORD_CRASH_AT": "before_complete:3", "MIRRORD_CRASH_SIGNAL": "term"})
    assert (s.crash_at, s.crash_signal) == (("before_complete", 3), "TERM")
    assert from_env({**base, "MIRRORD_CRASH_AT": "after_checkpoint"}).crash_at == (
        "after_checkpoint",
        1,
    )
    for bad in ("nowhere", "before_complete:0", "before_complete:x"):
        with pytest.raises(SettingsError, match="MIRRORD_CRASH_AT"):
            from_env({**base, "MIRRORD_CRASH_AT": bad})
    with pytest.raises(SettingsError, match="MIRRORD_CRASH_SIGNAL"):
        from_env({**base, "MIRRORD_CRASH_SIGNAL": "HUP"})
