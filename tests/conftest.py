"""Real peers for every test: a moto server process for S3, the project's emulator for
GHCR and the Homebrew API over loopback HTTP. Nothing of mirrord's own I/O is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
import time
import uuid
import warnings
from asyncio.subprocess import DEVNULL, PIPE
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import botocore.exceptions
import orjson
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from mirrord_dev.emulator import Emulator, EmulatorCatalog, sample_catalog
from mirrord_dev.procs import answers, free_port, moto_client, moto_server, process, wait_ready

from mirrord.app import App, configure_logging, open_app
from mirrord.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# docs/design.md §10: the fields every `sync --json` report carries.
REPORT_FIELDS = frozenset(
    {
        "job_id",
        "date",
        "planned",
        "downloaded",
        "adopted",
        "skipped",
        "failed",
        "bytes",
        "duration_s",
    }
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        default=None,
        help="write docs/reliability.md here after a full tests/system/test_reliability.py run",
    )


@dataclass
class Ledger:
    """What `make reliability` measured, for docs/reliability.md: the fault matrix, the
    crash sweep and the soak (tests/system/test_reliability.py), the hostile upstreams
    (tests/integration/test_hostile_upstream.py). ``writer`` writes the report at the session's end."""

    matrix: list[dict[str, Any]] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    soak: dict[str, Any] = field(default_factory=dict)
    hostile: list[dict[str, Any]] = field(default_factory=list)
    writer: Callable[[Path, Ledger], None] | None = None


@pytest.fixture(scope="session")
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    book = Ledger()
    yield book
    out = request.config.getoption("--reliability-report")
    if out and book.writer is not None:
        book.writer(Path(out), book)


def days_ago(days: int) -> str:
    """A job date ``days`` before today (UTC): job dates must lie near today (jobs.py), so
    tests name theirs relative to it rather than as a literal that ages out."""
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


# The job date most tests use; a week and a bit ago, as a weekly cron's would be.
DATE = days_ago(9)


def free_grpc_port() -> int:
    """SeaweedFS listens on port+10000 for gRPC too: both must be free."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="session")
def seaweed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SeaweedFS S3 gateway: unlike moto it checks ChecksumSHA256 and part CRCs."""
    weed = Path(sys.executable).with_name("weed")
    data = tmp_path_factory.mktemp("seaweed")
    s3, master, volume, filer = (free_grpc_port() for _ in range(4))
    command = [
        str(weed),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-volume.max=4",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-metricsPort=0",
    ]
    url = f"http://127.0.0.1:{s3}"
    with process(command, stop_after=5, stdout=DEVNULL, stderr=DEVNULL) as proc:
        wait_ready(proc, lambda: answers(f"{url}/"), "SeaweedFS")
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's AWS or MIRRORD settings, nor the machine's ~/.aws;
    credentials and region are fake. No endpoint: only the `moto` fixture gives one, so a
    test that reaches AWS without asking for moto fails instead of leaving the machine."""
    for name in list(os.environ):
        # ECS_…: on an ECS host the metrics record would be logged (settings.py).
        if name.startswith(("AWS_", "MIRRORD_", "ECS_CONTAINER_METADATA_URI")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    configure_logging("debug", human=False)  # JSON, also under `pytest -s` in a terminal


# Tests under these folders talk to S3/SQS: each gets the `moto` fixture (see below).
MOTO_FOLDERS = frozenset({"integration", "system"})


def pytest_collectstart(collector: pytest.Collector) -> None:
    """Every module of tests/integration and tests/system uses the `moto` fixture, as if it
    said ``pytestmark = pytest.mark.usefixtures("moto")``; tests/unit never does. (A
    conftest.py per folder would shadow this one, which test modules import as `conftest`.)"""
    if isinstance(collector, pytest.Module) and collector.path.parent.name in MOTO_FOLDERS:
        collector.add_marker(pytest.mark.usefixtures("moto"))


SERVERS = frozenset({"moto", "moto_url", "moto_s3", "seaweed_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`pytest tests/unit` starts no server: a unit test that asks for one, even through
    another fixture, is a collection error rather than a silent moto start."""
    for item in items:
        wanted = SERVERS.intersection(getattr(item, "fixturenames", ()))
        if "unit" in item.path.parts and wanted:
            raise pytest.UsageError(f"{item.nodeid}: a unit test uses {sorted(wanted)}")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server process for the session; tests isolate by bucket."""
    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def moto_s3(moto_url: str) -> Any:
    """The fixtures' own S3 client on moto (not the App's): makes and removes buckets."""
    return moto_client("s3", moto_url)


@pytest.fixture
def moto(
    request: pytest.FixtureRequest, aws_env: None, moto_url: str, moto_s3: Any
) -> Iterator[str]:
    """AWS_ENDPOINT_URL points at the session's moto server for the test; afterwards the
    test's bucket (``bucket_name``), if it made one, and any named after it
    (``<bucket_name>-other``) are emptied and deleted, so moto does not hold every test's
    bytes until the session ends."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    bucket = (
        request.getfixturevalue("bucket_name") if "bucket_name" in request.fixturenames else None
    )
    yield moto_url
    if bucket is not None:
        names = [b["Name"] for b in moto_s3.list_buckets().get("Buckets", [])]
        for name in names:
            if name == bucket or name.startswith(f"{bucket}-"):
                remove_bucket(moto_s3, name)


def remove_bucket(s3: Any, bucket: str) -> None:
    """Delete ``bucket`` with every object version, delete marker and open multipart
    upload in it; a bucket that is not there is no error."""
    try:
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    except s3.exceptions.NoSuchBucket:
        pass
    except botocore.exceptions.ClientError as exc:  # say so, but the test's verdict stands
        warnings.warn(f"bucket {bucket} left in moto: {exc}", stacklevel=1)


