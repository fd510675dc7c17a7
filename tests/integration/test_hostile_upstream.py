"""Hostile and unusual upstreams (issue 12): each answer a red-team review found harmful,
from a real server on loopback (tests/hostile.py), through a whole job into the moto
server. A victim bottle fails alone, cheaply and quickly; its neighbour is stored; nothing
is left open; nothing secret leaks."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from conftest import DATE, Ledger, days_ago, make_settings, run_cli
from hostile import Bottle, HostileUpstream
from structlog.testing import capture_logs

from mirrord.adapters.web import address_problem
from mirrord.app import App, open_app
from mirrord.core.catalog import Catalog, parse_catalog
from mirrord.core.errors import JobError
from mirrord.core.hashfile import HashFile, dumps
from mirrord.core.jobs import Job, parse_date
from mirrord.core.models import Formula, HashEntry
from mirrord.core.report import Report
from mirrord.services.checkpoint import adoption_folders, load_hashfile
from mirrord.services.job import run_job
from mirrord.services.sync import Tuning, run_sync

MiB = 2**20
PART = 5 * MiB  # the tests' part size (make_settings)


class Counted:
    """A Progress that counts the body bytes the transfers read."""

    def __init__(self) -> None:
        self.read = 0

    def start(self, total: int) -> None:
        pass

    def add_bytes(self, n: int) -> None:
        self.read += n

    def done(self, ok: bool) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Outcome:
    report: Report
    app: App
    seconds: float
    read: int  # body bytes mirrord read, every bottle of the job

    def failure(self, b: Bottle) -> str:
        found = [f.error for f in self.report.failed if f.key.startswith(f"{b.name}-")]
        assert found, f"{b.name} did not fail: {self.report.to_dict()}"
        return found[0]

    async def stored(self) -> dict[str, bytes]:
        out = {}
        async for o in self.app.store.list_objects():
            if o.key.endswith(".tar.gz"):
                found = await self.app.store.get(o.key)
                assert found is not None
                out[o.key] = found[0]
        return out


@pytest.fixture
async def sync(bucket_name: str, moto_s3: Any, ledger: Ledger) -> AsyncIterator[Any]:
    """``await sync(upstream, **settings)``: one whole job (mirrord.services.job.run_job, as the CLI
    and the daemon run it) of the upstream's catalog into a fresh moto bucket. With
    ``row=(answer, before)``, its figures go to docs/reliability.md (make reliability)."""
    apps: list[Any] = []

    async def run(
        upstream: HostileUpstream,
        create_bucket: bool = True,
        row: tuple[str, str] | None = None,
        **kw: Any,
    ) -> Outcome:
        settings = make_settings(bucket_name, upstream.api_url, brew_mirror=False, **kw)
        context = open_app(settings)
        app = await context.__aenter__()
        apps.append(context)
        if create_bucket:
            moto_s3.create_bucket(Bucket=bucket_name)
        started, counted = time.monotonic(), Counted()
        async with asyncio.timeout(60):  # what a hostile answer would otherwise cost: forever
            report = await run_job(app, Job("hostile", DATE), route="cli", progress=counted)
        outcome = Outcome(report, app, time.monotonic() - started, counted.read)
        assert await app.store.open_uploads() == [], "an upload was left open"
        if row is not None:
            ledger.hostile.append(figures(row, upstream, outcome))
        return outcome

    yield run
    for context in apps:
        await context.__aexit__(None, None, None)


def figures(row: tuple[str, str], up: HostileUpstream, out: Outcome) -> dict[str, Any]:
    """One row of the hostile-upstream table: what the answer cost the victim bottles."""
    victims = [b for b in up.bottles if b.behaviour != "ok" or b.size_note]
    failed = {f.key.rsplit("-", 2)[0]: f.error for f in out.report.failed}
    outcomes = [f"failed: {failed[b.name]}" if b.name in failed else "stored" for b in victims]
    # The well-behaved neighbours were read once each, whole: the rest is the victims'.
    neighbours = sum(len(b.data) for b in up.bottles if b not in victims and b.name not in failed)
    return {
        "answer": row[0],
        "before": row[1],
        "outcome": "; ".join(outcomes),
        "read": out.read - neighbours,
        "sent": sum(up.sent[b.sha256] for b in victims),
        "seconds": round(out.seconds, 2),
        "requests": sum(up.requests[b.sha256] for b in victims),
    }


def neighbour() -> Bottle:
    return Bottle("neighbour")


async def test_gzip_bomb_stops_one_part_in(sync: Any) -> None:
    """A Content-Encoding: gzip answer that inflates 1000:1 without end. mirrord never
    decodes a bottle body (the labelled-.tar.gz test below proves it), and stops the body
    one part in, where the registry announced 300 KB. Before: 825 MiB into S3 in 45 s,
    and going."""
    bomb, ok = Bottle("bomb", behaviour="gzip_bomb"), neighbour()
    async with HostileUpstream([bomb, ok]) as up:
        out = await sync(
            up,
            row=(
                "gzip bomb: Content-Encoding gzip, 1000:1, endless",
                "825 MiB into S3 in 45 s, and going",
            ),
        )
    assert "registry announces" in out.failure(bomb)
    assert PART < out.read <= PART + 2 * MiB  # one part, then the index said 300 KB
    assert set(await out.stored()) == {f"{DATE}/neighbour-1.0.arm64_tahoe.bottle.tar.gz"}


async def test_stored_tar_gz_labelled_content_encoding_gzip_is_taken_as_stored(sync: Any) -> None:
    """Apache's stock AddEncoding labels .tar.gz files Content-Encoding: gzip. brew's curl
    (no --compressed) stores the bytes as sent; so does mirrord, and they match the
    sha256. Before: aiohttp inflated them and every such bottle failed."""
    labelled = Bottle("labelled", behaviour="gzip_label")
    async with HostileUpstream([labelled]) as up:
        out = await sync(
            up,
            row=(
                "a stored .tar.gz labelled Content-Encoding: gzip",
                "every such bottle failed (inflated)",
            ),
        )
    assert out.report.failed == ()
    (data,) = (await out.stored()).values()
    assert hashlib.sha256(data).hexdigest() == labelled.sha256
    assert data[:2] == b"\x1f\x8b"


async def test_endless_body_stops_past_the_announced_size(sync: Any) -> None:
    """The bottle's bytes, then junk forever, for a bottle its image index says is
    300 KB: the transfer asks the index once the body outgrows a part and stops there,
    before any upload starts. Before: 1.5 GiB into an open multipart upload."""
    endless, ok = Bottle("endless", behaviour="endless"), neighbour()
    async with HostileUpstream([endless, ok]) as up:
        out = await sync(
            up,
            row=(
                "endless body of a bottle announced as 300 KB",
                "1.5 GiB into an open upload, and going",
            ),
        )
    assert f"the registry announces {len(endless.data)}" in out.failure(endless)
    assert PART < out.read <= PART + 2 * MiB
    assert len(await out.stored()) == 1


async def test_endless_body_without_an_announced_size_stops_at_the_byte_cap(sync: Any) -> None:
    """No image index to ask: MIRRORD_MAX_BOTTLE_BYTES is the cap, and the multipart
    upload it had begun is aborted at once (the fixture checks none is left open)."""
    endless = Bottle("endless", behaviour="endless", announce=False)
    async with HostileUpstream([endless]) as up:
        out = await sync(
            up,
            row=(
                "endless body, no image index (cap 16 MiB)",
                "unbounded (S3 allows 160 GB at 16 MiB parts)",
            ),
            max_bottle_bytes=16 * MiB,
        )
    assert "over the 16777216 allowed (MIRRORD_MAX_BOTTLE_BYTES)" in out.failure(endless)
    assert 16 * MiB < out.read <= 17 * MiB
    assert await out.stored() == {}


async def test_an_announced_length_over_the_cap_is_refused_before_reading(sync: Any) -> None:
    """Content-Length: 10 GiB against a 64 MiB cap: refused on the headers, not retried."""
    huge = Bottle("huge", behaviour="huge_length")
    async with HostileUpstream([huge]) as up:
        out = await sync(
            up,
            row=("Content-Length 10 GiB against a 64 MiB cap", "read until the cap of S3"),
            max_bottle_bytes=64 * MiB,
        )
    assert "announces 10737418240 bytes, over MIRRORD_MAX_BOTTLE_BYTES" in out.failure(huge)
    assert up.requests[huge.sha256] == 1


async def test_a_trickle_ends_at_the_bottle_deadline(sync: Any) -> None:
    """One byte every half second never trips the read timeout (2 s); the per-bottle
    deadline ends it. Before: 39 bytes a minute, about 125 hours for a bottle."""
    slow, ok = Bottle("slow", behaviour="trickle"), neighbour()
    async with HostileUpstream([slow, ok]) as up:
        out = await sync(
            up,
            row=("one byte every 0.5 s (deadline 3 s)", "39 bytes a minute: ~125 h a bottle"),
            bottle_timeout=3.0,
        )
    assert "not complete within MIRRORD_BOTTLE_TIMEOUT (3 s)" in out.failure(slow)
    assert out.seconds < 10
    assert len(await out.stored()) == 1


async def test_cuts_after_every_100_bytes_give_up_after_max_attempts(sync: Any) -> None:
    """A body that breaks after every 100 bytes makes progress each time, but too little
    to earn attempts back: MIRRORD_MAX_ATTEMPTS requests, then the bottle fails. Before:
    214 requests a minute with 3 attempts, a bottle alive for hours."""
    cut = Bottle("cut", behaviour="cut_every")
    async with HostileUpstream([cut]) as up:
        out = await sync(
            up,
            row=("cut after every 100 bytes", "214 requests a minute, for hours"),
            max_attempts=3,
        )
    assert "connection broken at byte" in out.failure(cut)
    assert up.requests[cut.sha256] == 3
    assert up.sent[cut.sha256] == 300


async def test_a_retry_after_of_superscript_two_is_a_plain_retry(sync: Any) -> None:
    """`Retry-After: ²` (str.isdigit() says yes, float() says no): ignored, the 503 is
    retried on the policy's own backoff. Before: a ValueError traceback ended the job."""
    odd = Bottle("odd", behaviour="retry_after", retry_after="²")
    async with HostileUpstream([odd]) as up:
        out = await sync(
            up, row=("503 with Retry-After: ² (superscript two)", "ValueError: the job died")
        )
    assert out.report.failed == ()
    assert up.requests[odd.sha256] == 2


