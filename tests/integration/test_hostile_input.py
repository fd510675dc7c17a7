"""Issue 12, hostile and careless input: catalog entries that would wedge the hash file,
numbers from upstream that crashed the program, formulae whose keys collide, a
`rebuild-hash` that raced a sync, and a `verify` that stayed red after every rebottle.

Real peers throughout: the emulator over loopback HTTP for upstream, the moto server for
S3, the CLI as a separate process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hostile
import orjson
import pytest
from aiohttp import web
from conftest import DATE, days_ago, make_settings, run_cli
from faultproxy import FaultProxy
from mirrord_dev.emulator import Emulator, catalog_from_entries, sample_catalog
from mirrord_dev.emulator.content import SAMPLE_LARGE
from mirrord_dev.emulator.server import parse_range

from mirrord.adapters.lock import BucketLock
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.sqs import _receive_count
from mirrord.adapters.web import fetch_catalog
from mirrord.app import App, open_app
from mirrord.core import catalog as catalog_module
from mirrord.core.catalog import formula_from_api, parse_catalog
from mirrord.core.errors import FormulaError, HashFileError
from mirrord.core.hashfile import HashFile, dumps, entry_problem, parse
from mirrord.core.jobs import Job
from mirrord.core.models import Bottle, HashEntry
from mirrord.core.plan import sizes_from_index
from mirrord.core.retry import parse_retry_after
from mirrord.services.sync import Tuning, run_sync
from mirrord.services.verify import hash_key_of

SHA = "ab" * 32


def formula(
    name: str, version: str, *, revision: Any = 0, rebuild: Any = 0, tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    tags = tags or ("arm64_tahoe",)
    files = {
        tag: {"url": f"https://ghcr.io/v2/homebrew/core/{name}/blobs/sha256:{SHA}", "sha256": SHA}
        for tag in tags
    }
    return {
        "name": name,
        "versions": {"stable": version},
        "revision": revision,
        "bottle": {"stable": {"rebuild": rebuild, "files": files}},
    }


def both_paths(entries: list[Any]) -> catalog_module.Catalog:
    """parse_catalog's answer, after checking the msgspec path gave way to the checked one
    (or agreed with it): both paths must refuse the same entries."""
    raw = json.dumps(entries).encode()  # orjson cannot write integers past 64 bits
    fast = catalog_module._fast(raw)
    slow = catalog_module._slow(raw)
    assert fast is None or fast == slow
    parsed = parse_catalog(raw)
    assert parsed.formulae == slow.formulae
    assert [str(r) for r in parsed.rejected] == [str(r) for r in slow.rejected]
    return slow


# --- 1. one catalog entry must not wedge the mirror ------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("revision", 10**60),
        ("revision", 2**64),
        ("rebuild", 10**60),
        ("rebuild", 2**64),
    ],
)
def test_revision_or_rebuild_too_long_for_a_key_is_rejected_alone(field: str, bad: int) -> None:
    """A revision or rebuild past 64 bits (20 digits, what the hash-file reader's key
    lengths allow) is rejected naming the field, on both parser paths; the rest go on."""
    entry = formula("jq", "1.7.1", **{field: bad})
    catalog = both_paths([entry, formula("wget", "1.25.0")])
    assert [f.name for f in catalog.formulae] == ["wget"]
    [rejected] = catalog.rejected
    assert rejected.name == "jq"
    assert field in rejected.reason


def test_the_largest_accepted_revision_and_rebuild_still_make_readable_keys() -> None:
    """2**64 - 1 is accepted, and its hash key and bottle key read back."""
    top = 2**64 - 1
    tag = "arm64_golden_gate"
    long_name, long_version = "n" * 128, "v" * 64
    catalog = both_paths([formula(long_name, long_version, revision=top, rebuild=top, tags=(tag,))])
    [f] = catalog.formulae
    bottle = Bottle(f.name, f.pkg_version, tag, f.rebuild, SHA, "https://x/y")
    entry = HashEntry(SHA, DATE, 1, bottle.s3_key(DATE))
    assert entry_problem(bottle.hash_key, entry) is None
    assert parse(dumps(HashFile({bottle.hash_key: entry}))).bottles == {bottle.hash_key: entry}


def test_an_overlong_tag_is_rejected() -> None:
    """Tags are bounded as the reader bounds them (32 characters)."""
    catalog = both_paths([formula("jq", "1", tags=("a" * 33,)), formula("wget", "1")])
    assert [f.name for f in catalog.formulae] == ["wget"]
    assert "tag" in catalog.rejected[0].reason


def test_a_huge_python_int_is_refused_without_quoting_it() -> None:
    """repr() of an int past 4,300 digits raises: the error must not try."""
    with pytest.raises(FormulaError, match="revision must be an int from 0 to"):
        formula_from_api(formula("jq", "1", revision=10**5000))


def test_dumps_refuses_an_entry_the_reader_would_refuse_naming_the_key() -> None:
    """Never write a hash file that every later sync and verify would stop at."""
    good_key = "jq-1.7.1-sonoma"
    good = HashEntry(SHA, DATE, 5, f"{DATE}/jq-1.7.1.sonoma.bottle.tar.gz")
    # The longest name and version the catalog takes, and a revision of 61 digits.
    stem = f"{'n' * 128}-{'v' * 64}_{10**60}"
    bad_key = f"{stem}-sonoma"
    bad = HashEntry(SHA, DATE, 5, f"{DATE}/{stem}.sonoma.bottle.tar.gz")
    assert entry_problem(good_key, good) is None
    problem = entry_problem(bad_key, bad)
    assert problem is not None
    assert bad_key[:40] in problem
    with pytest.raises(HashFileError, match="refusing to write") as caught:
        dumps(HashFile({good_key: good, bad_key: bad}))
    assert bad_key[:40] in str(caught.value)
    # What dumps refused is what the reader refuses:
    raw = {"sha256": SHA, "download_date": DATE, "file_size": 5, "s3_key": bad.s3_key}
    with pytest.raises(HashFileError):
        parse(orjson.dumps({"version": 2, "bottles": {bad_key: raw}}))
    for size in (-1, 2**64, True, 1.0):
        wrong = HashEntry(SHA, DATE, size, good.s3_key)  # type: ignore[arg-type]
        assert entry_problem(good_key, wrong) is not None


@dataclass
class Upstream:
    """An emulator serving the blobs, and the catalog as given (which orjson, and so the
    emulator itself, cannot write: integers past 64 bits)."""

    env: dict[str, str]
    store: S3Store


@pytest.fixture
async def wide_revision(bucket_name: str) -> AsyncIterator[Upstream]:
    # The longest name and version the catalog takes: with a revision of 61 digits, the
    # hash key is longer than the reader allows.
    entries = [formula("n" * 128, "v" * 64), formula("wget", "1.25.0")]
    served = catalog_from_entries(entries)
    async with Emulator(served) as blobs:
        hostile = orjson.loads(
            orjson.dumps(served.formulae).replace(b"{registry}", blobs.registry_url.encode())
        )
        hostile[0]["revision"] = 10**60
        async with (
            Emulator(served, raw_api=json.dumps(hostile).encode()) as api,
            open_app(make_settings(bucket_name, api.api_url)) as app,
        ):
            await app.s3.create_bucket(Bucket=bucket_name)
            env = {
                "MIRRORD_BUCKET": bucket_name,
                "MIRRORD_API_URL": api.api_url,
                "MIRRORD_PLATFORMS": "arm64_tahoe",
            }
            yield Upstream(env, app.store)


async def test_a_formula_with_revision_10_to_the_60_does_not_wedge_later_runs(
    wide_revision: Upstream,
) -> None:
    """The finding: sync exited 0 and wrote a key the reader refuses, so every later
    sync and verify exited 1. Now the formula is rejected, the rest is mirrored, and the
    next sync and verify are green."""
    first = await run_cli("sync", "--json", "--date", DATE, env=wide_revision.env)
    assert first.code == 0, first.stderr[-2000:]
    report = first.json()
    assert [r["name"] for r in report["rejected"]] == ["n" * 128]
    assert "revision" in report["rejected"][0]["error"]
    assert report["downloaded"] == 1
    again = await run_cli("sync", "--json", "--date", DATE, env=wide_revision.env)
    assert again.code == 0, again.stderr[-2000:]
    verify = await run_cli("verify", env=wide_revision.env)
    assert verify.code == 0, verify.stdout + verify.stderr[-2000:]


# --- 2. numbers from upstream are parsed, never trusted ---------------------------------

NOT_NUMBERS = ["²", "10²", "١٢", "１２", "1_0", "+5", "-1", "1e3", "0x10", "9" * 5000, "", " "]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_retry_after_that_is_no_plain_number_is_ignored(value: str) -> None:
    """'²' passed str.isdigit() and then made float() raise (a traceback in the CLI and
    a dead daemon); other scripts' digits were read as numbers. Now: None, the policy's
    own backoff."""
    assert parse_retry_after(value, 0.0) is None


def test_retry_after_plain_seconds_and_dates_still_count() -> None:
    assert parse_retry_after(" 120 ", 0.0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:02:00 GMT", 0.0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:02:00 -0000", 0.0) == 120.0  # UTC, not local


@pytest.mark.parametrize("size", NOT_NUMBERS)
def test_index_size_annotation_that_is_no_plain_number_is_left_out(size: str) -> None:
    """An image index announcing '10²' bytes made int() raise in the enqueuer; '١٢' was
    read as 12. Such a size is left out (the estimate falls back), the others kept."""
    index = {
        "manifests": [
            {
                "annotations": {
                    "sh.brew.bottle.digest": f"sha256:{'a' * 64}",
                    "sh.brew.bottle.size": size,
                }
            },
            {
                "annotations": {
                    "sh.brew.bottle.digest": f"sha256:{'b' * 64}",
                    "sh.brew.bottle.size": "1024",
                }
            },
        ]
    }
    assert sizes_from_index(index) == {"b" * 64: 1024}


def test_sqs_receive_count_that_is_no_plain_number_counts_as_first() -> None:
    """The daemon backs off 2**count seconds: an unreadable or absurd count is 1."""
    assert _receive_count("3") == 3
    for value in [*NOT_NUMBERS, None, 3, "9" * 7]:
        assert _receive_count(value) == 1


def test_emulator_ignores_a_range_it_cannot_read() -> None:
    """A Range of 5,000 digits made int() raise (a 500); now it is ignored, as RFC 9110
    says of a header the server cannot parse."""
    assert parse_range(f"bytes={'1' * 5000}-", 100) is None
    assert parse_range("bytes=１-２", 100) is None
    assert parse_range("bytes=10-19", 100) == (10, 20)


async def test_a_superscript_retry_after_is_retried_not_a_traceback(app: App) -> None:
    """The finding: `Retry-After: ²` ended the CLI with a ValueError traceback. Now the
    503 is retried on the policy's own backoff and the sync completes."""
    throttled = hostile.Bottle("jq", behaviour="retry_after", retry_after="²")
    async with hostile.HostileUpstream([throttled]) as up:
        env = {
            "MIRRORD_BUCKET": app.settings.bucket,
            "MIRRORD_API_URL": up.api_url,
            "MIRRORD_PLATFORMS": "arm64_tahoe",
            "MIRRORD_BREW_MIRROR": "false",
        }
        result = await run_cli("sync", "--json", "--date", DATE, env=env)
    assert b"Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.code == 0, result.stderr[-2000:]
    assert result.json()["downloaded"] == 1
    assert up.requests[throttled.sha256] == 2


