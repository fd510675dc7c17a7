"""Slack notifications: pure builders, and sends to a real local webhook receiver over HTTP;
webhook secrets from a real moto Secrets Manager."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from conftest import HOOK_PATH, SECRET_PART, Receiver, Reply
from mirrord_dev.procs import free_port
from structlog.testing import capture_logs

from mirrord.adapters.secrets import resolve_webhook
from mirrord.adapters.slack import Slack, SlackProgress
from mirrord.core.messages import (
    Message,
    failure_message,
    human_duration,
    human_size,
    nothing_to_do_message,
    progress_message,
    start_message,
    success_message,
)
from mirrord.core.report import Failure, Report


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Sleeps:
    """An injected sleep that records what it was asked to wait, and waits nothing."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def assert_no_secret(logs: list[dict[str, Any]], url: str) -> None:
    for entry in logs:
        blob = repr(entry)
        assert url not in blob
        assert HOOK_PATH not in blob
        assert SECRET_PART not in blob


def warnings(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["log_level"] == "warning" and e["event"] == event]


# --- Block Kit shape -----------------------------------------------------------------


def check_text_object(obj: dict[str, Any], limit: int) -> None:
    assert obj["type"] in ("mrkdwn", "plain_text")
    assert isinstance(obj["text"], str)
    assert 0 < len(obj["text"]) <= limit


def check_message(message: Message) -> dict[str, Any]:
    """Valid Block Kit shapes within Slack's limits; the payload round-trips through orjson."""
    payload = orjson.loads(orjson.dumps(message.payload()))
    assert payload == {"text": message.text, "blocks": list(message.blocks)}
    assert isinstance(payload["text"], str)
    assert 0 < len(payload["text"]) <= 3000
    assert 0 < len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        kind = block["type"]
        assert kind in ("header", "section", "context")
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            check_text_object(block["text"], 150)
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                check_text_object(block["text"], 3000)
            for item in block.get("fields", []):
                check_text_object(item, 2000)
            assert len(block.get("fields", [])) <= 10
        else:
            assert 0 < len(block["elements"]) <= 10
            for item in block["elements"]:
                check_text_object(item, 3000)
    return payload


def block_text(message: Message) -> str:
    """Every text a reader of the blocks sees, joined."""
    out: list[str] = []
    for block in message.blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return "\n".join(out)


def report(**kw: Any) -> Report:
    base: dict[str, Any] = {
        "job_id": "2026-11-22-weekly",
        "date": "2026-11-22",
        "planned": 120,
        "downloaded": 110,
        "adopted": 8,
        "skipped": 2000,
        "bytes": 1_234_567_890,
        "duration_s": 192.4,
        "platforms": ("arm64_tahoe", "arm64_sequoia"),
    }
    base.update(kw)
    return Report(**base)


# --- builders (pure) -----------------------------------------------------------------


def test_human_sizes_and_durations() -> None:
    """Sizes read in decimal units, durations as people say them."""
    assert human_size(0) == "0 B"
    assert human_size(1_234_567_890) == "1.2 GB"
    assert human_size(999_960) == "1.0 MB"
    assert human_duration(4.24) == "4.2s"
    assert human_duration(192) == "3m 12s"
    assert human_duration(5 * 3600 + 300) == "5h 5m"
    assert human_duration(3 * 86400 + 7200) == "3d 2h"


def test_start_message_carries_job_size_route_and_destination() -> None:
    """The start message says which job, how many bottles, how big, which route, where to."""
    m = start_message(
        job_id="2026-11-22-weekly",
        date="2026-11-22",
        bottles=4321,
        estimated_bytes=1_234_567_890,
        route="fargate",
        bucket="brew-mirror",
    )
    check_message(m)
    for fact in ("2026-11-22-weekly", "2026-11-22", "4,321", "1.2 GB", "fargate"):
        assert fact in m.text
        assert fact in block_text(m)
    assert "s3://brew-mirror/2026-11-22/" in m.text
    assert "s3://brew-mirror/2026-11-22/" in block_text(m)
    unknown = start_message(
        job_id="j", date="d", bottles=1, estimated_bytes=None, route="cli", bucket="b"
    )
    assert "unknown" in unknown.text


