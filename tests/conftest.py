"""Real peers for every test: a moto server process for S3, the project's emulator for
GHCR and the Homebrew API over loopback HTTP. Nothing of mirrord's own I/O is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from asyncio.subprocess import PIPE
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server process for the session; tests isolate by bucket."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a moto holding GBs can take long to exit under load
        proc.kill()
        proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


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
    proc = subprocess.Popen(
        [
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{s3}"
    _wait_http(f"{url}/", proc, "SeaweedFS")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # weed can linger in raft shutdown; its data is temporary
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> None:
    """No test sees the developer's AWS or MIRRORD settings; all point at moto."""
    for name in list(os.environ):
        # ECS_…: on an ECS host the metrics record would be logged (settings.py).
        if name.startswith(("AWS_", "MIRRORD_", "ECS_CONTAINER_METADATA_URI")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    configure_logging("debug", human=False)  # JSON, also under `pytest -s` in a terminal


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
async def app(bucket_name: str) -> AsyncIterator[App]:
    """Clients as production builds them, against a fresh bucket in moto."""
    async with open_app(make_settings(bucket_name)) as built:
        await built.store._client.create_bucket(Bucket=bucket_name)
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


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A Slack incoming-webhook stand-in on 127.0.0.1:<free port>, in the test's loop."""
    rec = Receiver()
    app = web.Application()
    app.router.add_post(HOOK_PATH, rec.handle)
    async with loopback(app) as url:
        rec.url = f"{url}{HOOK_PATH}"
        yield rec
        rec.release.set()


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
