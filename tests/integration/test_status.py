"""`mirrord status`, subset mirrors' API files and `check-client --brewfile` (issue 17,
item 3) end to end: the CLI as a process against a moto server and the emulator serving
the sample catalog (wget → openssl@3 → ca-certificates, jq → oniguruma; libidn2, which
wget needs, is not in the sample)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from conftest import DATE, CliResult, MakeWorld, run_cli
from mirrord_dev.emulator import PORTABLE_RUBY_VERSIONS, Fault
from mirrord_dev.local import Front, bucket_front

from mirrord.adapters.lock import BucketLock
from mirrord.core.brew import api_endpoints, jws_payload, packages_endpoint
from mirrord.core.hashfile import Suspect, dumps
from mirrord.services.checkpoint import load_hashfile

TARGETS = ("arm64_sonoma", "sonoma")
RUBY = PORTABLE_RUBY_VERSIONS[0]
CLOSURE = {"wget", "jq", "openssl@3", "ca-certificates", "oniguruma"}
BREWFILE = 'tap "homebrew/core"\nbrew "wget"\nbrew "jq"\ncask "firefox"\n'


@pytest.fixture
async def world(make_world: MakeWorld) -> Any:
    return await make_world()


@pytest.fixture
def brewfile(tmp_path: Path) -> Path:
    path = tmp_path / "Brewfile"
    path.write_text(BREWFILE)
    return path


@pytest.fixture
def front(world: Any) -> Iterator[Front]:
    """CloudFront+OAC stand-in: v2/ and api/ only, as deployed."""
    with bucket_front(boto3.client("s3"), world.app.settings.bucket) as served:
        yield served


def env(world: Any, **extra: str) -> dict[str, str]:
    return {
        "MIRRORD_BUCKET": world.app.store.bucket,
        "MIRRORD_API_URL": world.emu.api_url,
        "MIRRORD_READ_TIMEOUT": "2",
        "MIRRORD_PLATFORMS": ",".join(TARGETS),
        "MIRRORD_PORTABLE_RUBY": RUBY,
        **extra,
    }


async def sync(world: Any, *args: str, **extra: str) -> CliResult:
    return await run_cli("sync", "--json", "--date", DATE, *args, env=env(world, **extra))


async def status(world: Any, *args: str, **extra: str) -> CliResult:
    return await run_cli("status", "--json", *args, env=env(world, **extra))


def sha_of(world: Any, name: str, tag: str) -> str:
    entry = next(e for e in world.emu.catalog.formulae if e["name"] == name)
    return str(entry["bottle"]["stable"]["files"][tag]["sha256"])


async def api_keys(world: Any) -> set[str]:
    return {o.key async for o in world.app.store.list_objects("api/")}


async def test_status_after_a_clean_sync(world: Any) -> None:
    """Healthy (exit 0): the last sync complete, what the hash file holds, no
    quarantine, the API files byte for byte upstream's, no subset; as text, aligned."""
    synced = await sync(world)
    assert synced.code == 0, synced.stderr[-3000:]
    result = await status(world)
    assert result.code == 0, result.stderr[-3000:]
    body = result.json()
    assert body["healthy"] is True
    assert body["problems"] == []
    assert body["last_run"]["outcome"] == "complete"
    assert body["last_run"]["job_id"] == body["last_success"]["job_id"] == f"{DATE}-cli"
    assert body["last_success"]["downloaded"] == synced.json()["downloaded"] > 0
    hf, _ = await load_hashfile(world.app.store, "bottles_hash.json")
    sizes = {e.s3_key: e.file_size for e in hf.bottles.values()}
    assert body["held"] == {
        "source": "hash file",
        "bottles": len(hf.bottles),
        "objects": len(sizes),
        "bytes": sum(n or 0 for n in sizes.values()),
        "unknown_size": 0,
        "last_updated": hf.last_updated,
    }
    assert body["quarantine"] == {"count": 0, "keys": [], "suspects": []}
    assert body["api"]["state"] == "current"
    assert body["api"]["files"] == len(api_endpoints(TARGETS)) == len(await api_keys(world))
    assert body["api"]["differ"] == []
    assert body["subset"] is None
    assert body["running"] is None

    text = await run_cli("status", env=env(world))
    assert text.code == 0, text.stderr[-3000:]
    lines = text.stdout.decode().splitlines()
    assert lines[0] == f"s3://{world.app.store.bucket}: healthy"
    rows = [line for line in lines[1:] if not line.startswith(("  PROBLEM", "  note"))]
    assert [r.split()[0] for r in rows][:3] == ["last", "last", "running"]
    starts = {len(r) - len(r[2:].split("  ", 1)[1].lstrip()) for r in rows}
    assert len(starts) == 1  # one column for the values
    assert any("the hash file's view" in r for r in rows)


