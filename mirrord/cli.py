"""The ``mirrord`` command line (docs/design.md §10); ``python -m mirrord`` is the same.

stdout carries results only (the ``--json`` report is the one line there); logs go to
stderr: JSON lines, or readable lines above the progress bar when stderr is a terminal.
Exit status: 0 all planned bottles stored, 1 some failed (or a peer or an input was
unusable), 2 bad settings or usage, 130 stopped at once by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from mirrord import __version__
from mirrord.adapters.lock import default_owner
from mirrord.adapters.terminal import BarProgress, LogProgress, TerminalLogger, progress_for
from mirrord.adapters.web import fetch_catalog, source_url, upstream_connector
from mirrord.app import (
    App,
    configure_logging,
    load_external,
    open_app,
    run_exclusive,
    run_loop,
)
from mirrord.core.deployconfig import parse as parse_deploy_config
from mirrord.core.errors import ConfigError, JobError, MirrordError, SettingsError
from mirrord.core.jobs import Job, parse_date
from mirrord.core.report import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirrord.core.settings import Settings, from_env
from mirrord.daemon import Daemon
from mirrord.health import add_arguments as health_arguments
from mirrord.health import run as run_health
from mirrord.lambdas.enqueue import enqueue, lambda_invoker
from mirrord.services.check import check_client
from mirrord.services.sync import load_hashfile, prepare
from mirrord.services.verify import rebuild_hash, verify

log = structlog.get_logger("mirrord.cli")


def _date(text: str) -> str:
    try:
        return parse_date(text, "--date")
    except JobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DESCRIPTION = "Keep an S3 bucket filled with the Homebrew bottles that macOS machines need."
EPILOG = """\
Settings come from MIRRORD_* environment variables and the usual AWS ones; a flag
overrides its variable (-q and -v override MIRRORD_LOG_LEVEL).
`mirrord COMMAND --help` shows a command's flags.
Exit status: 0 done, 1 some bottles failed (or a peer or input was unusable),
2 bad settings or usage, 130 stopped at once by a second Ctrl-C."""


def _global_flags(p: argparse.ArgumentParser, default: Any) -> None:
    """-q/-v on the main parser and on every command, so they work before or after the
    command's name. A command's parser leaves them unset (SUPPRESS) unless given there,
    so `mirrord -q sync` keeps the -q."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const="warning",
        default=default,
        help="warnings and errors only, no progress bar",
    )
    group.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const="debug",
        default=default,
        help="debug lines too",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrord",
        usage="%(prog)s [-h] [--version] [-q | -v] COMMAND ...",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mirrord {__version__}")
    _global_flags(parser, None)
    # argparse's own list of commands wraps the longer names onto a line of their own
    # and heads it with a lone "COMMAND": the list is written into the description.
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS
    )
    listed: list[tuple[str, str]] = []

    def command(name: str, text: str, parent: Any = sub) -> argparse.ArgumentParser:
        # The same sentence heads `mirrord <command> --help`.
        p: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text + ".")
        _global_flags(p, argparse.SUPPRESS)
        if parent is sub:
            listed.append((name, text))
        return p

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bucket", help="the mirror's bucket (MIRRORD_BUCKET)")
        p.add_argument("--json", action="store_true", help="print the result as one JSON object")

    def job_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--date", type=_date, help="job date folder (default: today, UTC)")
        p.add_argument("--formula", action="append", metavar="NAME", help="only these formulae")
        p.add_argument(
            "--platform",
            action="append",
            metavar="TAG",
            help="target tags, repeat or comma-separate (MIRRORD_PLATFORMS)",
        )
        p.add_argument("--api-url", help="formula catalog (MIRRORD_API_URL)")

    sync = command("sync", "fetch every missing bottle into the bucket")
    common(sync)
    job_flags(sync)
    sync.add_argument("--job-id", help="id in logs and the report (default: <date>-cli)")
    sync.add_argument("--concurrency", help="bottles in flight (MIRRORD_CONCURRENCY)")
    sync.add_argument("--part-size", help="multipart part size, e.g. 16MiB (MIRRORD_PART_SIZE)")
    sync.add_argument("--batch-size", help="bottles per checkpoint (MIRRORD_BATCH_SIZE)")
    sync.add_argument(
        "--wait", action="store_true", help="wait while another sync holds the bucket"
    )

    plan = command("plan", "show what a sync would fetch, writing nothing")
    common(plan)
    job_flags(plan)

    ver = command("verify", "check the hash file against the objects in the bucket")
    common(ver)
    ver.add_argument("--deep", action="store_true", help="re-hash every object's bytes")

    rebuild = command("rebuild-hash", "rewrite the hash file from the objects' metadata")
    common(rebuild)

    daemon = command("daemon", "serve jobs from the SQS queue until SIGTERM (Fargate)")
    common(daemon)
    daemon.add_argument("--queue-url", help="the SQS job queue (MIRRORD_QUEUE_URL)")

    enqueue = command("enqueue", "plan, estimate and send a job, as the weekly Lambda does")
    common(enqueue)
    job_flags(enqueue)
    enqueue.add_argument("--queue-url", help="the SQS job queue (MIRRORD_QUEUE_URL)")

    config = command("config", "check config.yaml, or render it as Terraform variables")
    config_sub = config.add_subparsers(
        dest="action", required=True, title="actions", metavar="ACTION"
    )
    for action, text in (
        ("validate", "check every environment in the file"),
        ("render", "write infra/environments/<env>/terraform.tfvars.json"),
    ):
        p = command(action, text, config_sub)
        p.add_argument("--file", type=Path, default=Path("config.yaml"))
        if action == "render":
            p.add_argument("--env", required=True, help="dev, staging or prod")
            p.add_argument("--out", type=Path, help="default: infra/environments/<env>/…")

    check = command("check-client", "walk the mirror over HTTP as brew 6 would on a machine")
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="TAG",
        help="machine bottle tag, e.g. arm64_tahoe (repeat or comma-separate)",
    )
    check.add_argument("--base", help="the mirror's URL, as users set it (MIRRORD_MIRROR_URL)")
    check.add_argument(
        "--portable-ruby",
        help="portable Ruby to check: latest (the newest two the mirror lists), versions, "
        "or none (MIRRORD_PORTABLE_RUBY)",
    )

    health = command("health", "exit 0 while the daemon's heartbeat file is fresh (ECS)")
    health_arguments(health)
    width = max(len(name) for name, _ in listed) + 2
    parser.description = f"{DESCRIPTION}\n\ncommands:\n" + "\n".join(
        f"  {name:{width}}{text}" for name, text in listed
    )
    return parser


