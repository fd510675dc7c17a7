"""``make bench``: mirrord against the machine's limit and the tools a user would script.

    python -m bench [--smoke] [--runs N] [--out DIR]

Everything runs on loopback: the emulator serves each corpus from RAM, ``rclone serve s3``
(over tmpfs) is the real S3 sink, nginx answering S3 calls and discarding the bytes is the
service-ceiling sink. Every figure is the median of ``--runs`` runs with min–max. Results
go to ``DIR/benchmarks.md``, ``DIR/bench-results.json`` and PNG plots in ``DIR``.
``--smoke`` runs every step once on tiny corpora (seconds), so CI keeps the harness alive.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.tools import (
    SHM,
    Measure,
    Origin,
    Sink,
    aws_env,
    measure,
    nginx_sink,
    origin,
    rclone_sink,
    tool,
)

MB = 1e6
MIB = 1 << 20
DATE = "2026-11-22"
AUTH = "Authorization: Bearer QQ=="  # GHCR's anonymous token, as brew sends it


@dataclass
class Stat:
    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, digits: int = 0) -> str:
        if self.lo == self.hi:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.lo:,.{digits}f}–{self.hi:,.{digits}f})"


@dataclass
class Row:
    """One tool on one corpus and sink, over several runs."""

    tool: str
    corpus: str
    sink: str
    verified: bool
    bytes: int
    objects: int
    mb_s: Stat
    objects_s: Stat
    cpu_s_per_gb: Stat
    rss_mb: Stat
    note: str = ""


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    sha256: dict[str, Stat] = field(default_factory=dict)
    concurrency: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    part_size: list[dict[str, Any]] = field(default_factory=list)
    micro: dict[str, Stat] = field(default_factory=dict)
    corpora: dict[str, str] = field(default_factory=dict)
    files_written: list[str] | None = None
    # corpus -> share of mirrord's sampled CPU per part of the stack (py-spy), and the date
    profile: dict[str, dict[str, float]] = field(default_factory=dict)
    profile_corpora: dict[str, str] = field(default_factory=dict)


def runs_of(n: int, once: Callable[[], tuple[Measure, int, int]]) -> tuple[list[Measure], int, int]:
    measures, nbytes, objects = [], 0, 0
    for _ in range(n):
        m, nbytes, objects = once()
        measures.append(m)
    return measures, nbytes, objects


def row(
    tool_name: str, corpus: str, sink: Sink, verified: bool, n: int,
    once: Callable[[], tuple[Measure, int, int]], note: str = "",
) -> Row:  # fmt: skip
    ms, nbytes, objects = runs_of(n, once)
    r = Row(
        tool_name,
        corpus,
        sink.name,
        verified,
        nbytes,
        objects,
        Stat.of([nbytes / MB / m.wall_s for m in ms]),
        Stat.of([objects / m.wall_s for m in ms]),
        Stat.of([m.cpu_s / (nbytes / 1e9) for m in ms]),
        Stat.of([m.rss_mb for m in ms]),
        note,
    )
    print(
        f"  {tool_name:<34} {corpus:<6} {sink.name:<16} {r.mb_s.fmt(1):>24} MB/s "
        f"{r.objects_s.fmt(0):>20} obj/s  cpu {r.cpu_s_per_gb.fmt(1)} s/GB  rss {r.rss_mb.fmt(0)} MB",
        flush=True,
    )
    return r


# --- the runs ----------------------------------------------------------------------------


def mirrord_sync(
    o: Origin, sink: Sink, bucket: str, concurrency: int, part_size: int
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one `mirrord sync` of ``o`` into ``bucket``."""
    env = {
        **aws_env(sink),
        "MIRRORD_API_URL": o.api_url,
        "MIRRORD_LOG_LEVEL": "warning",
        # The bottles alone, as the peers move them: publishing for brew 6 (index
        # fetches, blob-key copies) is a stage of its own, not part of this figure.
        "MIRRORD_BREW_MIRROR": "false",
    }
    cmd = [
        tool("mirrord"), "sync", "--bucket", bucket, "--date", DATE,
        "--platform", "arm64_tahoe", "--concurrency", str(concurrency),
        "--part-size", str(part_size),
    ]  # fmt: skip
    return cmd, env


