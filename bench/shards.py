"""``make bench`` (scale-out, issue 16): fill an empty mirror with 1, 2, 4 and 8 shard
processes against a latency-bound origin, as GHCR looks from one task.

    python -m bench.shards [--smoke] [--out DIR] [--workers 1,2,4,8]

The origin is the emulator behind ``mirrord_dev.latency`` (each blob 50–200 ms to its
first byte, each connection capped), in its own process; the sink is a moto server (real
conditional writes: the lock and the hash file's merge are what N shards contend on).
N = 1 is a plain ``mirrord sync``; N > 1 runs ``mirrord sync --shard K/N --job-id J``
processes at once, then ``mirrord sync --finalize --job-id J --shards N``. Every run is
checked: all bottles stored and in the hash file, no blob fetched twice. Writes
``DIR/bench-shards.{json,md,png}``; the .md ends with the same figures on paper for the
real first full sync. Until ``--shard`` exists, N > 1 rows are marked as not run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson
from mirrord_dev.procs import free_port, listens, stop, wait_ready

from bench.tools import ROOT, Sink, aws_env, tool

DATE = "2026-11-22"
TAG = "arm64_tahoe"
KB, MB = 1000, 1000 * 1000
# The origin as one task sees GHCR: first byte after 50–200 ms, then this per connection.
FIRST_BYTE = (0.05, 0.2)
RATE = 2 * MB
CONCURRENCY = 4  # transfers per worker: each worker is latency-bound, not CPU-bound
# The real first full sync (issue 16), for the figures on paper.
REAL_BOTTLES, REAL_GB = 45_000, 100
# One task moves 100 GB in one to three hours (issue 16): 2 hours, ~14 MB/s.
ONE_TASK_MB_S = 14
FARGATE_USD_H = 0.12  # 2 vCPU / 8 GB, us-east-1


@dataclass
class Run:
    workers: int
    ran: bool
    seconds: float = 0.0
    speedup: float = 0.0
    blob_gets: int = 0
    blobs_fetched_twice: int = 0
    manifest_gets: int = 0
    stored: int = 0
    note: str = ""


def serve(bottles: int, seed: int) -> int:
    """The origin process: prints one JSON line (urls, corpus), serves until SIGTERM."""
    import random
    import signal

    from mirrord_dev.emulator.server import Emulator
    from mirrord_dev.latency import Latency, slow_blobs

    from bench.origin import Corpus, _log_uniform, build_catalog

    rng = random.Random(f"shards:{seed}")  # noqa: S311 - test data
    corpus = Corpus("shards", "", tuple(_log_uniform(rng, bottles, 100 * KB, 2 * MB)))

    async def main() -> None:
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, done.set)
        async with (
            Emulator(build_catalog(corpus, seed)) as emu,
            slow_blobs(emu, Latency(FIRST_BYTE, RATE, seed)),
        ):
            ready = {"api_url": emu.api_url, "registry_url": emu.registry_url}
            ready |= {"bottles": len(corpus.sizes), "bytes": corpus.total}
            sys.stdout.buffer.write(orjson.dumps(ready) + b"\n")
            sys.stdout.flush()
            await done.wait()

    asyncio.run(main())
    return 0


def _get(url: str) -> Any:
    with urlopen(url, timeout=30) as r:  # noqa: S310 - our own loopback server
        return orjson.loads(r.read())


def _reset(registry: str) -> None:
    with urlopen(f"{registry}/_emulator/reset", data=b"", timeout=30):  # noqa: S310
        pass


def supports_shards() -> bool:
    out = subprocess.run(  # noqa: S603
        [tool("mirrord"), "sync", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return "--shard" in out and "--finalize" in out


def _sync_cmd(bucket: str, *extra: str) -> list[str]:
    return [
        tool("mirrord"), "sync", "--bucket", bucket, "--date", DATE, "--platform", TAG,
        "--concurrency", str(CONCURRENCY), "--json", *extra,
    ]  # fmt: skip


def fill(origin: dict[str, Any], sink: Sink, workers: int, run_no: int) -> Run:
    """One empty bucket filled by ``workers`` processes; checked, then counted."""
    import boto3

    bucket = f"bench-shards-{workers}-{run_no}"
    s3 = boto3.client("s3", endpoint_url=sink.endpoint, **_keys())
    s3.create_bucket(Bucket=bucket)
    _reset(origin["registry_url"])
    env = {
        **aws_env(sink),
        "MIRRORD_API_URL": origin["api_url"],
        "MIRRORD_LOG_LEVEL": "warning",
        "MIRRORD_BREW_MIRROR": "false",  # the bottles, as a shard moves them
        "MIRRORD_HEALTH_FILE": str(Path(tempfile.gettempdir()) / "mirrord-bench-health"),
    }
    job = f"{DATE}-bench-{workers}"
    if workers == 1:
        cmds = [_sync_cmd(bucket)]
    else:
        cmds = [
            _sync_cmd(bucket, "--shard", f"{k}/{workers}", "--job-id", job)
            for k in range(1, workers + 1)
        ]
    started = time.monotonic()
    pipe = subprocess.PIPE
    procs = [subprocess.Popen(c, env=env, stdout=pipe, stderr=pipe) for c in cmds]  # noqa: S603
    ended = [(p.communicate()[1], p.returncode) for p in procs]
    if workers > 1:
        final = _sync_cmd(bucket, "--finalize", "--job-id", job, "--shards", str(workers))
        done = subprocess.run(final, env=env, capture_output=True, check=False)  # noqa: S603
        ended.append((done.stderr, done.returncode))
    seconds = time.monotonic() - started
    for err, code in ended:
        if code != 0:
            raise RuntimeError(f"{workers} workers: exited {code}: {err[-1500:].decode()}")
    stored = _stored(s3, bucket)
    stats = _get(f"{origin['registry_url']}/_emulator/stats")
    gets = [b["requests"] for b in stats["blobs"].values()]
    run = Run(
        workers, True, seconds, 0.0, sum(gets), sum(1 for g in gets if g > 1),
        sum(stats["manifests"].values()), stored,
    )  # fmt: skip
    if stored != origin["bottles"] or sum(gets) < origin["bottles"]:
        raise RuntimeError(f"{workers} workers stored {stored} of {origin['bottles']}: {run}")
    return run


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench-secret",
        "region_name": "us-east-1",
    }


def _stored(s3: Any, bucket: str) -> int:
    """Bottles both stored under the job's folder and named by the hash file."""
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    }
    hashed = orjson.loads(s3.get_object(Bucket=bucket, Key="bottles_hash.json")["Body"].read())
    entries = hashed.get("bottles", hashed) if isinstance(hashed, dict) else {}
    return min(sum(1 for k in keys if k.endswith(".tar.gz")), len(entries))


