"""``mirrord prune`` against moto and the emulator (issue 17, item 1): a formula moves
through three versions, weeks apart, each synced and published as production does; prune
keeps exactly what its rules say, a dry run changes nothing, a crash mid-prune leaves the
hash file and the bucket consistent and the rerun finishes, and a held lock refuses it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess  # nosec B404  # the runbook's aws CLI lines
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from conftest import ROOT, Receiver, days_ago, make_settings, run_cli
from mirrord_dev.emulator import Emulator, EmulatorCatalog, Fault, catalog_from_entries
from mirrord_dev.emulator.content import api_file

from mirrord.adapters.lock import BucketLock
from mirrord.app import App, open_app
from mirrord.core.errors import InputError, LockBusy
from mirrord.core.jobs import Job
from mirrord.core.prune import Rules
from mirrord.daemon import Daemon
from mirrord.lambdas.sync import sync_job
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.job import run_job
from mirrord.services.prune import prune
from mirrord.services.verify import verify

AWS = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "aws"

GHCR = "https://ghcr.io/v2/homebrew/core"
TAGS = ("arm64_tahoe", "sonoma")
VERSIONS = ("1.6", "1.7", "1.8")
# Each version synced on its own date: 1.6 long ago, 1.8 last week.
DATES = (days_ago(100), days_ago(70), days_ago(8))


def entry(name: str, version: str, tags: tuple[str, ...] = TAGS) -> dict[str, Any]:
    files = {}
    for tag in tags:
        sha = hashlib.sha256(f"{name} {version} {tag}".encode()).hexdigest()
        files[tag] = {"cellar": ":any", "url": f"{GHCR}/{name}/blobs/sha256:{sha}", "sha256": sha}
    return {
        "name": name,
        "versions": {"stable": version},
        "revision": 0,
        "bottle": {"stable": {"rebuild": 0, "root_url": GHCR, "files": files}},
    }


def catalog(i: int) -> EmulatorCatalog:
    """Upstream at step ``i``: jq at VERSIONS[i] (new bytes: its own seed), oniguruma
    unchanged throughout (the same bytes: seed 0)."""
    moved = catalog_from_entries([entry("jq", VERSIONS[i])], seed=i + 1)
    same = catalog_from_entries([entry("oniguruma", "6.9.9")], seed=0)
    moved.formulae.extend(same.formulae)
    moved.blobs.update(same.blobs)
    return moved


def jq_keys(version: str) -> set[str]:
    return {f"jq-{version}-{tag}" for tag in TAGS}


@dataclass
class Mirror:
    bucket: str
    emu: Emulator  # serving the newest step
    app: App


async def keys(app: App) -> dict[str, str]:
    """Every key in the bucket → its ETag (what a dry run must leave as it was)."""
    return {o.key: o.etag async for o in app.store.list_objects()}


@pytest.fixture
async def mirror(bucket: str) -> AsyncIterator[Mirror]:
    """Three syncs, one per version, each publishing its API files."""
    for i in range(2):
        async with (
            Emulator(catalog(i)) as emu,
            open_app(make_settings(bucket, emu.api_url, platforms=TAGS)) as app,
        ):
            report = await run_job(app, Job(f"v{i}", DATES[i], reason="schedule"), route="t")
            assert report.complete
    async with (
        Emulator(catalog(2)) as emu,
        open_app(make_settings(bucket, emu.api_url, platforms=TAGS)) as app,
    ):
        report = await run_job(app, Job("v2", DATES[2], reason="schedule"), route="t")
        assert report.complete
        assert report.published is not None
        assert report.published.api == "published"
        yield Mirror(bucket, emu, app)


def rules(n: int = 1, days: int = 30) -> Rules:
    return Rules(n, days, days_ago(0))


async def test_three_versions_prune_keeps_exactly_what_the_rules_say(mirror: Mirror) -> None:
    app = mirror.app
    before = await keys(app)
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert {k for k in hf.bottles if k.startswith("jq-")} == set().union(
        *(jq_keys(v) for v in VERSIONS)
    )
    # keep 2 versions: only 1.6 goes (1.7 is the version before the current)
    result = await prune(app, rules(2), dry_run=False, owner="t")
    assert set(result.plan.entries) == jq_keys("1.6")
    after = await keys(app)
    gone = set(before) - set(after)
    old = [hf.bottles[k] for k in jq_keys("1.6")]
    assert gone == {
        *(e.s3_key for e in old),
        *(f"v2/homebrew/core/jq/blobs/sha256:{e.sha256}" for e in old),
        "v2/homebrew/core/jq/manifests/1.6",
    }
    assert result.freed == sum(e.file_size or 0 for e in old) * 2  # object + blob copy
    hf2, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert set(hf.bottles) - set(hf2.bottles) == jq_keys("1.6")
    assert (await verify(app.store, hf2)).ok
    # keep 1 version: 1.7 goes too; 1.8 (named by the catalog and the API) and
    # oniguruma (one version) stay whatever their age
    result = await prune(app, rules(1, 0), dry_run=False, owner="t")
    assert set(result.plan.entries) == jq_keys("1.7")
    hf3, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert {k for k in hf3.bottles if k.startswith("jq-")} == jq_keys("1.8")
    assert {k for k in hf3.bottles if k.startswith("oniguruma-")} == {
        f"oniguruma-6.9.9-{t}" for t in TAGS
    }
    assert (await verify(app.store, hf3)).ok
    # a rerun finds nothing more
    again = await prune(app, rules(1, 0), dry_run=False, owner="t")
    assert (again.plan.entries, again.plan.objects, again.plan.v2) == ({}, [], [])


async def test_what_the_published_api_files_name_stays(mirror: Mirror) -> None:
    """The mirror still publishes API files that send clients to jq 1.7 (here: written
    back as they were after the second sync): 1.7 stays, though the catalog has moved on
    and keep-versions 1 would let it go."""
    app = mirror.app
    served = orjson.dumps(catalog(1).formulae).replace(b"{registry}", b"https://ghcr.io")
    body = api_file(served, "formula.jws.json")
    assert body is not None
    await app.store.put("api/formula.jws.json", body, content_type="application/json")
    result = await prune(app, rules(1, 0), dry_run=False, owner="t")
    assert set(result.plan.entries) == jq_keys("1.6")
    assert result.plan.kept["named"] == 6  # jq 1.7 and 1.8, oniguruma
    present = set(await keys(app))
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    for key in jq_keys("1.7"):
        assert hf.bottles[key].s3_key in present
        assert f"v2/homebrew/core/jq/blobs/sha256:{hf.bottles[key].sha256}" in present
    assert "v2/homebrew/core/jq/manifests/1.7" in present
    # an API file prune cannot read refuses it: it may name anything
    await app.store.put("api/formula.jws.json", b"{", content_type="application/json")
    with pytest.raises(InputError, match="unreadable"):
        await prune(app, rules(1, 0), dry_run=True, owner="t")


def runbook_restore() -> tuple[str, str]:
    """The runbook's two `aws s3api` lines of the restore, as an operator copies them."""
    text = (ROOT / "docs" / "operations.md").read_text().split("## Pruning old bottles")[1]
    lines = [line for line in text.splitlines() if line.startswith("aws s3api ")]
    find = next(line for line in lines if line.startswith("aws s3api list-object-versions"))
    restore = next(line for line in lines if line.startswith("aws s3api delete-object"))
    return find, restore