def mirrord_once(
    o: Origin, sink: Sink, concurrency: int, part_size: int
) -> Callable[[], tuple[Measure, int, int]]:
    def once() -> tuple[Measure, int, int]:
        bucket = sink.bucket()
        cmd, env = mirrord_sync(o, sink, bucket, concurrency, part_size)
        cmd.append("--json")
        env["MIRRORD_HEALTH_FILE"] = str(Path(tempfile.gettempdir()) / "mirrord-bench-health")
        try:
            m = measure(cmd, env)
            report = orjson.loads(m.stdout)
            if report["failed"] or report["downloaded"] != o.bottles or report["bytes"] != o.bytes:
                raise RuntimeError(f"mirrord did not store the corpus: {report}")
            if sink.root is not None and sink.stored(bucket) != (o.bottles, o.bytes):
                raise RuntimeError(f"sink holds {sink.stored(bucket)}, not {o.bottles, o.bytes}")
        finally:
            sink.drop(bucket)
        return m, o.bytes, o.bottles

    return once


def shell_once(
    script: Callable[[str], str], sink: Sink, nbytes: int, objects: int
) -> Callable[[], tuple[Measure, int, int]]:
    def once() -> tuple[Measure, int, int]:
        bucket = sink.bucket()
        try:
            m = measure([script(bucket)], {**aws_env(sink), "PATH": _path()}, shell=True)  # noqa: S604
            if sink.root is not None and sink.stored(bucket) != (objects, nbytes):
                raise RuntimeError(f"sink holds {sink.stored(bucket)}, not {objects, nbytes}")
        finally:
            sink.drop(bucket)
        return m, nbytes, objects

    return once


def _path() -> str:
    import os

    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"


@contextmanager
def url_list(o: Origin, limit: int | None) -> Iterator[tuple[Path, int, int]]:
    """``url key size`` lines of the corpus (the first ``limit``), for shell peers."""
    import urllib.request

    from mirrord.core.catalog import parse_catalog, select_bottles

    with urllib.request.urlopen(o.api_url) as r:  # noqa: S310 - loopback origin
        sel = select_bottles(parse_catalog(r.read()).formulae, ["arm64_tahoe"])
    chosen = sel.bottles[:limit] if limit else sel.bottles
    # Formula i of the corpus is named <corpus><i:05d>: its size is the corpus's i-th.
    sizes = [o.sizes[int(b.name[len(o.corpus) :])] for b in chosen]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        for b in chosen:
            f.write(f"{b.url} {b.s3_key(DATE)}\n")
        f.flush()
        yield Path(f.name), sum(sizes), len(chosen)


def peers(
    res: Results, o: Origin, sink: Sink, corpus: str, runs: int, c: int, limit: int | None
) -> None:
    rclone, s5cmd, curl = tool("rclone"), tool("s5cmd"), tool("curl")
    ep = shlex.quote(sink.endpoint)
    with url_list(o, limit) as (lst, nbytes, objects):
        note = f"first {objects:,} bottles" if limit and objects < o.bottles else ""
        res.rows.append(
            row(
                f"rclone copyurl ×{c}", corpus, sink, False, runs,
                shell_once(
                    lambda b: f"xargs -P {c} -n 2 sh -c '{rclone} copyurl -q --header \"{AUTH}\" \"$0\" \"sink:{b}/$1\"' < {lst}",
                    sink, nbytes, objects,
                ),
                note,
            )
        )  # fmt: skip
        res.rows.append(
            row(
                f"curl | s5cmd pipe ×{c}", corpus, sink, False, runs,
                shell_once(
                    lambda b: f"xargs -P {c} -n 2 sh -c '{curl} -sfL -H \"{AUTH}\" \"$0\" | "
                    f"{s5cmd} --endpoint-url {ep} pipe \"s3://{b}/$1\"' < {lst}",
                    sink, nbytes, objects,
                ),
                note,
            )
        )  # fmt: skip
        res.rows.append(
            row(
                "sequential curl → disk → s5cmd cp", corpus, sink, False, runs,
                shell_once(
                    lambda b: f"t=$(mktemp) && while read -r url key; do {curl} -sfL -H \"{AUTH}\" -o \"$t\" \"$url\" && "
                    f"{s5cmd} --endpoint-url {ep} cp \"$t\" \"s3://{b}/$key\" >/dev/null || exit 1; "
                    f"done < {lst}; rm -f \"$t\"",
                    sink, nbytes, objects,
                ),
                note,
            )
        )  # fmt: skip


