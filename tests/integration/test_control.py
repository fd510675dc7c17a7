"""The control plane against real peers: SQS, S3 and Secrets Manager in a moto server, the
emulator for upstream, a local HTTP receiver for Slack. Only the Lambda and ECS runtimes
themselves are stood in for (a context object, a background task)."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import signal
import ssl
import time
import zipfile
from asyncio.subprocess import DEVNULL
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import trustme
from aiobotocore.session import get_session
from aiohttp import web
from conftest import (
    DATE,
    MakeWorld,
    Queues,
    Receiver,
    job_queues,
    loopback,
    make_settings,
    run_cli,
    spawn_cli,
)
from mirrord_dev.emulator import Emulator, Fault, sample_catalog
from structlog.testing import capture_logs

from mirrord.adapters.invoke import lambda_invoker
from mirrord.adapters.lock import BucketLock
from mirrord.app import App, open_app
from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.errors import LockLost, StoreError
from mirrord.core.jobs import Job
from mirrord.core.releases import auto_targets
from mirrord.daemon import Daemon
from mirrord.lambdas.enqueue import handler as enqueue_handler
from mirrord.lambdas.enqueue import job_from_event
from mirrord.lambdas.sync import handler as sync_handler
from mirrord.lambdas.sync import sync_job
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.enqueue import enqueue
from mirrord.services.job import run_job

MiB = 2**20
SCHEDULED = {
    "version": "0",
    "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": f"{DATE}T03:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/mirrord-weekly"],
    "detail": {},
}


@pytest.fixture
async def queues(bucket_name: str) -> AsyncIterator[Queues]:
    """A job queue with a DLQ after 2 receives, as infra creates it."""
    async with job_queues(bucket_name, 2) as made:
        yield made


@dataclass
class Plane:
    app: App
    emu: Emulator
    queues: Queues
    slack: Receiver

    def expected(self) -> dict[str, Any]:
        raw = orjson.dumps(self.emu.catalog.formulae).replace(
            b"{registry}", self.emu.registry_url.encode()
        )
        formulae = parse_catalog(raw).formulae
        return {b.hash_key: b for b in select_bottles(formulae, auto_targets(formulae)).bottles}

    def daemon(self, owner: str, stop: asyncio.Event) -> Daemon:
        assert self.app.queue is not None
        return Daemon(self.app, self.app.queue, stop=stop, owner=owner)

    async def drain(self, owner: str) -> None:
        """Run one daemon until it has finished a job, then stop it as ECS would."""
        stop = asyncio.Event()
        daemon = self.daemon(owner, stop)
        task = asyncio.create_task(daemon.serve())
        await until(lambda: daemon.jobs_done == 1 or task.done(), what=f"{owner} to finish")
        stop.set()
        await asyncio.wait_for(task, 30)
        assert daemon.jobs_done == 1

    async def complete(self) -> bool:
        hf, _ = await load_hashfile(self.app.store, "bottles_hash.json")
        return set(hf.bottles) == set(self.expected())

    def slack_texts(self) -> list[str]:
        return [body["text"] for body in self.slack.bodies]


def settings_for(bucket: str, emu: Emulator, queues: Queues, slack: Receiver, **kw: Any) -> Any:
    return make_settings(
        bucket,
        emu.api_url,
        queue_url=queues.url,
        slack_webhook_url=slack.url,
        heartbeat_seconds=1.0,
        stop_grace=10.0,
        **kw,
    )


@pytest.fixture
async def plane(bucket: str, queues: Queues, receiver: Receiver, make_world: MakeWorld) -> Plane:
    made = await make_world(settings=lambda emu: settings_for(bucket, emu, queues, receiver))
    return Plane(made.app, made.emu, queues, receiver)


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


def blob_requests(emu: Emulator) -> dict[str, int]:
    return {sha: emu.stats(sha).requests for sha in emu.catalog.blobs}


# --- cron → SQS → daemon ----------------------------------------------------------------


async def test_cron_handler_to_daemon_end_to_end(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EventBridge invokes the enqueue handler → a job on SQS → the daemon wakes, syncs
    everything, deletes the message, writes status.json; Slack got start and success."""
    s = plane.app.settings
    for name, value in {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_QUEUE_URL": plane.queues.url,
        "MIRRORD_SLACK_WEBHOOK_URL": plane.slack.url,
        "MIRRORD_SIZE_THRESHOLD_GB": "0",
    }.items():
        monkeypatch.setenv(name, value)
    # The Lambda runtime calls handler(event, context) on its own thread and loop.
    result = await asyncio.to_thread(enqueue_handler, SCHEDULED, None)
    assert result["route"] == "fargate"
    assert result["job_id"] == f"{DATE}-weekly"
    assert await plane.queues.depth() == 1

    await plane.drain("d1")

    assert await plane.complete()
    assert await plane.queues.depth() == 0
    status = orjson.loads((await plane.app.store.get("status.json"))[0])
    assert status["job_id"] == f"{DATE}-weekly"
    assert status["last_success"]
    texts = plane.slack_texts()
    assert "start" in texts[0].lower()
    assert DATE in texts[0]
    assert "finished" in texts[-1]
    assert DATE in texts[-1]
    assert s.slack_webhook_url not in repr(s)


