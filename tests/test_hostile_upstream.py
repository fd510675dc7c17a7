"""Hostile and unusual upstreams (issue 12): each answer a red-team review found harmful,
from a real server on loopback (tests/hostile.py), through a whole job into the moto
server. A victim bottle fails alone, cheaply and quickly; its neighbour is stored; nothing
is left open; nothing secret leaks."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import DATE, make_settings
from hostile import Bottle, HostileUpstream
from structlog.testing import capture_logs

from mirrord.app import App, open_app, run_job
from mirrord.jobs import Job
from mirrord.report import Report
from mirrord.upstream import address_problem

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
async def sync(bucket_name: str) -> AsyncIterator[Any]:
    """``await sync(upstream, **settings)``: one whole job (mirrord.app.run_job, as the CLI
    and the daemon run it) of the upstream's catalog into a fresh moto bucket."""
    apps: list[Any] = []

    async def run(upstream: HostileUpstream, **kw: Any) -> Outcome:
        settings = make_settings(bucket_name, upstream.api_url, brew_mirror=False, **kw)
        context = open_app(settings)
        app = await context.__aenter__()
        apps.append(context)
        await app.s3.create_bucket(Bucket=bucket_name)
        started, counted = time.monotonic(), Counted()
        async with asyncio.timeout(60):  # what a hostile answer would otherwise cost: forever
            report = await run_job(app, Job("hostile", DATE), route="cli", progress=counted)
        outcome = Outcome(report, app, time.monotonic() - started, counted.read)
        assert await app.store.open_uploads() == [], "an upload was left open"
        return outcome

    yield run
    for context in apps:
        await context.__aexit__(None, None, None)


def neighbour() -> Bottle:
    return Bottle("neighbour")


async def test_gzip_bomb_stops_one_part_in(sync: Any) -> None:
    """A Content-Encoding: gzip answer that inflates 1000:1 without end. mirrord never
    decodes a bottle body (the labelled-.tar.gz test below proves it), and stops the body
    one part in, where the registry announced 300 KB. Before: 825 MiB into S3 in 45 s,
    and going."""
    bomb, ok = Bottle("bomb", behaviour="gzip_bomb"), neighbour()
    async with HostileUpstream([bomb, ok]) as up:
        out = await sync(up)
    assert "registry announces" in out.failure(bomb)
    assert PART < out.read <= PART + 2 * MiB  # one part, then the index said 300 KB
    assert set(await out.stored()) == {f"{DATE}/neighbour-1.0.arm64_tahoe.bottle.tar.gz"}


async def test_stored_tar_gz_labelled_content_encoding_gzip_is_taken_as_stored(sync: Any) -> None:
    """Apache's stock AddEncoding labels .tar.gz files Content-Encoding: gzip. brew's curl
    (no --compressed) stores the bytes as sent; so does mirrord, and they match the
    sha256. Before: aiohttp inflated them and every such bottle failed."""
    labelled = Bottle("labelled", behaviour="gzip_label")
    async with HostileUpstream([labelled]) as up:
        out = await sync(up)
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
        out = await sync(up)
    assert f"the registry announces {len(endless.data)}" in out.failure(endless)
    assert PART < out.read <= PART + 2 * MiB
    assert len(await out.stored()) == 1


async def test_endless_body_without_an_announced_size_stops_at_the_byte_cap(sync: Any) -> None:
    """No image index to ask: MIRRORD_MAX_BOTTLE_BYTES is the cap, and the multipart
    upload it had begun is aborted at once (the fixture checks none is left open)."""
    endless = Bottle("endless", behaviour="endless", announce=False)
    async with HostileUpstream([endless]) as up:
        out = await sync(up, max_bottle_bytes=16 * MiB)
    assert "passes 16777216 bytes (MIRRORD_MAX_BOTTLE_BYTES)" in out.failure(endless)
    assert 16 * MiB < out.read <= 17 * MiB
    assert await out.stored() == {}


async def test_an_announced_length_over_the_cap_is_refused_before_reading(sync: Any) -> None:
    """Content-Length: 10 GiB against a 64 MiB cap: refused on the headers, not retried."""
    huge = Bottle("huge", behaviour="huge_length")
    async with HostileUpstream([huge]) as up:
        out = await sync(up, max_bottle_bytes=64 * MiB)
    assert "announces 10737418240 bytes, over MIRRORD_MAX_BOTTLE_BYTES" in out.failure(huge)
    assert up.requests[huge.sha256] == 1


async def test_a_trickle_ends_at_the_bottle_deadline(sync: Any) -> None:
    """One byte every half second never trips the read timeout (2 s); the per-bottle
    deadline ends it. Before: 39 bytes a minute, about 125 hours for a bottle."""
    slow, ok = Bottle("slow", behaviour="trickle"), neighbour()
    async with HostileUpstream([slow, ok]) as up:
        out = await sync(up, bottle_timeout=3.0)
    assert "not complete within MIRRORD_BOTTLE_TIMEOUT (3 s)" in out.failure(slow)
    assert out.seconds < 10
    assert len(await out.stored()) == 1


async def test_cuts_after_every_100_bytes_give_up_after_max_attempts(sync: Any) -> None:
    """A body that breaks after every 100 bytes makes progress each time, but too little
    to earn attempts back: MIRRORD_MAX_ATTEMPTS requests, then the bottle fails. Before:
    214 requests a minute with 3 attempts, a bottle alive for hours."""
    cut = Bottle("cut", behaviour="cut_every")
    async with HostileUpstream([cut]) as up:
        out = await sync(up, max_attempts=3)
    assert "connection broken at byte" in out.failure(cut)
    assert up.requests[cut.sha256] == 3
    assert up.sent[cut.sha256] == 300


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
            out = await sync(up, auth_realm_hosts=("169.254.169.254",))
    assert "is not on the registry's origin" in out.failure(victims[0])
    assert "169.254.169.254 is a link-local address" in out.failure(victims[1])
    assert sum(elsewhere.requests.values()) == 0
    assert len(await out.stored()) == 1


async def test_a_redirect_loop_says_how_many_redirects(sync: Any) -> None:
    """A 307 to itself: "more than 5 redirects", not "without usable Location"."""
    loop = Bottle("loop", behaviour="redirect_loop")
    async with HostileUpstream([loop]) as up:
        out = await sync(up)
    assert "more than 5 redirects" in out.failure(loop)
    assert up.requests[loop.sha256] == 6


async def test_a_redirect_to_the_metadata_service_is_refused(sync: Any) -> None:
    """GHCR answers with a redirect to storage; a hostile one names 169.254.169.254.
    Refused before connecting, and not retried."""
    imds = Bottle("imds", behaviour="redirect_to", location="http://169.254.169.254/latest/")
    async with HostileUpstream([imds]) as up:
        out = await sync(up)
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