def limits(
    res: Results, o: Origin, sink: Sink, corpus: str, runs: int, c: int, part: int, files: Path
) -> None:
    py = sys.executable
    res.rows.append(
        row(
            f"limit: origin → /dev/null ×{c}", corpus, sink, False, runs,
            lambda: (measure([py, "-m", "bench.clients", "null", "--api-url", o.api_url,
                              "--concurrency", str(c)]), o.bytes, o.bottles),
        )
    )  # fmt: skip
    if not any(files.iterdir()):
        measure([py, "-m", "bench.clients", "fetch", "--api-url", o.api_url, "--dir", str(files),
                 "--concurrency", str(c)])  # fmt: skip
    ep = shlex.quote(sink.endpoint)
    res.rows.append(
        row(
            f"limit: s5cmd cp local files ×{c}", corpus, sink, False, runs,
            shell_once(
                lambda b: f"{tool('s5cmd')} --endpoint-url {ep} --numworkers {c} cp "
                f"'{files}/*' s3://{b}/{DATE}/ >/dev/null", sink, o.bytes, o.bottles,
            ),
        )
    )  # fmt: skip
    res.rows.append(
        row(
            f"limit: rclone copy local files ×{c}", corpus, sink, False, runs,
            shell_once(
                lambda b: f"{tool('rclone')} copy -q --transfers {c} --s3-chunk-size {part // MIB}Mi "
                f"{files} sink:{b}/{DATE}", sink, o.bytes, o.bottles,
            ),
        )
    )  # fmt: skip

    def aio_once() -> tuple[Measure, int, int]:
        bucket = sink.bucket()
        try:
            m = measure([py, "-m", "bench.clients", "upload", "--dir", str(files), "--bucket", bucket,
                         "--concurrency", str(c), "--part-size", str(part)], aws_env(sink))  # fmt: skip
        finally:
            sink.drop(bucket)
        return m, o.bytes, o.bottles

    res.rows.append(
        row(f"limit: aiobotocore local files ×{c}", corpus, sink, False, runs, aio_once)
    )


