"""``mirrord health``: the ECS health check, run every 60 s in the daemon's container.

It answers from the heartbeat file alone, so it imports only the standard library and
the settings module: the whole program (aiobotocore, aiohttp, structlog…) cost about 1 s
of CPU and 60 MB on every check. It reads only the settings it needs: a setting the
daemon does not share with it (a bad ``MIRRORD_PLATFORMS``) never fails the check.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mirrord.core.errors import SettingsError
from mirrord.core.settings import from_env

# The daemon's liveness settings; the others are none of the health check's business.
VARIABLES = ("MIRRORD_HEALTH_FILE", "MIRRORD_HEARTBEAT_SECONDS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``mirrord health``, here and in cli.py's full parser alike."""
    parser.add_argument(
        "--max-age", type=float, default=None, help="seconds (default: 3 heartbeats)"
    )
    # Accepted for compatibility with the other commands; the check needs no bucket.
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)


def check(max_age: float | None, env: Mapping[str, str]) -> tuple[bool, str]:
    """(healthy, why): raises SettingsError on a bad health setting."""
    settings = from_env({k: env[k] for k in VARIABLES if k in env}, require_bucket=False)
    allowed = max_age if max_age is not None else settings.heartbeat_seconds * 3
    path = settings.health_file
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError as exc:
        return False, f"no heartbeat file {path} ({exc.strerror})"
    if age > allowed:
        return False, f"heartbeat file {path} is {age:.0f}s old, allowed {allowed:g}s"
    return True, ""


def run(max_age: float | None, env: Mapping[str, str]) -> int:
    try:
        ok, why = check(max_age, env)
    except SettingsError as exc:
        print(f"mirrord: {exc}", file=sys.stderr)
        return 2
    if not ok:
        # Docker keeps the output of the last checks (docker inspect); a person reads it.
        print(f"mirrord: health: {why}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """``argv`` without the ``health`` word: what follows it (and global flags before it)."""
    parser = argparse.ArgumentParser(
        prog="mirrord health",
        description="Exit 0 while the daemon's heartbeat file is fresh (ECS).",
    )
    add_arguments(parser)
    # The global flags may come first (`mirrord -q health`); nothing here logs.
    parser.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return run(parser.parse_args(argv).max_age, env)