def aws_cli(line: str, **env: str) -> str:
    """One runbook line under bash, with the test extra's aws CLI against moto."""
    if not AWS.exists():
        pytest.fail(f"{AWS} is missing: install the test extra (make venv)")
    path = f"{AWS.parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(  # bash running a line of our own runbook
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", line],
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_pruned_bottle_comes_back_from_its_noncurrent_version(
    mirror: Mirror, moto_s3: Any
) -> None:
    """The runbook's restore (docs/operations.md, "Pruning old bottles"), its two aws CLI
    lines run as written: on a versioned bucket a prune leaves delete markers; deleting
    the marker brings the object back, and rebuild-hash records it again."""
    app = mirror.app
    moto_s3.put_bucket_versioning(
        Bucket=mirror.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    result = await prune(app, rules(1, 0), dry_run=False, owner="t")
    old = hf.bottles["jq-1.6-sonoma"]
    assert old.s3_key in result.plan.objects
    assert await app.store.head(old.s3_key) is None
    find, restore = runbook_restore()
    for key in (old.s3_key, f"v2/homebrew/core/jq/blobs/sha256:{old.sha256}"):
        found = aws_cli(find, BUCKET=mirror.bucket, KEY=key)
        [(marked, version)] = [line.split("\t") for line in found.splitlines()]
        assert marked == key
        aws_cli(restore, BUCKET=mirror.bucket, KEY=key, MARKER_VERSION_ID=version)
        head = await app.store.head(key)
        assert head is not None
        assert head.metadata.get("sha256") == old.sha256
    out = await run_cli("rebuild-hash", "--json", env={"MIRRORD_BUCKET": mirror.bucket})
    assert out.code == 0, out.stderr
    back, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert back.bottles["jq-1.6-sonoma"].s3_key == old.s3_key


async def test_a_superseded_rebuild_goes_with_its_index_and_blob(mirror: Mirror) -> None:
    """jq 1.8 rebottled upstream (rebuild 1, new bytes), synced yesterday: the entries move
    to the new objects and verify lists the old ones as superseded. Prune deletes them,
    their blobs and the 1.8 index, and keeps the new rebuild's (1.8-1)."""
    rebuilt = entry("jq", "1.8")
    rebuilt["bottle"]["stable"]["rebuild"] = 1
    upstream = catalog_from_entries([rebuilt], seed=9)
    same = catalog(2)
    upstream.formulae.extend(f for f in same.formulae if f["name"] == "oniguruma")
    upstream.blobs.update(same.blobs)
    async with (
        Emulator(upstream) as emu,
        open_app(make_settings(mirror.bucket, emu.api_url, platforms=TAGS)) as moved,
    ):
        report = await run_job(moved, Job("v3", days_ago(1), reason="schedule"), route="t")
        assert report.complete
        hf, _ = await load_hashfile(moved.store, moved.settings.hash_key)
        assert len((await verify(moved.store, hf)).superseded) == 2
        result = await prune(moved, rules(2, 0), dry_run=False, owner="t")
        gone = set(result.plan.objects)
        assert {k.partition("/")[2] for k in gone} == {
            *(f"jq-1.6.{t}.bottle.tar.gz" for t in TAGS),
            *(f"jq-1.8.{t}.bottle.tar.gz" for t in TAGS),
        }
        present = set(await keys(moved))
        assert "v2/homebrew/core/jq/manifests/1.8" not in present
        assert "v2/homebrew/core/jq/manifests/1.8-1" in present
        assert "v2/homebrew/core/jq/manifests/1.7" in present
        after, _ = await load_hashfile(moved.store, moved.settings.hash_key)
        checked = await verify(moved.store, after)
        assert checked.ok
        assert checked.superseded == ()


async def test_keep_days_keeps_young_bottles(mirror: Mirror) -> None:
    """1.7 was stored 70 days ago: keep 80 days keeps it, though it is no longer current."""
    result = await prune(mirror.app, rules(1, 80), dry_run=True, owner="t")
    assert set(result.plan.entries) == jq_keys("1.6")
    assert result.plan.kept["recent"] == 2


async def test_dry_run_lists_and_changes_nothing(mirror: Mirror) -> None:
    app = mirror.app
    before = await keys(app)
    hashfile_before = await app.store.get(app.settings.hash_key)
    result = await prune(app, rules(1, 0), dry_run=True, owner="t")
    assert set(result.plan.entries) == jq_keys("1.6") | jq_keys("1.7")
    assert len(result.plan.objects) == 4
    assert result.plan.freed > 0
    assert result.freed == 0
    assert await keys(app) == before  # not even the lock was written
    assert await app.store.get(app.settings.hash_key) == hashfile_before
    # the CLI says the same, as JSON and as text
    env = {"MIRRORD_BUCKET": mirror.bucket, "MIRRORD_API_URL": mirror.emu.api_url}
    out = await run_cli(
        "prune", "--dry-run", "--keep-versions", "1", "--keep-days", "0", "--json", env=env
    )
    assert out.code == 0, out.stderr
    body = out.json()
    assert body["dry_run"] is True
    assert sorted(body["objects"]) == sorted(result.plan.objects)
    assert body["would_free_bytes"] == result.plan.freed
    assert body["freed_bytes"] == 0
    text = await run_cli("prune", "--dry-run", "--keep-versions", "1", "--keep-days", "0", env=env)
    assert b"dry run, nothing changed" in text.stdout
    assert result.plan.objects[0].encode() in text.stdout
    assert await keys(app) == before


@pytest.mark.parametrize(
    ("crash_at", "loose"),
    [
        ("after_prune_cut", 4),  # the hash file cut, nothing deleted
        ("prune_delete:3", 4),  # two of the six brew-6 keys deleted
        ("prune_delete:8", 3),  # every brew-6 key and one dated object deleted
    ],
)
async def test_a_crash_mid_prune_leaves_it_consistent_and_the_rerun_finishes(
    mirror: Mirror, crash_at: str, loose: int
) -> None:
    """Killed mid-prune: every entry the hash file holds still has its object (the leftovers
    are objects no entry names), everything the API files name is there, and the rerun
    deletes the rest."""
    app = mirror.app
    env = {
        "MIRRORD_BUCKET": mirror.bucket,
        "MIRRORD_API_URL": mirror.emu.api_url,
        "MIRRORD_CRASH_AT": crash_at,
        "MIRRORD_CONCURRENCY": "1",  # one delete at a time: the nth is a known key
    }
    crashed = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", env=env)
    assert crashed.code == -9, crashed.stderr
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert not (jq_keys("1.6") | jq_keys("1.7")) & set(hf.bottles)  # the cut came first
    checked = await verify(app.store, hf)
    # nothing recorded that is gone; the leftovers are objects no entry names
    assert [p for p in checked.problems if p.kind != "orphaned"] == []
    assert len(checked.problems) == loose
    present = set(await keys(app))
    assert {e.s3_key for k, e in hf.bottles.items()} <= present
    left = await prune(app, rules(1, 0), dry_run=True, owner="t")
    assert left.plan.unrecorded == loose  # the dated objects go last
    assert left.plan.entries == {}
    # the rerun (the lock of the killed process is taken over: same host, pid gone)
    del env["MIRRORD_CRASH_AT"]
    rerun = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", "--json", env=env)
    assert rerun.code == 0, rerun.stderr
    assert rerun.json()["unrecorded"] == loose
    after = set(await keys(app))
    assert not [k for k in after if "/jq-1.6." in k or "/jq-1.7." in k]
    assert not [
        k
        for k in after
        if k.startswith("v2/homebrew/core/jq/manifests/1.") and not k.endswith("1.8")
    ]
    assert sum("/jq/blobs/" in k for k in after) == 2  # 1.8's two
    final = await prune(app, rules(1, 0), dry_run=True, owner="t")
    assert (final.plan.objects, final.plan.v2) == ([], [])


async def test_prune_refuses_while_a_sync_holds_the_lock(mirror: Mirror) -> None:
    app = mirror.app
    lock = BucketLock(app.store, "other-host", ttl=300)
    assert await lock.acquire("a-sync") is None
    try:
        before = await keys(app)
        with pytest.raises(LockBusy):
            await prune(app, rules(1, 0), dry_run=False, owner="t")
        with pytest.raises(LockBusy):
            await prune(app, rules(1, 0), dry_run=True, owner="t")
        env = {"MIRRORD_BUCKET": mirror.bucket, "MIRRORD_API_URL": mirror.emu.api_url}
        out = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", env=env)
        assert out.code == 1
        assert b"another sync holds the bucket" in out.stderr
        assert await keys(app) == before
    finally:
        await lock.release()


async def test_prune_refuses_a_partial_catalog(mirror: Mirror) -> None:
    """A catalog with a rejected entry may lack the formula an old bottle belongs to."""
    bad = catalog(2)
    bad.formulae.append({"name": "broken", "versions": "not an object"})
    async with Emulator(bad) as emu:
        settings = make_settings(mirror.bucket, emu.api_url, platforms=TAGS)
        async with open_app(settings) as app:
            before = await keys(app)
            with pytest.raises(InputError, match="rejected"):
                await prune(app, rules(1, 0), dry_run=False, owner="t")
            assert await keys(app) == before


async def test_prune_refuses_after_a_sync_that_was_not_clean(mirror: Mirror) -> None:
    """jq 1.9 comes out and GHCR 404s its bottles: that sync fails, and status.json's
    last_run says so. A prune then refuses (exit 1, naming the job; a dry run still
    lists); after a clean sync it goes ahead."""
    moved = catalog_from_entries([entry("jq", "1.9")], seed=9)
    same = catalog(2)
    moved.formulae.extend(f for f in same.formulae if f["name"] == "oniguruma")
    moved.blobs.update(same.blobs)
    async with Emulator(moved) as emu:
        for file in moved.formulae[0]["bottle"]["stable"]["files"].values():
            emu.set_faults(file["sha256"], [Fault("status", status=404, times=None)])
        settings = make_settings(mirror.bucket, emu.api_url, platforms=TAGS, max_attempts=1)
        async with open_app(settings) as app:
            report = await run_job(app, Job("v3", days_ago(0), reason="schedule"), route="t")
            assert report.failed
            before = await keys(app)
            with pytest.raises(InputError, match="job v3"):
                await prune(app, rules(1, 0), dry_run=False, owner="t")
            env = {"MIRRORD_BUCKET": mirror.bucket, "MIRRORD_API_URL": emu.api_url}
            out = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", env=env)
            assert out.code == 1
            assert b"ended failed: prune only after a clean sync" in out.stderr
            looked = await prune(app, rules(1, 0), dry_run=True, owner="t")
            assert looked.plan.entries
            assert await keys(app) == before
            emu.clear_faults()
            report = await run_job(app, Job("v4", days_ago(0), reason="schedule"), route="t")
            assert report.complete
            out = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", "--json",
                                env=env)  # fmt: skip
            assert out.code == 0, out.stderr[-2000:]
            assert set(out.json()["entries"]) >= jq_keys("1.8")
            # Not a terminal: the deletes' progress as log lines of their own.
            [done] = [e for e in out.logs() if e.get("event") == "prune_progress"]
            assert done["done"] == done["total"] == out.json()["deleted"]