async def test_estimate_matches_actual_bytes(plane: Plane) -> None:
    """The enqueuer's estimate (image-index sizes) is within 10 % of the bytes synced,
    and the Slack success message compares them."""
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    result = (await enqueue(plane.app, job, invoke=None, external=None)).to_dict()
    estimated = result["estimate"]["bytes"]
    assert result["estimate"]["from_index"] == result["bottles"]
    report = await run_job(plane.app, replace(job, estimated_bytes=estimated), route="fargate")
    assert report.complete
    assert abs(report.bytes - estimated) <= 0.10 * report.bytes
    assert "estimate" in plane.slack_texts()[-1].lower()


async def test_estimate_falls_back_to_previous_version_size(plane: Plane) -> None:
    """Without image indexes, the previous version's size of the same formula/tag is used."""
    for entry in plane.emu.catalog.formulae:
        plane.emu.hide_manifest(entry["name"])
    expected = plane.expected()
    jq = next(b for b in expected.values() if b.name == "jq")
    old = {
        f"jq-1.6-{jq.tag}": {
            "sha256": "e" * 64,
            "download_date": "2026-01-01",
            "file_size": 123_456,
            "s3_key": "2026-01-01/jq-1.6.x.bottle.tar.gz",
        }
    }
    await plane.app.store.put_if(
        "bottles_hash.json",
        orjson.dumps({"version": 2, "bottles": old}),
        etag=None,
        content_type="application/json",
    )
    result = (
        await enqueue(
            plane.app, job_from_event(SCHEDULED, datetime.now(UTC)), invoke=None, external=None
        )
    ).to_dict()
    assert result["estimate"]["from_index"] == 0
    assert result["estimate"]["from_history"] == 1
    assert result["estimate"]["bytes"] == 123_456


async def test_estimate_is_bounded_and_a_partial_one_routes_to_fargate(plane: Plane) -> None:
    """Issue 15 #7: the image-index GETs of the estimate stop at MIRRORD_ESTIMATE_MAX_INDEXES
    and at MIRRORD_ESTIMATE_SECONDS (a registry asking to come back in 120 s: the budget
    cancels the wait, and no second GET is made); past either, the estimate is a lower
    bound, the job goes to Fargate although it is small, and Slack says so."""
    s = plane.app.settings
    invoked: list[Job] = []

    async def invoke(job: Job) -> None:
        invoked.append(job)

    names = {b.name for b in plane.expected().values()}
    job = job_from_event(SCHEDULED, datetime.now(UTC))

    async def run(n: int, **kw: Any) -> dict[str, Any]:
        app = replace(plane.app, settings=replace(s, **kw))
        plane.emu.reset_stats()
        done = await enqueue(app, replace(job, job_id=f"bounded-{n}"), invoke, external=None)
        return done.to_dict()

    whole = await run(0)  # no bound hit: small, so the sync Lambda
    assert whole["route"] == "lambda"
    assert whole["estimate"]["partial"] is None
    assert whole["estimate"]["from_index"] == whole["bottles"]
    assert len(invoked) == 1

    capped = await run(1, estimate_max_indexes=2)
    assert capped["route"] == "fargate"
    assert (
        capped["estimate"]["partial"]
        == f"2 of {len(names)} image indexes read (at most 2 are read)"
    )
    assert sum(plane.emu.manifest_requests(n) > 0 for n in names) == 2
    assert "partial" in plane.slack_texts()[-1]

    slow = sorted(names)[:2]
    for name in slow:
        plane.emu.set_manifest_faults(name, [Fault("throttle", seconds=120, times=None)])
    timed = await run(2, estimate_seconds=2.0, concurrency=len(slow) + 2)
    assert timed["route"] == "fargate"
    assert timed["estimate"]["partial"] == (
        f"{len(names) - 2} of {len(names)} image indexes read (the 2 s budget ran out)"
    )
    assert [plane.emu.manifest_requests(n) for n in slow] == [1, 1]  # never retried
    fast = [b for b in plane.expected().values() if b.name not in slow]
    assert timed["estimate"]["from_index"] == len(fast)
    assert "at least" in plane.slack_texts()[-1]
    assert "budget" in plane.slack_texts()[-1]
    assert len(invoked) == 1
    # A partial estimate is a lower bound: the job goes out to the most shards.
    assert await plane.queues.depth() == 2 * plane.app.settings.max_shards