def test_progress_message_carries_counts_bytes_and_time() -> None:
    """Progress says done of total, percent, bytes, elapsed time and failures."""
    m = progress_message(
        job_id="job-7", done=400, total=1000, bytes_done=5_500_000_000, elapsed_s=192, failed=3
    )
    check_message(m)
    for fact in ("job-7", "400/1,000", "40 %", "5.5 GB", "3m 12s", "3 failed"):
        assert fact in m.text
    blocks = block_text(m)
    for fact in ("job-7", "400 / 1,000", "40 %", "5.5 GB", "3m 12s", "3 failed", "ETA 4m 48s"):
        assert fact in blocks


def test_success_message_with_estimate() -> None:
    """Success counts new bottles (downloaded + adopted), bytes, time, location, estimate error."""
    m = success_message(report(), bucket="brew-mirror", estimated_bytes=1_140_000_000)
    check_message(m)
    line = "estimate 1.1 GB vs actual 1.2 GB (+8.3 %)"
    for fact in ("118 new bottles", "1.2 GB", "3m 12s", "s3://brew-mirror/2026-11-22/", line):
        assert fact in m.text
    blocks = block_text(m)
    for fact in ("118 (110 downloaded, 8 adopted)", "2,000", "1.2 GB", "3m 12s", line):
        assert fact in blocks
    assert "s3://brew-mirror/2026-11-22/" in blocks
    assert "arm64_tahoe, arm64_sequoia" in blocks


def test_success_message_without_estimate_has_no_estimate_line() -> None:
    """Without an estimate there is nothing to compare, so no estimate line."""
    m = success_message(report(downloaded=1, adopted=0, bytes=0), bucket="b")
    check_message(m)
    assert "estimate" not in m.text
    assert "estimate" not in block_text(m)
    assert "1 new bottle " in m.text


def test_failure_message_lists_ten_failures_then_counts_the_rest() -> None:
    """A failed job lists at most 10 failed keys with errors, then "… and N more"."""
    failed = tuple(Failure(f"pkg{i}-1.0-arm64_tahoe", f"sha256 mismatch #{i}") for i in range(13))
    m = failure_message(
        job_id="job-9",
        date="2026-11-22",
        error=None,
        report=report(failed=failed),
        logs_hint="CloudWatch log group /mirrord/daemon",
    )
    check_message(m)
    blocks = block_text(m)
    for i in range(10):
        assert f"pkg{i}-1.0-arm64_tahoe" in blocks
        assert f"sha256 mismatch #{i}" in blocks
        assert f"pkg{i}-1.0-arm64_tahoe" in m.text
    assert "pkg10-" not in blocks
    assert "… and 3 more" in blocks
    assert "… and 3 more" in m.text
    for fact in ("job-9", "2026-11-22", "13 of 120", "CloudWatch log group /mirrord/daemon"):
        assert fact in m.text
        assert fact in blocks


def test_failure_message_for_a_crash_shows_the_error() -> None:
    """A crashed job (no report) shows the error and where the logs are."""
    m = failure_message(
        job_id="job-1",
        date="2026-11-22",
        error="StoreError: PutObject bottles_hash.json: AccessDenied",
        report=None,
        logs_hint="CloudWatch log group /mirrord/daemon",
    )
    check_message(m)
    assert "AccessDenied" in m.text
    assert "AccessDenied" in block_text(m)
    assert "/mirrord/daemon" in block_text(m)
    assert "Failed bottles" not in block_text(m)


def test_failure_message_stays_within_limits_with_10000_long_failures() -> None:
    """10,000 failures with huge errors and a huge crash text still fit Slack's limits."""
    failed = tuple(
        Failure(f"formula{i}-{'9' * 150}-arm64_tahoe", "x&<>" * 2000) for i in range(10_000)
    )
    m = failure_message(
        job_id="big",
        date="2026-11-22",
        error="Traceback ```\n" + "boom & <crash>\n" * 2000,
        report=report(planned=10_000, failed=failed),
        logs_hint="CloudWatch log group /mirrord/daemon",
    )
    check_message(m)  # every section text ≤ 3000 characters
    blocks = block_text(m)
    assert "more" in blocks
    assert "9,99" in blocks  # "… and 9,99x more": fewer listed when lines are long
    assert "formula0-" in blocks