async def test_prune_refuses_when_the_catalog_cannot_be_fetched(mirror: Mirror) -> None:
    env = {"MIRRORD_BUCKET": mirror.bucket, "MIRRORD_API_URL": "http://127.0.0.1:1/formula.json"}
    before = await keys(mirror.app)
    out = await run_cli("prune", "--keep-versions", "1", "--keep-days", "0", env=env)
    assert out.code == 1
    assert await keys(mirror.app) == before


async def test_the_daemon_prunes_after_a_clean_scheduled_sync_only(
    mirror: Mirror, receiver: Receiver
) -> None:
    """MIRRORD_PRUNE_AFTER_SYNC: a manual job is not followed by a prune, the weekly
    (scheduled) one is, and Slack gets its line with the bytes freed."""
    async with get_session().create_client("sqs") as sqs:
        queue_url = (await sqs.create_queue(QueueName=mirror.bucket))["QueueUrl"]
        settings = make_settings(
            mirror.bucket,
            mirror.emu.api_url,
            platforms=TAGS,
            queue_url=queue_url,
            slack_webhook_url=receiver.url,
            heartbeat_seconds=1.0,
            prune_after_sync=True,
            prune_keep_versions=1,
            prune_keep_days=0,
        )
        async with open_app(settings) as app:
            assert app.queue is not None
            await app.queue.send(Job("by-hand", days_ago(0), TAGS, reason="manual"))
            await app.queue.send(Job("weekly", days_ago(0), TAGS, reason="schedule"))
            stop = asyncio.Event()
            daemon = Daemon(app, app.queue, stop=stop, owner="d1")
            serving = asyncio.create_task(daemon.serve())

            def pruned() -> list[str]:
                texts = [str(b.get("text", "")) for b in receiver.bodies]
                return [t for t in texts if t.startswith("mirrord prune")]

            for _ in range(600):  # a bound on the wait, not an assertion on time
                if pruned() or serving.done():
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(serving, 30)
            assert daemon.jobs_done == 2
            assert len(pruned()) == 1, receiver.bodies
            assert "freed" in pruned()[0]
            hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert {k for k in hf.bottles if k.startswith("jq-")} == jq_keys("1.8")


