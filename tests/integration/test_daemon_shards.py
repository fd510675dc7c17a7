"""A job fanned out to N workers, through the control plane's real peers (docs/design.md
§12): the enqueuer sends one SQS message per shard (moto), daemons run each shard
(services/shard.py) and the fan-in after the last (services/fanin.py), a shard failing on
its last receive is given up on, a stopped daemon hands its shard back, and a killed
daemon process's shard is finished by the next. No stand-ins: moto SQS and S3, the
emulator (with per-request latency and faults), a Slack receiver, real daemons."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from asyncio.subprocess import DEVNULL
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import DATE, MakeWorld, Queues, Receiver, World, job_queues, make_settings, spawn_cli
from faultproxy import FaultProxy
from mirrord_dev.emulator import Fault
from mirrord_dev.emulator.content import blob_url
from mirrord_dev.latency import Latency, slow_blobs
from structlog.testing import capture_logs

from mirrord.adapters.web import fetch_catalog
from mirrord.app import App
from mirrord.core.jobs import Job, parse_job
from mirrord.core.shards import Shard, finalize_key, record_key
from mirrord.daemon import Daemon
from mirrord.lambdas.enqueue import job_from_event
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.enqueue import enqueue
from mirrord.services.job import run_job
from mirrord.services.sync import prepare

SLOW = 256 * 1024  # bytes/s a blob: a shard outlasts its first checkpoints
MAX_RECEIVES = 3  # the queue's maxReceiveCount, as infra/main.tf sets it
MANUAL = {"source": "manual", "date": DATE, "job_id": f"{DATE}-big"}


@pytest.fixture
async def queue(bucket_name: str) -> AsyncIterator[Queues]:
    async with job_queues(bucket_name, MAX_RECEIVES) as made:
        yield made


Build = Callable[..., Awaitable[World]]


@pytest.fixture
def build(bucket: str, queue: Queues, receiver: Receiver, make_world: MakeWorld) -> Build:
    """The emulator (``emulator``: its options) and the App on moto's S3 (``s3``: open_app's
    S3 options) and SQS queue, reporting to the Slack receiver."""

    async def made(**kw: Any) -> World:
        return await make_world(
            emulator=kw.get("emulator"),
            s3=kw.get("s3"),
            settings=lambda emu: make_settings(
                bucket,
                emu.api_url,
                queue_url=queue.url,
                slack_webhook_url=receiver.url,
                heartbeat_seconds=1.0,
                max_receives=MAX_RECEIVES,
                **kw.get("settings", {}),
            ),
        )

    return made


@pytest.fixture
async def app(build: Build) -> App:
    return (await build()).app


async def until(check: Callable[[], Any], seconds: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def job() -> Job:
    return job_from_event(MANUAL, datetime.now(UTC))


async def test_a_big_job_goes_out_as_one_message_per_shard(app: App, queue: Queues) -> None:
    """Over MIRRORD_SHARD_BYTES the enqueuer sends N messages, one per shard, one job id
    and date; a dry run shows N and sends nothing; 0 never shards."""
    whole = await enqueue(app, job(), invoke=None, external=None, dry_run=True)
    assert whole.estimate is not None
    assert whole.estimate.bytes > 0
    assert whole.to_dict()["shards"] == 1  # 16 GB a shard: the sample is one
    three = replace(app, settings=replace(app.settings, shard_bytes=whole.estimate.bytes // 3 + 1))

    dry = await enqueue(three, job(), invoke=None, external=None, dry_run=True)
    assert (dry.route, dry.to_dict()["shards"], dry.dry_run) == ("fargate", 3, True)
    assert await queue.depth() == 0

    sent = await enqueue(three, job(), invoke=None, external=None)
    assert sent.to_dict()["shards"] == 3
    bodies = await queue.bodies()
    assert sorted(b["shard"] for b in bodies) == ["1/3", "2/3", "3/3"]
    assert {(b["job_id"], b["date"]) for b in bodies} == {(f"{DATE}-big", DATE)}
    assert {parse_job(orjson.dumps(b)).shard for b in bodies} == {Shard(k, 3) for k in (1, 2, 3)}

    never = replace(app, settings=replace(three.settings, shard_bytes=0))
    assert (await enqueue(never, job(), invoke=None, external=None)).to_dict()["shards"] == 1
    assert ["shard" in b for b in await queue.bodies()] == [False]


# --- daemons on a sharded job ---------------------------------------------------------


async def serve(app: App, daemons: int, done: int, what: str) -> list[Daemon]:
    """``daemons`` daemons in this loop on the queue until they deleted ``done`` messages."""
    assert app.queue is not None
    stop = asyncio.Event()
    served = [Daemon(app, app.queue, stop=stop, owner=f"task-{i}") for i in range(daemons)]
    tasks = [asyncio.create_task(d.serve()) for d in served]
    await until(lambda: sum(d.jobs_done for d in served) >= done, 120, what)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return served


async def missing(app: App, j: Job) -> int:
    """Bottles of the job the mirror still lacks: the plan against the hash file."""
    s = app.settings
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    hf, _ = await load_hashfile(app.store, s.hash_key)
    _, plan = prepare(catalog, hf, j, s.platforms, None, s.releases)
    return len(plan.transfers)


async def json_at(app: App, key: str) -> Any:
    found = await app.store.get(key)
    return None if found is None else orjson.loads(found[0])


def reports(receiver: Receiver) -> list[str]:
    """The Slack messages after the enqueuer's "sync started": the fan-in's reports."""
    texts = [orjson.dumps(body).decode() for body in receiver.bodies]
    return [t for t in texts if "mirrord sync started" not in t]


async def fanned_in_once(world: World, receiver: Receiver, j: Job, queue: Queues) -> None:
    """The job is whole and its fan-in ran once: one Slack report, finalize.json done,
    queue and DLQ empty."""
    assert await missing(world.app, j) == 0
    assert len(reports(receiver)) == 1, receiver.bodies
    assert "fail" not in reports(receiver)[0].lower()
    assert (await json_at(world.app, finalize_key(j.job_id)))["state"] == "done"
    assert await queue.depth() == 0
    assert await queue.depth(queue.dlq_url) == 0


async def test_daemons_drain_a_sharded_job_and_fan_in_once(
    build: Build, queue: Queues, receiver: Receiver, moto_s3: Any, bucket: str
) -> None:
    """(a) enqueue sends 3 shard messages; 3 daemons in one loop drain them against a
    latency-bound origin: every bottle stored and recorded, no blob GET twice, one
    fan-in (one Slack report, status.json written once), queue and DLQ empty."""
    moto_s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    world = await build(emulator={"latency": (0.02, 0.08)})
    app, emu = world.app, world.emu
    estimate = (await enqueue(app, job(), invoke=None, external=None, dry_run=True)).estimate
    assert estimate is not None
    three = replace(app, settings=replace(app.settings, shard_bytes=estimate.bytes // 3 + 1))
    assert (await enqueue(three, job(), invoke=None, external=None)).to_dict()["shards"] == 3

    with capture_logs() as logs:
        await serve(app, 3, 3, "three shards")
    await fanned_in_once(world, receiver, job(), queue)
    gets = [emu.stats(sha).requests for sha in emu.catalog.blobs]
    assert max(gets) == 1
    records = [await json_at(app, record_key(job().job_id, Shard(k, 3))) for k in (1, 2, 3)]
    assert [r["state"] for r in records] == ["done"] * 3
    assert sum(gets) == sum(r["stored"] for r in records) > 0
    assert {e["owner"] for e in logs if e["event"] == "shard_done" and "owner" in e} <= {
        "task-0",
        "task-1",
        "task-2",
    }
    versions = moto_s3.list_object_versions(Bucket=bucket, Prefix=app.settings.status_key)
    assert len(versions.get("Versions", [])) == 1  # status.json: written by the fan-in only


async def test_a_shard_failing_on_its_last_receive_is_given_up_and_the_rest_published(
    build: Build, queue: Queues, receiver: Receiver, moto_url: str
) -> None:
    """(b) Shard 2/3's run fails on every receive (S3 refuses the hash file's write, in a
    real proxy in front of moto): on its last receive (MIRRORD_MAX_RECEIVES) it is given
    up, its bottles named by key; shards 1 and 3 then run, the fan-in reports shard 2's
    keys failed and publishes the rest; the DLQ stays empty."""
    async with FaultProxy(moto_url) as proxy:
        world = await build(s3={"endpoint_url": proxy.url})
        app = world.app
        assert app.queue is not None
        proxy.inject("hashfile", "internal", times=10**6)
        await app.queue.send(replace(job(), shard=Shard(2, 3)))
        with capture_logs() as logs:
            await serve(app, 1, 1, "shard 2 given up")
        failed = [e for e in logs if e["event"] == "shard_failed"]
        assert [(e["receive_count"], e["given_up"]) for e in failed] == [
            (1, False),
            (2, False),
            (3, True),
        ]
        record = await json_at(app, record_key(job().job_id, Shard(2, 3)))
        assert record["state"] == "given_up"
        lost = {f["key"] for f in record["failed"]}
        assert lost
        assert receiver.bodies == []  # no fan-in yet: shards 1 and 3 have no record

        proxy.clear()
        for k in (1, 3):
            await app.queue.send(replace(job(), shard=Shard(k, 3)))
        await serve(app, 2, 2, "shards 1 and 3 and the fan-in")
        assert len(reports(receiver)) == 1
        assert (await json_at(app, finalize_key(job().job_id)))["state"] == "done"
        text = reports(receiver)[0]
        counted = re.search(r"(\d+) of (\d+) bottles failed", text)
        assert counted is not None, text
        assert int(counted[1]) == len(lost)  # shard 2's bottles, by key, and no other
        assert "shard 2/3" in text
        hf, _ = await load_hashfile(app.store, app.settings.hash_key)
        assert not lost & set(hf.bottles)  # given up: none of its keys recorded
        assert len(hf.bottles) + len(lost) == int(counted[2])  # the rest is all there
        assert await queue.depth() == 0
        assert await queue.depth(queue.dlq_url) == 0


async def test_a_daemon_stopped_mid_shard_hands_it_back_and_another_finishes(
    build: Build, queue: Queues, receiver: Receiver
) -> None:
    """(c) SIGTERM (the stop event) mid-shard: the message is sent again with one more
    hand-back, no record and no give_up are written; another daemon finishes the job,
    with one fan-in."""
    world = await build(settings={"batch_size": 2, "concurrency": 2})
    app, emu = world.app, world.emu
    assert app.queue is not None
    for sha in emu.catalog.blobs:
        emu.set_faults(sha, [Fault("trickle", bytes_per_s=SLOW, times=None)])
    await app.queue.send(replace(job(), shard=Shard(1, 2)))
    stop = asyncio.Event()
    first = Daemon(app, app.queue, stop=stop, owner="task-0")
    with capture_logs() as logs:
        serving = asyncio.create_task(first.serve())

        async def some_recorded() -> bool:
            hf, _ = await load_hashfile(app.store, app.settings.hash_key)
            return len(hf.bottles) >= 2

        await until(some_recorded, 60, "a first checkpoint")
        stop.set()
        await asyncio.wait_for(serving, 60)
    events = [e["event"] for e in logs]
    assert "shard_stopped" in events
    assert "shard_given_up" not in events
    assert "shard_failed" not in events
    assert await json_at(app, record_key(job().job_id, Shard(1, 2))) is None
    assert await json_at(app, finalize_key(job().job_id)) is None
    again = await app.queue.receive(wait_s=1, visibility_s=30)
    assert [(m.handbacks, m.receive_count) for m in again] == [(1, 1)]
    assert parse_job(again[0].body).shard == Shard(1, 2)
    await app.queue.hide(again[0].receipt, 0)

    emu.clear_faults()
    await app.queue.send(replace(job(), shard=Shard(2, 2)))
    await serve(app, 2, 2, "both shards and the fan-in")
    await fanned_in_once(world, receiver, job(), queue)


async def test_a_killed_daemon_process_leaves_its_shard_to_the_next(
    build: Build, queue: Queues, receiver: Receiver
) -> None:
    """(d) A `mirrord daemon` process SIGKILLed mid-shard; another process takes the
    shard over (the dead pid's lock at once, the message after its visibility timeout)
    and the job completes with one fan-in."""
    world = await build(settings={"batch_size": 2, "concurrency": 2})
    app, emu = world.app, world.emu
    assert app.queue is not None
    for sha in emu.catalog.blobs:
        emu.set_faults(sha, [Fault("trickle", bytes_per_s=SLOW, times=None)])
    for k in (1, 2):
        await app.queue.send(replace(job(), shard=Shard(k, 2)))
    s = app.settings
    env = {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_QUEUE_URL": queue.url,
        "MIRRORD_SLACK_WEBHOOK_URL": receiver.url,
        "MIRRORD_HEARTBEAT_SECONDS": "1",
        "MIRRORD_MAX_RECEIVES": str(MAX_RECEIVES),
        "MIRRORD_BATCH_SIZE": "2",
        "MIRRORD_CONCURRENCY": "2",
    }
    victim = await spawn_cli("daemon", env=env, stdout=DEVNULL, stderr=DEVNULL)
    try:

        async def some_recorded() -> bool:
            hf, _ = await load_hashfile(app.store, s.hash_key)
            return len(hf.bottles) >= 2

        await until(some_recorded, 60, "a first checkpoint")
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
    assert len(receiver.bodies) == 0
    emu.clear_faults()
    heir = await spawn_cli("daemon", env=env, stdout=DEVNULL)
    try:

        async def fanned_in() -> bool:
            done = await json_at(app, finalize_key(job().job_id))
            return bool(done and done["state"] == "done") and await queue.depth() == 0

        await until(fanned_in, 120, "the heir to finish the job")
        heir.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(heir.communicate(), 30)
    finally:
        if heir.returncode is None:
            heir.kill()
            await heir.wait()
    assert heir.returncode == 0, err[-2000:]
    await fanned_in_once(world, receiver, job(), queue)
    assert err.count(b'"fanin_done"') == 1


async def test_the_latency_front_delays_and_paces_every_blob_the_emulator_still_counts(
    make_world: MakeWorld,
) -> None:
    """mirrord_dev.latency (the bench's GHCR-like origin): a sync through it is whole,
    every blob GET passed the front once and reached the emulator's counters; one blob
    takes at least its first-byte delay plus its size at the capped rate."""
    world = await make_world(brew_mirror=False)  # the bottles' blobs only
    emu = world.emu
    rate = 8_000_000
    async with slow_blobs(emu, Latency((0.3, 0.3), bytes_per_s=rate)) as front:
        report = await run_job(world.app, job(), route="cli")
        assert report.complete
        gets = {sha: emu.stats(sha).requests for sha in emu.catalog.blobs}
        assert set(gets.values()) == {0, 1}  # 0: a tag outside the job's platforms
        assert sum(gets.values()) == report.downloaded
        assert front.requests == report.downloaded

        sha, blob = max(emu.catalog.blobs.items(), key=lambda item: item[1].size)
        name = next(f["name"] for f in emu.catalog.formulae if sha in orjson.dumps(f).decode())
        url = blob_url(name, sha).replace("{registry}", emu.registry_url)
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": "Bearer QQ=="}  # GHCR's anonymous token, as brew sends
            async with http.get(url, headers=auth, allow_redirects=False) as hop:
                assert hop.status in (302, 307)
                location = hop.headers["Location"]
            assert location.startswith(front.url)
            started = time.monotonic()
            async with http.get(location) as got:
                body = await got.read()
            took = time.monotonic() - started
    assert len(body) == blob.size
    assert took >= 0.3 + blob.size / rate * 0.95  # a lower bound: sleeps only add
    with pytest.raises(ValueError, match="latency"):
        Latency((0.2, 0.1))