# --- 7. keys that collide across formulae -----------------------------------------------


def test_formulae_spelling_one_name_and_version_are_both_rejected_naming_each_other() -> None:
    """`python` at `tk@3.12-3.12.1` and `python-tk@3.12` at `3.12.1` share every hash key
    and file name; the second was dropped unseen and the sync exited 0. Now both are
    rejected, each naming the other, on both parser paths; the rest go on."""
    catalog = both_paths(
        [
            formula("python", "tk@3.12-3.12.1"),
            formula("wget", "1.25.0"),
            formula("python-tk@3.12", "3.12.1"),
        ]
    )
    assert [f.name for f in catalog.formulae] == ["wget"]
    reasons = {r.name: r.reason for r in catalog.rejected}
    assert set(reasons) == {"python", "python-tk@3.12"}
    assert "'python-tk@3.12'" in reasons["python"]
    assert "'python'" in reasons["python-tk@3.12"]
    assert all("collides" in r for r in reasons.values())


def test_a_revision_can_make_the_collision_and_three_collide_at_once() -> None:
    """pkg_version carries the revision (`a` at 1-2 revision 3 and `a-1` at 2 revision 3
    are both `a-1-2_3`), and a group can hold three: every member is refused."""
    catalog = both_paths(
        [
            formula("a", "1-2", revision=3),
            formula("a-1", "2", revision=3),
            formula("a-1-2", "0"),  # a-1-2-0: no collision with a-1-2_3
            formula("x", "y-z-0"),
            formula("x-y", "z-0"),
            formula("x-y-z", "0"),
        ]
    )
    assert [f.name for f in catalog.formulae] == ["a-1-2"]
    reasons = {r.name: r.reason for r in catalog.rejected}
    assert set(reasons) == {"a", "a-1", "x", "x-y", "x-y-z"}
    assert "'x-y' and 1 more" in reasons["x"]