def paper(speedups: dict[int, float]) -> list[str]:
    """The real first full sync on paper: one task at ONE_TASK_MB_S, N tasks at N times
    that scaled by the measured efficiency (the best measured for N, else linear's)."""
    lines = [
        "| tasks | minutes | task-hours | USD (Fargate 2 vCPU/8 GB) |",
        "|---:|---:|---:|---:|",
    ]
    one = REAL_GB * 1000 / ONE_TASK_MB_S / 60
    for n in (1, 2, 4, 8):
        efficiency = speedups.get(n, n) / n if n in speedups else 1.0
        minutes = one / (n * efficiency) + (3 if n > 1 else 0)  # + start-up and fan-in
        hours = n * minutes / 60
        lines.append(f"| {n} | {minutes:,.0f} | {hours:.1f} | {hours * FARGATE_USD_H:.2f} |")
    return lines


def report(runs: list[Run], origin: dict[str, Any], out: Path, smoke: bool) -> None:
    base = next((r.seconds for r in runs if r.workers == 1 and r.ran), 0.0)
    for r in runs:
        r.speedup = base / r.seconds if r.ran and r.seconds else 0.0
    (out / "bench-shards.json").write_bytes(
        orjson.dumps(
            {"origin": origin, "runs": [asdict(r) for r in runs]}, option=orjson.OPT_INDENT_2
        )
    )
    lines = [
        "# Scale-out: one job, N shard processes (issue 16)",
        "",
        f"{origin['bottles']} bottles, {origin['bytes'] / MB:,.0f} MB, into an empty mirror (moto);"
        f" origin: first byte after {FIRST_BYTE[0] * 1000:.0f}–{FIRST_BYTE[1] * 1000:.0f} ms,"
        f" {RATE / MB:g} MB/s per connection, {CONCURRENCY} transfers per worker."
        + (" Smoke run: figures mean nothing." if smoke else ""),
        "",
        "| workers | seconds | speed-up | blob GETs | fetched twice | manifest GETs | stored |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if not r.ran:
            lines.append(f"| {r.workers} | – | – | – | – | – | {r.note} |")
            continue
        lines.append(
            f"| {r.workers} | {r.seconds:.1f} | {r.speedup:.2f}× | {r.blob_gets} |"
            f" {r.blobs_fetched_twice} | {r.manifest_gets} | {r.stored} |"
        )
    speedups = {r.workers: r.speedup for r in runs if r.ran}
    lines += [
        "",
        f"## On paper: the real first full sync (~{REAL_BOTTLES:,} bottles, ~{REAL_GB} GB)",
        "",
        f"One task moves ~{ONE_TASK_MB_S} MB/s from GHCR; N tasks scale by the efficiency"
        " measured above (linear where not measured), plus ~3 minutes of task start-up"
        f" and fan-in. Fargate 2 vCPU / 8 GB ≈ {FARGATE_USD_H} USD per task-hour.",
        "",
        *paper(speedups),
        "",
    ]
    (out / "bench-shards.md").write_text("\n".join(lines))
    plot(runs, out / "bench-shards.png")


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.ran]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot([r.workers for r in done], [r.seconds for r in done], "o-")
    left.set(xlabel="shard processes", ylabel="seconds to fill", title="Time", ylim=(0, None))
    ns = [r.workers for r in done]
    right.plot(ns, [r.speedup for r in done], "o-", label="measured")
    right.plot(ns, ns, "--", color="grey", label="linear")
    right.set(xlabel="shard processes", ylabel="speed-up", title="Speed-up", ylim=(0, None))
    right.legend()
    for ax in (left, right):
        ax.set_xticks(ns or [1])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny corpus, 1 and 2 workers")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--workers", default=None, help="comma-separated (default 1,2,4,8)")
    p.add_argument("--bottles", type=int, default=None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bottles = args.bottles or (16 if args.smoke else 160)
    if args.serve:
        return serve(bottles, args.seed)
    workers = [int(w) for w in (args.workers or ("1,2" if args.smoke else "1,2,4,8")).split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    sharding = supports_shards()
    port = free_port()
    moto = subprocess.Popen(  # noqa: S603
        [tool("moto_server"), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    front = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bench.shards", "--serve", "--bottles", str(bottles)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        wait_ready(moto, lambda: listens(port), "moto_server", 60)
        assert front.stdout is not None
        origin = orjson.loads(front.stdout.readline() or b"null")
        if not origin:
            raise RuntimeError(f"the origin exited with {front.wait()}")
        sink = Sink("moto", f"http://127.0.0.1:{port}", None)
        runs = [
            fill(origin, sink, n, i) if n == 1 or sharding else Run(n, False, note="needs --shard")
            for i, n in enumerate(workers)
        ]
    finally:
        stop(front)
        stop(moto)
    report(runs, origin, args.out, args.smoke)
    for r in runs:
        print(
            f"{r.workers} workers: {r.seconds:.1f} s, {r.speedup:.2f}x, {r.blob_gets} blob GETs, {r.note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
