"""A job fanned out to N workers, through the control plane's real peers (docs/design.md
§12): the enqueuer sends one SQS message per shard (moto), the daemon runs each and the
fan-in after it, and a shard failing on its last receive is given up on.

``services.shard`` and ``services.fanin`` are built beside this (issue 16); here the
daemon runs thin stand-ins with their signatures that record what they were asked.
The queue, the daemon, the enqueuer, S3 and the emulator are real."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiobotocore.session import get_session
from conftest import DATE, MakeWorld, Receiver, make_settings
from mirrord_dev.emulator.content import blob_url
from mirrord_dev.latency import Latency, slow_blobs
from structlog.testing import capture_logs

from mirrord.app import App
from mirrord.core.errors import UpstreamError
from mirrord.core.jobs import Job, parse_job
from mirrord.core.report import Report
from mirrord.core.shards import Shard
from mirrord.daemon import Daemon
from mirrord.lambdas.enqueue import job_from_event
from mirrord.services.enqueue import enqueue
from mirrord.services.job import run_job

MAX_RECEIVES = 3  # the queue's maxReceiveCount, as infra/main.tf sets it
MANUAL = {"source": "manual", "date": DATE, "job_id": f"{DATE}-big"}


@dataclass
class Queue:
    url: str
    dlq_url: str
    client: Any

    async def depth(self, url: str | None = None) -> int:
        attrs = await self.client.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(v) for v in attrs["Attributes"].values())

    async def bodies(self) -> list[dict[str, Any]]:
        """Every message on the queue, taken off it (the enqueue tests run no daemon)."""
        seen: list[dict[str, Any]] = []
        while got := (
            await self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
        ).get("Messages"):
            seen += [orjson.loads(m["Body"]) for m in got]
            for m in got:
                await self.client.delete_message(
                    QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"]
                )
        return seen


@pytest.fixture
async def queue(bucket_name: str) -> AsyncIterator[Queue]:
    async with get_session().create_client("sqs") as client:
        dlq = (await client.create_queue(QueueName=f"{bucket_name}-dlq"))["QueueUrl"]
        arn = (await client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": arn, "maxReceiveCount": str(MAX_RECEIVES)}
        url = (
            await client.create_queue(
                QueueName=bucket_name,
                Attributes={
                    "VisibilityTimeout": "30",
                    "RedrivePolicy": orjson.dumps(redrive).decode(),
                },
            )
        )["QueueUrl"]
        yield Queue(url, dlq, client)


@pytest.fixture
async def app(bucket: str, queue: Queue, receiver: Receiver, make_world: MakeWorld) -> App:
    made = await make_world(
        settings=lambda emu: make_settings(
            bucket,
            emu.api_url,
            queue_url=queue.url,
            slack_webhook_url=receiver.url,
            heartbeat_seconds=1.0,
            max_receives=MAX_RECEIVES,
        )
    )
    return made.app


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


@dataclass
class ScaleOut:
    """Stand-ins for services.shard.run_shard and services.fanin's give_up and
    finalize_if_last, with their signatures: they record each call; the last shard to
    leave a record gets the fan-in's Report, every other call None."""

    failing: set[int] = field(default_factory=set)  # shards whose run_shard raises
    stop_during: asyncio.Event | None = None  # set while a shard runs (a SIGTERM)
    ran: list[tuple[Shard, str]] = field(default_factory=list)  # (shard, owner)
    given_up: list[tuple[Shard, str]] = field(default_factory=list)
    fanins: list[int] = field(default_factory=list)  # finalize_if_last's count, per call
    records: set[int] = field(default_factory=set)
    finalized: int = 0

    async def run_shard(
        self, app: App, job: Job, shard: Shard, *, owner: str, stop: Any = None, **_: Any
    ) -> object:
        self.ran.append((shard, owner))
        await asyncio.sleep(0)  # let the other daemon take its message
        if shard.index in self.failing:
            raise UpstreamError("ghcr.io answered 503 three times")
        if self.stop_during is not None:
            self.stop_during.set()
            return object()
        self.records.add(shard.index)
        return object()

    async def give_up(self, app: App, job: Job, shard: Shard, error: str) -> object:
        self.given_up.append((shard, error))
        self.records.add(shard.index)
        return object()

    async def finalize_if_last(self, app: App, job: Job, count: int) -> Report | None:
        self.fanins.append(count)
        if len(self.records) < count or self.finalized:
            return None
        self.finalized += 1
        return Report(job.job_id, job.date, planned=0)


