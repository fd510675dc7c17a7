"""``make run-local``: the whole loop on one machine, offline, through the real path.

1. Starts a moto server (S3, SQS) and the emulator (formula.json, GHCR, blob storage) on
   loopback, and a Slack stand-in that prints every message it receives.
2. Creates the bucket, and the job queue with its dead-letter queue.
3. Starts ``mirrord daemon`` in the background, as ECS would.
4. Invokes the enqueue Lambda's handler with an EventBridge scheduled event, as the weekly
   cron would: it plans, estimates, and sends the job to SQS.
5. Waits for the daemon to finish the job and delete the message, stops it with SIGTERM,
   and prints the report (status.json), a listing of the bucket and ``mirrord verify``.
6. Runs ``mirrord check-client`` for every target through ``bucket_front``, a stand-in
   for CloudFront with OAC: the mirror as brew 6 sees it.
7-8. What to mirror and what to keep (``local_keep.py``): a subset mirror from
   ``dev/Brewfile`` with a fallback mirror while GHCR fails, ``mirrord status``, prune.

Everything it started is stopped on the way out, also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import subprocess  # nosec B404  # run-local starts moto and mirrord itself
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import orjson

from mirrord_dev.local_keep import prune_after_upstream_moves, subset_with_fallback
from mirrord_dev.procs import MOTO_KEY, MOTO_REGION, moto_client, moto_server, process, wait_until

BUCKET = "mirrord-local"
QUEUE = "mirrord-jobs"


def _wait(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    try:
        wait_until(check, what, seconds, step=0.2)
    except TimeoutError:
        raise SystemExit(f"run-local: timed out waiting for {what}") from None


@contextlib.contextmanager
def _slack_receiver() -> Iterator[tuple[str, list[str]]]:
    """A Slack incoming-webhook stand-in: prints each message's text as it arrives."""
    received: list[str] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            received.append(body.get("text", ""))
            print(f"  [slack] {body.get('text', '')}", flush=True)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/local/hook", received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Front:
    url: str = ""
    requests: int = 0
    with_authorization: int = 0  # viewers that sent one (brew never does)
    paths: list[str] = field(default_factory=list)


# What infra/modules/cdn grants CloudFront: GetObject on these prefixes only, no ListBucket.
SERVED = ("v2/", "api/")


@contextlib.contextmanager
def bucket_front(
    s3: Any,
    bucket: str,
    *,
    served: tuple[str, ...] | None = SERVED,
    token_sha256: tuple[str, ...] = (),
) -> Iterator[Front]:
    """A stand-in for CloudFront with Origin Access Control in front of the private bucket.

    S3 (and moto) refuse anonymous GETs. CloudFront with OAC signs its own request to
    the bucket and forwards none of the viewer's headers, Authorization included; so
    does this front: each GET or HEAD becomes a GetObject of the key that is the path,
    signed by the botocore client ``s3``. As the deployed grant makes it, only keys under
    ``served`` are readable, and without ListBucket S3 answers 403 both for a key outside
    them and for a missing one. ``served=None``: the whole bucket, missing keys 404 (a
    front an operator runs with ListBucket, which check-client can read status.json
    through).
    """
    front = Front()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            front.requests += 1
            front.paths.append(self.path)
            if token_sha256 and not _reader_allowed(self.headers, token_sha256):
                self.send_response(403)
                self.end_headers()
                return
            if "Authorization" in self.headers:
                front.with_authorization += 1  # and it goes no further
            key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
            if served is not None and not key.startswith(served):
                self.send_response(403)
                self.end_headers()
                return
            try:
                found = s3.get_object(Bucket=bucket, Key=key)
                data = found["Body"].read()
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                missing = code in ("NoSuchKey", "404", "NotFound")
                self.send_response((404 if served is None else 403) if missing else 502)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", found.get("ContentType", "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    front.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()