@pytest.fixture
def bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def make_settings(
    bucket: str, api_url: str = "http://127.0.0.1:1/api/formula.json", **kw: Any
) -> Settings:
    base: dict[str, Any] = {
        "bucket": bucket,
        "api_url": api_url,
        "part_size": 5 * 2**20,
        "max_attempts": 4,
        "read_timeout": 2.0,
        "connect_timeout": 2.0,
        "concurrency": 4,
    }
    base.update(kw)
    return Settings(**base)


@pytest.fixture
def bucket(bucket_name: str, moto_s3: Any, moto: str) -> str:
    """A fresh empty bucket in moto, made by the test's own client; `moto` removes it."""
    moto_s3.create_bucket(Bucket=bucket_name)
    return bucket_name


@dataclass
class World:
    emu: Emulator
    app: App


class MakeWorld(Protocol):
    async def __call__(
        self,
        catalog: EmulatorCatalog | None = None,
        *,
        emulator: Mapping[str, Any] | None = None,
        settings: Callable[[Emulator], Settings] | None = None,
        s3: Mapping[str, Any] | None = None,
        **settings_kw: Any,
    ) -> World: ...


@pytest.fixture
async def make_world(bucket: str) -> AsyncIterator[MakeWorld]:
    """``await make_world(catalog, emulator={...}, **settings)``: the emulator serving
    ``catalog`` (sample_catalog() unless given; ``emulator`` are Emulator's options) and
    the App as production builds it, on ``make_settings(bucket, emu.api_url, **settings)``
    (or ``settings(emu)``) and the test's fresh bucket (``s3``: open_app's S3 options).
    Both close at the test's end, then the bucket goes."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            catalog: EmulatorCatalog | None = None,
            *,
            emulator: Mapping[str, Any] | None = None,
            settings: Callable[[Emulator], Settings] | None = None,
            s3: Mapping[str, Any] | None = None,
            **settings_kw: Any,
        ) -> World:
            emu = Emulator(sample_catalog() if catalog is None else catalog, **(emulator or {}))
            await stack.enter_async_context(emu)
            chosen = (
                make_settings(bucket, emu.api_url, **settings_kw)
                if settings is None
                else settings(emu)
            )
            app = await stack.enter_async_context(open_app(chosen, **(s3 or {})))
            return World(emu, app)

        yield make


@pytest.fixture
async def app(bucket: str) -> AsyncIterator[App]:
    """Clients as production builds them, against a fresh bucket in moto."""
    async with open_app(make_settings(bucket)) as built:
        yield built


SECRET_PART = "xoxSeCrEt9TokenPart"
HOOK_PATH = f"/services/T000/B000/{SECRET_PART}"

# --- a real Slack stand-in, shared by the notification and control-plane tests -----


@dataclass
class Reply:
    status: int = 200
    text: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # hold the answer until the test ends (beyond any client timeout)
    delay: float = 0.0


@dataclass
class Receiver:
    """Records each POSTed JSON body; answers from ``replies`` in order, then 200 "ok"."""

    url: str = ""
    bodies: list[Any] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        self.arrived.append(time.monotonic())
        reply = self.replies.popleft() if self.replies else Reply()
        if reply.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, text=reply.text, headers=reply.headers)


@contextlib.asynccontextmanager
async def loopback(
    app: web.Application, *, ssl_context: ssl.SSLContext | None = None, **runner: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port> in the test's loop; yields its base URL."""
    runs = web.AppRunner(app, **{"access_log": None, "shutdown_timeout": 0.25, **runner})
    await runs.setup()
    try:
        await web.TCPSite(runs, "127.0.0.1", 0, ssl_context=ssl_context).start()
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{runs.addresses[0][1]}"
    finally:
        await runs.cleanup()


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A Slack incoming-webhook stand-in on 127.0.0.1:<free port>, in the test's loop."""
    rec = Receiver()
    app = web.Application()
    app.router.add_post(HOOK_PATH, rec.handle)
    async with loopback(app) as url:
        rec.url = f"{url}{HOOK_PATH}"
        yield rec
        rec.release.set()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as rec:
        yield rec


@dataclass
class Queues:
    """A job queue and its DLQ on the moto server, with the test's SQS client."""

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
        """Every message on the queue, taken off it (for tests that run no daemon)."""
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


@contextlib.asynccontextmanager
async def job_queues(name: str, max_receives: int) -> AsyncIterator[Queues]:
    """A job queue ``name`` with a DLQ after ``max_receives`` receives, as infra makes it."""
    async with get_session().create_client("sqs") as client:
        dlq = (await client.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        arn = (await client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)}
        url = (
            await client.create_queue(
                QueueName=name,
                Attributes={
                    "VisibilityTimeout": "30",
                    "RedrivePolicy": orjson.dumps(redrive).decode(),
                },
            )
        )["QueueUrl"]
        yield Queues(url, dlq, client)


@dataclass
class CliResult:
    code: int
    stdout: bytes
    stderr: bytes

    def json(self) -> Any:
        return orjson.loads(self.stdout)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr.splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out


async def spawn_cli(
    *args: str, env: dict[str, str] | None = None, stdout: int = PIPE, stderr: int = PIPE
) -> asyncio.subprocess.Process:
    """``python -m mirrord`` started as a separate process (a daemon, a sync to kill),
    with the test's environment plus ``env``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirrord",
        *args,
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
    """``python -m mirrord`` as a separate process; the event loop keeps serving the
    emulator meanwhile, so in-process peers and the CLI talk over real sockets."""
    proc = await spawn_cli(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()  # never leave a hung mirrord behind for the next tests
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CliResult(proc.returncode, out, err)