async def test_an_index_size_of_10_superscript_two_is_no_size(sync: Any) -> None:
    """An image index announcing `sh.brew.bottle.size: "10²"` for a bottle past one part:
    no size is read from it, so MIRRORD_MAX_BOTTLE_BYTES caps the body, and the bottle is
    stored. Before: int("10²") raised and ended the job."""
    large = Bottle("large", data=random.Random(7).randbytes(6 * MiB), size_note="10²")
    async with HostileUpstream([large]) as up:
        out = await sync(
            up, row=('image index size "10²", a 6 MiB bottle', "ValueError: the job died")
        )
    assert out.report.failed == ()
    assert out.report.bytes == 6 * MiB


async def test_progress_earns_attempts_back_but_never_past_the_ceiling(sync: Any) -> None:
    """Cuts after every 1.5 MiB: each attempt makes real progress and earns the retry
    budget back, but a bottle gets at most 4 × MIRRORD_MAX_ATTEMPTS requests in all, so
    a 15 MiB body that would need 10 stops at 4 × 2 = 8 (and says so)."""
    long = Bottle("long", data=random.Random(3).randbytes(15 * MiB), behaviour="cut_every")
    long.cut_bytes = 3 * MiB // 2
    async with HostileUpstream([long]) as up:
        out = await sync(up, max_attempts=2)
    assert out.failure(long).startswith("gave up after 8 requests (")
    assert up.requests[long.sha256] == 8


