"""The local servers' plumbing, written once for the tests, ``make run-local`` and the
benchmarks: a free loopback port, waiting for a child to answer, stopping it, and the
moto server process (S3, SQS, Secrets Manager) they all stand S3 up with."""

from __future__ import annotations

import contextlib
import socket
import subprocess  # nosec B404  # our own interpreter and the tools we start
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any

import botocore.session

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], what: str, seconds: float = 60, step: float = 0.1
) -> None:
    """Poll ``check`` until it holds; TimeoutError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(step)


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all: an error status counts as up."""
    try:
        urllib.request.urlopen(url, timeout=1).close()  # noqa: S310  # nosec B310  # a loopback URL we built
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def listens(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback ``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(
    proc: subprocess.Popen[Any], ready: Callable[[], bool], what: str, seconds: float = 60
) -> None:
    """Wait until ``ready()``; RuntimeError if ``proc`` exits or the time runs out first
    (the process is killed then: nothing is left listening behind a failed start)."""
    try:
        wait_until(lambda: proc.poll() is not None or ready(), what, seconds)
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not start within {seconds:g} s") from None
    if proc.poll() is not None:
        raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")


def stop(proc: subprocess.Popen[Any], seconds: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``seconds``: a moto holding GBs, or weed in its raft
    shutdown, can take long to exit under load, and its data is temporary anyway."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def process(args: list[str], stop_after: float = 10, **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """``Popen(args, **kw)`` for a block, stopped on the way out (errors and Ctrl-C too)."""
    proc = subprocess.Popen(args, **kw)  # noqa: S603  # nosec B603  # our own interpreter and tools, no shell
    try:
        yield proc
    finally:
        stop(proc, stop_after)


@contextlib.contextmanager
def moto_server(log: IO[bytes] | int = subprocess.DEVNULL, seconds: float = 60) -> Iterator[str]:
    """A moto server process on a free loopback port for a block; yields its URL once it
    answers. Isolate users of one server by bucket and queue names."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    with process(command, stdout=log, stderr=subprocess.STDOUT) as proc:
        wait_ready(proc, lambda: answers(f"{url}/moto-api/"), "moto server", seconds)
        yield url


MOTO_REGION = "us-east-1"
MOTO_KEY = "testing"  # moto accepts any access key; this is no credential


def moto_client(service: str, endpoint_url: str) -> Any:
    """A botocore (synchronous) client of ``service`` on the moto server at ``endpoint_url``.

    Typed Any, once, here: botocore's stubs type every client as BaseClient, whose
    operations are generated at run time; the typed clients installed are aiobotocore's
    (async), which a thread-served stand-in or a sync fixture cannot use."""
    return botocore.session.get_session().create_client(
        service,
        endpoint_url=endpoint_url,
        region_name=MOTO_REGION,
        aws_access_key_id=MOTO_KEY,
        aws_secret_access_key=MOTO_KEY,
    )