async def test_status_after_a_failed_sync(world: Any) -> None:
    """A failed bottle: status.json records the run (its success stays the last
    complete job's), and status exits 1 naming why; a clean run makes it healthy."""
    world.emu.set_faults(sha_of(world, "jq", "arm64_sonoma"), [Fault("corrupt")])
    failed = await sync(world)
    assert failed.code == 1
    result = await status(world, "--no-upstream", "--max-age", "8")
    assert result.code == 1
    body = result.json()
    run = body["last_run"]
    assert run["outcome"] == "failed"
    assert run["failed"] == 1
    assert run["failed_keys"][0].startswith("jq-")
    assert body["last_success"] is None
    assert any("no complete sync recorded" in p for p in body["problems"])
    assert any("did not complete" in p for p in body["problems"])
    assert body["api"]["state"] == "not published"  # held back by the failure
    text = await run_cli("status", env=env(world))
    assert text.code == 1
    assert "NEEDS ATTENTION" in text.stdout.decode()
    assert "PROBLEM the last sync" in text.stdout.decode()

    world.emu.clear_faults()
    assert (await sync(world)).code == 0
    healed = await status(world)
    assert healed.code == 0, healed.stdout.decode()
    assert healed.json()["last_run"]["outcome"] == "complete"


async def test_status_after_a_job_that_died(world: Any) -> None:
    """The catalog unreachable: the job fails before any bottle; the run is recorded
    as an error with its reason, after a complete one."""
    assert (await sync(world)).code == 0
    dead = await sync(
        world, MIRRORD_API_URL="http://127.0.0.1:1/api/formula.json", MIRRORD_MAX_ATTEMPTS="1"
    )
    assert dead.code == 1
    result = await status(world)
    assert result.code == 1
    body = result.json()
    assert body["last_run"]["outcome"] == "error"
    assert "127.0.0.1:1" in body["last_run"]["error"]
    assert body["last_success"] is not None  # the complete job's record is kept


async def test_status_lists_the_quarantine(world: Any) -> None:
    """Quarantined bottles (broken upstream) are listed by key and fail nothing;
    suspects (fewer than three runs) are listed apart."""
    assert (await sync(world)).code == 0
    hf, _ = await load_hashfile(world.app.store, "bottles_hash.json")
    first, second = sorted(hf.bottles)[:2]
    t = "2026-11-20T00:00:00Z"
    held = Suspect("a" * 64, "b" * 64, t, t, 3, "j3")
    hf = replace(hf, quarantine={first: held, second: replace(held, count=1)})
    await world.app.store.put("bottles_hash.json", dumps(hf), content_type="application/json")
    result = await status(world)
    assert result.code == 0, result.stdout.decode()
    assert result.json()["quarantine"] == {"count": 1, "keys": [first], "suspects": [second]}
    assert any("quarantine" in n for n in result.json()["notes"])
    text = await run_cli("status", env=env(world))
    assert f"1: {first}" in text.stdout.decode()


async def test_status_sees_stale_api_files(world: Any) -> None:
    """Each published API file carries its sha256; one the upstream has moved past is
    named (a note: the next complete sync publishes it); unasked or unreachable
    upstream: unknown."""
    assert (await sync(world)).code == 0
    for key in await api_keys(world):
        found = await world.app.store.head(key)
        body = await world.app.store.get(key)
        assert found is not None
        assert body is not None
        assert found.metadata["sha256"] == hashlib.sha256(body[0]).hexdigest()
    stale = f"api/{packages_endpoint('sonoma')}"
    old = await world.app.store.get(stale)
    assert old is not None
    # An older publication's copy: other bytes, and no sha256 in its metadata.
    await world.app.s3.put_object(Bucket=world.app.store.bucket, Key=stale, Body=old[0] + b" ")
    result = await status(world)
    assert result.code == 0, result.stdout.decode()
    api = result.json()["api"]
    assert api["state"] == "stale"
    assert api["differ"] == [packages_endpoint("sonoma")]
    assert "changed upstream" in (await run_cli("status", env=env(world))).stdout.decode()

    offline = await status(world, "--no-upstream")
    assert offline.json()["api"]["state"] == "unknown"
    gone = await status(
        world, MIRRORD_API_URL="http://127.0.0.1:1/api/formula.json", MIRRORD_MAX_ATTEMPTS="1"
    )
    assert gone.code == 0
    assert gone.json()["api"]["state"] == "unknown"
    assert "upstream" in gone.json()["api"]["error"]


async def test_status_bad_usage_exits_2_and_bad_input_is_named(world: Any) -> None:
    result = await run_cli("status", "--max-age", "soon", env=env(world))
    assert result.code == 2
    assert b"--max-age" in result.stderr
    await world.app.store.put("status.json", b"{not json", content_type="application/json")
    broken = await status(world, "--no-upstream")
    assert broken.code == 1
    assert broken.json()["problems"][0] == "status.json is not JSON (written by hand?)"
    await world.app.store.put("bottles_hash.json", b"[]", content_type="application/json")
    corrupt = await status(world, "--no-upstream")
    assert corrupt.code == 1
    assert corrupt.stdout == b""
    assert b"mirrord: status failed:" in corrupt.stderr


