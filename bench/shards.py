"""``make bench`` (scale-out, issue 16): fill an empty mirror with 1, 2, 4 and 8 shard
processes against a latency-bound origin, as GHCR looks from one task.

    python -m bench.shards [--smoke] [--out DIR] [--workers 1,2,4,8]

The origin is the emulator behind ``mirrord_dev.latency`` (each blob 50–200 ms to its
first byte, each connection capped), in its own process; the sink is a moto server (real
conditional writes: the lock and the hash file's merge are what N shards contend on).
Every N (1 included) runs N ``mirrord sync --shard K/N --job-id J`` processes at once,
then ``mirrord sync --finalize --job-id J --shards N``; a plain ``mirrord sync`` is timed
once beside them for reference. The mirrord processes reach moto through a counting
forwarder (``s3_counter``): S3 requests by method and the 412s (lost conditional writes:
the lock, the hash file, finalize.json). Every run is checked, and the bench fails if it
is not so: all bottles stored and in the hash file, no blob fetched twice, every shard
process and the fan-in exited 0. Writes ``DIR/bench-shards.{json,md,png}``; the .md ends
with the same figures on paper for the real first full sync.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    s3_requests: int = 0
    s3_by_method: dict[str, int] | None = None
    s3_412: int = 0  # conditional writes lost to another writer (lock, hash file, fan-in)
    hashfile_conflicts: int = 0  # the checkpointers' own "hashfile_conflict" log lines
    plain: bool = False  # a plain `mirrord sync` (reference), not shards + finalize
    fanin_s: float = 0.0  # of seconds: the `--finalize` process alone
    cpu_s: float = 0.0  # user+sys of the mirrord processes (shards and fan-in)
    peers_cpu_s: float = 0.0  # user+sys of the origin and moto meanwhile
    machine_busy: float = 0.0  # the whole machine's CPUs, every process (others' too)
    seconds_all: list[float] | None = None  # every repeat; the row is the median one


def s3_counter(upstream: str) -> Any:
    """An aiohttp app forwarding every request to ``upstream`` (moto) as it came, counting
    requests by method and the 412 answers; ``GET /_bench/stats`` returns the counts and
    resets them. Path-style S3 only (what the bench's clients use)."""
    from collections import Counter

    import aiohttp
    from aiohttp import web

    counts: Counter[str] = Counter()
    session: list[aiohttp.ClientSession] = []

    async def stats(_: web.Request) -> web.Response:
        body = orjson.dumps(dict(counts))
        counts.clear()
        return web.Response(body=body, content_type="application/json")

    async def forward(request: web.Request) -> web.Response:
        if not session:
            session.append(aiohttp.ClientSession(auto_decompress=False))
        counts[request.method] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with session[0].request(
            request.method, upstream + request.path_qs, headers=headers,
            data=await request.read(), allow_redirects=False,
        ) as up:  # fmt: skip
            counts["412"] += up.status == 412
            passed = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            return web.Response(status=up.status, body=await up.read(), headers=passed)

    async def close(_: web.Application) -> None:
        for s in session:
            await s.close()

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    return app


_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


def serve(bottles: int, seed: int, moto: str) -> int:
    """The origin process: prints one JSON line (urls, corpus), serves until SIGTERM.
    It also runs the S3 counter in front of ``moto``."""
    import random
    import signal

    from aiohttp import web
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
            runner = web.AppRunner(s3_counter(moto), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            s3_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            ready = {"api_url": emu.api_url, "registry_url": emu.registry_url, "s3_url": s3_url}
            ready |= {"bottles": len(corpus.sizes), "bytes": corpus.total}
            sys.stdout.buffer.write(orjson.dumps(ready) + b"\n")
            sys.stdout.flush()
            await done.wait()
            await runner.cleanup()

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


def _ticks(pids: list[int]) -> float:
    """CPU seconds (user+sys) the running processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat), every process."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _children_cpu() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def fill(
    origin: dict[str, Any], sink: Sink, workers: int, run_no: int, plain: bool, peers: list[int]
) -> Run:
    """One empty bucket filled by ``workers`` shard processes and the fan-in (or by one
    plain sync); checked (raises if incomplete or a blob was fetched twice), then counted."""
    import boto3

    bucket = f"bench-shards-{workers}-{run_no}"
    s3 = boto3.client("s3", endpoint_url=sink.endpoint, **_keys())
    s3.create_bucket(Bucket=bucket)
    _reset(origin["registry_url"])
    _get(f"{origin['s3_url']}/_bench/stats")  # zeroes the S3 counts
    env = {
        **aws_env(Sink(sink.name, origin["s3_url"], None)),
        "MIRRORD_API_URL": origin["api_url"],
        "MIRRORD_LOG_LEVEL": "info",  # the checkpointers' hashfile_conflict lines
        "MIRRORD_BREW_MIRROR": "false",  # the bottles, as a shard moves them
        "MIRRORD_HEALTH_FILE": str(Path(tempfile.gettempdir()) / "mirrord-bench-health"),
    }
    job = f"{DATE}-bench-{workers}-{run_no}"
    if plain:
        cmds = [_sync_cmd(bucket)]
    else:
        cmds = [
            _sync_cmd(bucket, "--shard", f"{k}/{workers}", "--job-id", job)
            for k in range(1, workers + 1)
        ]
    cpu0, peers0, machine0 = _children_cpu(), _ticks(peers), _machine()
    started = time.monotonic()
    pipe = subprocess.PIPE
    procs = [subprocess.Popen(c, env=env, stdout=pipe, stderr=pipe) for c in cmds]  # noqa: S603
    ended = [(p.communicate()[1], p.returncode) for p in procs]
    fanin_started = time.monotonic()
    if not plain:
        final = _sync_cmd(bucket, "--finalize", "--job-id", job, "--shards", str(workers))
        done = subprocess.run(final, env=env, capture_output=True, check=False)  # noqa: S603
        ended.append((done.stderr, done.returncode))
    seconds = time.monotonic() - started
    fanin_s = time.monotonic() - fanin_started if not plain else 0.0
    cpu, peers_cpu = _children_cpu() - cpu0, _ticks(peers) - peers0
    machine = _machine()
    machine_busy = (machine[0] - machine0[0]) / max(1, machine[1] - machine0[1])
    for err, code in ended:
        if code != 0:
            raise RuntimeError(f"{workers} workers: exited {code}: {err[-1500:].decode()}")
    stored = _stored(s3, bucket)
    stats = _get(f"{origin['registry_url']}/_emulator/stats")
    counted = _get(f"{origin['s3_url']}/_bench/stats")
    by_method = {k: v for k, v in counted.items() if k != "412"}
    gets = [b["requests"] for b in stats["blobs"].values()]
    run = Run(
        workers, True, seconds, 0.0, sum(gets), sum(1 for g in gets if g > 1),
        sum(stats["manifests"].values()), stored, "plain sync" if plain else "",
        sum(by_method.values()), by_method, counted.get("412", 0),
        sum(err.count(b"hashfile_conflict") for err, _ in ended), plain, fanin_s, cpu,
        peers_cpu, machine_busy,
    )  # fmt: skip
    if stored != origin["bottles"] or sum(gets) < origin["bottles"]:
        raise RuntimeError(f"{workers} workers stored {stored} of {origin['bottles']}: {run}")
    if run.blobs_fetched_twice:
        raise RuntimeError(
            f"{workers} workers fetched {run.blobs_fetched_twice} blobs twice: {run}"
        )
    return run


def median(runs: list[Run]) -> Run:
    """The run of median time, with every run's seconds beside it."""
    ranked = sorted(runs, key=lambda r: r.seconds)
    chosen = ranked[len(ranked) // 2]
    chosen.seconds_all = [round(r.seconds, 2) for r in runs]
    return chosen


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
    """The real first full sync on paper: one task at ONE_TASK_MB_S; N tasks at N times
    that scaled by the parallel efficiency measured here for N (speed-up / N; an N not
    measured takes the largest measured N below it), and, as the other bound, linearly."""
    lines = [
        "| tasks | efficiency measured here | minutes | task-hours | USD |"
        " minutes if linear | USD if linear |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one = REAL_GB * 1000 / ONE_TASK_MB_S / 60
    for n in (1, 2, 4, 8):
        below = [m for m in speedups if m <= n]
        efficiency = min(1.0, speedups[max(below)] / max(below)) if below and n > 1 else 1.0
        minutes = one / (n * efficiency)
        hours = n * minutes / 60
        linear = one / n
        lines.append(
            f"| {n} | {efficiency:.2f} | {minutes:,.0f} | {hours:.1f} |"
            f" {hours * FARGATE_USD_H:.2f} | {linear:,.0f} | {one / 60 * FARGATE_USD_H:.2f} |"
        )
    return lines


def reading(runs: list[Run]) -> str:
    """What the rows say, from the figures alone."""
    sharded = [r for r in runs if r.ran and not r.plain]
    if len(sharded) < 2:
        return "Only one row: no scaling to read."
    best = max(sharded, key=lambda r: r.speedup)
    last = sharded[-1]
    text = (
        f"Reading: the time falls to {best.seconds:.1f} s ({best.speedup:.2f}×) at"
        f" N = {best.workers}; at N = {last.workers} the bench's processes keep the CPUs"
        f" {busy(last):.0%} busy, the whole machine {last.machine_busy:.0%}"
    )
    if last.machine_busy >= 0.85:
        text += (
            ", so past that point this machine's CPUs, not the origin's latency, set the pace:"
            " the speed-up here is the floor of what separate tasks get."
        )
    else:
        text += "."
    return text


def splice(path: Path, lines: list[str]) -> None:
    """Put the scale-out figures in ``path`` (benchmarks.md, which ``python -m bench``
    writes) as its "## Scale-out" section, replacing the one there; nothing without it."""
    if not path.exists():
        return
    kept, skipping = [], False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            skipping = line.startswith("## Scale-out")
        if not skipping:
            kept.append(line)
    body = [("#" + line if line.startswith("## ") else line) for line in lines[1:]]
    section = [
        "## Scale-out: one job, N shard processes",
        "",
        "Made by `python -m bench.shards` (`make bench`); the same in bench-shards.md,"
        " raw figures in bench-shards.json.",
        *body,
        "![scale-out: time and speed-up vs shard processes](bench-shards.png)",
        "",
    ]
    while kept and not kept[-1].strip():
        kept.pop()
    path.write_text("\n".join([*kept, "", *section]))


def spread(r: Run) -> str:
    times = r.seconds_all or []
    return f"({min(times):.1f}–{max(times):.1f}) " if len(times) > 1 else ""


def busy(r: Run) -> float:
    return (r.cpu_s + r.peers_cpu_s) / (r.seconds * (os.cpu_count() or 1)) if r.seconds else 0.0


def report(runs: list[Run], origin: dict[str, Any], out: Path, smoke: bool) -> None:
    base = next((r.seconds for r in runs if r.workers == 1 and r.ran and not r.plain), 0.0)
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
        f" Each row: N `mirrord sync --shard K/N` processes at once, then one"
        f" `mirrord sync --finalize`; seconds include the fan-in: the median run, min–max"
        f" in brackets. Speed-up is against N = 1"
        f" (`--shard 1/1` + finalize). Checked for every row: every bottle stored and in the"
        f" hash file, no blob fetched twice, every process exited 0. Machine: {os.cpu_count()}"
        f" CPUs, shared by the origin, moto, the N workers and whatever else runs on it"
        " (machine busy)." + (" Smoke run: figures mean nothing." if smoke else ""),
        "",
        "| workers | seconds | fan-in s | MB/s | speed-up | CPU s | CPU busy | machine busy | blob GETs | fetched twice | S3 requests |"
        " S3 412s | hash-file conflicts | stored |",
        "|---|" + "---:|" * 13,
    ]
    for r in runs:
        if not r.ran:
            lines.append(f"| {r.workers} |{' – |' * 13} {r.note} |")
            continue
        name = f"{r.workers} (plain sync)" if r.plain else str(r.workers)
        lines.append(
            f"| {name} | {r.seconds:.1f} {spread(r)}| {'–' if r.plain else f'{r.fanin_s:.1f}'} | {origin['bytes'] / MB / r.seconds:.1f} |"
            f" {r.speedup:.2f}× | {r.cpu_s + r.peers_cpu_s:.1f} | {busy(r):.0%} | {r.machine_busy:.0%} | {r.blob_gets} |"
            f" {r.blobs_fetched_twice} | {r.s3_requests} | {r.s3_412} |"
            f" {r.hashfile_conflicts} | {r.stored} |"
        )
    lines += [
        "",
        "CPU s: user+sys seconds of the mirrord processes, the origin and moto over the run;"
        f" CPU busy: the same as a share of the {os.cpu_count()} CPUs' wall time; machine busy: the same for every"
        " process on the machine (/proc/stat), other work on it included. S3 412s: conditional writes lost"
        " to another writer (the shared lock's lease, the hash file's merge, finalize.json)"
        " and retried; hash-file conflicts: the checkpointers' own `hashfile_conflict` lines"
        " (each a merge and retry, no entry lost: every row is checked complete).",
    ]
    lines += ["", "S3 requests by method: " + "; ".join(
        f"{r.workers}{' plain' if r.plain else ''}: "
        + ", ".join(f"{k} {v}" for k, v in sorted((r.s3_by_method or {}).items()))
        for r in runs if r.ran
    ) + "."]  # fmt: skip
    speedups = {r.workers: r.speedup for r in runs if r.ran and not r.plain}
    lines += [
        "",
        f"## On paper: the real first full sync (~{REAL_BOTTLES:,} bottles, ~{REAL_GB} GB)",
        "",
        f"One task moves ~{ONE_TASK_MB_S} MB/s from GHCR (100 GB in about two hours, the"
        " middle of the one to three hours issue 16 states). N tasks: N times that, scaled by"
        " the parallel efficiency measured above (speed-up / N), or linearly. The measured"
        " efficiency is a floor: here all N workers, the origin and moto share the machine's"
        " CPUs (see CPU busy), while on Fargate each task has its own 2 vCPUs and network;"
        " linear is the ceiling, which GHCR's per-client limits may lower"
        " (MIRRORD_MAX_SHARDS caps N). Left out, the same for every N: the tasks' start-up"
        " (they start together) and the brew-6 publication (the fan-in does it once, as a"
        " single task does after its sync); the fan-in's own re-plan is in `fan-in s` above."
        f" Fargate 2 vCPU / 8 GB ≈ {FARGATE_USD_H} USD per task-hour.",
        "",
        *paper(speedups),
        "",
    ]
    lines[4:4] = [reading(runs), ""]
    (out / "bench-shards.md").write_text("\n".join(lines))
    splice(out / "benchmarks.md", lines)
    plot(runs, out / "bench-shards.png")


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if r.ran and not r.plain]
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
    p.add_argument("--repeat", type=int, default=None, help="runs per N (default 3; smoke 1)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--moto", default="", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.repeat = args.repeat or (1 if args.smoke else 3)
    bottles = args.bottles or (16 if args.smoke else 160)
    if args.serve:
        return serve(bottles, args.seed, args.moto)
    workers = [int(w) for w in (args.workers or ("1,2" if args.smoke else "1,2,4,8")).split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if not supports_shards():
        raise SystemExit("mirrord sync has no --shard/--finalize: nothing to measure")
    port = free_port()
    moto = subprocess.Popen(  # noqa: S603
        [tool("moto_server"), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    front = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "bench.shards",
            "--serve",
            "--bottles",
            str(bottles),
            "--moto",
            f"http://127.0.0.1:{port}",
        ],
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
        peers = [front.pid, moto.pid]
        runs = [
            median([fill(origin, sink, n, i * 10 + j, plain, peers) for j in range(args.repeat)])
            for i, (n, plain) in enumerate([*((n, False) for n in workers), (1, True)])
        ]
    finally:
        stop(front)
        stop(moto)
    report(runs, origin, args.out, args.smoke)
    for r in runs:
        print(
            f"{r.workers} workers{' (plain)' if r.plain else ''}: {r.seconds:.1f} s,"
            f" {r.speedup:.2f}x, {r.blob_gets} blob GETs, {r.s3_requests} S3 requests,"
            f" {r.s3_412} 412s, {r.hashfile_conflicts} hash-file conflicts"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