async def test_a_token_realm_on_another_origin_is_never_asked(sync: Any) -> None:
    """A 401 whose realm is another server (here the same loopback host, another port)
    or the instance metadata address: refused, nothing sent there, the bottle fails alone.
    Before: mirrord GETs any realm and sends its token back to the registry."""
    async with HostileUpstream([Bottle("bait")]) as elsewhere:
        victims = [
            Bottle("stolen", behaviour="challenge", realm=f"{elsewhere.url}/token"),
            Bottle("imds", behaviour="challenge", realm="http://169.254.169.254/latest/"),
        ]
        async with HostileUpstream([*victims, neighbour()]) as up:
            out = await sync(
                up,
                row=(
                    "401 realm on another origin, and on 169.254.169.254",
                    "GET any realm, token sent to the registry",
                ),
                auth_realm_hosts=("169.254.169.254",),
            )
    assert "is not on the registry's origin" in out.failure(victims[0])
    assert "169.254.169.254 is a link-local address" in out.failure(victims[1])
    assert sum(elsewhere.requests.values()) == 0
    assert len(await out.stored()) == 1


async def test_a_redirect_loop_says_how_many_redirects(sync: Any) -> None:
    """A 307 to itself: "more than 5 redirects", not "without usable Location"."""
    loop = Bottle("loop", behaviour="redirect_loop")
    async with HostileUpstream([loop]) as up:
        out = await sync(up, row=("307 to itself", 'reported as "without usable Location"'))
    assert "more than 5 redirects" in out.failure(loop)
    assert up.requests[loop.sha256] == 6