async def test_colliding_formulae_are_reported_in_the_sync_and_not_stored(
    bucket_name: str,
) -> None:
    """End to end: both appear in the report's `rejected`, neither is downloaded."""
    entries = [
        formula("python", "tk@3.12-3.12.1"),
        formula("python-tk@3.12", "3.12.1"),
        formula("wget", "1.25.0"),
    ]
    async with (
        Emulator(catalog_from_entries(entries)) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        env = {
            "MIRRORD_BUCKET": bucket_name,
            "MIRRORD_API_URL": emu.api_url,
            "MIRRORD_PLATFORMS": "arm64_tahoe",
        }
        result = await run_cli("sync", "--json", "--date", DATE, env=env)
        assert result.code == 0, result.stderr[-2000:]
        report = result.json()
        assert {r["name"] for r in report["rejected"]} == {"python", "python-tk@3.12"}
        assert report["downloaded"] == 1
        stored = {o.key async for o in app.store.list_objects()}
        assert f"{DATE}/wget-1.25.0.arm64_tahoe.bottle.tar.gz" in stored
        assert not any(k.startswith(f"{DATE}/python") for k in stored)


# --- 8. rebuild-hash under the bucket lock ----------------------------------------------


@dataclass
class Mirror:
    app: App
    env: dict[str, str]


async def sync_into(app: App, api_url: str, date: str) -> None:
    catalog = await fetch_catalog(app.http, api_url, app.backoff)
    report = await run_sync(
        Job("t", date, ("arm64_tahoe",)),
        catalog,
        app.store,
        app.registry,
        Tuning(4, 5 * 2**20, 100, 60.0),
        hash_key="bottles_hash.json",
    )
    assert report.exit_code == 0, report.failed


@pytest.fixture
async def mirror(bucket_name: str) -> AsyncIterator[Mirror]:
    """The sample catalog synced for arm64_tahoe."""
    async with (
        Emulator(sample_catalog()) as emu,
        open_app(make_settings(bucket_name, emu.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        await sync_into(app, emu.api_url, DATE)
        yield Mirror(app, {"MIRRORD_BUCKET": bucket_name, "MIRRORD_API_URL": emu.api_url})


async def stored(store: S3Store, key: str) -> bytes:
    found = await store.get(key)
    assert found is not None, key
    return found[0]


async def test_rebuild_hash_while_a_sync_holds_the_lock_exits_1_and_changes_nothing(
    mirror: Mirror,
) -> None:
    """rebuild-hash took no lock: run during a sync it replaced the sync's checkpoints.
    Now it exits 1 naming the holder and writes nothing; once the lock is free it runs,
    and releases the lock for the next sync."""
    store = mirror.app.store
    sync = BucketLock(store, "fargate-task-7", ttl=600)
    assert await sync.acquire("2026-11-22-weekly") is None
    hash_before, lock_before = (
        await stored(store, "bottles_hash.json"),
        await stored(store, "sync.lock"),
    )
    busy = await run_cli("rebuild-hash", env=mirror.env)
    assert busy.code == 1
    assert b"another sync holds the bucket: fargate-task-7" in busy.stderr
    assert await stored(store, "bottles_hash.json") == hash_before
    assert await stored(store, "sync.lock") == lock_before

    await sync.release()
    done = await run_cli("rebuild-hash", "--json", env=mirror.env)
    assert done.code == 0, done.stderr[-2000:]
    assert parse(await stored(store, "bottles_hash.json")).bottles == parse(hash_before).bottles
    assert await BucketLock(store, "next-sync", ttl=60).acquire("next") is None


@dataclass
class PausingProxy(FaultProxy):
    """S3 through the fault proxy, which runs ``before_head`` once, before forwarding
    the first HEAD of an object: a moment after rebuild-hash has listed the bucket (the
    HEAD of the bucket itself, the CLI's first question, is not one)."""

    before_head: Callable[[], Awaitable[None]] | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_object = request.path.strip("/").count("/") >= 1
        if request.method == "HEAD" and is_object and self.before_head is not None:
            hook, self.before_head = self.before_head, None
            await hook()
        return await super()._handle(request)


async def test_a_checkpoint_landing_during_rebuild_hash_is_kept_not_overwritten(
    mirror: Mirror, moto_url: str
) -> None:
    """A writer that ignores the lock (an older mirrord, a sync whose lease lapsed)
    checkpoints after rebuild-hash listed the bucket. rebuild-hash read the ETag only
    after listing, so it wrote over the checkpoint: the entry was lost. Now it read the
    file first; its conditional write fails (exit 1, run it again) and the entry stays."""
    store = mirror.app.store
    body, etag = (await store.get("bottles_hash.json")) or (b"", "")
    hf = parse(body)
    key, entry = next(iter(sorted(hf.bottles.items())))
    late_key = f"late-1.0-{key.rsplit('-', 1)[1]}"
    late = HashEntry(entry.sha256, entry.download_date, entry.file_size, entry.s3_key)

    async def checkpoint() -> None:
        grown = HashFile({**hf.bottles, late_key: late}, hf.last_updated)
        await store.put_if(
            "bottles_hash.json", dumps(grown), etag=etag, content_type="application/json"
        )

    async with PausingProxy(moto_url, before_head=checkpoint) as proxy:
        result = await run_cli("rebuild-hash", env={**mirror.env, "AWS_ENDPOINT_URL": proxy.url})
    assert result.code == 1
    assert b"changed while rebuild-hash ran" in result.stderr
    assert late_key in parse(await stored(store, "bottles_hash.json")).bottles
    assert await BucketLock(store, "next-sync", ttl=60).acquire("next") is None


# --- 13. verify after an ordinary rebottle ----------------------------------------------


@pytest.mark.parametrize(
    ("s3_key", "hash_key"),
    [
        (f"{DATE}/jq-1.7.1.arm64_sonoma.bottle.tar.gz", "jq-1.7.1-arm64_sonoma"),
        (f"{DATE}/jq-1.7.1.arm64_sonoma.bottle.1.tar.gz", "jq-1.7.1-arm64_sonoma"),
        (f"{DATE}/python@3.13-3.13.1_1.all.bottle.12.tar.gz", "python@3.13-3.13.1_1-all"),
        (f"{DATE}/a.bottle-1.0.sonoma.bottle.tar.gz", "a.bottle-1.0-sonoma"),
        ("bottles_hash.json", None),
        ("v2/homebrew/core/jq/blobs/sha256:" + "a" * 64, None),
    ],
)
def test_a_file_name_maps_back_to_its_hash_key(s3_key: str, hash_key: str | None) -> None:
    assert hash_key_of(s3_key) == hash_key


async def test_verify_reports_the_previous_rebuild_as_superseded_not_orphaned(
    mirror: Mirror,
) -> None:
    """Upstream rebottles jq (rebuild 1, new bytes) and the next sync stores it under
    its new name: the old object is no longer in the file. verify called it "orphaned"
    and exited 1 after every rebottle, and rebuild-hash did not clear it. Now it is
    listed as superseded and verify exits 0; a bottle no entry names is still orphaned."""
    entries = orjson.loads(
        resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes()
    )
    jq = next(e for e in entries if e["name"] == "jq")
    jq["bottle"]["stable"]["rebuild"] = 1

    def size_of(name: str, tag: str) -> int:  # the sample's sizes; jq's new bottle differs
        return 20 * 2**20 if (name, tag) == SAMPLE_LARGE else 200_000 + (name == "jq")

    later = days_ago(2)
    async with Emulator(catalog_from_entries(entries, size_of=size_of)) as rebottled:
        await sync_into(mirror.app, rebottled.api_url, later)
    old = f"{DATE}/jq-1.7.1_1.arm64_tahoe.bottle.tar.gz"
    new = f"{later}/jq-1.7.1_1.arm64_tahoe.bottle.1.tar.gz"
    hf = parse(await stored(mirror.app.store, "bottles_hash.json"))
    assert hf.bottles["jq-1.7.1_1-arm64_tahoe"].s3_key == new
    expected = [{"key": old, "hash_key": "jq-1.7.1_1-arm64_tahoe", "current": new}]

    result = await run_cli("verify", "--json", env=mirror.env)
    assert result.code == 0, result.stdout
    assert result.json()["problems"] == []
    assert result.json()["superseded"] == expected
    human = await run_cli("verify", env=mirror.env)
    assert human.code == 0
    assert b"0 problems, 1 superseded" in human.stdout
    assert f"superseded {old}: jq-1.7.1_1-arm64_tahoe is now {new}".encode() in human.stdout

    rebuilt = await run_cli("rebuild-hash", env=mirror.env)
    assert rebuilt.code == 0, rebuilt.stderr[-2000:]
    again = await run_cli("verify", "--json", env=mirror.env)
    assert again.code == 0, again.stdout
    assert again.json()["superseded"] == expected

    stray = f"{later}/stray-1.0.arm64_tahoe.bottle.tar.gz"
    await mirror.app.s3.put_object(Bucket=mirror.app.store.bucket, Key=stray, Body=b"x")
    orphaned = await run_cli("verify", "--json", env=mirror.env)
    assert orphaned.code == 1
    assert [(p["kind"], p["key"]) for p in orphaned.json()["problems"]] == [("orphaned", stray)]


def test_dumps_is_not_fooled_by_a_value_equal_to_one_it_checked_before() -> None:
    """The per-entry check is cached for speed; 5.0 and True equal 5 and 1 and hash
    alike, yet a float or bool file_size is refused by the reader. An entry with such a
    field is checked afresh (the fuzzer found the stale answer: size False after 0)."""
    key, good = (
        "jq-1.7.1-sonoma",
        HashEntry("ab" * 32, "2026-11-01", 5, "2026-11-01/jq-1.7.1.sonoma.bottle.tar.gz"),
    )
    dumps(HashFile({key: good}))  # cached: no problem
    for odd in (5.0, True):
        with pytest.raises(HashFileError, match="file_size"):
            dumps(HashFile({key: HashEntry(good.sha256, good.download_date, odd, good.s3_key)}))  # type: ignore[arg-type]