def _reader_allowed(headers: Any, hashes: tuple[str, ...]) -> bool:
    auth = headers.get("Authorization", "")
    bearer = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
    custom = headers.get("X-Mirror-Token", "").strip()
    return any(t and hashlib.sha256(t.encode()).hexdigest() in hashes for t in (bearer, custom))


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


@dataclass
class Peers:
    endpoint: str  # moto (S3, SQS)
    emulator: dict[str, Any]  # the emulator's ready line: api_url, registry_url, …
    slack_url: str
    slack: list[str]  # the texts the Slack stand-in received
    work: Path  # logs and the daemon's health file


@contextlib.contextmanager
def _peers(work: Path) -> Iterator[Peers]:
    """Step 1: moto, the emulator and the Slack stand-in, up on loopback for the block."""
    with (
        open(work / "moto.log", "wb") as moto_log,
        process(
            [sys.executable, "-m", "mirrord_dev.emulator", "--flat"], 15, stdout=subprocess.PIPE
        ) as emulator,
        moto_server(log=moto_log, seconds=120) as endpoint,
        _slack_receiver() as (slack_url, slack),
    ):
        assert emulator.stdout is not None
        ready = orjson.loads(emulator.stdout.readline() or b"{}")
        if "api_url" not in ready:
            raise SystemExit("run-local: the emulator did not start")
        _section("peers")
        print(f"moto (S3, SQS)  {endpoint}")
        print(f"formula.json    {ready['api_url']}  ({ready['formulae']} formulae)")
        print(f"GHCR registry   {ready['registry_url']}  → blob storage {ready['blob_url']}")
        print(f"fallback mirror {ready['flat_url']}  (a TUNA/USTC-style bottles/ folder)")
        print(f"Slack receiver  {slack_url.rsplit('/services', 1)[0]}")
        print(f"logs            {work}")
        yield Peers(endpoint, ready, slack_url, slack, work)


def _bucket_and_queue(s3: Any, sqs: Any) -> str:
    """Step 2: the bucket, and the job queue with its dead-letter queue, as infra makes
    them; returns the queue's URL."""
    s3.create_bucket(Bucket=BUCKET)
    dlq = sqs.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = orjson.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
    queue: str = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={"VisibilityTimeout": "180", "RedrivePolicy": redrive.decode()},
    )["QueueUrl"]
    return queue


def _environment(peers: Peers, queue: str) -> dict[str, str]:
    """The daemon's and the CLI's environment: settings as ECS would pass them."""
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": peers.endpoint,
        "AWS_ACCESS_KEY_ID": MOTO_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_KEY,
        "AWS_DEFAULT_REGION": MOTO_REGION,
        "MIRRORD_BUCKET": BUCKET,
        "MIRRORD_API_URL": peers.emulator["api_url"],
        "MIRRORD_QUEUE_URL": queue,
        "MIRRORD_SLACK_WEBHOOK_URL": peers.slack_url,
        "MIRRORD_HEALTH_FILE": str(peers.work / "healthy"),
        "MIRRORD_LOGS_HINT": str(peers.work / "daemon.log"),
    }


def _weekly_cron(env: dict[str, str]) -> None:
    """Step 4: the enqueue Lambda's handler, invoked with an EventBridge scheduled event."""
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "MIRRORD_"))})
    from mirrord.lambdas.enqueue import handler  # after the environment is set

    event = {
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/mirrord-weekly"],
        "detail": {},
    }
    result = handler(event, None)
    print(
        f"enqueue → {result['route']}: {result['bottles']} bottles, "
        f"about {result.get('estimate', {}).get('bytes', 0):,} bytes"
    )