async def test_a_redirect_to_the_metadata_service_is_refused(sync: Any) -> None:
    """GHCR answers with a redirect to storage; a hostile one names 169.254.169.254.
    Refused before connecting, and not retried."""
    imds = Bottle("imds", behaviour="redirect_to", location="http://169.254.169.254/latest/")
    async with HostileUpstream([imds]) as up:
        out = await sync(up, row=("307 to 169.254.169.254", "followed"))
    assert "169.254.169.254 is a link-local address" in out.failure(imds)
    assert up.requests[imds.sha256] == 1


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),
        ("169.254.170.2", "link-local"),  # ECS task metadata
        ("fd00:ec2::254", "instance metadata"),
        ("::ffff:169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_upstream_addresses_never_reachable_even_where_private_ones_are(
    address: str, reason: str
) -> None:
    """The upstream session allows the LAN and loopback (a registry there, the emulator)
    but never the metadata services, link-local, unspecified or multicast addresses."""
    assert address_problem(address, allow_private=True) == reason
    assert address_problem("10.0.0.7", allow_private=True) is None
    assert address_problem("127.0.0.1", allow_private=True) is None


async def test_credentials_in_catalog_urls_reach_no_metadata_report_or_log(sync: Any) -> None:
    """``user:password@`` and a query token in a catalog URL: the download works, but the
    object's public metadata, the report and the log lines carry neither. Before: both
    were in x-amz-meta-source-url, and blob_retry logged the full query."""
    secret = Bottle("secret", url_prefix="http://mirror:hunter2pass@", url_query="?token=t0kenXYZ")
    failing = Bottle(
        "failing",
        behaviour="cut_every",
        url_prefix="http://mirror:hunter2pass@",
        url_query="?token=t0kenXYZ",
    )
    async with HostileUpstream([secret, failing]) as up:
        with capture_logs() as logs:
            out = await sync(up, max_attempts=2)
    (key,) = await out.stored()
    head = await out.app.store.head(key)
    assert head is not None
    assert head.metadata["source-url"].endswith(f"/blobs/sha256:{secret.sha256}")
    text = repr(logs) + repr(out.report.to_dict()) + repr(head.metadata)
    assert "blob_retry" in repr(logs)
    assert "hunter2pass" not in text
    assert "t0kenXYZ" not in text