async def test_brewfile_subset_publishes_the_api_and_check_client_checks_it(
    world: Any, brewfile: Path, front: Front
) -> None:
    """A subset whose closure is complete publishes the signed API files unchanged;
    status.json records the subset; `check-client --brewfile` walks the closure only
    and counts the formulae outside it, while a whole-mirror check fails on them."""
    synced = await sync(world, "--brewfile", str(brewfile))
    assert synced.code == 0, synced.stderr[-3000:]
    assert synced.json()["published"]["api"] == "published"
    assert len(await api_keys(world)) == len(api_endpoints(TARGETS))
    shown = await status(world)
    assert shown.code == 0, shown.stdout.decode()
    subset = shown.json()["subset"]
    assert subset["roots"] == ["wget", "jq"]
    assert subset["formulae"] == len(CLOSURE)

    args = ("check-client", "--base", front.url, "--portable-ruby", RUBY, "--json")
    checked = await run_cli(*args, "--brewfile", str(brewfile), "--target", "arm64_sonoma")
    assert checked.code == 0, checked.stdout.decode()[-3000:]
    body = checked.json()
    assert body["subset"]["roots"] == ["wget", "jq"]
    assert body["subset"]["missing"] == [{"name": "libidn2", "needed_by": "wget"}]
    target = body["targets"][0]
    listed = await world.app.store.get(f"api/{packages_endpoint('arm64_sonoma')}")
    assert listed is not None
    names = set(jws_payload(listed[0], "packages")["formulae"])
    assert target["outside_subset"] == len(names - CLOSURE) > 0
    assert target["installable"] == target["with_bottle"] > 0
    text = await run_cli(*args[:-1], "--formula", "jq", "--target", "arm64_sonoma")
    assert text.code == 0
    assert f"{len(names - {'jq', 'oniguruma'})} formulae of the API files lie outside" in (
        text.stdout.decode()
    )

    whole = await run_cli(*args, "--target", "arm64_sonoma")  # status.json not served
    assert whole.code == 1
    assert whole.json()["subset"] is None
    with bucket_front(boto3.client("s3"), world.app.store.bucket, served=None) as operator:
        recorded = await run_cli(
            "check-client", "--base", operator.url, "--portable-ruby", RUBY, "--json",
            "--target", "arm64_sonoma",
        )  # fmt: skip
    assert recorded.code == 0, recorded.stdout.decode()[-3000:]
    assert recorded.json()["subset"]["source"] == "status.json"

    unknown = await run_cli(*args, "--formula", "no-such", "--target", "arm64_sonoma")
    assert unknown.code == 2
    assert b"no-such" in unknown.stderr


async def test_a_partial_closure_keeps_the_api_back(world: Any, brewfile: Path) -> None:
    """One bottle of the closure failed: the API files stay unpublished."""
    world.emu.set_faults(sha_of(world, "oniguruma", "arm64_sonoma"), [Fault("corrupt")])
    synced = await sync(world, "--brewfile", str(brewfile))
    assert synced.code == 1
    assert synced.json()["published"]["api"].startswith("kept:")
    assert not await api_keys(world)
    result = await status(world)
    assert result.code == 1
    assert result.json()["last_run"]["subset"]["roots"] == ["wget", "jq"]


async def test_a_subset_sync_of_a_full_mirror_keeps_its_api(world: Any) -> None:
    """A full mirror's API files are not replaced by a subset sync's (they would name
    newer bottles of formulae it holds); status says the API was kept back."""
    assert (await sync(world)).code == 0
    before = {k: (await world.app.store.get(k)) for k in await api_keys(world)}
    subset = await sync(world, "--formula", "jq", "--job-id", "jq-only")
    assert subset.code == 0, subset.stderr[-3000:]
    assert subset.json()["published"]["api"].startswith("kept: a subset sync of a mirror")
    assert {k: (await world.app.store.get(k)) for k in await api_keys(world)} == before
    result = await status(world, "--no-upstream")
    assert result.code == 1
    assert any("kept the API files back" in p for p in result.json()["problems"])
    assert result.json()["subset"]["roots"] == ["jq"]
    # Now a subset mirror: the next subset sync publishes.
    again = await sync(world, "--formula", "jq", "--job-id", "jq-again")
    assert again.json()["published"]["api"] == "published"
    assert orjson.loads((await world.app.store.get("status.json"))[0])["subset"]["roots"] == ["jq"]


async def test_status_names_a_running_sync(world: Any) -> None:
    """A live bucket lock is a sync running now: named, and no problem by itself."""
    assert (await sync(world)).code == 0
    lock = BucketLock(world.app.store, "elsewhere-42", ttl=120)
    assert await lock.acquire("2026-12-02-weekly") is None
    try:
        result = await status(world, "--no-upstream")
    finally:
        await lock.release()
    assert result.code == 0, result.stdout.decode()
    running = result.json()["running"]
    assert running["job_id"] == "2026-12-02-weekly"
    assert running["owner"] == "elsewhere-42"
    assert 0 < running["lease_left_s"] <= 121
    assert any("running now" in n for n in result.json()["notes"])
    after = await status(world, "--no-upstream")
    assert after.json()["running"] is None
