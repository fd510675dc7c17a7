"""Quarantine (issue 13, item 5): a bottle whose bytes fail verification in three runs in
a row is quarantined: reported once per run, retried each run, released when it verifies;
it neither fails the job nor holds back the API files, and check-client lists it as a
known miss. The count lives in the hash file's ``quarantine`` section."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import orjson
import pytest
from conftest import DATE, Receiver, make_settings
from mirrord_dev.emulator import PORTABLE_RUBY_VERSIONS, Emulator, Fault, sample_catalog
from mirrord_dev.local import Front, bucket_front

from mirrord.app import App, open_app
from mirrord.core import hashfile as hashfile_module
from mirrord.core.catalog import parse_catalog
from mirrord.core.errors import HashFileError
from mirrord.core.hashfile import (
    QUARANTINE_AFTER,
    HashFile,
    Suspect,
    dumps,
    merge,
    note_failure,
    parse,
)
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry
from mirrord.core.report import Report
from mirrord.services.check import check_client
from mirrord.services.checkpoint import Checkpointer, load_hashfile
from mirrord.services.job import run_job
from mirrord.services.sync import stale_suspects

A, B, C = "a" * 64, "b" * 64, "c" * 64
T0, T1 = "2026-11-08T03:00:00Z", "2026-11-15T03:00:00Z"
KEY = "jq-1.7.1_1-arm64_tahoe"


def suspect(count: int = 1, **kw: Any) -> Suspect:
    """A record of bytes A that came as B, counted ``count`` times, last by job w1."""
    return replace(Suspect(A, B, T0, T1, count, "w1"), **kw)


# --- pure: counting, the section, merging ------------------------------------------------


def test_failures_count_once_per_job_and_restart_for_other_bytes() -> None:
    """Each job that sees the bytes fail adds one (a job handed on or delivered again is
    the same run); from the third it is quarantined; other expected bytes (a new rebuild
    under the same key) start again; a body cut off for size has no actual sha256."""
    first = note_failure(None, A, B, "w1", T0)
    assert first == Suspect(A, B, T0, T0, 1, "w1")
    assert note_failure(first, A, B, "w1", T1) == replace(first, last_seen=T1)
    second = note_failure(first, A, None, "w2", T1)
    assert (second.count, second.actual_sha256, second.first_seen) == (2, None, T0)
    third = note_failure(second, A, C, "w3", T1)
    assert not second.quarantined
    assert third.quarantined
    assert third.count == QUARANTINE_AFTER == 3
    assert note_failure(third, C, B, "w4", T1) == Suspect(C, B, T1, T1, 1, "w4")


def test_the_section_round_trips_and_both_readers_agree() -> None:
    """The quarantine section survives dumps/parse; the msgspec reader and the checked
    reader read it alike; an empty section is not written at all (files of mirrors
    without one stay byte for byte as before)."""
    entry = HashEntry(C, "2026-11-15", 10, "2026-11-15/xz-5.8.1.arm64_tahoe.bottle.tar.gz")
    hf = HashFile(
        {"xz-5.8.1-arm64_tahoe": entry},
        T1,
        quarantine={KEY: suspect(3), "wget-1.25.0-sonoma": suspect(1, actual_sha256=None)},
    )
    raw = dumps(hf)
    fast = hashfile_module._fast(raw)
    slow = hashfile_module._slow(raw, "bottles_hash.json")
    assert fast == slow == parse(raw) == hf
    assert orjson.loads(raw)["quarantine"][KEY] == {
        "expected_sha256": A, "actual_sha256": B, "first_seen": T0, "last_seen": T1,
        "count": 3, "last_job": "w1",
    }  # fmt: skip
    assert b"quarantine" not in dumps(replace(hf, quarantine={}))


def test_readers_ignore_fields_they_do_not_know() -> None:
    """What makes the section safe for older readers, and future fields safe for this
    one: unknown fields, at the top level and inside a record, are skipped by both
    readers. (Checked by hand too: the reader before this change reads a file with a
    quarantine section as the same bottles.)"""
    doc = orjson.loads(dumps(HashFile({}, T1, quarantine={KEY: suspect(2)})))
    doc["quarantine"][KEY]["reason"] = "from a later version"
    doc["future_section"] = {"x": 1}
    raw = orjson.dumps(doc)
    assert hashfile_module._fast(raw) == hashfile_module._slow(raw, "f") == parse(raw)
    assert parse(raw).quarantine == {KEY: suspect(2)}


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ([], "quarantine must be an object"),
        ({KEY: 1}, "must be an object"),
        ({"../x": {}}, "the key must be"),
        ({KEY: {"expected_sha256": "A" * 64}}, "expected_sha256"),
        ({KEY: {"actual_sha256": "zz"}}, "actual_sha256"),
        ({KEY: {"first_seen": "2026-11-08"}}, "first_seen"),
        ({KEY: {"last_seen": "2026-11-08T03:00:00+00:00"}}, "last_seen"),
        ({KEY: {"count": 0}}, "count"),
        ({KEY: {"count": True}}, "count"),
        ({KEY: {"count": 2.0}}, "count"),
        ({KEY: {"last_job": "a/b"}}, "last_job"),
        ({KEY: {"last_job": None}}, "last_job"),
    ],
)
def test_a_bad_section_is_refused_naming_the_field(section: Any, says: str) -> None:
    """A damaged section stops the reader with the field named, like a damaged entry
    (the file is never silently replaced); the writer refuses to write one."""
    good = orjson.loads(dumps(HashFile({}, T1, quarantine={KEY: suspect()})))["quarantine"][KEY]
    if isinstance(section, dict):
        section = {k: {**good, **v} if isinstance(v, dict) else v for k, v in section.items()}
    raw = orjson.dumps({"version": 2, "bottles": {}, "quarantine": section})
    assert hashfile_module._fast(raw) is None
    with pytest.raises(HashFileError, match=says) as caught:
        parse(raw)
    assert str(caught.value).startswith("bottles_hash.json: ")
    with pytest.raises(HashFileError, match="refusing to write"):
        dumps(HashFile({}, T1, quarantine={KEY: suspect(count=0)}))


def test_merge_the_writers_records_win_none_releases_and_stored_bytes_release() -> None:
    """Records merge like entries: the running sync's win, None removes one, and a
    record whose key now holds the bytes it expected is gone whoever wrote it."""
    base = HashFile(
        {}, T0, quarantine={KEY: suspect(1), "a-1-sonoma": suspect(2), "b-1-all": suspect(3)}
    )
    entry = HashEntry(A, "2026-11-15", 1, "2026-11-15/b-1.all.bottle.tar.gz")
    merged = merge(
        base, {"b-1-all": entry}, quarantine={KEY: suspect(2, last_job="w2"), "a-1-sonoma": None}
    )
    assert merged.quarantine == {KEY: suspect(2, last_job="w2")}


def test_records_of_versions_the_catalog_dropped_are_stale() -> None:
    """A record whose <name>-<pkg_version> the catalog no longer lists is never tried
    again, so never released: it is dropped (names and versions may hold '-')."""
    catalog = parse_catalog(
        orjson.dumps(
            [
                {"name": "jq", "versions": {"stable": "1.7.1"}, "revision": 1},
                {"name": "python-tk", "versions": {"stable": "3.12-1"}},
            ]
        )
    )
    hf = HashFile(
        quarantine={
            KEY: suspect(),
            "jq-1.7.0-arm64_tahoe": suspect(),
            "python-tk-3.12-1-sonoma": suspect(),
        }
    )
    assert stale_suspects(hf, catalog) == ["jq-1.7.0-arm64_tahoe"]


# --- the checkpoint path, on moto --------------------------------------------------------


async def test_a_lost_write_race_keeps_the_records_on_both_sides(app: App) -> None:
    """On 412 the checkpoint reloads and merges: another writer's records stay, ours go in
    (ours win for the same key), and a release (None) is not undone by the reload."""
    store = app.store
    await store.put_if(
        "bottles_hash.json",
        dumps(HashFile({}, T0, quarantine={KEY: suspect(1), "xz-5.8.1-sonoma": suspect(2)})),
        etag=None,
        content_type="application/json",
    )
    hf, etag = await load_hashfile(store, "bottles_hash.json")
    checkpoints = Checkpointer(store, "bottles_hash.json", hf, etag, 100)
    # Another writer gets in first with a record of its own.
    theirs = replace(hf, quarantine={**hf.quarantine, "wget-1.25.0-sonoma": suspect(1)})
    await store.put_if("bottles_hash.json", dumps(theirs), etag=etag, content_type="x")
    checkpoints.note(KEY, suspect(2, last_job="w2"))
    checkpoints.note("xz-5.8.1-sonoma", None)
    await checkpoints.flush()
    saved, _ = await load_hashfile(store, "bottles_hash.json")
    assert saved.quarantine == {
        KEY: suspect(2, last_job="w2"),
        "wget-1.25.0-sonoma": suspect(1),
    }
    assert checkpoints.saves == 1


# --- end to end: a bottle corrupt upstream, week after week ------------------------------

TARGET = "arm64_tahoe"
RUBY = PORTABLE_RUBY_VERSIONS[0]


@dataclass
class Weeks:
    app: App
    emu: Emulator
    receiver: Receiver

    async def run(self, job_id: str) -> Report:
        return await run_job(self.app, Job(job_id, DATE), route="test")

    async def hashfile(self) -> dict[str, Any]:
        found = await self.app.store.get("bottles_hash.json")
        assert found is not None
        return dict(orjson.loads(found[0]))

    async def status(self) -> dict[str, Any]:
        found = await self.app.store.get("status.json")
        assert found is not None
        return dict(orjson.loads(found[0]))

    def last_slack(self) -> dict[str, Any]:
        ends = ("mirrord sync finished", "mirrord sync failed")
        return [b for b in self.receiver.bodies if b["text"].startswith(ends)][-1]


@pytest.fixture
async def weeks(bucket_name: str, receiver: Receiver) -> AsyncIterator[Weeks]:
    async with Emulator(sample_catalog()) as emu:
        settings = make_settings(
            bucket_name,
            emu.api_url,
            platforms=(TARGET,),
            slack_webhook_url=receiver.url,
            portable_ruby=(RUBY,),
        )
        async with open_app(settings) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            yield Weeks(app, emu, receiver)


@pytest.fixture
def front(weeks: Weeks) -> Iterator[Front]:
    # served=None: check-client explains quarantined bottles from status.json, which the
    # deployed CloudFront does not serve (only v2/ and api/): an operator's own front.
    with bucket_front(boto3.client("s3"), weeks.app.settings.bucket, served=None) as served:
        yield served


async def test_a_bottle_corrupt_upstream_is_quarantined_then_released(
    weeks: Weeks, front: Front
) -> None:
    """The emulator serves jq's bottle corrupt. Runs 1 and 2 fail on it (exit 1, API
    files held back); run 3 quarantines it: exit 0, listed once in the report, status.json
    and Slack, the API files published, check-client lists it as a known miss. Run 4
    retries it and reports it once more; the same job again counts once. With the fault
    gone, run 5 stores it and releases it."""
    jq = next(e for e in weeks.emu.catalog.formulae if e["name"] == "jq")
    expected = jq["bottle"]["stable"]["files"][TARGET]["sha256"]
    body = weeks.emu.catalog.data(expected)
    served = hashlib.sha256(bytes([body[0] ^ 0xFF]) + body[1:]).hexdigest()  # one chunk
    weeks.emu.set_faults(expected, [Fault("corrupt")])

    for n, job_id in enumerate(("w1", "w1", "w2"), start=1):
        report = await weeks.run(job_id)
        assert [f.key for f in report.failed] == [KEY], n
        assert report.quarantined == ()
        assert report.exit_code == 1
        assert report.published is not None
        assert report.published.api.startswith("kept:")
        record = (await weeks.hashfile())["quarantine"][KEY]
        assert record["count"] == (1 if n < 3 else 2), n  # the same job w1 counts once
        assert (record["expected_sha256"], record["actual_sha256"]) == (expected, served)
    first_seen = record["first_seen"]

    for week, job_id in ((3, "w3"), (4, "w4")):
        requests = weeks.emu.stats(expected).requests
        report = await weeks.run(job_id)
        assert weeks.emu.stats(expected).requests > requests, week  # retried each run
        assert report.failed == ()
        assert [q.key for q in report.quarantined] == [KEY]
        q = report.quarantined[0]
        assert (q.count, q.expected_sha256, q.actual_sha256) == (week, expected, served)
        assert q.first_seen == first_seen
        assert q.last_seen >= first_seen
        assert "sha256 mismatch" in q.error
        assert report.complete
        assert report.exit_code == 0
        assert report.published is not None
        assert report.published.api == "published", report.published
        status = await weeks.status()
        assert [s["key"] for s in status["quarantined"]] == [KEY]
        assert status["quarantined"][0]["count"] == week
        slack = weeks.last_slack()
        assert slack["text"].startswith("mirrord sync finished")
        assert slack["text"].count(KEY) == 1
        blocks = orjson.dumps(slack["blocks"]).decode()
        assert blocks.count(KEY) == 1
        assert "Quarantined (1)" in blocks
        assert (await weeks.hashfile())["quarantine"][KEY]["count"] == week

    coverage = await check_client(weeks.app.http, front.url, TARGET, ruby_versions=(RUBY,))
    assert coverage.misses == ()
    assert [m.what for m in coverage.known_misses] == ["jq"]
    assert coverage.installable == coverage.with_bottle - 1

    weeks.emu.clear_faults()
    report = await weeks.run("w5")
    assert report.released == (KEY,)
    assert report.quarantined == report.failed == ()
    assert report.downloaded == 1
    hf = await weeks.hashfile()
    assert "quarantine" not in hf
    assert hf["bottles"][KEY]["sha256"] == expected
    assert "released from quarantine" in weeks.last_slack()["text"]
    assert (await weeks.status())["released"] == [KEY]
    coverage = await check_client(weeks.app.http, front.url, TARGET, ruby_versions=(RUBY,))
    assert coverage.misses == coverage.known_misses == ()


async def test_a_stale_record_is_dropped_by_the_next_sync(weeks: Weeks) -> None:
    """A record of a version the catalog no longer lists goes with the next checkpoint;
    the others stay."""
    old, other = "jq-1.6-arm64_tahoe", "xz-5.8.1-arm64_tahoe"
    await weeks.app.store.put_if(
        "bottles_hash.json",
        dumps(HashFile({}, T0, quarantine={old: suspect(3), other: suspect(1)})),
        etag=None,
        content_type="application/json",
    )
    report = await weeks.run("w1")
    assert report.quarantined == ()
    hf, _ = await load_hashfile(weeks.app.store, "bottles_hash.json")
    assert old not in hf.quarantine
    assert other not in hf.quarantine  # verified this run: released
    assert report.released == (other,)


async def test_other_failures_are_not_counted(weeks: Weeks) -> None:
    """Only bytes that fail verification count towards quarantine: a bottle the registry
    refuses (404) is an ordinary failure, run after run, and leaves no record."""
    jq = next(e for e in weeks.emu.catalog.formulae if e["name"] == "jq")
    sha = jq["bottle"]["stable"]["files"][TARGET]["sha256"]
    weeks.emu.set_faults(sha, [Fault("status", status=404, times=None)])
    for job_id in ("w1", "w2", "w3"):
        report = await weeks.run(job_id)
        assert [f.key for f in report.failed] == [KEY]
        assert report.quarantined == ()
    assert "quarantine" not in await weeks.hashfile()