# --- the bucket's own rules against what upstream does -------------------------------------


def two_bottles(name: str, size: int = 1000) -> tuple[bytes, bytes]:
    """Two bottles' bytes whose sha256s sort low, high."""
    rng = random.Random(name)
    a, b = rng.randbytes(size), rng.randbytes(size)
    return (a, b) if hashlib.sha256(a).digest() < hashlib.sha256(b).digest() else (b, a)


async def seed(app: App, entries: dict[str, HashEntry], objects: dict[str, bytes]) -> None:
    await app.store.put_if(
        "bottles_hash.json", dumps(HashFile(entries)), etag=None, content_type="application/json"
    )
    for key, data in objects.items():
        sha = hashlib.sha256(data).hexdigest()
        await app.store.put_verified(key, io.BytesIO(data), sha, {"sha256": sha})


async def test_a_same_day_rebottle_is_recorded_over_the_entry_it_replaces(
    sync: Any, bucket_name: str
) -> None:
    """Upstream rebottles between the sync Lambda's hand-off and the daemon's run (same
    job date): the hash key stays, the sha256 and rebuild change. The entry the current
    catalog names wins, whatever the sha256s' order. Before: the same-date merge kept the
    larger sha256, so the new bottle was stored but never recorded (and held back the API
    files)."""
    low, high = two_bottles("rebottled")
    new = Bottle("rebottled", data=low, rebuild=1)
    old_key = f"{DATE}/rebottled-1.0.arm64_tahoe.bottle.tar.gz"
    old = HashEntry(hashlib.sha256(high).hexdigest(), DATE, len(high), old_key)
    async with HostileUpstream([new]) as up:
        async with open_app(make_settings(bucket_name, up.api_url)) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            await seed(app, {"rebottled-1.0-arm64_tahoe": old}, {old_key: high})
        out = await sync(up, create_bucket=False)
    assert out.report.failed == ()
    hf, _ = await load_hashfile(out.app.store, "bottles_hash.json")
    assert hf.bottles["rebottled-1.0-arm64_tahoe"] == HashEntry(
        new.sha256, DATE, len(low), f"{DATE}/{new.file_name}"
    )


@pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["PutObject", "multipart"])
async def test_a_stored_object_is_never_overwritten_by_other_bytes(
    sync: Any, bucket_name: str, size: int
) -> None:
    """The bottle's key already holds other bytes (upstream replaced a bottle without a new
    rebuild, the same day): the write is conditional (If-None-Match: * on PutObject and on
    CompleteMultipartUpload), the object stays, and the bottle is reported. Before: the
    write replaced it unconditionally, under the feet of every entry that pointed at it."""
    low, high = two_bottles("replaced", size)
    new = Bottle("replaced", data=low)
    key = f"{DATE}/{new.file_name}"
    async with HostileUpstream([new]) as up:
        async with open_app(make_settings(bucket_name, up.api_url)) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            await seed(app, {}, {key: high})
        out = await sync(up, create_bucket=False)
    assert "already holds other bytes" in out.failure(new)
    assert (await out.stored())[key] == high


async def test_an_adopted_object_is_recorded_under_the_job_date(
    sync: Any, bucket_name: str
) -> None:
    """A dead run of an earlier date left the object unrecorded: it is adopted where it
    lies, and its entry carries this job's date, so it ranks as the newest fact."""
    adopted = Bottle("adopted")
    earlier = days_ago(10)
    key = f"{earlier}/{adopted.file_name}"
    async with HostileUpstream([adopted]) as up:
        async with open_app(make_settings(bucket_name, up.api_url)) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            await seed(app, {}, {key: adopted.data})
        out = await sync(up, create_bucket=False)
    assert out.report.adopted == 1
    assert up.requests[adopted.sha256] == 0
    hf, _ = await load_hashfile(out.app.store, "bottles_hash.json")
    assert hf.bottles["adopted-1.0-arm64_tahoe"] == HashEntry(
        adopted.sha256, DATE, len(adopted.data), key
    )