async def test_nothing_to_do_sends_no_job(plane: Plane) -> None:
    """When the mirror is current: no message on SQS, one 'nothing to do' notification."""
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    await run_job(plane.app, job, route="cli")
    before = len(plane.slack.bodies)
    result = (await enqueue(plane.app, job, invoke=None, external=None)).to_dict()
    assert result["route"] == "none"
    assert await plane.queues.depth() == 0
    assert len(plane.slack.bodies) == before + 1
    assert "nothing" in plane.slack_texts()[-1].lower()


# --- the Lambda path --------------------------------------------------------------------


class LambdaContext:
    """Stands in for the Lambda runtime's context: a deadline on the wall clock."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


async def test_small_job_goes_to_lambda_and_deadline_hands_rest_to_daemon(plane: Plane) -> None:
    """Below the threshold the job is invoked on the sync Lambda; when the Lambda's time
    runs short it checkpoints and sends the job to SQS; the daemon finishes it. No bottle
    is fetched twice."""
    invoked: list[Job] = []

    async def invoke(job: Job) -> None:  # the async Lambda invoke, as the runtime receives it
        invoked.append(job)

    result = (
        await enqueue(
            plane.app, job_from_event(SCHEDULED, datetime.now(UTC)), invoke, external=None
        )
    ).to_dict()
    assert result["route"] == "lambda"
    assert len(invoked) == 1
    assert await plane.queues.depth() == 0
    for sha, blob in plane.emu.catalog.blobs.items():
        if blob.size < MiB:  # slow small bottles; the large one must finish within grace
            plane.emu.set_faults(sha, [Fault("trickle", bytes_per_s=256 * 1024, times=None)])
    margin = plane.app.settings.lambda_margin_seconds
    out = await sync_job(
        plane.app, invoked[0], LambdaContext(margin + 0.5).get_remaining_time_in_millis
    )
    assert out["handed_off"] is True
    assert out["stopped"] is True
    assert 0 < out["remaining"] < out["planned"]
    assert await plane.queues.depth() == 1

    plane.emu.clear_faults()
    await plane.drain("d1")
    assert await plane.complete()
    assert all(n <= 1 for n in blob_requests(plane.emu).values())


async def test_enqueue_invokes_the_sync_lambda_through_the_invoke_api(plane: Plane) -> None:
    """With MIRRORD_SYNC_FUNCTION set, a small job is sent with Lambda's Invoke API
    (InvocationType=Event, against moto's Lambda), not to SQS."""
    async with get_session().create_client("iam") as iam:
        role = (
            await iam.create_role(
                RoleName=f"r-{plane.app.settings.bucket}", AssumeRolePolicyDocument="{}"
            )
        )["Role"]["Arn"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    name = f"sync-{plane.app.settings.bucket}"
    # open_app builds a Lambda client only when MIRRORD_SYNC_FUNCTION is set.
    assert plane.app.lambda_client is None
    async with get_session().create_client("lambda") as lam:
        await lam.create_function(
            FunctionName=name,
            Runtime="python3.13",  # the deployed runtime (infra/modules/lambda)
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": zipped.getvalue()},
        )
        app = replace(
            plane.app,
            settings=replace(plane.app.settings, sync_function=name),
            lambda_client=lam,
        )
        job = job_from_event(SCHEDULED, datetime.now(UTC))
        invoke = lambda_invoker(app.lambda_client, app.settings.sync_function)
        result = (await enqueue(app, job, invoke, external=None)).to_dict()
        assert result["route"] == "lambda"
        assert await plane.queues.depth() == 0
        missing = replace(app, settings=replace(app.settings, sync_function="no-such-function"))
        invoke = lambda_invoker(missing.lambda_client, missing.settings.sync_function)
        with pytest.raises(StoreError, match="no-such-function"):
            await enqueue(missing, job, invoke, external=None)


async def test_sync_lambda_handler_entry_point(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mirrord.lambdas.sync.handler(event, context), on the runtime's own thread and loop,
    runs the job in the event to completion."""
    s = plane.app.settings
    for name, value in {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_QUEUE_URL": plane.queues.url,
    }.items():
        monkeypatch.setenv(name, value)
    event = orjson.loads(job_from_event(SCHEDULED, datetime.now(UTC)).body())
    out = await asyncio.to_thread(sync_handler, event, LambdaContext(900))
    assert out["downloaded"] == out["planned"] > 0
    assert out["handed_off"] is False
    assert await plane.complete()


# --- two daemons, one job ---------------------------------------------------------------


async def test_duplicate_delivery_to_two_daemons_syncs_once(plane: Plane) -> None:
    """The same job delivered twice to two daemons: the bucket lock serialises them, the
    second finds the work done, both messages are deleted, every blob fetched once."""
    assert plane.app.queue is not None
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    await plane.app.queue.send(job)
    await plane.app.queue.send(job)
    for sha in plane.emu.catalog.blobs:
        plane.emu.set_faults(sha, [Fault("trickle", bytes_per_s=8 * MiB, times=None)])
    stop = asyncio.Event()
    daemons = [plane.daemon(f"d{i}", stop) for i in (1, 2)]
    tasks = [asyncio.create_task(d.serve()) for d in daemons]
    await until(lambda: sum(d.jobs_done for d in daemons) == 2, 90, "both deliveries")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert await plane.complete()
    assert await plane.queues.depth() == 0
    wanted = {b.sha256 for b in plane.expected().values()}
    assert {plane.emu.stats(sha).requests for sha in wanted} == {1}


async def test_bucket_lock_busy_expiry_takeover_and_loss(plane: Plane) -> None:
    """Held → a rival is refused; expired by S3's clock → taken over with If-Match; the
    old holder's renewal then fails with LockLost; release lets the next one in at once."""
    a = BucketLock(plane.app.store, "a", ttl=1)
    b = BucketLock(plane.app.store, "b", ttl=1)
    assert await a.acquire("job-1") is None
    holder = await b.acquire("job-2")
    assert holder is not None
    assert holder.owner == "a"
    assert holder.job_id == "job-1"
    await a.renew()
    await until_lock_free(b)
    assert await b.acquire("job-2") is None
    with pytest.raises(LockLost):
        await a.renew()
    await b.release()
    assert await a.acquire("job-3") is None


async def until_lock_free(lock: BucketLock) -> None:
    for _ in range(100):
        if await lock.holder() is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the lock never expired")


async def test_a_host_with_a_fast_clock_cannot_take_over_a_live_lock(plane: Plane) -> None:
    """Expiry is judged by S3's clock (LastModified against the answer's Date), never by
    the contender's: a host 4 minutes fast sees a 30 s lease as live (issue 12 #12)."""
    a = BucketLock(plane.app.store, "a", ttl=30)
    fast = BucketLock(plane.app.store, "fast", ttl=30, clock=lambda: time.time() + 240)
    assert await a.acquire("job-1") is None
    holder = await fast.acquire("job-2")
    assert holder is not None
    assert holder.owner == "a"
    assert 25 <= holder.left <= 32
    await a.renew()  # a's own renewal still works: nobody took it over
    await a.release()
    assert await fast.acquire("job-3") is None


async def test_cli_sync_and_sync_lambda_respect_the_bucket_lock(plane: Plane) -> None:
    """While a daemon holds the bucket: `mirrord sync` exits 1 naming the holder and
    fetches nothing; the sync Lambda hands its job to SQS for the daemon instead."""
    holder = BucketLock(plane.app.store, "fargate-task-7", ttl=60)
    assert await holder.acquire("2026-11-22-weekly") is None
    s = plane.app.settings
    result = await run_cli(
        "sync", "--date", DATE, env={"MIRRORD_BUCKET": s.bucket, "MIRRORD_API_URL": s.api_url}
    )
    assert result.code == 1
    assert b"fargate-task-7" in result.stderr
    assert plane.emu.total_bytes_sent() == 0
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    out = await sync_job(plane.app, job, LambdaContext(900).get_remaining_time_in_millis)
    assert out["handed_off"] is True
    assert await plane.queues.depth() == 1
    await holder.release()
    result = await run_cli(
        "sync", "--date", DATE, env={"MIRRORD_BUCKET": s.bucket, "MIRRORD_API_URL": s.api_url}
    )
    assert result.code == 0
    assert await plane.complete()


# --- SIGTERM ----------------------------------------------------------------------------


async def test_sigterm_mid_job_hands_the_job_back(plane: Plane) -> None:
    """SIGTERM while syncing: exit 0 within the grace period, the checkpoint is written,
    the message is visible again, and the next daemon finishes the job."""
    assert plane.app.queue is not None
    await plane.app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    for sha in plane.emu.catalog.blobs:
        plane.emu.set_faults(sha, [Fault("trickle", bytes_per_s=2 * MiB, times=None)])
    s = plane.app.settings
    env = {
        **os.environ,
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_QUEUE_URL": plane.queues.url,
        "MIRRORD_STOP_GRACE": "5",
        "MIRRORD_HEARTBEAT_SECONDS": "1",
        "MIRRORD_BATCH_SIZE": "2",
        "MIRRORD_CONCURRENCY": "4",
    }
    proc = await spawn_cli("daemon", env=env, stdout=DEVNULL)

    async def some_recorded() -> bool:
        hf, _ = await load_hashfile(plane.app.store, "bottles_hash.json")
        return len(hf.bottles) >= 2

    await until(some_recorded, 60, "a first checkpoint")
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert time.monotonic() - started < 5 + 10  # grace + checkpoint and hand-back
    assert b"job_handed_back" in err
    hf, _ = await load_hashfile(plane.app.store, "bottles_hash.json")
    assert 2 <= len(hf.bottles) < len(plane.expected())
    assert await plane.queues.depth() == 1
    assert await plane.app.store.open_uploads() == []

    plane.emu.clear_faults()
    await plane.drain("next")
    assert await plane.complete()
    assert await plane.queues.depth() == 0


async def test_deploys_during_a_job_never_send_it_to_the_dlq(plane: Plane) -> None:
    """Issue 15 #10: a daemon stopped mid-job more times than the queue's maxReceiveCount
    (2) hands the job back each time as a new message (mirrord_handbacks one higher): the
    job never reaches the DLQ, and the next daemon finishes it."""
    assert plane.app.queue is not None
    await plane.app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    for sha in plane.emu.catalog.blobs:
        plane.emu.set_faults(sha, [Fault("trickle", bytes_per_s=200_000, times=None)])
    app = replace(plane.app, settings=replace(plane.app.settings, stop_grace=0.5))
    assert app.queue is not None
    with capture_logs() as logs:
        for n in range(3):
            asked = sum(blob_requests(plane.emu).values())
            stop = asyncio.Event()
            daemon = Daemon(app, app.queue, stop=stop, owner=f"deploy-{n}")
            task = asyncio.create_task(daemon.serve())
            await until(
                lambda a=asked: sum(blob_requests(plane.emu).values()) > a, 60, f"job run {n}"
            )
            stop.set()
            await asyncio.wait_for(task, 30)
            assert daemon.jobs_done == 0
            assert await plane.queues.depth(plane.queues.dlq_url) == 0
            assert await plane.queues.depth() == 1
    assert [e["handbacks"] for e in logs if e["event"] == "job_requeued"] == [1, 2, 3]
    assert not await plane.complete()

    plane.emu.clear_faults()
    await plane.drain("after-deploys")
    assert await plane.complete()
    assert await plane.queues.depth() == 0
    assert await plane.queues.depth(plane.queues.dlq_url) == 0


async def test_hand_backs_are_bounded_and_real_failures_still_reach_the_dlq(
    plane: Plane,
) -> None:
    """Past its hand-back limit a stopped job's message is only made visible again, so a
    task stopped over and over still ends in the DLQ; and a job that fails (the catalog
    unreachable) is never handed back as new: its receives run out, it reaches the DLQ."""
    queue = plane.app.queue
    assert queue is not None
    await queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    stopped = asyncio.Event()
    stopped.set()  # every message it takes is handed back at once
    daemon = Daemon(plane.app, queue, stop=stopped, owner="looping", handback_limit=1)
    seen: list[tuple[int, int]] = []
    with capture_logs() as logs:
        while got := await queue.receive(wait_s=1, visibility_s=30):
            seen.append((got[0].handbacks, got[0].receive_count))
            await daemon.handle(got[0])
    assert seen == [(0, 1), (1, 1), (1, 2)]  # then SQS moved it: receives ran out
    assert [e["event"] for e in logs if "handback" in e["event"] or "requeued" in e["event"]] == [
        "job_requeued",
        "handback_limit_reached",
        "handback_limit_reached",
    ]
    assert await plane.queues.depth(plane.queues.dlq_url) == 1

    s = plane.app.settings
    dead = replace(s, api_url="http://127.0.0.1:1/api/formula.json", max_attempts=1)
    broken = replace(plane.app, settings=dead)
    await queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    stop = asyncio.Event()
    failing = Daemon(broken, queue, stop=stop, owner="failing")
    with capture_logs() as logs:
        task = asyncio.create_task(failing.serve())
        await until(lambda: _equals(plane.queues.depth(plane.queues.dlq_url), 2), 60, "the DLQ")
        stop.set()
        await asyncio.wait_for(task, 30)
    assert len([e for e in logs if e["event"] == "job_failed"]) == 2
    assert not [e for e in logs if e["event"] == "job_requeued"]
    assert await plane.queues.depth() == 0


# --- bad input --------------------------------------------------------------------------


async def test_poison_messages_go_to_the_dlq_and_the_daemon_keeps_serving(plane: Plane) -> None:
    """Bad JSON and an unknown version are logged with their message id, moved to the
    DLQ after maxReceiveCount, and a good job behind them is still done."""
    assert plane.app.queue is not None
    client = plane.queues.client
    await client.send_message(QueueUrl=plane.queues.url, MessageBody="{not json")
    await client.send_message(
        QueueUrl=plane.queues.url,
        MessageBody=orjson.dumps({"v": 99, "job_id": "x", "date": DATE}).decode(),
    )
    stop = asyncio.Event()
    daemon = plane.daemon("d1", stop)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.serve())
        await plane.app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
        await until(lambda: daemon.jobs_done == 1, 60, "the good job")
        await until(lambda: plane.queues.depth(plane.queues.dlq_url), 30, "the DLQ")
        await until(lambda: _equals(plane.queues.depth(plane.queues.dlq_url), 2), 30, "both in DLQ")
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 30)
    bad = [e for e in logs if e["event"] == "bad_message"]
    assert {e["message_id"] for e in bad}
    assert all("job" in e["error"] for e in bad)
    assert await plane.complete()


def external_hash_file(listed: Any) -> bytes:
    """Another mirror's bottles_hash.json naming ``listed`` (its bottles are skipped)."""
    bottles = {
        b.hash_key: {
            "sha256": b.sha256,
            "download_date": "2026-01-01",
            "file_size": 1,
            "s3_key": f"2026-01-01/{b.filename}",
        }
        for b in listed
    }
    return orjson.dumps({"version": 2, "bottles": bottles})


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


# --- external hash files ----------------------------------------------------------------


async def test_external_hash_file_from_s3_is_skipped_and_corrupt_one_warns(plane: Plane) -> None:
    """Bottles listed by another mirror's hash file (s3://) are not fetched; a corrupt
    external file is a warning and the sync still completes."""
    expected = list(plane.expected().values())
    listed = expected[:3]
    other = f"{plane.app.settings.bucket}-other"
    await plane.app.s3.create_bucket(Bucket=other)
    body = external_hash_file(listed)
    await plane.app.s3.put_object(Bucket=other, Key="bottles_hash.json", Body=body)
    await plane.app.s3.put_object(Bucket=other, Key="corrupt.json", Body=b'{"version": 2, "bo')

    app = replace(
        plane.app,
        settings=replace(plane.app.settings, external_hash_url=f"s3://{other}/bottles_hash.json"),
    )
    report = await run_job(app, job_from_event(SCHEDULED, datetime.now(UTC)), route="cli")
    assert report.complete
    assert report.skipped == len(listed)
    assert all(plane.emu.stats(b.sha256).requests == 0 for b in listed)

    app = replace(
        plane.app,
        settings=replace(plane.app.settings, external_hash_url=f"s3://{other}/corrupt.json"),
    )
    with capture_logs() as logs:
        report = await run_job(app, job_from_event(SCHEDULED, datetime.now(UTC)), route="cli")
    assert report.complete
    assert any(e["event"] == "external_hash_unusable" for e in logs)
    assert await plane.complete()


async def test_external_hash_file_over_https_with_a_test_ca(plane: Plane, tmp_path: Any) -> None:
    """An https:// external file served by a local TLS server whose CA the process trusts
    (SSL_CERT_FILE): listed bottles are skipped. Plain http:// is refused with a warning."""
    expected = list(plane.expected().values())
    listed = expected[:2]
    body = external_hash_file(listed)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def serve_file(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    web_app = web.Application()
    web_app.router.add_get("/mirror/bottles_hash.json", serve_file)
    s = plane.app.settings
    async with loopback(web_app, ssl_context=server_ctx) as url:
        env = {
            "MIRRORD_BUCKET": s.bucket,
            "MIRRORD_API_URL": s.api_url,
            "MIRRORD_EXTERNAL_HASH_URL": f"{url}/mirror/bottles_hash.json",
            "MIRRORD_EXTERNAL_HASH_ALLOW_PRIVATE": "true",  # the test server is on loopback
            "SSL_CERT_FILE": str(ca_file),
        }
        result = await run_cli("sync", "--json", "--date", DATE, env=env)
        plain = await run_cli(
            "plan",
            "--json",
            "--date",
            DATE,
            env={**env, "MIRRORD_EXTERNAL_HASH_URL": f"{url.replace('https', 'http')}/x"},
        )
    assert result.code == 0, result.stderr[-2000:]
    assert result.json()["skipped"] == len(listed)
    assert any(e.get("event") == "external_hash_loaded" for e in result.logs())
    assert all(plane.emu.stats(b.sha256).requests == 0 for b in listed)
    assert plain.code == 0
    assert any(
        e.get("event") == "external_hash_unusable" and "http://" in e["error"] for e in plain.logs()
    )


# --- liveness and metrics ---------------------------------------------------------------


async def test_health_command_follows_the_heartbeat_file(plane: Plane, tmp_path: Any) -> None:
    """`mirrord health` fails without a fresh heartbeat file and passes once the daemon
    has touched it."""
    health = tmp_path / "alive"
    env = {"MIRRORD_HEALTH_FILE": str(health)}  # no bucket: the check must not need one
    assert (await run_cli("health", env=env)).code == 1
    app = replace(plane.app, settings=replace(plane.app.settings, health_file=str(health)))
    stop = asyncio.Event()
    assert app.queue is not None
    task = asyncio.create_task(Daemon(app, app.queue, stop=stop, owner="h").serve())
    await until(health.exists, 10, "the heartbeat file")
    assert (await run_cli("health", env=env)).code == 0
    stop.set()
    await asyncio.wait_for(task, 30)
    old = time.time() - 3600
    os.utime(health, (old, old))
    assert (await run_cli("health", "--max-age", "60", env=env)).code == 1


async def test_daemon_logs_job_running_seconds_every_heartbeat(plane: Plane) -> None:
    """While it holds a job (here: waiting for a bucket lock someone else holds) the
    daemon logs an EMF record JobRunningSeconds (Route fargate) every heartbeat: the
    job-too-long alarm's metric. Stopped, it hands the job back."""
    rival = BucketLock(plane.app.store, "rival", ttl=600)
    assert await rival.acquire("someone-elses-job") is None
    app = replace(plane.app, settings=replace(plane.app.settings, emf=True))
    assert app.queue is not None
    await app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(Daemon(app, app.queue, stop=stop, owner="slow").serve())

        def running() -> list[dict[str, Any]]:
            return [e for e in logs if e["event"] == "job_running"]

        await until(lambda: len(running()) >= 2, 30, "two job_running records")
        stop.set()
        await asyncio.wait_for(task, 30)
    await rival.release()
    first, second = running()[:2]
    (directive,) = first["_aws"]["CloudWatchMetrics"]
    assert directive["Metrics"] == [{"Name": "JobRunningSeconds", "Unit": "Seconds"}]
    assert directive["Dimensions"] == [["Route"]]
    assert first["Route"] == "fargate"
    assert 0 < first["JobRunningSeconds"] < second["JobRunningSeconds"]


async def test_job_emits_emf_metrics_and_slack_failure_never_fails_it(
    bucket_name: str, queues: Queues
) -> None:
    """One EMF record per job (downloaded, bytes, failures, duration, estimate error);
    with Slack unreachable the job still completes and the URL is never logged."""
    dead_hook = "http://127.0.0.1:9/services/T0/B0/sEcReTtOkEn"
    async with (
        Emulator(sample_catalog()) as emu,
        open_app(
            make_settings(
                bucket_name,
                emu.api_url,
                queue_url=queues.url,
                slack_webhook_url=dead_hook,
                emf=True,  # as on ECS or Lambda (settings.from_env)
            )
        ) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        job = replace(job_from_event(SCHEDULED, datetime.now(UTC)), estimated_bytes=20_000_000)
        with capture_logs() as logs:
            report = await run_job(app, job, route="fargate")
    assert report.complete
    metrics = next(e for e in logs if e["event"] == "metrics")
    names = {m["Name"] for m in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {
        "BottlesDownloaded",
        "BytesDownloaded",
        "BottlesFailed",
        "DurationSeconds",
        "EstimateErrorPercent",
    } <= names
    assert metrics["BytesDownloaded"] == report.bytes
    assert metrics["Route"] == "fargate"
    assert any(e["event"] == "slack_failed" for e in logs)
    assert "sEcReTtOkEn" not in repr(logs)


# --- a bug inside a job (issue 12, item 2) ----------------------------------------------


def fails_once(monkeypatch: pytest.MonkeyPatch, target: str) -> list[int]:
    """Make the pure function ``target`` raise RuntimeError on its first call, as a bug
    no one has found yet would; calls afterwards go through. Returns the call count."""
    module, _, name = target.rpartition(".")
    real = getattr(importlib.import_module(module), name)
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom: a bug we have not found yet")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, flaky)
    return calls


async def test_a_bug_inside_a_job_is_reported_and_the_daemon_serves_on(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that is no MirrordError inside a job: logged with its traceback,
    a Slack failure naming it and calling it a bug, the daemon alive, the message back
    for another delivery, which then finishes the job."""
    assert plane.app.queue is not None
    calls = fails_once(monkeypatch, "mirrord.services.publish.versions")
    await plane.app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    stop = asyncio.Event()
    daemon = plane.daemon("d1", stop)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.serve())
        await until(lambda: daemon.jobs_done == 1 or task.done(), 90, "the second delivery")
        stop.set()
        await asyncio.wait_for(task, 30)  # raised, before: the daemon died with the job
    assert daemon.jobs_done == 1
    assert calls[0] == 2
    crashed = [e for e in logs if e["event"] == "job_crashed"]
    assert len(crashed) == 1
    assert isinstance(crashed[0]["exc_info"], RuntimeError)
    texts = plane.slack_texts()
    failure = next(t for t in texts if "sync failed" in t)
    assert "RuntimeError: boom" in failure
    assert "bug" in failure
    assert "finished" in texts[-1]
    assert await plane.queues.depth() == 0
    assert await plane.complete()


async def test_a_bug_outside_the_job_leaves_the_daemon_serving(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the daemon's own handling of a message (here: reading it) is logged with
    its traceback; the message comes back after its visibility timeout and is done."""
    assert plane.app.queue is not None
    fails_once(monkeypatch, "mirrord.daemon.parse_job")
    await plane.app.queue.send(job_from_event(SCHEDULED, datetime.now(UTC)))
    stop = asyncio.Event()
    daemon = plane.daemon("d1", stop)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.serve())
        await until(lambda: daemon.jobs_done == 1 or task.done(), 90, "the second delivery")
        stop.set()
        await asyncio.wait_for(task, 30)
    assert daemon.jobs_done == 1
    crashed = [e for e in logs if e["event"] == "message_crashed"]
    assert len(crashed) == 1
    assert isinstance(crashed[0]["exc_info"], RuntimeError)
    assert await plane.queues.depth() == 0


# --- unfinished publication is remaining work (issue 12, item 11) ------------------------


async def bottles_only(plane: Plane, job: Job) -> None:
    """Store every bottle without publishing, so the next job's only work is publication."""
    app = replace(plane.app, settings=replace(plane.app.settings, brew_mirror=False))
    report = await run_job(app, job, route="test")
    assert report.complete
    assert report.published is None


async def test_lambda_deadline_during_publication_hands_the_job_off(plane: Plane) -> None:
    """The sync Lambda's deadline strikes while it publishes (jq's image index is
    throttled): no bottle remains, yet the job is unfinished and goes to SQS; the report
    says the publication did not finish; the daemon then finishes it."""
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    await bottles_only(plane, job)
    plane.emu.set_manifest_faults("jq", [Fault("throttle", seconds=60, times=None)])
    margin = plane.app.settings.lambda_margin_seconds
    started = time.monotonic()
    out = await sync_job(plane.app, job, LambdaContext(margin + 3).get_remaining_time_in_millis)
    assert time.monotonic() - started < 15  # cut at the deadline, not after jq's retries
    assert plane.emu.manifest_requests("jq") >= 1  # the deadline came during publication
    assert out["planned"] == out["remaining"] == 0
    assert out["published"]["finished"] is False
    assert out["handed_off"] is True
    assert await plane.queues.depth() == 1

    plane.emu.clear_faults()
    await plane.drain("d1")
    assert await plane.queues.depth() == 0
    assert await plane.app.store.get("v2/homebrew/core/jq/manifests/1.7.1_1") is not None


async def test_stop_during_publication_hands_the_message_back(plane: Plane) -> None:
    """SIGTERM (the stop event) while the daemon publishes: the message is made visible
    again rather than deleted, and the next daemon finishes the publication."""
    assert plane.app.queue is not None
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    await bottles_only(plane, job)
    plane.emu.set_manifest_faults("jq", [Fault("throttle", seconds=60, times=None)])
    await plane.app.queue.send(job)
    stop = asyncio.Event()
    daemon = plane.daemon("d1", stop)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.serve())
        await until(lambda: plane.emu.manifest_requests("jq") >= 1, 60, "publication of jq")
        stop.set()
        await asyncio.wait_for(task, 15)
    assert daemon.jobs_done == 0
    assert any(e["event"] == "job_handed_back" for e in logs)
    assert await plane.queues.depth() == 1

    plane.emu.clear_faults()
    await plane.drain("d2")
    assert await plane.queues.depth() == 0
    assert await plane.app.store.get("v2/homebrew/core/jq/manifests/1.7.1_1") is not None


async def test_enqueue_sends_a_job_when_the_brew_view_is_behind(plane: Plane) -> None:
    """No bottle is new, yet a job is sent when a stored bottle's blob key is missing
    from v2/, when status.json says the last publication did not finish, or when it
    kept the API files back; none when all is current, or with MIRRORD_BREW_MIRROR off."""
    job = job_from_event(SCHEDULED, datetime.now(UTC))
    invoked: list[Job] = []

    async def invoke(sent: Job) -> None:
        invoked.append(sent)

    async def route() -> tuple[str, Any]:
        result = (await enqueue(plane.app, job, invoke, external=None)).to_dict()
        assert result["bottles"] == 0
        return result["route"], result.get("publication_behind")

    assert (await run_job(plane.app, job, route="test")).complete
    assert await route() == ("none", None)

    jq_blobs = [o.key async for o in plane.app.store.list_objects("v2/homebrew/core/jq/blobs/")]
    await plane.app.s3.delete_object(Bucket=plane.app.settings.bucket, Key=jq_blobs[0])
    where, why = await route()
    assert where == "lambda"
    assert "not published" in why
    assert len(invoked) == 1

    await run_job(plane.app, job, route="test")  # the job the enqueuer sent
    assert await route() == ("none", None)

    status = orjson.loads((await plane.app.store.get("status.json"))[0])
    for published, reason in (
        ({**status["published"], "finished": False}, "did not finish"),
        ({**status["published"], "api": "kept: the sync was not clean"}, "API files"),
    ):
        body = orjson.dumps({**status, "published": published})
        await plane.app.store.put("status.json", body, content_type="application/json")
        where, why = await route()
        assert where == "lambda"
        assert reason in why

    off = replace(plane.app, settings=replace(plane.app.settings, brew_mirror=False))
    result = (await enqueue(off, job, invoke, external=None)).to_dict()
    assert result["route"] == "none"
    assert len(invoked) == 3


async def test_buckets_a_test_makes_are_gone_after_it(plane: Plane, moto_s3: Any) -> None:
    """The moto fixture's teardown removes the test's bucket and those named after it;
    here the previous test's ``<bucket>-other`` is the witness: none may be left over."""
    left = [b["Name"] for b in moto_s3.list_buckets().get("Buckets", [])]
    assert not [name for name in left if name.endswith("-other")], left
    assert plane.app.settings.bucket in left  # this test's own, until its teardown
