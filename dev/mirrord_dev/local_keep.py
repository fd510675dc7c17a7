"""``make run-local``, after the weekly loop: what to mirror and what to keep.

7. A subset mirror in a second bucket from ``dev/Brewfile`` (its formulae and their
   runtime dependencies), while GHCR answers 503 for jq's bottles: the emulator's flat
   ``bottles/`` folder (TUNA/USTC layout) serves them as the fallback, and every byte is
   still checked against the catalog's sha256. Then ``check-client`` over the subset and
   ``mirrord status``.
8. Upstream moves on (the emulator rebuilds jq at a new revision), the main bucket is
   synced again, and ``mirrord prune`` (first ``--dry-run``) removes jq's superseded
   bottles and their brew-6 copies; ``verify`` and ``check-client`` show the mirror whole.

Each step runs the real ``mirrord`` command line against the same peers as the loop.
"""

from __future__ import annotations

import subprocess  # nosec B404  # run-local runs mirrord itself
import sys
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson

BREWFILE = Path(__file__).resolve().parents[1] / "Brewfile"
SUBSET_BUCKET = "mirrord-local-subset"
FAULTY = "jq"  # GHCR fails this formula's bottles during the subset sync


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def mirrord(env: dict[str, str], *args: str) -> int:
    """``mirrord ARGS`` in this terminal (its progress and output shown); the exit code."""
    print(f"$ mirrord {' '.join(args)}", flush=True)
    command = [sys.executable, "-m", "mirrord", *args]
    done = subprocess.run(command, env=env, check=False)  # noqa: S603  # nosec B603  # our own interpreter and module, no shell
    return done.returncode


def _emulator(url: str, body: Any = None) -> Any:
    """The emulator's formula.json (GET) or one of its admin endpoints (POST)."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")  # noqa: S310  # loopback http, run-local's own peer
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310  # nosec B310
        return orjson.loads(answer.read() or b"null")


def _ghcr_fails(emulator: dict[str, Any], name: str) -> int:
    """Every bottle of ``name`` answers 503 at GHCR from now on; how many bottles."""
    catalog = _emulator(emulator["api_url"])
    entry = next(e for e in catalog if e["name"] == name)
    digests = {f["sha256"] for f in entry["bottle"]["stable"]["files"].values()}
    fault = {"kind": "status", "status": 503, "times": None}
    _emulator(f"{emulator['registry_url']}/_emulator/faults", {d: [fault] for d in digests})
    return len(digests)


Front = Callable[[Any, str], AbstractContextManager[Any]]  # local.bucket_front


def subset_with_fallback(
    env: dict[str, str], s3: Any, emulator: dict[str, Any], front: Front, targets: list[str]
) -> int:
    """Step 7; ``front(s3, bucket)`` serves a bucket as CloudFront would, for check-client
    on each of ``targets``. Returns the first non-zero exit code, else 0."""
    _section(f"a subset mirror: {BREWFILE.name}'s formulae and their dependencies")
    s3.create_bucket(Bucket=SUBSET_BUCKET)
    subset = {
        **env,
        "MIRRORD_BUCKET": SUBSET_BUCKET,
        "MIRRORD_FALLBACK_URLS": emulator["flat_url"],
        # The flat folder is plain http on loopback: both refused unless allowed.
        "MIRRORD_FALLBACK_ALLOW_HTTP": "true",
        "MIRRORD_FALLBACK_ALLOW_PRIVATE": "true",
        "MIRRORD_MAX_ATTEMPTS": "2",  # GHCR's 503s give up after one retry, not five
    }
    planned = mirrord(subset, "plan", "--brewfile", str(BREWFILE))
    failing = _ghcr_fails(emulator, FAULTY)
    _section(f"sync it while GHCR answers 503 for {FAULTY}'s {failing} bottles")
    print(f"fallback mirror (flat bottles/ folder): {emulator['flat_url']}")
    try:
        synced = mirrord(subset, "sync", "--brewfile", str(BREWFILE))
    finally:
        _emulator(f"{emulator['registry_url']}/_emulator/reset", {})
    _section("check-client over the subset: its closure only, as brew 6 would")
    with front(s3, SUBSET_BUCKET) as served:
        flags = [f"--target={t}" for t in targets]
        checked = mirrord(
            subset, "check-client", "--base", served.url, "--brewfile", str(BREWFILE), *flags
        )
    _section("mirrord status of the subset mirror")
    shown = mirrord(subset, "status", "--no-upstream")
    return planned or synced or checked or shown


def prune_after_upstream_moves(env: dict[str, str], emulator: dict[str, Any]) -> int:
    """Step 8 on the main bucket; returns the first non-zero exit code, else 0."""
    bumped = _emulator(f"{emulator['registry_url']}/_emulator/bump", {"name": FAULTY})
    _section(f"upstream moves on: {FAULTY} {bumped['pkg_version']}; the weekly sync again")
    synced = mirrord(env, "sync")
    # The defaults (2 versions, 30 days) keep everything so young a mirror holds.
    keep = ("--keep-versions", "1", "--keep-days", "0")
    _section(f"mirrord prune {' '.join(keep)}: the superseded {FAULTY} bottles go")
    dry = mirrord(env, "prune", "--dry-run", *keep)
    pruned = mirrord(env, "prune", *keep)
    return synced or dry or pruned