def test_a_far_future_entry_does_not_hide_the_folder_a_dead_run_left() -> None:
    """A hash file poisoned by a job dated 9999-12-31, then a run that died before its
    checkpoint, then a rerun the next day: the dead run's folder is still looked in, and
    so is the far-future one. Before: only folders at or after the newest recorded date
    were, i.e. 9999-12-31/ alone (0 adopted, 29 downloaded again, 17 orphans)."""
    today, yesterday, last_week = days_ago(0), days_ago(1), days_ago(7)
    poisoned = HashEntry("a" * 64, "9999-12-31", 1, "9999-12-31/jq-1.0.sonoma.bottle.tar.gz")
    known = HashEntry("b" * 64, last_week, 1, f"{last_week}/jq-0.9.sonoma.bottle.tar.gz")
    hf = HashFile({"jq-1.0-sonoma": poisoned, "jq-0.9-sonoma": known})
    folders = [f"{d}/" for d in ("2026-01-01", last_week, yesterday, "9999-12-31")] + ["v2/"]
    assert adoption_folders(folders, hf, today, today) == [
        f"{today}/",
        "9999-12-31/",
        f"{yesterday}/",
        f"{last_week}/",
    ]


def test_job_dates_lie_between_400_days_ago_and_tomorrow() -> None:
    """A job date names a folder and steers adoption: 9999-12-31 and other far dates are
    refused with the range in the message (issue 12 #14)."""
    today = date(2026, 12, 1)
    assert parse_date("2026-12-02", today=today) == "2026-12-02"
    assert parse_date("2025-10-27", today=today) == "2025-10-27"
    for bad in ("2026-12-03", "9999-12-31", "2025-10-26", "0001-01-01"):
        with pytest.raises(JobError, match=r"outside 2025-10-27\.\.2026-12-02"):
            parse_date(bad, today=today)


async def test_sync_with_a_far_future_date_stops_at_start() -> None:
    """`mirrord sync --date 9999-12-31` is a usage error (exit 2), before any request."""
    result = await run_cli("sync", "--date", "9999-12-31", env={"MIRRORD_BUCKET": "b-unused"})
    assert result.code == 2
    assert b"--date 9999-12-31 is outside" in result.stderr


async def test_an_entry_the_reader_would_refuse_fails_its_bottle_not_the_checkpoint(
    bucket_name: str,
) -> None:
    """Defence behind the catalog's bounds: a formula that reached the pipeline with a
    revision too long for a hash key fails alone, before any download, and the hash file
    stays readable with its neighbour recorded. Without it, every checkpoint would be
    refused (hashfile.dumps) and the job would end with nothing recorded."""
    ok, source = neighbour(), Bottle("source")
    async with (
        HostileUpstream([ok, source]) as up,
        open_app(make_settings(bucket_name, up.api_url)) as app,
    ):
        await app.s3.create_bucket(Bucket=bucket_name)
        good, other = parse_catalog(up.catalog()).formulae
        # 120 + 64 characters and 61 digits: longer than any hash key the reader takes.
        wedge = Formula("wedge" + "w" * 115, "1." + "0" * 62, 10**60, 0, other.files)
        report = await run_sync(
            Job("hostile", DATE),
            Catalog((good, wedge)),
            app.store,
            app.registry,
            Tuning(2, PART, 10, 60.0),
            hash_key="bottles_hash.json",
        )
        hf, _ = await load_hashfile(app.store, "bottles_hash.json")
    assert [f.key[:5] for f in report.failed] == ["wedge"]
    assert "cannot be recorded" in report.failed[0].error
    assert set(hf.bottles) == {"neighbour-1.0-arm64_tahoe"}
    assert up.requests[ok.sha256] == 1
    assert up.requests[source.sha256] == 0
