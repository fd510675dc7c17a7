"""``make run-local``: the whole loop on one machine, offline.

Starts a moto server (S3) and the emulator (formula.json, GHCR, blob storage) on loopback,
creates a bucket, runs ``mirrord sync`` on the embedded sample catalog, prints the report,
a listing of the bucket and ``mirrord verify``, then stops everything it started. mirrord
itself runs as a separate process, exactly as a user would run it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import botocore.session
import orjson

BUCKET = "mirrord-local"
DATE_ENV = "MIRRORD_LOCAL_DATE"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _process(args: list[str], **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, **kw)  # type: ignore[call-overload]  # noqa: S603
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback only
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"run-local: {url} did not come up") from None
            time.sleep(0.1)


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def main() -> int:
    moto_port = _free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with (
        tempfile.TemporaryFile() as moto_log,
        _process(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=moto_log,
            stderr=subprocess.STDOUT,
        ) as moto,
        _process([sys.executable, "-m", "mirrord.emulator"], stdout=subprocess.PIPE) as emulator,
    ):
        assert emulator.stdout is not None
        ready = orjson.loads(emulator.stdout.readline() or b"{}")
        if "api_url" not in ready:
            raise SystemExit("run-local: the emulator did not start")
        _wait_http(f"{endpoint}/moto-api/", moto)
        _section("peers")
        print(f"moto S3        {endpoint}")
        print(f"formula.json   {ready['api_url']}  ({ready['formulae']} formulae)")
        print(f"GHCR registry  {ready['registry_url']}  → blob storage {ready['blob_url']}")

        s3 = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106
        )
        s3.create_bucket(Bucket=BUCKET)

        env = {**os.environ, **aws, "MIRRORD_BUCKET": BUCKET, "MIRRORD_API_URL": ready["api_url"]}
        # In a terminal the progress bar is the show; the JSON logs stay for pipes.
        if sys.stderr.isatty():
            env.setdefault("MIRRORD_LOG_LEVEL", "warning")
        date = os.environ.get(DATE_ENV)
        _section("mirrord sync")
        sync = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "mirrord",
                "sync",
                "--json",
                *(["--date", date] if date else []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            check=False,
        )
        report = orjson.loads(sync.stdout or b"{}")
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())

        _section(f"s3://{BUCKET}")
        listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        for obj in listing[:15]:
            print(f"{obj['Size']:>12,}  {obj['Key']}")
        if len(listing) > 15:
            print(f"{'':>12}  … {len(listing) - 15} more")
        print(f"{sum(o['Size'] for o in listing):>12,}  bytes in {len(listing)} objects")

        _section("mirrord verify")
        verify = subprocess.run(
            [sys.executable, "-m", "mirrord", "verify"],
            env=env,
            check=False,
            stderr=subprocess.DEVNULL,
        )
        s3.close()
        print(f"\nsync exit {sync.returncode}, verify exit {verify.returncode}")
        return sync.returncode or verify.returncode


if __name__ == "__main__":
    sys.exit(main())