def test_untrusted_text_is_escaped_for_mrkdwn() -> None:
    """An error text cannot ping the channel or forge a link: <, >, & are escaped."""
    m = failure_message(
        job_id="j",
        date="d",
        error="<!channel> see <https://evil.example|here> & more",
        report=report(failed=(Failure("k-1-arm64_tahoe", "<!here>"),)),
        logs_hint="logs",
    )
    check_message(m)
    everything = m.text + block_text(m)
    assert "<!channel>" not in everything
    assert "<!here>" not in everything
    assert "<https://" not in everything
    assert "&lt;!channel&gt;" in block_text(m)


def test_nothing_to_do_message_names_date_platforms_and_skipped() -> None:
    """Nothing to do: the date, the targets and how many bottles are already there."""
    m = nothing_to_do_message(date="2026-11-22", platforms=["arm64_tahoe", "sonoma"], skipped=4012)
    check_message(m)
    for fact in ("2026-11-22", "arm64_tahoe, sonoma", "4,012"):
        assert fact in m.text
        assert fact in block_text(m)


# --- send() over real HTTP -----------------------------------------------------------


async def test_send_200_delivers_the_exact_payload(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """A 2xx answer is success, and Slack received exactly the message's payload."""
    m = nothing_to_do_message(date="2026-11-22", platforms=["arm64_tahoe"], skipped=3)
    with capture_logs() as logs:
        assert await Slack(http, receiver.url).send(m) is True
    assert receiver.bodies == [m.payload()]
    assert not warnings(logs, "slack_failed")


async def test_send_500_returns_false_with_one_warning(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """A 5xx (retried once) is False and one warning; nothing raises, the URL is not logged."""
    receiver.answer(Reply(500, "oops"), Reply(503, "oops"))
    sleeps = Sleeps()
    m = progress_message(job_id="j", done=1, total=2, bytes_done=1, elapsed_s=1, failed=0)
    with capture_logs() as logs:
        assert await Slack(http, receiver.url, sleep=sleeps).send(m) is False
    assert len(receiver.bodies) == 2
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "slack_failed"
    assert warning["status"] == 503
    assert warning["target"] == "slack webhook"
    assert_no_secret(logs, receiver.url)


async def test_send_4xx_is_not_retried_and_logs_slacks_reason(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """A 404 "no_service" (revoked webhook) is not retried; Slack's reason word is logged."""
    receiver.answer(Reply(404, "no_service"))
    m = progress_message(job_id="j", done=1, total=2, bytes_done=1, elapsed_s=1, failed=0)
    with capture_logs() as logs:
        assert await Slack(http, receiver.url).send(m) is False
    assert len(receiver.bodies) == 1
    [warning] = warnings(logs, "slack_failed")
    assert (warning["status"], warning["reason"]) == (404, "no_service")
    assert_no_secret(logs, receiver.url)


@pytest.mark.parametrize(
    ("retry_after", "waited"), [("0", 0.0), ("2", 2.0), ("3600", 5.0), (None, 1.0)]
)
async def test_send_429_then_200_honours_retry_after(
    http: aiohttp.ClientSession, receiver: Receiver, retry_after: str | None, waited: float
) -> None:
    """A 429 waits what Retry-After asks (at most 5 s, 1 s when unsaid), then retries once."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    receiver.answer(Reply(429, "rate_limited", headers))
    sleeps = Sleeps()
    m = start_message(
        job_id="j", date="d", bottles=1, estimated_bytes=1, route="lambda", bucket="b"
    )
    with capture_logs() as logs:
        assert await Slack(http, receiver.url, sleep=sleeps).send(m) is True
    assert sleeps.asked == [waited]
    assert receiver.bodies == [m.payload(), m.payload()]
    assert not warnings(logs, "slack_failed")
    assert_no_secret(logs, receiver.url)


async def test_send_429_retries_with_the_default_sleep(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """With the real default sleep, a 429 with Retry-After: 0 is retried at once and succeeds."""
    receiver.answer(Reply(429, "rate_limited", {"Retry-After": "0"}))
    m = nothing_to_do_message(date="d", platforms=[], skipped=0)
    assert await Slack(http, receiver.url).send(m) is True
    assert len(receiver.bodies) == 2
    assert receiver.arrived[1] - receiver.arrived[0] < 1


async def test_send_timeout_returns_false(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    """A webhook slower than the timeout is False and a "timeout" warning, not an exception."""
    receiver.answer(Reply(hang=True))
    m = nothing_to_do_message(date="d", platforms=[], skipped=0)
    started = time.monotonic()
    with capture_logs() as logs:
        assert await Slack(http, receiver.url, timeout=0.2).send(m) is False
    assert time.monotonic() - started < 2
    [warning] = warnings(logs, "slack_failed")
    assert warning["error"] == "timeout"
    assert_no_secret(logs, receiver.url)


async def test_send_connection_refused_returns_false(http: aiohttp.ClientSession) -> None:
    """Nothing listening on the port is False and a "connection" warning."""
    url = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    m = nothing_to_do_message(date="d", platforms=[], skipped=0)
    with capture_logs() as logs:
        assert await Slack(http, url, timeout=2).send(m) is False
    [warning] = warnings(logs, "slack_failed")
    assert warning["error"] == "connection"
    assert_no_secret(logs, url)


async def test_send_malformed_url_returns_false_without_echoing_it(
    http: aiohttp.ClientSession,
) -> None:
    """Even a malformed webhook URL only ever yields a warning that does not quote it."""
    url = f"http://[::1{HOOK_PATH}"
    m = nothing_to_do_message(date="d", platforms=[], skipped=0)
    with capture_logs() as logs:
        assert await Slack(http, url).send(m) is False
    assert len(warnings(logs, "slack_failed")) == 1
    assert_no_secret(logs, url)


async def test_send_propagates_cancellation(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Cancelling a send mid-request raises CancelledError: it is never swallowed."""
    receiver.answer(Reply(hang=True))
    m = nothing_to_do_message(date="d", platforms=[], skipped=0)
    task = asyncio.create_task(Slack(http, receiver.url).send(m))
    while not receiver.bodies:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_disabled_slack_sends_nothing(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Without a webhook, send() is a quiet no-op returning False."""
    slack = Slack(http, None)
    assert slack.enabled is False
    with capture_logs() as logs:
        assert await slack.send(nothing_to_do_message(date="d", platforms=[], skipped=0)) is False
    assert logs == []
    assert receiver.bodies == []


async def test_repr_hides_the_url(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    """repr/str of a Slack never shows the webhook URL."""
    slack = Slack(http, receiver.url)
    assert slack.enabled is True
    for shown in (repr(slack), str(slack), f"{slack!r}"):
        assert SECRET_PART not in shown
        assert "127.0.0.1" not in shown


# --- resolve_webhook against moto Secrets Manager ------------------------------------

HOOK = f"https://hooks.slack.com{HOOK_PATH}"


@pytest.fixture(scope="module")
def aws() -> AioSession:
    """One SDK session for the module: it caches the service models clients are built from."""
    return get_session()


@pytest.fixture
async def secrets(aws: AioSession) -> AsyncIterator[Any]:
    """A real aiobotocore secretsmanager client on the moto server (AWS_ENDPOINT_URL)."""
    async with aws.create_client("secretsmanager") as client:
        yield client


async def make_secret(client: Any, value: str) -> str:
    name = f"mirrord/slack-{uuid.uuid4().hex[:8]}"
    await client.create_secret(Name=name, SecretString=value)
    return name


@pytest.mark.parametrize(
    "value",
    [
        HOOK,
        HOOK + "\n",
        orjson.dumps({"webhook_url": HOOK}).decode(),
        orjson.dumps({"url": HOOK}).decode(),
    ],
    ids=["plain", "trailing-newline", "json-webhook_url", "json-url"],
)
async def test_resolve_webhook_reads_the_secret(secrets: Any, value: str) -> None:
    """The secret holds the URL itself or JSON {"webhook_url"|"url": …}; both resolve."""
    name = await make_secret(secrets, value)
    with capture_logs() as logs:
        assert await resolve_webhook(secrets, secret_id=name, direct_url=None) == HOOK
    assert logs == []


async def test_resolve_webhook_missing_secret_is_none_with_warning(secrets: Any) -> None:
    """A secret that does not exist turns notifications off with one warning."""
    with capture_logs() as logs:
        got = await resolve_webhook(secrets, secret_id="mirrord/absent", direct_url=None)
    assert got is None
    [warning] = warnings(logs, "slack_secret_unusable")
    assert warning["code"] == "ResourceNotFoundException"
    assert warning["secret_id"] == "mirrord/absent"


@pytest.mark.parametrize(
    "value",
    [
        "not a url at all",
        "{bad json " + SECRET_PART,
        orjson.dumps({"other": HOOK}).decode(),
        orjson.dumps([HOOK]).decode(),
        f"http://example.com{HOOK_PATH}",
        f"ftp://example.com{HOOK_PATH}",
        f"https://{HOOK_PATH}",
    ],
    ids=["text", "bad-json", "json-without-url", "json-list", "plain-http", "ftp", "no-host"],
)
async def test_resolve_webhook_unusable_secret_is_none(secrets: Any, value: str) -> None:
    """A secret that is no usable https:// URL is None and a warning that does not quote it."""
    name = await make_secret(secrets, value)
    with capture_logs() as logs:
        assert await resolve_webhook(secrets, secret_id=name, direct_url=None) is None
    [warning] = warnings(logs, "slack_secret_unusable")
    assert value.strip() not in repr(logs)
    assert SECRET_PART not in repr(logs)
    assert warning["secret_id"] == name


async def test_resolve_webhook_unreachable_secrets_manager_is_none(aws: AioSession) -> None:
    """A botocore connection error is a warning and None, not an exception."""
    config = AioConfig(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1})
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with aws.create_client("secretsmanager", endpoint_url=endpoint, config=config) as client:
        with capture_logs() as logs:
            assert await resolve_webhook(client, secret_id="x", direct_url=None) is None
    [warning] = warnings(logs, "slack_secret_unusable")
    assert warning["code"] == "EndpointConnectionError"


async def test_resolve_webhook_direct_url_wins(secrets: Any) -> None:
    """A direct URL is used as given; the secret is not even read."""
    local = f"http://127.0.0.1:8080{HOOK_PATH}"
    with capture_logs() as logs:
        got = await resolve_webhook(secrets, secret_id="mirrord/absent", direct_url=local)
    assert got == local
    assert logs == []
    assert await resolve_webhook(None, secret_id=None, direct_url=HOOK) == HOOK
    assert await resolve_webhook(None, secret_id=None, direct_url="http://[::1]:9/x") is not None


async def test_resolve_webhook_refuses_plain_http_elsewhere() -> None:
    """http://example.com is refused: only loopback may use plain http."""
    url = f"http://example.com{HOOK_PATH}"
    with capture_logs() as logs:
        assert await resolve_webhook(None, secret_id=None, direct_url=url) is None
    assert len(warnings(logs, "slack_secret_unusable")) == 1
    assert_no_secret(logs, url)


async def test_resolve_webhook_nothing_configured_is_quietly_none() -> None:
    """No secret id and no URL: notifications are simply off, without a warning."""
    with capture_logs() as logs:
        assert await resolve_webhook(None, secret_id=None, direct_url=None) is None
        assert await resolve_webhook(None, secret_id="", direct_url="") is None
    assert logs == []


# --- SlackProgress -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """An inner Progress that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", total))

    def add_bytes(self, n: int) -> None:
        self.calls.append(("add_bytes", n))

    def done(self, ok: bool) -> None:
        self.calls.append(("done", ok))

    def close(self) -> None:
        self.calls.append(("close", None))


def posted(receiver: Receiver) -> list[str]:
    return [body["text"] for body in receiver.bodies]


async def test_progress_posts_every_ten_percent_but_not_at_the_end(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Posts at 10 %, 20 % … 90 % of bottles; none at 100 % (the success message says it)."""
    clock = Clock()
    progress = SlackProgress(Slack(http, receiver.url), Recorder(), job_id="job-p", clock=clock)
    progress.start(100)
    for _ in range(100):
        clock.now += 1
        progress.add_bytes(1_000_000)
        progress.done(True)
        await progress.flush()
    await progress.aclose()
    texts = posted(receiver)
    assert len(texts) == 9
    for n, text in zip(range(10, 100, 10), texts, strict=True):
        assert f"{n}/100 bottles ({n} %)" in text
        assert "job-p" in text
    assert "10.0 MB" in texts[0]
    for body in receiver.bodies:
        check_message(Message(body["text"], tuple(body["blocks"])))


async def test_progress_posts_after_fifteen_minutes_of_little_progress(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """With little progress, a post comes after 15 min, also from bytes alone (one huge bottle)."""
    clock = Clock()
    progress = SlackProgress(Slack(http, receiver.url), Recorder(), job_id="slow", clock=clock)
    progress.start(1000)
    progress.done(False)
    clock.now += 899
    progress.add_bytes(10)
    await progress.flush()
    assert receiver.bodies == []
    clock.now += 2
    progress.done(True)  # 0.2 %, but 15 min have passed
    await progress.flush()
    assert len(receiver.bodies) == 1
    assert "2/1,000 bottles" in posted(receiver)[0]
    assert "1 failed" in posted(receiver)[0]
    clock.now += 900
    progress.add_bytes(5_000_000)  # no bottle finished, bytes flow: still a post
    await progress.aclose()
    assert len(receiver.bodies) == 2
    assert "5.0 MB" in posted(receiver)[1]


async def test_progress_forwards_every_call_to_inner(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Every start/add_bytes/done/close reaches the inner Progress, close only once."""
    inner = Recorder()
    progress = SlackProgress(Slack(http, receiver.url), inner, job_id="j", clock=Clock())
    progress.start(3)
    progress.add_bytes(7)
    progress.done(True)
    progress.done(False)
    progress.close()
    await progress.aclose()
    assert inner.calls == [
        ("start", 3),
        ("add_bytes", 7),
        ("done", True),
        ("done", False),
        ("close", None),
    ]


async def test_progress_aclose_waits_for_the_outstanding_send(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """done() never blocks; aclose() waits until the send in flight has been answered."""
    receiver.answer(Reply(delay=0.3))
    progress = SlackProgress(Slack(http, receiver.url), Recorder(), job_id="j", clock=Clock())
    progress.start(10)
    started = time.monotonic()
    progress.done(True)  # 10 %: a send starts in the background
    assert time.monotonic() - started < 0.05
    assert receiver.bodies == []
    await progress.aclose()
    assert len(receiver.bodies) == 1
    assert time.monotonic() - started >= 0.3


async def test_progress_keeps_only_the_newest_while_a_send_is_in_flight(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Progress produced while Slack is busy is coalesced: the newest wins, in order."""
    receiver.answer(Reply(delay=0.2))
    progress = SlackProgress(Slack(http, receiver.url), Recorder(), job_id="j", clock=Clock())
    progress.start(10)
    progress.done(True)  # 10 %: sent
    while not receiver.bodies:
        await asyncio.sleep(0.01)
    for _ in range(3):
        progress.done(True)  # 20 %, 30 %, 40 %: queued, each replacing the last
    await progress.aclose()
    texts = posted(receiver)
    assert len(texts) == 2
    assert "1/10 bottles" in texts[0]
    assert "4/10 bottles" in texts[1]


async def test_progress_aclose_is_bounded(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    """aclose() gives up on a hanging send after its bound, with a warning and no exception."""
    receiver.answer(Reply(hang=True))
    progress = SlackProgress(Slack(http, receiver.url), Recorder(), job_id="j", clock=Clock())
    progress.start(10)
    progress.done(True)
    started = time.monotonic()
    with capture_logs() as logs:
        await progress.aclose(wait_s=0.1)
    assert time.monotonic() - started < 1
    assert len(warnings(logs, "slack_progress_abandoned")) == 1
    assert_no_secret(logs, receiver.url)


async def test_progress_with_disabled_slack_only_forwards(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """Without a webhook, SlackProgress is just its inner Progress."""
    inner = Recorder()
    progress = SlackProgress(Slack(http, None), inner, job_id="j", clock=Clock())
    progress.start(2)
    progress.done(True)
    await progress.aclose()
    assert receiver.bodies == []
    assert inner.calls == [("start", 2), ("done", True), ("close", None)]