def sha256_rates(runs: int, size: int) -> dict[str, Stat]:
    data = bytes(range(256)) * (size // 256)

    def rate(threads: int) -> float:
        per = len(data) // threads
        views = [memoryview(data)[i * per : (i + 1) * per] for i in range(threads)]
        workers = [threading.Thread(target=hashlib.sha256, args=(v,)) for v in views]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return len(data) / MB / (time.perf_counter() - t)

    return {
        f"{n} thread{'s' if n > 1 else ''}": Stat.of([rate(n) for _ in range(runs)]) for n in (1, 2)
    }


def micro(runs: int, scale: float) -> dict[str, Stat]:
    """Planning 50k bottles against a 50k-entry hash file; parsing a 30 MB formula.json."""
    from importlib import resources

    from mirrord_dev.emulator.content import synthetic_catalog

    from mirrord.core.catalog import parse_catalog
    from mirrord.core.hashfile import HashFile, dumps, parse
    from mirrord.core.jobs import Job
    from mirrord.core.models import HashEntry
    from mirrord.services.sync import prepare

    # A real-shaped formula.json: 8,400 formulae (2026's count) cycled from the sample's
    # real entries, each given the fields the real API adds and the sample trims
    # (variations, ruby_source_*, caveats) until the document weighs 30 MB.
    sample = orjson.loads(
        resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes()
    )
    count, target = max(50, int(8400 * scale)), int(30e6 * scale)
    entries: list[Any] = []
    for i in range(count):
        e = dict(sample[i % len(sample)])
        e["name"] = e["full_name"] = f"{e['name']}-{i}"
        tags = list(e["bottle"].get("stable", {}).get("files", {}))
        e["variations"] = {t: {"dependencies": e.get("dependencies", [])} for t in tags}
        e["ruby_source_path"] = f"Formula/{e['name'][0]}/{e['name']}.rb"
        e["ruby_source_checksum"] = {"sha256": hashlib.sha256(e["name"].encode()).hexdigest()}
        entries.append(e)
    pad = max(0, target - len(orjson.dumps(entries))) // count
    for e in entries:
        e["caveats"] = ("Caveats text of the kind formulae print after install. " * 60)[:pad]
    raw = orjson.dumps(entries)
    out: dict[str, Stat] = {}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        parse_catalog(raw)
        times.append(time.perf_counter() - t)
    out[f"parse formula.json ({len(raw) / MB:.0f} MB, {len(entries):,} formulae)"] = Stat.of(times)

    n_formulae = max(100, int(8400 * scale))
    emu = synthetic_catalog(n_formulae, sizes=(1000, 2000))
    catalog = parse_catalog(orjson.dumps(emu.formulae).replace(b"{registry}", b"https://ghcr.io"))
    targets = [
        "arm64_tahoe",
        "arm64_sequoia",
        "arm64_sonoma",
        "sonoma",
        "arm64_linux",
        "x86_64_linux",
    ]
    from mirrord.core.catalog import select_bottles

    bottles = select_bottles(catalog.formulae, targets).bottles
    # The weekly case: nearly all known; a few hundred new.
    known = {
        b.hash_key: HashEntry(b.sha256, "2026-11-15", 1000, b.s3_key("2026-11-15"))
        for b in bottles[: len(bottles) - len(bottles) // 100]
    }
    for i in range(max(0, len(bottles) - len(known))):  # pad to as many entries as bottles
        known[f"old{i}-1.0-arm64_tahoe"] = HashEntry(
            f"{i:064x}", "2025-01-01", 1, f"2025-01-01/old{i}-1.0.arm64_tahoe.bottle.tar.gz"
        )
    hf_raw = dumps(HashFile(bottles=known))
    job = Job(job_id="bench", date=DATE)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        hf = parse(hf_raw)
        prepare(catalog, hf, job, targets)
        times.append(time.perf_counter() - t)
    out[f"plan {len(bottles):,} bottles vs {len(known):,}-entry hash file (incl. parsing it)"] = (
        Stat.of(times)
    )
    return out


# --- report ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny corpora, one run each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16, help="mirrord's default, for peers too")
    p.add_argument("--part-size", type=int, default=16 * MIB)
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--only", choices=("small", "mixed", "large"), action="append")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the tabled corpora")
    p.add_argument("--no-sweeps", action="store_true")
    p.add_argument("--sweep-runs", type=int, default=1, help="runs per point of the curves")
    p.add_argument("--report-only", type=Path, metavar="JSON", help="rewrite the report")
    p.add_argument(
        "--profile-only", action="store_true", help="add py-spy profiles to OUT's results"
    )
    a = p.parse_args(argv)
    if a.report_only or a.profile_only:
        from bench.report import load, write

        res = load(a.report_only or a.out / "bench-results.json")
        if a.profile_only:
            with rclone_sink() as rclone:
                profiles(res, rclone, a.concurrency, a.part_size, smoke=False)
            _save(res, a.out)
        write(res, a.out, smoke=False)
        return 0
    runs = 1 if a.smoke else a.runs
    sweep_runs = 1 if a.smoke else a.sweep_runs
    scale = (
        {"small": 0.01, "mixed": 0.05, "large": 0.02}
        if a.smoke
        else dict.fromkeys(("small", "mixed", "large"), a.scale)
    )
    conc = [1, 16] if a.smoke else [1, 2, 4, 8, 16, 32, 64]
    parts = [8 * MIB, 16 * MIB] if a.smoke else [8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB]
    # Peers that start processes per bottle get a representative slice of the 5,000.
    peer_limit = {"small": 1000} if not a.smoke else {}
    res = Results(machine=_machine())
    c, part = a.concurrency, a.part_size
    a.out.mkdir(parents=True, exist_ok=True)

    print("sha256 of this CPU", flush=True)
    res.sha256 = sha256_rates(runs, 64 * MIB if a.smoke else 512 * MIB)
    print("micro: plan and parse", flush=True)
    res.micro = micro(runs if not a.smoke else 1, 0.05 if a.smoke else 1.0)
    for k, v in res.micro.items():
        print(f"  {k}: {v.fmt(3)} s")

    with ExitStack() as stack:
        rclone, nginx = stack.enter_context(rclone_sink()), stack.enter_context(nginx_sink())
        for name in a.only or ("small", "mixed", "large"):
            if not a.smoke or name == "mixed":  # the smoke run tabulates one corpus
                print(f"corpus {name}", flush=True)
                with origin(name, scale.get(name, 1.0)) as o:
                    res.corpora[name] = f"{o.title}, {o.bytes / MB:,.0f} MB"
                    table(res, o, (rclone, nginx), runs, c, part, peer_limit.get(name))
            if a.no_sweeps:
                continue
            if name in ("small", "mixed"):
                with origin(name, scale[name]) as o:
                    print(f"  concurrency sweep on {o.title}", flush=True)
                    res.concurrency[name] = sweep_concurrency(
                        o, rclone, nginx, conc, part, sweep_runs
                    )
            if name == "large":
                with origin(name, scale.get(name, 1.0)) as o:
                    print(f"  part-size sweep on {o.title}", flush=True)
                    res.part_size = sweep_parts(o, rclone, c, parts, sweep_runs)
                    res.files_written = files_written(o, rclone, c, part)
                    print(f"  files opened for writing: {res.files_written}", flush=True)
        profiles(res, rclone, c, part, a.smoke)

    _save(res, a.out)
    from bench.report import write

    write(res, a.out, smoke=a.smoke)
    print(f"wrote {a.out}/benchmarks.md", flush=True)
    return 0


def table(
    res: Results, o: Origin, sinks: tuple[Sink, Sink], runs: int, c: int, part: int,
    peer_limit: int | None,
) -> None:  # fmt: skip
    """mirrord into both sinks, the limits, the peers: one corpus's table."""
    rclone = sinks[0]
    files = Path(tempfile.mkdtemp(prefix=f"mirrord-bench-{o.corpus}-", dir=SHM))
    try:
        for sink in sinks:
            res.rows.append(
                row("mirrord", o.corpus, sink, True, runs, mirrord_once(o, sink, c, part))
            )
        limits(res, o, rclone, o.corpus, runs, c, part, files)
        peers(res, o, rclone, o.corpus, runs, c, peer_limit)
    finally:
        shutil.rmtree(files, ignore_errors=True)


def files_written(o: Origin, sink: Sink, c: int, part: int) -> list[str] | None:
    """Every file a sync of ``o`` opens for writing (strace), bytecode caches aside:
    the proof that bottles stream through memory. None when strace is missing."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    bucket = sink.bucket()
    with tempfile.NamedTemporaryFile("r") as trace:
        sync, env = mirrord_sync(o, sink, bucket, c, part)
        cmd = [strace, "-f", "-qq", "-e", "trace=openat,open,creat", "-o", trace.name, *sync]
        try:
            measure(cmd, env)
        finally:
            sink.drop(bucket)
        written = []
        for line in trace:
            if (
                any(flag in line for flag in ("O_WRONLY", "O_RDWR", "O_CREAT"))
                and "= -1" not in line
            ):
                path = line.split('"')[1] if '"' in line else line
                if not path.endswith(".pyc") and not path.startswith("/dev/"):
                    written.append(path)
    return sorted(set(written))


# Where a sample's time is charged: SHA-256 and CRC32C by the frame that calls them (py-spy
# sees Python frames), else the innermost frame of a library (or mirrord) on the stack;
# standard-library frames are charged to the library that called them.
_LIBRARIES = (
    ("AWS SDK request pipeline (botocore, aiobotocore, awscrt signing)",
     ("(botocore/", "(aiobotocore/", "(awscrt/auth")),
    ("HTTP client (aiohttp, yarl, multidict)", ("(aiohttp/", "(yarl/", "(multidict/")),
    ("JSON and logging (orjson, msgspec, structlog)", ("(orjson", "(msgspec", "(structlog/")),
    ("mirrord's own code", ("(mirrord/",)),
    ("event loop (uvloop, asyncio)", ("(uvloop/", "(asyncio/")),
)  # fmt: skip
SHA256 = "SHA-256 (hashlib, on and off the event loop)"
STARTUP = "start-up: imports, SSL contexts"
COPY = "the one copy of each byte from socket chunks into its part buffer"
IDLE = "_worker (concurrent/futures/thread.py"  # an executor thread waiting for work


def charge(stack: list[str]) -> str:
    """The bucket of one sampled stack (outermost frame first, py-spy's raw format)."""
    if any(
        "_find_and_load" in f or f.startswith(("<module>", "SSLContext", "_make_ssl_context"))
        for f in stack[1:]
    ):
        return STARTUP
    innermost = stack[-1]
    if innermost.startswith(("_hash (mirrord/services/transfer.py", "_WorkItem.run (concurrent/")):
        return SHA256
    if innermost.startswith("_take (mirrord/services/transfer.py"):
        return COPY
    if innermost.startswith(("_crc32c (", "crc32c (awscrt/")):
        return "CRC32C (awscrt)"
    for frame in reversed(stack):
        for name, marks in _LIBRARIES:
            if any(m in frame for m in marks):
                return name
    return "other (interpreter, standard library)"


def profile(o: Origin, sink: Sink, c: int, part: int) -> dict[str, float]:
    """Share of mirrord's CPU samples per part of the stack, from ``py-spy record`` (idle
    threads left out) over one sync of ``o``."""
    bucket = sink.bucket()
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as raw:
        sync, env = mirrord_sync(o, sink, bucket, c, part)
        cmd = [tool("py-spy"), "record", "--format", "raw", "--rate", "250", "--output",
               raw.name, "--", *sync]  # fmt: skip
        try:
            measure(cmd, env)
        finally:
            sink.drop(bucket)
        totals: dict[str, float] = {}
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and not stack.rpartition(";")[2].startswith(IDLE):
                name = charge(stack.split(";"))
                totals[name] = totals.get(name, 0) + int(count)
    n = sum(totals.values()) or 1
    return {k: v / n for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


# Scales that give py-spy ~10,000 samples per profile (its overhead would slow a full corpus).
PROFILED = {"small": 0.2, "mixed": 0.5}


def profiles(res: Results, rclone: Sink, c: int, part: int, smoke: bool) -> None:
    for name, scale in PROFILED.items():
        with origin(name, 0.01 if smoke else scale) as o:
            print(f"profile of mirrord on {o.title}", flush=True)
            res.profile[name] = profile(o, rclone, c, part)
            res.profile_corpora[name] = o.title
            for k, v in res.profile[name].items():
                print(f"  {v:6.1%} {k}", flush=True)


def _save(res: Results, out: Path) -> None:
    (out / "bench-results.json").write_bytes(orjson.dumps(asdict(res), option=orjson.OPT_INDENT_2))


def sweep_concurrency(
    o: Origin, rclone: Sink, nginx: Sink, levels: list[int], part: int, runs: int
) -> list[dict[str, Any]]:
    points = []
    for level in levels:
        point: dict[str, Any] = {"concurrency": level}
        for label, sink in (("rclone", rclone), ("nginx", nginx)):
            ms, nbytes, _ = runs_of(runs, mirrord_once(o, sink, level, part))
            point[f"mirrord→{label}"] = Stat.of([nbytes / MB / m.wall_s for m in ms])
        null = [sys.executable, "-m", "bench.clients", "null", "--api-url", o.api_url,
                "--concurrency", str(level)]  # fmt: skip
        ms, nbytes, _ = runs_of(runs, lambda cmd=null: (measure(cmd), o.bytes, o.bottles))
        point["origin→/dev/null"] = Stat.of([nbytes / MB / m.wall_s for m in ms])
        print(
            "   ", level, {k: v.fmt(0) for k, v in point.items() if k != "concurrency"}, flush=True
        )
        points.append(point)
    return points


def sweep_parts(
    o: Origin, rclone: Sink, c: int, parts: list[int], runs: int
) -> list[dict[str, Any]]:
    points = []
    for part in parts:
        ms, nbytes, _ = runs_of(runs, mirrord_once(o, rclone, c, part))
        point = {
            "part_mib": part // MIB,
            "mb_s": Stat.of([nbytes / MB / m.wall_s for m in ms]),
            "rss_mb": Stat.of([m.rss_mb for m in ms]),
            "rss_bound_mb": (c * 2 * part) / MB + 150,
        }
        print(
            "   ",
            point["part_mib"],
            "MiB",
            point["mb_s"].fmt(0),
            "MB/s",
            point["rss_mb"].fmt(0),
            "MB",
            flush=True,
        )
        points.append(point)
    return points


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


if __name__ == "__main__":
    sys.exit(main())