# Each setting a flag overrides, and that flag as typed: an error names what the user
# typed (`--platform`, not the field's name). check-client has its own names.
FLAGS = {
    "MIRRORD_BUCKET": "--bucket",
    "MIRRORD_API_URL": "--api-url",
    "MIRRORD_PLATFORMS": "--platform",
    "MIRRORD_CONCURRENCY": "--concurrency",
    "MIRRORD_PART_SIZE": "--part-size",
    "MIRRORD_BATCH_SIZE": "--batch-size",
    "MIRRORD_QUEUE_URL": "--queue-url",
}
CHECK_CLIENT_FLAGS = {
    "MIRRORD_MIRROR_URL": "--base",
    "MIRRORD_PORTABLE_RUBY": "--portable-ruby",
    "MIRRORD_PLATFORMS": "--target",
}


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    check_client = args.command == "check-client"  # HTTP only: no bucket, no AWS
    names = CHECK_CLIENT_FLAGS if check_client else FLAGS
    flags: dict[str, str | None] = {"MIRRORD_LOG_LEVEL": getattr(args, "log_level", None)}
    for variable, flag in names.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        flags[variable] = ",".join(value) if isinstance(value, list) else value
    settings = from_env(env, flags, require_bucket=not check_client, flag_names=names)
    if args.command == "daemon" and not settings.queue_url:
        # A usage error, said before any request (the bucket is asked for first).
        raise SettingsError("MIRRORD_QUEUE_URL (or --queue-url): required by the daemon")
    return settings


