"""The ``mirrord`` command line's grammar: the parser, and the Settings and the Job a
parsed command line names (cli.py runs the commands)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from mirrord import __version__
from mirrord.core.errors import InputError, JobError, SettingsError
from mirrord.core.jobs import Job, parse_date
from mirrord.core.messages import DEPLOY_STATUSES
from mirrord.core.settings import Settings, from_env
from mirrord.core.shards import Shard, parse_shard
from mirrord.health import add_arguments as health_arguments


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="the mirror's bucket (MIRRORD_BUCKET)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _job_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=_date, help="job date folder (default: today, UTC)")
    p.add_argument(
        "--formula",
        action="append",
        metavar="NAME",
        help="only these formulae and their runtime dependencies",
    )
    p.add_argument(
        "--brewfile",
        metavar="PATH",
        help="only a Brewfile's formulae and their runtime dependencies (MIRRORD_BREWFILE)",
    )
    p.add_argument(
        "--platform",
        action="append",
        metavar="TAG",
        help="target tags, repeat or comma-separate (MIRRORD_PLATFORMS)",
    )
    p.add_argument("--api-url", help="formula catalog (MIRRORD_API_URL)")


def _sync_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    _job_flags(p)
    p.add_argument("--job-id", help="id in logs and the report (default: <date>-cli)")
    p.add_argument("--concurrency", help="bottles in flight (MIRRORD_CONCURRENCY)")
    p.add_argument("--part-size", help="multipart part size, e.g. 16MiB (MIRRORD_PART_SIZE)")
    p.add_argument("--batch-size", help="bottles per checkpoint (MIRRORD_BATCH_SIZE)")
    p.add_argument("--wait", action="store_true", help="wait while another sync holds the bucket")
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="only the K-th of N parts of the job, beside its other shards (needs --job-id); "
        "no publication: `--finalize` does it once all shards are done",
    )
    p.add_argument(
        "--finalize",
        action="store_true",
        help="fan in a sharded job once every shard has ended: merge, publish, status.json, "
        "Slack; exactly once however often it is run (needs --job-id and --shards)",
    )
    p.add_argument("--shards", type=int, metavar="N", help="the job's shard count (--finalize)")


def _plan_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    _job_flags(p)


def _verify_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--deep", action="store_true", help="re-hash every object's bytes")


def _prune_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    p.add_argument(
        "--keep-versions",
        metavar="N",
        help="keep the last N versions of each formula per bottle tag (MIRRORD_PRUNE_KEEP_VERSIONS)",
    )
    p.add_argument(
        "--keep-days",
        metavar="D",
        help="keep every bottle stored less than D days ago (MIRRORD_PRUNE_KEEP_DAYS)",
    )
    p.add_argument("--api-url", help="formula catalog (MIRRORD_API_URL)")


def _status_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--no-upstream",
        action="store_true",
        help="do not fetch the upstream API files to compare (the API state is then unknown)",
    )
    p.add_argument(
        "--max-age",
        type=_days,
        default=8.0,
        metavar="DAYS",
        help="a last complete sync older than this fails the check (default 8)",
    )


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 0 < days <= 3650:
        raise argparse.ArgumentTypeError(f"{text!r}: from 0 to 3650 days")
    return days


def _queue_flags(p: argparse.ArgumentParser, *, job: bool) -> None:
    _common(p)
    if job:
        _job_flags(p)
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="plan and estimate, print where the job would go; send nothing",
        )
    p.add_argument("--queue-url", help="the SQS job queue (MIRRORD_QUEUE_URL)")


def _config_flags(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, title="actions", metavar="ACTION")
    for action, text in (
        ("validate", "check every environment in the file"),
        ("render", "write infra/environments/<env>/: links, terraform.tfvars.json, backend.hcl"),
    ):
        a = _command(actions, action, text)
        a.add_argument("--file", type=Path, default=Path("config.yaml"))
        if action == "render":
            a.add_argument("--env", required=True, help="an environment of the file")
            a.add_argument(
                "--infra", type=Path, default=Path("infra"), help="the infra/ folder (default)"
            )
            a.add_argument("--out", type=Path, help="only the tfvars JSON, to this path")


def _notify_flags(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, title="actions", metavar="ACTION")
    a = _command(actions, "deploy", "post a deploy's outcome (the deploy workflow)")
    a.add_argument("--env", required=True, help="the environment deployed, e.g. staging")
    a.add_argument("--status", required=True, choices=sorted(DEPLOY_STATUSES))
    a.add_argument("--commit", required=True, help="the commit deployed")
    a.add_argument("--image", help="the image deployed, by digest")
    a.add_argument("--run-url", help="the workflow run, for the message's link")


def _check_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="TAG",
        help="machine bottle tag, e.g. arm64_tahoe (repeat or comma-separate)",
    )
    p.add_argument("--base", help="the mirror's URL, as users set it (MIRRORD_MIRROR_URL)")
    p.add_argument(
        "--formula",
        action="append",
        metavar="NAME",
        help="check only these formulae and their runtime dependencies (a subset mirror)",
    )
    p.add_argument(
        "--brewfile",
        metavar="PATH",
        help="check only a Brewfile's formulae and their dependencies (MIRRORD_BREWFILE); "
        "without either, the subset the mirror's status.json records, if it is served",
    )
    p.add_argument(
        "--portable-ruby",
        help="portable Ruby to check: latest (the newest two the mirror lists), versions, "
        "or none (MIRRORD_PORTABLE_RUBY)",
    )


# Each command, the sentence that heads its --help and the list in `mirrord --help`, and
# the function that adds its flags.
_PARSERS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("sync", "fetch every missing bottle into the bucket", _sync_flags),
    ("plan", "show what a sync would fetch, writing nothing", _plan_flags),
    ("verify", "check the hash file against the objects in the bucket", _verify_flags),
    ("rebuild-hash", "rewrite the hash file from the objects' metadata", _common),
    ("prune", "delete superseded bottles no catalog or API file names", _prune_flags),
    (
        "daemon",
        "serve jobs from the SQS queue until SIGTERM (Fargate)",
        partial(_queue_flags, job=False),
    ),
    (
        "enqueue",
        "plan, estimate and send a job, as the weekly Lambda does",
        partial(_queue_flags, job=True),
    ),
    ("config", "check config.yaml, or render it as Terraform variables", _config_flags),
    (
        "status",
        "the last sync, what the mirror holds, whether its API files are current",
        _status_flags,
    ),
    ("check-client", "walk the mirror over HTTP as brew 6 would on a machine", _check_client_flags),
    ("health", "exit 0 while the daemon's heartbeat file is fresh (ECS)", health_arguments),
    ("notify", "post a notice to the Slack webhook (MIRRORD_SLACK_*)", _notify_flags),
)


def _command(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
    # The same sentence heads `mirrord <command> --help`.
    p: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text + ".")
    _global_flags(p, argparse.SUPPRESS)
    return p


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
    for name, text, flags in _PARSERS:
        flags(_command(sub, name, text))
    width = max(len(name) for name, _, _ in _PARSERS) + 2
    parser.description = f"{DESCRIPTION}\n\ncommands:\n" + "\n".join(
        f"  {name:{width}}{text}" for name, text, _ in _PARSERS
    )
    return parser


# Each setting a flag overrides, and that flag as typed: an error names what the user
# typed (`--platform`, not the field's name). check-client has its own names.
FLAGS = {
    "MIRRORD_BUCKET": "--bucket",
    "MIRRORD_API_URL": "--api-url",
    "MIRRORD_BREWFILE": "--brewfile",
    "MIRRORD_PLATFORMS": "--platform",
    "MIRRORD_CONCURRENCY": "--concurrency",
    "MIRRORD_PART_SIZE": "--part-size",
    "MIRRORD_BATCH_SIZE": "--batch-size",
    "MIRRORD_QUEUE_URL": "--queue-url",
    "MIRRORD_PRUNE_KEEP_VERSIONS": "--keep-versions",
    "MIRRORD_PRUNE_KEEP_DAYS": "--keep-days",
}
CHECK_CLIENT_FLAGS = {
    "MIRRORD_MIRROR_URL": "--base",
    "MIRRORD_BREWFILE": "--brewfile",
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
    bucketless = check_client or args.command == "notify"
    settings = from_env(env, flags, require_bucket=not bucketless, flag_names=names)
    if getattr(args, "shard", None) is not None and not args.job_id:
        # Every shard of a job must name the same job: its records and its lock are its.
        raise SettingsError("--shard: needs --job-id, the same for every shard of the job")
    if args.command == "daemon" and not settings.queue_url:
        # A usage error, said before any request (the bucket is asked for first).
        raise SettingsError("MIRRORD_QUEUE_URL (or --queue-url): required by the daemon")
    return settings


def job_from_args(
    args: argparse.Namespace, settings: Settings, brewfile: Sequence[str] = ()
) -> Job:
    """The job a sync, plan or enqueue command line asks for (today's, by default);
    ``brewfile``: the names a Brewfile adds to ``--formula`` (cli.py reads it); neither
    given, MIRRORD_FORMULAE's (a deployed subset mirror's roots)."""
    day = args.date or datetime.now(UTC).date().isoformat()
    names = (*brewfile, *(args.formula or ())) or settings.formulae or ()
    return Job(
        job_id=getattr(args, "job_id", None) or f"{day}-cli",
        date=day,
        platforms=settings.platforms,
        formulae=tuple(dict.fromkeys(names)) if names else None,
    )