def _daemon_runs_the_job(env: dict[str, str], sqs: Any, queue: str, work: Path) -> int:
    """Steps 3-5: the daemon in the background, the cron's job, the daemon finishing it
    and deleting the message; SIGTERM then. Returns the daemon's exit code."""
    _section("mirrord daemon (background) and the weekly cron")
    command = [sys.executable, "-m", "mirrord", "daemon"]
    with (
        open(work / "daemon.log", "wb") as daemon_log,
        process(command, 15, env=env, stderr=daemon_log) as daemon,
    ):
        _wait(lambda: (work / "healthy").exists() or daemon.poll() is not None, "daemon")
        _weekly_cron(env)

        def done() -> bool:
            depth = sqs.get_queue_attributes(
                QueueUrl=queue,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            return sum(int(v) for v in depth.values()) == 0 or daemon.poll() is not None

        _wait(done, "the daemon to finish the job")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    print(f"daemon exited {code} after SIGTERM; the job message was deleted")
    return code


def _report(s3: Any, work: Path) -> dict[str, Any]:
    """Step 5: status.json and a listing of the bucket, printed; returns the report."""
    _section("report (status.json)")
    try:
        status: dict[str, Any] = orjson.loads(
            s3.get_object(Bucket=BUCKET, Key="status.json")["Body"].read()
        )
    except s3.exceptions.NoSuchKey:
        raise SystemExit(f"run-local: no status.json; see {work / 'daemon.log'}") from None
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())

    _section(f"s3://{BUCKET}")
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for obj in listing[:12]:
        print(f"{obj['Size']:>12,}  {obj['Key']}")
    if len(listing) > 12:
        print(f"{'':>12}  … {len(listing) - 12} more")
    print(f"{sum(o['Size'] for o in listing):>12,}  bytes in {len(listing)} objects")
    return status


def _verify_and_check_client(env: dict[str, str], s3: Any, status: dict[str, Any]) -> int:
    """Steps 5-6: ``mirrord verify`` and ``mirrord status``, then ``mirrord check-client``
    for every target via the CloudFront stand-in. Returns the first non-zero exit code,
    else 0."""
    _section("mirrord verify")
    verify = subprocess.run(  # nosec B603  # our own interpreter and module
        [sys.executable, "-m", "mirrord", "verify"], env=env, check=False, stderr=subprocess.DEVNULL
    )
    _section("mirrord status")
    shown = subprocess.run(  # nosec B603  # our own interpreter and module
        [sys.executable, "-m", "mirrord", "status"], env=env, check=False, stderr=subprocess.DEVNULL
    )
    _section("mirrord check-client: each target, as brew 6 would, via a CloudFront stand-in")
    with bucket_front(s3, BUCKET) as front:
        targets = [f"--target={t}" for t in status.get("platforms", ())]
        command = [sys.executable, "-m", "mirrord", "check-client", "--base", front.url]
        check = subprocess.run(  # noqa: S603  # nosec B603  # our own interpreter and module, no shell
            [*command, *targets], env=env, check=False, stderr=subprocess.DEVNULL
        )
    print(
        f"verify exit {verify.returncode}; status exit {shown.returncode}; "
        f"check-client exit {check.returncode}"
    )
    return verify.returncode or shown.returncode or check.returncode


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="mirrord-local-"))
    with _peers(work) as peers:
        s3, sqs = moto_client("s3", peers.endpoint), moto_client("sqs", peers.endpoint)
        queue = _bucket_and_queue(s3, sqs)
        env = _environment(peers, queue)
        daemon_code = _daemon_runs_the_job(env, sqs, queue, work)
        status = _report(s3, work)
        clients_code = _verify_and_check_client(env, s3, status)
        targets = list(status.get("platforms", ()))
        subset_code = subset_with_fallback(env, s3, peers.emulator, bucket_front, targets)
        subset_code = subset_code or prune_after_upstream_moves(env, peers.emulator)
        subset_code = subset_code or _verify_and_check_client(env, s3, status)
        print(f"\nslack messages: {len(peers.slack)}; daemon exit {daemon_code}")
        failed = daemon_code or clients_code or subset_code
        return failed or (0 if status.get("remaining") == 0 else 1)


if __name__ == "__main__":
    sys.exit(main())