def _job(args: argparse.Namespace, settings: Settings) -> Job:
    day = args.date or datetime.now(UTC).date().isoformat()
    return Job(
        job_id=getattr(args, "job_id", None) or f"{day}-cli",
        date=day,
        platforms=settings.platforms,
        formulae=tuple(args.formula) if args.formula else None,
    )


def _emit(args: argparse.Namespace, body: dict[str, Any], human: str) -> None:
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(body) + b"\n")
    else:
        sys.stdout.write(human + "\n")
    sys.stdout.flush()


def _progress(args: argparse.Namespace, unit: str = "bottle") -> BarProgress | LogProgress:
    if args.log_level == "warning":  # -q: no bar; LogProgress's lines are info, not shown
        return LogProgress()
    return progress_for(sys.stderr, unit)


def _tell(text: str, event: str, **fields: Any) -> None:
    """A sentence for the person at the terminal (above the bar); for pipes, ECS and
    tests a log event like every other."""
    if sys.stderr.isatty():
        TerminalLogger(sys.stderr).msg(f"mirrord: {text}")
    else:
        log.warning(event, **fields)


async def cmd_sync(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    job = _job(args, s)
    stop = asyncio.Event()
    progress = _progress(args)
    task = asyncio.current_task()
    assert task is not None
    interrupts = 0

    def in_flight() -> int:
        # Workers take the next bottle without a pause after finishing one, so between
        # two events every worker holds one while any are left.
        return min(s.concurrency, max(progress.left, 0))

    def interrupt() -> None:
        """Ctrl-C: stop as SIGTERM does (finish in-flight transfers, checkpoint, exit 1);
        a second one stops at once: cancelling aborts the uploads in flight."""
        nonlocal interrupts
        interrupts += 1
        n = in_flight()
        if interrupts == 1:
            stop.set()
            doing = (
                f"finishing {n} transfers in flight (up to {s.stop_grace:g}s)"
                if n
                else "ending the job"
            )
            _tell(f"stopping: {doing}, Ctrl-C again to stop now", "interrupted", in_flight=n)
        else:
            if interrupts == 2:
                _tell(
                    f"stopping now: aborting {n} transfers in flight",
                    "interrupted_again",
                    in_flight=n,
                )
            task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # ECS and kill: the grace period
    loop.add_signal_handler(signal.SIGINT, interrupt)
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        try:
            report = await run_exclusive(
                app,
                job,
                owner=default_owner(),
                route="cli",
                stop=stop,
                progress=progress,
                wait=args.wait,
                publish_progress=_progress(args, "version"),
            )
        except asyncio.CancelledError:
            if interrupts >= 2:  # main() turns the cancellation into exit 130
                left = max(progress.left, 0)
                _tell(
                    f"stopped: {left} bottles remain; `mirrord sync` again fetches them",
                    "stopped_at_once",
                    remaining=left,
                )
            raise
    failed = "".join(f"\n  FAILED {f.key}: {f.error}" for f in report.failed)
    stopped = ""
    if report.stopped:
        still = (
            f"{report.remaining} of {report.planned} bottles remain"
            if report.remaining
            else "every bottle is stored, the files for brew are not all published"
        )
        stopped = f"\nstopped early: {still}; `mirrord sync` again finishes the job"
    _emit(
        args,
        report.to_dict(),
        f"{report.date}: {report.downloaded} downloaded, {report.adopted} adopted, "
        f"{report.skipped} already mirrored, {len(report.failed)} failed of "
        f"{report.planned} planned; {report.bytes / 1e6:,.1f} MB in {report.duration_s:.1f}s"
        f" → s3://{s.bucket}/{report.date}/{failed}{stopped}",
    )
    return report.exit_code


async def cmd_plan(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    job = _job(args, s)
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    hf, _ = await load_hashfile(app.store, s.hash_key)
    targets, plan = prepare(catalog, hf, job, s.platforms, await load_external(app), s.releases)
    body = {
        "date": plan.date,
        "platforms": list(targets),
        "transfers": len(plan.transfers),
        "links": len(plan.links),
        "skipped": plan.skipped,
        "no_bottle": plan.no_bottle,
        "known_bytes": plan.known_bytes,
        "unknown_size": sum(1 for t in plan.transfers if not t.size_hint),
        "rejected": [{"name": r.name, "error": r.reason} for r in catalog.rejected],
        "bottles": [
            {
                "key": t.key,
                "url": source_url(t.bottle.url),
                "sha256": t.bottle.sha256,
                "size_hint": t.size_hint or None,
            }
            for t in plan.transfers
        ],
    }
    lines = [f"  {t.key}" for t in plan.transfers[:20]]
    more = len(plan.transfers) - len(lines)
    _emit(
        args,
        body,
        f"{plan.date} for {', '.join(targets)}: {len(plan.transfers)} to fetch "
        f"({plan.known_bytes / 1e6:,.1f} MB known), {len(plan.links)} to link, "
        f"{plan.skipped} already mirrored, {plan.no_bottle} without bottle\n"
        + "\n".join(lines)
        + (f"\n  … and {more} more" if more > 0 else ""),
    )
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace, app: App) -> int:
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    result = await verify(app.store, hf, deep=args.deep, concurrency=app.settings.concurrency)
    problems = [{"kind": p.kind, "key": p.key, "detail": p.detail} for p in result.problems]
    # Older rebuilds of bottles the file now names elsewhere: listed, never a failure.
    superseded = [
        {"key": o.key, "hash_key": o.hash_key, "current": o.current} for o in result.superseded
    ]
    _emit(
        args,
        {
            "entries": result.entries,
            "objects": result.objects,
            "checked_deep": result.checked_deep,
            "problems": problems,
            "superseded": superseded,
        },
        f"{result.entries} entries, {result.objects} objects, {len(problems)} problems, "
        f"{len(superseded)} superseded"
        + "".join(f"\n  {p['kind']:10} {p['key']}: {p['detail']}" for p in problems)
        + "".join(
            f"\n  {'superseded':10} {o['key']}: {o['hash_key']} is now {o['current']}"
            for o in superseded
        ),
    )
    return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_rebuild(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    result = await rebuild_hash(
        app.store,
        s.hash_key,
        owner=default_owner(),
        heartbeat=s.heartbeat_seconds,
        concurrency=s.concurrency,
    )
    _emit(
        args,
        {
            "objects": result.objects,
            "entries": result.entries,
            "unrecognised": list(result.unrecognised),
            "replaced_corrupt": result.replaced_corrupt,
        },
        f"{result.entries} entries from {result.objects} objects; "
        f"{len(result.unrecognised)} objects without mirrord metadata",
    )
    return EXIT_OK


async def cmd_daemon(args: argparse.Namespace, app: App) -> int:
    assert app.queue is not None  # settings_from refused a daemon without a queue
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Daemon(app, app.queue, stop=stop, owner=default_owner()).serve()
    return EXIT_OK  # also after SIGTERM: the job was handed back cleanly


async def cmd_enqueue(args: argparse.Namespace, app: App) -> int:
    job = replace(
        _job(args, app.settings), job_id=f"{_job(args, app.settings).date}-manual", reason="manual"
    )
    result = await enqueue(app, job, lambda_invoker(app))
    _emit(args, result, f"{result['job_id']}: {result['bottles']} bottles → {result['route']}")
    return EXIT_OK


async def cmd_check_client(
    args: argparse.Namespace, s: Settings, http: aiohttp.ClientSession
) -> int:
    if not s.mirror_url:
        raise SettingsError("--base: required (or MIRRORD_MIRROR_URL): the mirror's URL")
    if not s.platforms:
        raise SettingsError("--target: name machines (e.g. arm64_tahoe), not auto")
    results = []
    for target in s.platforms:
        results.append(
            await check_client(
                http,
                s.mirror_url,
                target,
                ruby_versions=s.portable_ruby,
                concurrency=s.concurrency,
                progress=_progress(args),
                status_key=s.status_key,
                releases=s.releases,
            )
        )
    lines = []
    for c in results:
        lines.append(
            f"{c.target}: {c.installable}/{c.with_bottle} formulae installable "
            f"({c.percent:.1f} %), {c.no_bottle} without a bottle; API files "
            f"{c.api_files}/{c.api_expected}; portable Ruby {c.portable_ruby}/"
            f"{c.portable_ruby_expected}"
        )
        lines += [f"  MISS {m.what}: {m.reason} ({m.url})" for m in c.misses]
    complete = all(not c.misses for c in results)
    _emit(
        args,
        {"base": s.mirror_url, "complete": complete, "targets": [c.to_dict() for c in results]},
        "\n".join(lines),
    )
    return EXIT_OK if complete else EXIT_FAILED


COMMANDS = {
    "sync": cmd_sync,
    "plan": cmd_plan,
    "verify": cmd_verify,
    "rebuild-hash": cmd_rebuild,
    "daemon": cmd_daemon,
    "enqueue": cmd_enqueue,
}


# Commands that work on the bucket ask for it first: a missing bucket or foreign
# credentials are one line naming the bucket, before any catalog download or plan.
NEEDS_BUCKET = frozenset({"sync", "plan", "verify", "rebuild-hash", "daemon", "enqueue"})


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check-client":
        return await _check_client(args, settings)
    async with open_app(settings) as app:
        if args.command in NEEDS_BUCKET:
            await app.store.check_bucket()
        return await COMMANDS[args.command](args, app)


async def _check_client(args: argparse.Namespace, s: Settings) -> int:
    """HTTP only, as brew on a user's machine: one session like open_app's upstream one
    (same connector, timeouts, User-Agent), and no AWS client, so no region is needed."""
    timeout = aiohttp.ClientTimeout(total=None, connect=s.connect_timeout, sock_read=s.read_timeout)
    async with aiohttp.ClientSession(
        connector=upstream_connector(s.concurrency + 4),
        timeout=timeout,
        headers={"User-Agent": f"mirrord/{__version__}"},
    ) as http:
        return await cmd_check_client(args, s, http)


def cmd_config(args: argparse.Namespace) -> int:
    """No bucket, no clients: a file in, a file out."""
    try:
        config = parse_deploy_config(args.file.read_bytes())
        if args.action == "validate":
            print(f"{args.file}: {', '.join(config.environments)} valid")
            return EXIT_OK
        out = args.out or Path("infra/environments") / args.env / "terraform.tfvars.json"
        body = orjson.dumps(
            config.tfvars(args.env), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(body + b"\n")
        print(f"wrote {out}")
        return EXIT_OK
    except OSError as exc:
        print(f"mirrord: config: {exc}", file=sys.stderr)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"mirrord: {args.file}: {problem}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return cmd_config(args)
    env = os.environ if env is None else env
    if args.command == "health":  # the `mirrord` command answers it in __main__, not here
        return run_health(args.max_age, env)
    try:
        settings = settings_from(args, env)
    except SettingsError as exc:
        print(f"mirrord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    try:
        return run_loop(_run(args, settings))
    except SettingsError as exc:
        print(f"mirrord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MirrordError as exc:
        log.error("command_failed", command=args.command, error=str(exc), kind=type(exc).__name__)
        print(f"mirrord: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C; a second one in sync
        return 130
