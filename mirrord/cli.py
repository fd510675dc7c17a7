"""``mirrord sync | plan | verify | rebuild-hash`` (also ``python -m mirrord``).

stdout carries results only (the ``--json`` report is the one line there); logs are JSON
lines on stderr. Exit status: 0 all planned bottles stored, 1 some failed (or a peer or
an input was unusable), 2 bad settings or usage.
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

import orjson
import structlog

from mirrord import __version__
from mirrord.app import (
    App,
    configure_logging,
    load_external,
    open_app,
    run_exclusive,
    run_loop,
)
from mirrord.audit import rebuild_hash, verify
from mirrord.check import check_client
from mirrord.daemon import Daemon, health_ok
from mirrord.deployconfig import ConfigError
from mirrord.deployconfig import parse as parse_deploy_config
from mirrord.errors import MirrordError, SettingsError
from mirrord.jobs import Job, JobError, parse_date
from mirrord.lambdas.enqueue import enqueue, lambda_invoker
from mirrord.lock import default_owner
from mirrord.pipeline import load_hashfile, prepare
from mirrord.report import EXIT_FAILED, EXIT_OK, EXIT_USAGE, progress_for
from mirrord.settings import Settings, from_env
from mirrord.upstream import fetch_catalog, source_url

log = structlog.get_logger("mirrord.cli")


def _date(text: str) -> str:
    try:
        return parse_date(text, "--date")
    except JobError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirrord", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mirrord {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    sync = sub.add_parser("sync", help="fetch every missing bottle into the bucket")
    common(sync)
    job_flags(sync)
    sync.add_argument("--job-id", help="id in logs and the report (default: <date>-cli)")
    sync.add_argument("--concurrency", help="bottles in flight (MIRRORD_CONCURRENCY)")
    sync.add_argument("--part-size", help="multipart part size, e.g. 16MiB (MIRRORD_PART_SIZE)")
    sync.add_argument("--batch-size", help="bottles per checkpoint (MIRRORD_BATCH_SIZE)")

    plan = sub.add_parser("plan", help="what a sync would fetch; writes nothing")
    common(plan)
    job_flags(plan)

    ver = sub.add_parser("verify", help="the hash file against the bucket")
    common(ver)
    ver.add_argument("--deep", action="store_true", help="re-hash every object's bytes")

    rebuild = sub.add_parser("rebuild-hash", help="rewrite the hash file from object metadata")
    common(rebuild)

    daemon = sub.add_parser("daemon", help="serve jobs from MIRRORD_QUEUE_URL until SIGTERM")
    common(daemon)
    daemon.add_argument("--queue-url", help="the SQS job queue (MIRRORD_QUEUE_URL)")

    enqueue = sub.add_parser("enqueue", help="plan, estimate and send a job (as the cron Lambda)")
    common(enqueue)
    job_flags(enqueue)
    enqueue.add_argument("--queue-url", help="the SQS job queue (MIRRORD_QUEUE_URL)")

    config = sub.add_parser("config", help="config.yaml: validate, or render Terraform variables")
    config_sub = config.add_subparsers(dest="action", required=True)
    for action, text in (
        ("validate", "check every environment"),
        ("render", "write infra/environments/<env>/terraform.tfvars.json"),
    ):
        p = config_sub.add_parser(action, help=text)
        p.add_argument("--file", type=Path, default=Path("config.yaml"))
        if action == "render":
            p.add_argument("--env", required=True, help="dev, staging or prod")
            p.add_argument("--out", type=Path, help="default: infra/environments/<env>/…")

    check = sub.add_parser(
        "check-client", help="walk the mirror over HTTP as brew 6 would on a machine"
    )
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

    health = sub.add_parser("health", help="exit 0 when the daemon's heartbeat file is fresh")
    common(health)
    health.add_argument(
        "--max-age", type=float, default=None, help="seconds (default: 3 heartbeats)"
    )
    return parser


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    if args.command == "health":  # the ECS health check needs the heartbeat settings only
        return from_env(env, require_bucket=False)
    if args.command == "check-client":  # HTTP only: no bucket, no AWS
        flags = {
            "MIRRORD_MIRROR_URL": args.base,
            "MIRRORD_PORTABLE_RUBY": args.portable_ruby,
            "MIRRORD_PLATFORMS": ",".join(args.target),
        }
        return from_env(env, flags, require_bucket=False)
    platforms = getattr(args, "platform", None)
    flags = {
        "MIRRORD_BUCKET": args.bucket,
        "MIRRORD_API_URL": getattr(args, "api_url", None),
        "MIRRORD_PLATFORMS": ",".join(platforms) if platforms else None,
        "MIRRORD_CONCURRENCY": getattr(args, "concurrency", None),
        "MIRRORD_PART_SIZE": getattr(args, "part_size", None),
        "MIRRORD_BATCH_SIZE": getattr(args, "batch_size", None),
        "MIRRORD_QUEUE_URL": getattr(args, "queue_url", None),
    }
    return from_env(env, flags)


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


async def cmd_sync(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    job = _job(args, s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish in-flight, checkpoint, exit 1
        loop.add_signal_handler(sig, stop.set)
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        report = await run_exclusive(
            app,
            job,
            owner=default_owner(),
            route="cli",
            stop=stop,
            progress=progress_for(sys.stderr),
        )
    failed = "".join(f"\n  FAILED {f.key}: {f.error}" for f in report.failed)
    _emit(
        args,
        report.to_dict(),
        f"{report.date}: {report.downloaded} downloaded, {report.adopted} adopted, "
        f"{report.skipped} already mirrored, {len(report.failed)} failed of "
        f"{report.planned} planned; {report.bytes / 1e6:,.1f} MB in {report.duration_s:.1f}s"
        f" → s3://{s.bucket}/{report.date}/{failed}",
    )
    return report.exit_code


async def cmd_plan(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    job = _job(args, s)
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    hf, _ = await load_hashfile(app.store, s.hash_key)
    targets, plan = prepare(catalog, hf, job, s.platforms, await load_external(app))
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
    if app.queue is None:
        raise SettingsError("MIRRORD_QUEUE_URL: required by the daemon")
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


async def cmd_check_client(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    if not s.mirror_url:
        raise SettingsError("--base: required (or MIRRORD_MIRROR_URL): the mirror's URL")
    if not s.platforms:
        raise SettingsError("--target: name machines (e.g. arm64_tahoe), not auto")
    results = []
    for target in s.platforms:
        results.append(
            await check_client(
                app.http,
                s.mirror_url,
                target,
                ruby_versions=s.portable_ruby,
                concurrency=s.concurrency,
                progress=progress_for(sys.stderr),
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
    "check-client": cmd_check_client,
    "sync": cmd_sync,
    "plan": cmd_plan,
    "verify": cmd_verify,
    "rebuild-hash": cmd_rebuild,
    "daemon": cmd_daemon,
    "enqueue": cmd_enqueue,
}


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with open_app(settings) as app:
        return await COMMANDS[args.command](args, app)


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
    try:
        settings = settings_from(args, env)
    except SettingsError as exc:
        print(f"mirrord: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "health":  # the ECS health check: no clients, no network
        max_age = args.max_age if args.max_age is not None else settings.heartbeat_seconds * 3
        return EXIT_OK if health_ok(settings.health_file, max_age) else EXIT_FAILED
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
    except KeyboardInterrupt:
        return 130
