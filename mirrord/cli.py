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

import aiofiles
import aiohttp
import structlog

from mirrord import __version__, render
from mirrord.adapters.invoke import lambda_invoker
from mirrord.adapters.lock import default_owner
from mirrord.adapters.terminal import BarProgress, LogProgress
from mirrord.adapters.web import upstream_connector
from mirrord.app import App, configure_logging, notify_once, open_app, run_loop
from mirrord.cli_args import build_parser, job_from_args, settings_from
from mirrord.cli_config import cmd_config
from mirrord.core.brew import reader_headers
from mirrord.core.closure import parse_brewfile
from mirrord.core.errors import InputError, MirrordError, SettingsError
from mirrord.core.jobs import Job
from mirrord.core.messages import deploy_message
from mirrord.core.plan import estimate
from mirrord.core.report import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from mirrord.core.settings import Settings
from mirrord.core.shards import Shard
from mirrord.daemon import Daemon
from mirrord.health import run as run_health
from mirrord.services.check import check_client
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.enqueue import enqueue, index_sizes
from mirrord.services.fanin import fan_in
from mirrord.services.job import crash_hook, load_external, run_exclusive
from mirrord.services.plan import plan_job
from mirrord.services.prune import prune, rules_of
from mirrord.services.shard import run_shard
from mirrord.services.status import mirror_status
from mirrord.services.subset import mirror_subset
from mirrord.services.verify import rebuild_hash, verify

log = structlog.get_logger("mirrord.cli")


def _progress(args: argparse.Namespace, unit: str = "bottle") -> BarProgress | LogProgress:
    return render.progress(args.log_level == "warning", unit)


