"""The operator's first hour (issue 13 #6-#8): kill -9 and rerun, a released lock that
is no news, a bucket that is not there. Real peers: the moto server, the emulator, the
CLI as a separate process."""

from __future__ import annotations

import asyncio
import signal
from asyncio.subprocess import DEVNULL
from dataclasses import replace

import orjson
import pytest
from conftest import DATE, MakeWorld, run_cli, spawn_cli
from mirrord_dev.emulator import Emulator, Fault

from mirrord.adapters.lock import BucketLock, Process
from mirrord.app import App

MiB = 2**20


@pytest.fixture
async def mirror(bucket: str, make_world: MakeWorld) -> tuple[App, Emulator, dict[str, str]]:
    made = await make_world()
    env = {
        "MIRRORD_BUCKET": bucket,
        "MIRRORD_API_URL": made.emu.api_url,
        "MIRRORD_PLATFORMS": "arm64_tahoe",
        "MIRRORD_BREW_MIRROR": "false",
    }
    return made.app, made.emu, env


def events(stderr: bytes) -> list[dict[str, object]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out


async def test_kill_9_then_rerun_takes_the_dead_holders_lock_at_once(
    mirror: tuple[App, Emulator, dict[str, str]],
) -> None:
    """A sync SIGKILLed mid-run leaves its lock with 180 s of lease (3 heartbeats of 60 s,
    the default). The rerun on the same host sees the holder's process is gone and takes
    the lock at once (an info line, not a warning), then finishes the job. Before: exit 1,
    "another sync holds the bucket … lease renewed for another 173s"."""
    app, emu, env = mirror
    large = max(emu.catalog.blobs.values(), key=lambda b: b.size)
    emu.set_faults(large.sha256, [Fault("trickle", bytes_per_s=256 * 1024, times=None)])
    proc = await spawn_cli("sync", "--date", DATE, env=env, stdout=DEVNULL, stderr=DEVNULL)
    probe = BucketLock(app.store, "probe", ttl=180)
    for _ in range(200):
        if await probe.holder() is not None:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    holder = await probe.holder()
    assert holder is not None, "killed before it took the lock"
    assert holder.left > 100
    emu.clear_faults()

    again = await run_cli("sync", "--json", "--date", DATE, env=env)
    assert again.code == 0, again.stderr[-2000:]
    taken = [e for e in events(again.stderr) if e.get("event") == "lock_taken_over"]
    assert len(taken) == 1
    assert taken[0]["level"] == "info"
    assert f"process {proc.pid} on this host is gone" in str(taken[0]["reason"])


async def test_a_live_holder_elsewhere_is_refused_and_waited_for_with_wait(
    mirror: tuple[App, Emulator, dict[str, str]],
) -> None:
    """A holder on another host is never judged gone: `sync` exits 1 naming it and the
    lease left; `sync --wait` waits, and runs as soon as the holder releases."""
    app, _, env = mirror
    elsewhere = replace(Process.current(), host="fargate-task-7")
    holder = BucketLock(app.store, "fargate-task-7-1", ttl=30, process=elsewhere)
    assert await holder.acquire("weekly") is None

    busy = await run_cli("sync", "--date", DATE, env=env)
    assert busy.code == 1
    assert b"another sync holds the bucket: fargate-task-7-1 (job weekly)" in busy.stderr
    assert b"--wait" in busy.stderr

    waiting = asyncio.create_task(run_cli("sync", "--json", "--wait", "--date", DATE, env=env))
    await asyncio.sleep(2)
    assert not waiting.done()
    await holder.release()
    result = await asyncio.wait_for(waiting, 60)
    assert result.code == 0, result.stderr[-2000:]
    assert any(e.get("event") == "lock_wait" for e in events(result.stderr))


def test_a_process_is_gone_only_when_that_is_certain() -> None:
    """Same host and boot: gone when the pid is not running or started at another time
    (a reused pid). Another host, or an unknown boot on one side: never judged gone."""
    here = Process.current()
    assert not here.gone(here)
    assert replace(here, started="1").gone(here) == bool(here.started)
    assert replace(here, pid=2**31 - 2).gone(here)
    assert not replace(here, host="elsewhere", pid=2**31 - 2).gone(here)
    if here.boot:
        assert replace(here, boot="another-boot").gone(here)
        assert not replace(here, boot="", pid=2**31 - 2).gone(here)


async def test_a_sync_after_a_clean_one_logs_no_takeover(
    mirror: tuple[App, Emulator, dict[str, str]],
) -> None:
    """A released lock is free, not taken over: the second sync logs no lock_taken_over
    and no warning about the lock. Before: every sync after a clean one warned."""
    _, _, env = mirror
    first = await run_cli("sync", "--date", DATE, env=env)
    assert first.code == 0, first.stderr[-2000:]
    second = await run_cli("sync", "--date", DATE, env=env)
    assert second.code == 0
    logged = events(second.stderr)
    assert not [e for e in logged if e.get("event") == "lock_taken_over"]
    assert not [e for e in logged if e.get("level") == "warning"]


@pytest.mark.parametrize("command", ["plan", "sync", "verify"])
async def test_a_missing_bucket_is_one_line_before_any_download(
    mirror: tuple[App, Emulator, dict[str, str]], command: str
) -> None:
    """A bucket that does not exist: exit 1 with one line naming it, and formula.json is
    never fetched. Before: `plan` printed "35 to fetch" and exited 0; `sync` failed at the
    lock with botocore's text."""
    _, emu, env = mirror
    emu.reset_stats()
    result = await run_cli(command, env={**env, "MIRRORD_BUCKET": "no-such-bucket-here"})
    assert result.code == 1
    assert (
        b"mirrord: " + command.encode() + b" failed: bucket no-such-bucket-here does not exist"
        in (result.stderr)
    )
    assert emu.total_requests() == 0