async def test_the_sync_lambda_prunes_after_a_clean_scheduled_sync(mirror: Mirror) -> None:
    """The weekly job is small, so the sync Lambda runs it: it prunes too, and says so."""
    settings = make_settings(
        mirror.bucket,
        mirror.emu.api_url,
        platforms=TAGS,
        prune_after_sync=True,
        prune_keep_versions=1,
        prune_keep_days=0,
    )
    async with open_app(settings) as app:
        manual = await sync_job(app, Job("m", days_ago(0), TAGS, reason="manual"), lambda: 900_000)
        assert manual["pruned"] is None
        out = await sync_job(app, Job("w", days_ago(0), TAGS, reason="schedule"), lambda: 900_000)
        assert out["pruned"]["freed_bytes"] > 0
        assert sorted(out["pruned"]["entries"]) == sorted(jq_keys("1.6") | jq_keys("1.7"))
        hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    assert {k for k in hf.bottles if k.startswith("jq-")} == jq_keys("1.8")


async def test_a_deployed_subset_mirror_prunes_after_its_own_weekly_job(mirror: Mirror) -> None:
    """With MIRRORD_FORMULAE (config.yaml's brewfile) the weekly job carries the subset's
    roots: it is what the mirror holds, so a prune follows it; a scheduled job naming
    other formulae is not followed by one."""
    settings = make_settings(
        mirror.bucket,
        mirror.emu.api_url,
        platforms=TAGS,
        formulae=("jq",),
        prune_after_sync=True,
        prune_keep_versions=1,
        prune_keep_days=0,
    )
    async with open_app(settings) as app:
        other = Job("o", days_ago(0), TAGS, formulae=("oniguruma",), reason="schedule")
        assert (await sync_job(app, other, lambda: 900_000))["pruned"] is None
        weekly = Job("w", days_ago(0), TAGS, formulae=("jq",), reason="schedule")
        out = await sync_job(app, weekly, lambda: 900_000)
        assert sorted(out["pruned"]["entries"]) == sorted(jq_keys("1.6") | jq_keys("1.7"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MIRRORD_PRUNE_KEEP_VERSIONS", "0"),
        ("MIRRORD_PRUNE_KEEP_VERSIONS", "101"),
        ("MIRRORD_PRUNE_KEEP_DAYS", "3651"),
    ],
)
async def test_bad_rules_stop_at_start(bucket: str, variable: str, value: str) -> None:
    out = await run_cli("prune", "--dry-run", env={"MIRRORD_BUCKET": bucket, variable: value})
    assert out.code == 2
    assert variable.encode() in out.stderr
    flag = await run_cli("prune", "--keep-versions", "0", env={"MIRRORD_BUCKET": bucket})
    assert flag.code == 2
    assert b"--keep-versions" in flag.stderr