@pytest.fixture
def scale_out(monkeypatch: pytest.MonkeyPatch) -> ScaleOut:
    fake = ScaleOut()
    shard = types.SimpleNamespace(run_shard=fake.run_shard)
    fanin = types.SimpleNamespace(give_up=fake.give_up, finalize_if_last=fake.finalize_if_last)
    monkeypatch.setitem(sys.modules, "mirrord.services.shard", shard)
    monkeypatch.setitem(sys.modules, "mirrord.services.fanin", fanin)
    return fake


def job() -> Job:
    return job_from_event(MANUAL, datetime.now(UTC))


async def test_a_big_job_goes_out_as_one_message_per_shard(app: App, queue: Queue) -> None:
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


async def serve(app: App, daemons: int, done: int, what: str) -> list[Daemon]:
    """``daemons`` daemons on the queue until they have finished ``done`` messages."""
    assert app.queue is not None
    stop = asyncio.Event()
    served = [Daemon(app, app.queue, stop=stop, owner=f"task-{i}") for i in range(daemons)]
    tasks = [asyncio.create_task(d.serve()) for d in served]
    await until(lambda: sum(d.jobs_done for d in served) >= done, 90, what)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return served


async def test_daemons_run_every_shard_and_the_last_one_fans_in(
    app: App, queue: Queue, scale_out: ScaleOut
) -> None:
    assert app.queue is not None
    for k in (1, 2, 3):
        await app.queue.send(replace(job(), shard=Shard(k, 3)))
    served = await serve(app, 2, 3, "three shards")
    assert sorted(s for s, _ in scale_out.ran) == [Shard(k, 3) for k in (1, 2, 3)]
    assert {owner for _, owner in scale_out.ran} <= {"task-0", "task-1"}
    assert scale_out.fanins == [3, 3, 3]  # every shard asks; one runs it
    assert scale_out.finalized == 1
    assert sum(d.jobs_done for d in served) == 3
    assert await queue.depth() == 0
    assert await queue.depth(queue.dlq_url) == 0


async def test_a_shard_failing_on_its_last_receive_is_given_up_and_the_fan_in_runs(
    app: App, queue: Queue, scale_out: ScaleOut
) -> None:
    """Shard 2 fails every time: its message returns until its last receive
    (MIRRORD_MAX_RECEIVES), then give_up names it and the fan-in still runs, once; the
    message is deleted, not left for the DLQ (its bottles are reported by key)."""
    assert app.queue is not None
    scale_out.failing = {2}
    for k in (1, 2, 3):
        await app.queue.send(replace(job(), shard=Shard(k, 3)))
    with capture_logs() as logs:
        await serve(app, 1, 3, "two shards done and one given up")
    assert [s for s, _ in scale_out.ran].count(Shard(2, 3)) == MAX_RECEIVES
    assert scale_out.given_up == [(Shard(2, 3), "ghcr.io answered 503 three times")]
    failed = [e for e in logs if e["event"] == "shard_failed"]
    assert [(e["receive_count"], e["given_up"]) for e in failed] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert scale_out.finalized == 1
    assert scale_out.fanins[-1] == 3
    assert await queue.depth() == 0
    assert await queue.depth(queue.dlq_url) == 0


async def test_a_shard_stopped_mid_run_is_handed_back_without_a_fan_in(
    app: App, queue: Queue, scale_out: ScaleOut
) -> None:
    """SIGTERM while a shard runs: the message goes back as new (one more hand-back, its
    receives untouched), and no fan-in is asked for."""
    assert app.queue is not None
    stop = asyncio.Event()
    scale_out.stop_during = stop
    await app.queue.send(replace(job(), shard=Shard(1, 2)))
    daemon = Daemon(app, app.queue, stop=stop, owner="task-0")
    got = await app.queue.receive(wait_s=1, visibility_s=30)
    await daemon.handle(got[0])
    assert scale_out.ran == [(Shard(1, 2), "task-0")]
    assert scale_out.fanins == []
    again = await app.queue.receive(wait_s=1, visibility_s=30)
    assert (again[0].handbacks, again[0].receive_count) == (1, 1)
    assert parse_job(again[0].body).shard == Shard(1, 2)


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
