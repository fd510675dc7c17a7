"""The fan-in of a sharded job (services/fanin.py, docs/design.md §12) against the moto
server and the emulator: exactly one fan-in among concurrent callers (in one loop and as
separate processes), a given-up shard reported by key while the rest is published, a
crashed finalizer taken over, a bad record refused before anything is published.

The shards' work is a real sync of the whole job (run_sync) whose results are then
written as the N shards' records, split by object key as core/shards.py does; where a
shard is to have failed, its bottles' entries are taken out of the hash file."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from conftest import DATE, MakeWorld, Receiver, make_settings, run_cli, spawn_cli

from mirrord.adapters.lock import Process
from mirrord.adapters.web import fetch_catalog
from mirrord.app import App, open_app
from mirrord.core.errors import InputError, MirrordError
from mirrord.core.hashfile import HashFile, dumps
from mirrord.core.jobs import Job
from mirrord.core.shards import Shard, ShardRecord, finalize_key, record_key, shard_of
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.fanin import FinalizeLease, fan_in, finalize_if_last, give_up
from mirrord.services.sync import Tuning, run_sync

JOB = Job("2026-11-22-big", DATE, None)
N = 3


async def synced(app: App) -> HashFile:
    """The whole job stored and recorded, as N shards would leave it."""
    catalog = await fetch_catalog(app.http, app.settings.api_url, app.backoff)
    report = await run_sync(
        JOB,
        catalog,
        app.store,
        app.registry,
        Tuning(4, 5 * 2**20, 100, 60.0),
        hash_key=app.settings.hash_key,
    )
    assert report.complete
    assert report.downloaded > 6
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    return hf


def owned(hf: HashFile, shard: Shard) -> dict[str, Any]:
    return {k: e for k, e in hf.bottles.items() if shard_of(e.s3_key, shard.count) == shard.index}


async def write_done(app: App, hf: HashFile, count: int = N, skip: tuple[int, ...] = ()) -> None:
    for k in range(1, count + 1):
        if k in skip:
            continue
        shard = Shard(k, count)
        mine = owned(hf, shard)
        record = ShardRecord(
            JOB.job_id,
            shard,
            "done",
            stored=len(mine),
            bytes=sum(e.file_size or 0 for e in mine.values()),
            finished_at="2026-11-22T03:00:00Z",
        )
        await app.store.put(
            record_key(JOB.job_id, shard),
            orjson.dumps(record.to_json()),
            content_type="application/json",
        )


async def keys(app: App, prefix: str) -> list[str]:
    return [o.key async for o in app.store.list_objects(prefix)]


async def finalize_state(app: App) -> dict[str, Any]:
    found = await app.store.get(finalize_key(JOB.job_id))
    assert found is not None
    data: dict[str, Any] = orjson.loads(found[0])
    return data


@pytest.fixture
async def world(make_world: MakeWorld, receiver: Receiver) -> App:
    made = await make_world(slack_webhook_url=receiver.url, heartbeat_seconds=1.0)
    app: App = made.app
    return app


async def test_concurrent_callers_in_one_loop_fan_in_exactly_once(
    world: App, receiver: Receiver
) -> None:
    hf = await synced(world)
    await write_done(world, hf, skip=(2,))
    # Shard 2 has not ended: nobody fans in, and nothing is claimed.
    assert await finalize_if_last(world, JOB, N) is None
    assert await world.store.get(finalize_key(JOB.job_id)) is None
    await write_done(world, hf)
    reports = await asyncio.gather(*(finalize_if_last(world, JOB, N) for _ in range(8)))
    won = [r for r in reports if r is not None]
    assert len(won) == 1
    report = won[0]
    assert report.complete
    assert report.exit_code == 0
    assert report.downloaded == len(hf.bottles)
    assert report.published is not None
    assert report.published.finished
    assert (await finalize_state(world))["state"] == "done"
    assert await world.store.get(world.settings.status_key) is not None
    assert await keys(world, "v2/")
    assert len(receiver.bodies) == 1  # one success message
    # A duplicate delivery's shard, later: the fan-in is done, not run again.
    again = await fan_in(world, JOB, N)
    assert again.report is None
    assert again.holder == "done"
    assert len(receiver.bodies) == 1


async def test_separate_processes_fan_in_exactly_once(world: App, receiver: Receiver) -> None:
    hf = await synced(world)
    await write_done(world, hf)
    s = world.settings
    env = {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_SLACK_WEBHOOK_URL": receiver.url,
        "MIRRORD_HEARTBEAT_SECONDS": "1",
    }
    args = (
        "sync",
        "--finalize",
        "--json",
        "--date",
        DATE,
        "--job-id",
        JOB.job_id,
        "--shards",
        str(N),
    )
    procs = [await spawn_cli(*args, env=env) for _ in range(5)]
    outs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    codes = [p.returncode for p in procs]
    reports = [orjson.loads(out) for out, _ in outs if out.strip()]
    assert len(reports) == 1, [err[-500:] for _, err in outs]
    assert reports[0]["job_id"] == JOB.job_id
    assert reports[0]["failed"] == []
    # The winner exits 0; a loser that found it done too, one that found it running 1.
    assert codes.count(0) >= 1
    assert set(codes) <= {0, 1}
    assert (await finalize_state(world))["state"] == "done"
    assert len(receiver.bodies) == 1
    late = await run_cli(*args, env=env)
    assert late.code == 0
    assert b"finalized already" in late.stderr
    assert not late.stdout


async def test_a_given_up_shard_is_reported_by_key_and_the_rest_is_published(
    world: App, receiver: Receiver
) -> None:
    hf = await synced(world)
    lost = Shard(2, N)
    gone = owned(hf, lost)
    assert gone
    kept = HashFile({k: e for k, e in hf.bottles.items() if k not in gone})
    await world.store.put(world.settings.hash_key, dumps(kept), content_type="application/json")
    await write_done(world, hf, skip=(2,))
    record = await give_up(world, JOB, lost, "GHCR answered 500 three times")
    assert record.state == "given_up"
    assert {k for k, _ in record.failed} == set(gone)
    report = await finalize_if_last(world, JOB, N)
    assert report is not None
    assert report.exit_code == 1
    assert {f.key for f in report.failed} == set(gone)
    assert all("shard 2/3" in f.error and "GHCR answered 500" in f.error for f in report.failed)
    # The other shards' bottles are published (their image indexes); the API files wait.
    published = await keys(world, "v2/")
    names = {k.split("-")[0] for k in kept.bottles}
    assert any(name in k for k in published for name in names)
    assert report.published is not None
    assert report.published.api.startswith("kept")
    # Not complete: status.json records the run (last_run), and no success.
    found = await world.store.get(world.settings.status_key)
    assert found is not None
    status = orjson.loads(found[0])
    assert "last_success" not in status
    assert status["last_run"]["outcome"] == "failed"
    assert status["last_run"]["failed"] == len(report.failed)
    assert len(receiver.bodies) == 1
    assert "fail" in orjson.dumps(receiver.bodies[0]).decode().lower()
    assert (await finalize_state(world))["state"] == "done"
    # give_up again (a late duplicate) keeps the record that is there.
    assert (await give_up(world, JOB, lost, "other")).failed == record.failed


async def dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    return proc.pid


async def test_a_crashed_finalizer_is_taken_over_and_a_live_one_is_not(
    world: App, receiver: Receiver
) -> None:
    hf = await synced(world)
    await write_done(world, hf)
    here = Process.current()
    # A live finalizer (this very process, another owner): the caller leaves it alone.
    live = FinalizeLease(world.store, JOB.job_id, "task-live", ttl=600)
    assert await live.claim() == ""
    outcome = await fan_in(world, JOB, N)
    assert outcome.report is None
    assert outcome.holder == "task-live"
    assert await world.store.get(world.settings.status_key) is None
    # It crashed (kill -9 on this host): its lease names a pid that no longer runs.
    pid = await dead_pid()
    crashed = Process(here.host, here.boot, pid, "0")
    await world.store.put(
        finalize_key(JOB.job_id),
        orjson.dumps(
            {
                "state": "running",
                "owner": "task-crashed",
                "job_id": JOB.job_id,
                "ttl": 600,
                "expires_at": 4e9,
                "process": crashed.to_json(),
            }
        ),
        content_type="application/json",
    )
    report = await finalize_if_last(world, JOB, N)
    assert report is not None
    assert report.complete
    assert (await finalize_state(world))["state"] == "done"
    assert await world.store.get(world.settings.status_key) is not None
    assert len(receiver.bodies) == 1


async def test_a_bad_record_is_a_clear_error_and_nothing_is_published(
    world: App, receiver: Receiver
) -> None:
    hf = await synced(world)
    await write_done(world, hf)
    bad = record_key(JOB.job_id, Shard(2, N))
    await world.store.put(bad, b'{"v": 1, "state": "done"}', content_type="application/json")
    with pytest.raises(InputError, match=r"2-of-3\.json: unreadable shard record"):
        await finalize_if_last(world, JOB, N)
    # A record that names another shard than its key is refused the same way.
    other = ShardRecord(JOB.job_id, Shard(3, N), "done")
    await world.store.put(bad, orjson.dumps(other.to_json()), content_type="application/json")
    s = world.settings
    env = {"MIRRORD_BUCKET": s.bucket, "MIRRORD_API_URL": s.api_url}
    args = ("sync", "--finalize", "--date", DATE, "--job-id", JOB.job_id, "--shards", str(N))
    result = await run_cli(*args, env=env)
    assert result.code == 1
    assert b"2-of-3.json" in result.stderr
    assert b"shard 3/3" in result.stderr
    assert await world.store.get(finalize_key(JOB.job_id)) is None
    assert await world.store.get(s.status_key) is None
    assert await keys(world, "v2/") == []
    assert await keys(world, "api/") == []
    assert receiver.bodies == []
    # Mended, the fan-in runs.
    await write_done(world, hf)
    assert (await run_cli(*args, env=env)).code == 0
    assert (await finalize_state(world))["state"] == "done"


async def test_cli_usage_errors(world: App) -> None:
    s = world.settings
    env = {"MIRRORD_BUCKET": s.bucket, "MIRRORD_API_URL": s.api_url}
    base = ("sync", "--date", DATE)
    no_shards = await run_cli(*base, "--finalize", "--job-id", JOB.job_id, env=env)
    assert no_shards.code == 2
    assert b"--shards N" in no_shards.stderr
    too_many = await run_cli(*base, "--finalize", "--job-id", "j", "--shards", "65", env=env)
    assert too_many.code == 2
    assert b"--shards 65" in too_many.stderr
    waiting = await run_cli(*base, "--finalize", "--job-id", "j", "--shards", "2", env=env)
    assert waiting.code == 2
    assert b"shard(s) 1/2, 2/2" in waiting.stderr
    assert await keys(world, "jobs/") == []


async def test_a_failed_fan_in_releases_its_lease_for_the_next_caller(
    world: App, receiver: Receiver
) -> None:
    hf = await synced(world)
    await write_done(world, hf)
    # Its catalog is out of reach: the fan-in fails after it has claimed finalize.json.
    broken = make_settings(world.settings.bucket, "http://127.0.0.1:1/api/formula.json")
    async with open_app(replace(broken, max_attempts=1)) as cut_off:
        with pytest.raises(MirrordError):
            await finalize_if_last(cut_off, JOB, N)
    lease = await finalize_state(world)
    assert lease["state"] == "running"
    assert lease["ttl"] == 0
    assert await world.store.get(world.settings.status_key) is None
    report = await finalize_if_last(world, JOB, N)
    assert report is not None
    assert report.complete
    assert (await finalize_state(world))["state"] == "done"


async def test_shards_run_through_the_cli_then_one_fan_in(world: App, receiver: Receiver) -> None:
    """End to end: N `sync --shard` processes at once, then N `sync --finalize`
    processes at once; exactly one publishes."""
    s = world.settings
    env = {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_SLACK_WEBHOOK_URL": receiver.url,
        "MIRRORD_HEARTBEAT_SECONDS": "1",
    }
    job = ("--date", DATE, "--job-id", JOB.job_id)
    shards = [
        await spawn_cli("sync", "--shard", f"{k}/{N}", *job, env=env) for k in range(1, N + 1)
    ]
    ended = [await asyncio.wait_for(p.communicate(), 120) for p in shards]
    assert [p.returncode for p in shards] == [0] * N, [err[-800:] for _, err in ended]
    assert receiver.bodies == []  # a shard reports nothing to Slack: the fan-in does
    fan = [
        await spawn_cli("sync", "--finalize", "--json", *job, "--shards", str(N), env=env)
        for _ in range(N)
    ]
    outs = [await asyncio.wait_for(p.communicate(), 120) for p in fan]
    reports = [orjson.loads(out) for out, _ in outs if out.strip()]
    assert len(reports) == 1, [err[-800:] for _, err in outs]
    hf, _ = await load_hashfile(world.store, s.hash_key)
    assert reports[0]["failed"] == []
    assert reports[0]["downloaded"] == len(hf.bottles)
    # An empty mirror: nothing was there before the job. The fan-in's own re-plan, made
    # after the shards stored everything, would call every bottle already mirrored.
    assert reports[0]["skipped"] == 0
    assert await world.store.get(s.status_key) is not None
    assert (await finalize_state(world))["state"] == "done"
    assert len(receiver.bodies) == 1