class _Interrupts:
    """Ctrl-C during a sync: the first stops as SIGTERM does (finish in-flight transfers,
    checkpoint, exit 1); a second stops at once: cancelling aborts the uploads in flight."""

    def __init__(
        self, stop: asyncio.Event, progress: BarProgress | LogProgress, settings: Settings
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._stop, self._progress, self._settings = task, stop, progress, settings
        self.count = 0

    def _in_flight(self) -> int:
        # Workers take the next bottle without a pause after finishing one, so between
        # two events every worker holds one while any are left.
        return min(self._settings.concurrency, max(self._progress.left, 0))

    def __call__(self) -> None:
        self.count += 1
        n = self._in_flight()
        if self.count == 1:
            self._stop.set()
            doing = (
                f"finishing {n} transfers in flight (up to {self._settings.stop_grace:g}s)"
                if n
                else "ending the job"
            )
            render.tell(f"stopping: {doing}, Ctrl-C again to stop now", "interrupted", in_flight=n)
            return
        if self.count == 2:
            render.tell(
                f"stopping now: aborting {n} transfers in flight", "interrupted_again", in_flight=n
            )
        self._task.cancel()

    def stopped_at_once(self) -> None:
        """Said when the cancellation ends the sync; main() makes it exit 130."""
        if self.count >= 2:
            left = max(self._progress.left, 0)
            render.tell(
                f"stopped: {left} bottles remain; `mirrord sync` again fetches them",
                "stopped_at_once",
                remaining=left,
            )


async def _job(args: argparse.Namespace, app: App) -> Job:
    """The command line's job; with --brewfile (MIRRORD_BREWFILE), the Brewfile's
    homebrew/core formulae join --formula, and every line not taken is said."""
    path = app.settings.brewfile
    if not path:
        return job_from_args(args, app.settings)
    return job_from_args(args, app.settings, await _brewfile_names(path))


async def _brewfile_names(path: str) -> tuple[str, ...]:
    """A Brewfile's homebrew/core formulae; every line not taken is said."""
    try:
        async with aiofiles.open(path, encoding="utf-8") as f:
            text = await f.read(4 * 2**20 + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--brewfile {path}: cannot be read: {exc}") from None
    if len(text) > 4 * 2**20:
        raise SettingsError(f"--brewfile {path}: larger than 4 MiB; not a Brewfile")
    brewfile = parse_brewfile(text)
    for line in brewfile.skipped:
        render.tell(f"{path}: {line}: skipped", "brewfile_skipped", path=path, line=line)
    if not brewfile.names:
        raise SettingsError(f"--brewfile {path}: names no homebrew/core formula (brew lines)")
    return brewfile.names


async def cmd_sync(args: argparse.Namespace, app: App) -> int:
    if args.finalize or args.shards is not None:
        return await cmd_finalize(args, app)
    if args.shard is not None:
        return await cmd_shard(args, app)
    job = await _job(args, app)
    stop = asyncio.Event()
    bar = _progress(args)
    interrupt = _Interrupts(stop, bar, app.settings)
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
                progress=bar,
                wait=args.wait,
                publish_progress=_progress(args, "version"),
            )
        except asyncio.CancelledError:
            interrupt.stopped_at_once()
            raise
    render.emit(args.json, render.sync_result(report, app.settings.bucket))
    return report.exit_code


async def cmd_shard(args: argparse.Namespace, app: App) -> int:
    """``sync --shard K/N``: one shard, then its record (exit 1 if bottles failed)."""
    job = await _job(args, app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # finish in flight, checkpoint, exit 1
        loop.add_signal_handler(sig, stop.set)
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        record = await run_shard(
            app,
            job,
            args.shard,
            owner=default_owner(),
            stop=stop,
            progress=_progress(args),
            wait=args.wait,
        )
    failed = "".join(f"\n  FAILED {key}: {reason}" for key, reason in record.failed)
    render.emit(
        args.json,
        (
            record.to_json(),
            f"{job.date}: shard {record.shard} of job {job.job_id}: {record.stored} stored, "
            f"{len(record.failed)} failed; {record.bytes / 1e6:,.1f} MB{failed}\n"
            "the job is published by `mirrord sync --finalize` once every shard is done",
        ),
    )
    return EXIT_FAILED if record.failed else EXIT_OK


async def cmd_finalize(args: argparse.Namespace, app: App) -> int:
    """``sync --finalize --job-id J --shards N``: the fan-in of a sharded job, exactly
    once (services/fanin.py). 0 complete, 1 failed bottles or the fan-in running
    elsewhere, 2 a usage error: a flag missing, or shards that have not ended yet."""
    if not args.finalize or not args.job_id or args.shards is None:
        raise SettingsError("sync --finalize needs --job-id J and --shards N, together")
    if getattr(args, "shard", None) is not None:
        raise SettingsError("sync: --shard runs one shard, --finalize the fan-in; not both")
    try:
        Shard(args.shards, args.shards)
    except InputError as exc:
        raise SettingsError(f"--shards {args.shards}: {exc}") from None
    job = await _job(args, app)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with structlog.contextvars.bound_contextvars(job_id=job.job_id):
        outcome = await fan_in(app, job, args.shards, owner=default_owner(), route="cli", stop=stop)
    if outcome.missing:
        waiting = ", ".join(f"{k}/{args.shards}" for k in outcome.missing)
        print(
            f"mirrord: sync --finalize: job {job.job_id} has no record yet from shard(s) "
            f"{waiting}; run it after every shard has ended (done or given up)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if outcome.report is None:
        if outcome.holder == "done":
            print(
                f"mirrord: job {job.job_id} was finalized already; nothing to do", file=sys.stderr
            )
            return EXIT_OK
        print(
            f"mirrord: the fan-in of {job.job_id} is running in {outcome.holder}", file=sys.stderr
        )
        return EXIT_FAILED
    render.emit(args.json, render.sync_result(outcome.report, app.settings.bucket))
    return outcome.report.exit_code


async def cmd_plan(args: argparse.Namespace, app: App) -> int:
    planned = await plan_job(app, await _job(args, app), external=await load_external(app))
    guess, partial = None, None
    if planned.closure is not None:  # a subset: its image indexes are few, ask them
        found = await index_sizes(app.registry, planned.plan, app.settings)
        guess, partial = estimate(planned.plan, found.sizes), found.partial
    render.emit(args.json, render.plan_result(planned, guess, partial))
    return EXIT_OK


async def cmd_verify(args: argparse.Namespace, app: App) -> int:
    hf, _ = await load_hashfile(app.store, app.settings.hash_key)
    result = await verify(app.store, hf, deep=args.deep, concurrency=app.settings.concurrency)
    render.emit(args.json, render.verify_result(result))
    return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_status(args: argparse.Namespace, app: App) -> int:
    """0 healthy; 1 a problem a cron check should raise (each named), or the bucket or
    hash file unreadable; 2 usage."""
    found = await mirror_status(app, upstream=not args.no_upstream, max_age_days=args.max_age)
    render.emit(args.json, render.status_result(found))
    return EXIT_OK if found.healthy else EXIT_FAILED


async def cmd_rebuild(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    result = await rebuild_hash(
        app.store,
        s.hash_key,
        owner=default_owner(),
        heartbeat=s.heartbeat_seconds,
        concurrency=s.concurrency,
    )
    render.emit(args.json, render.rebuild_result(result))
    return EXIT_OK


async def cmd_prune(args: argparse.Namespace, app: App) -> int:
    result = await prune(
        app,
        rules_of(app.settings),
        dry_run=args.dry_run,
        owner=default_owner(),
        hook=crash_hook(app.settings),
        progress=_progress(args, "key"),
    )
    render.emit(args.json, render.prune_result(result))
    return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_daemon(args: argparse.Namespace, app: App) -> int:
    assert app.queue is not None  # settings_from refused a daemon without a queue
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Daemon(app, app.queue, stop=stop, owner=default_owner()).serve()
    return EXIT_OK  # also after SIGTERM: the job was handed back cleanly


async def cmd_enqueue(args: argparse.Namespace, app: App) -> int:
    job = await _job(args, app)
    job = replace(job, job_id=f"{job.date}-manual", reason="manual")
    invoke = lambda_invoker(app.lambda_client, app.settings.sync_function)
    external = await load_external(app)
    result = await enqueue(app, job, invoke, external=external, dry_run=args.dry_run)
    render.emit(args.json, render.enqueue_result(result))
    return EXIT_OK


async def cmd_check_client(
    args: argparse.Namespace, s: Settings, http: aiohttp.ClientSession
) -> int:
    if not s.mirror_url:
        raise SettingsError("--base: required (or MIRRORD_MIRROR_URL): the mirror's URL")
    if not s.platforms:
        raise SettingsError("--target: name machines (e.g. arm64_tahoe), not auto")
    names = (*(await _brewfile_names(s.brewfile) if s.brewfile else ()), *(args.formula or ()))
    subset = await mirror_subset(
        http, s.mirror_url, names, s.platforms, s.releases, status_key=s.status_key
    )
    results = [
        await check_client(
            http,
            s.mirror_url,
            target,
            ruby_versions=s.portable_ruby,
            concurrency=s.concurrency,
            progress=_progress(args),
            status_key=s.status_key,
            releases=s.releases,
            only=None if subset is None else subset.found.by_target[target],
        )
        for target in s.platforms
    ]
    render.emit(args.json, render.check_result(s.mirror_url, results, subset))
    return EXIT_OK if all(not c.misses for c in results) else EXIT_FAILED


COMMANDS = {
    "sync": cmd_sync,
    "plan": cmd_plan,
    "verify": cmd_verify,
    "rebuild-hash": cmd_rebuild,
    "prune": cmd_prune,
    "daemon": cmd_daemon,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
}


# Commands that work on the bucket ask for it first: a missing bucket or foreign
# credentials are one line naming the bucket, before any catalog download or plan.
NEEDS_BUCKET = frozenset(
    {"sync", "plan", "verify", "rebuild-hash", "prune", "daemon", "enqueue", "status"}
)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "check-client":
        return await _check_client(args, settings)
    if args.command == "notify":
        return await _notify(args, settings)
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
        headers={"User-Agent": f"mirrord/{__version__}", **reader_headers(s.mirror_token)},
    ) as http:
        return await cmd_check_client(args, s, http)


async def _notify(args: argparse.Namespace, s: Settings) -> int:
    """Slack only: no bucket, and AWS only to read MIRRORD_SLACK_SECRET_ID."""
    message = deploy_message(
        env=args.env, status=args.status, commit=args.commit, image=args.image, url=args.run_url
    )
    if await notify_once(s, message):
        print(f"posted: {message.text}")
        return EXIT_OK
    print("mirrord: notify: Slack did not take the message (see the warning)", file=sys.stderr)
    return EXIT_FAILED


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
