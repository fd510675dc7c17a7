"""``mirrord status``: what the mirror holds and how its last sync went, judged. Pure.

Inputs are what the bucket says (status.json, the hash file, the lock, the ``api/``
objects) and, when asked, the upstream API files' sha256s; services/status.py reads
them. The verdict is for a cron check: ``healthy`` False (exit 1) names each reason in
``problems``; what needs no action is a ``note``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.report import Report
from mirrord.core.subset import recorded_subset

MAX_AGE_DAYS = 8.0  # the "no recent sync" alarm's window: a weekly job, and a day's slack
RUN_FAILED_KEYS = 20  # failed keys status.json's last_run lists (the count is whole)


def run_record(
    job: Job, now: str, report: Report | None, error: str | None = None
) -> dict[str, Any]:
    """status.json's ``last_run``: how the last job that ended did, whatever it was.
    ``outcome``: complete | failed (bottles failed) | stopped (handed on, the rest is
    the next run's) | error (the job died: ``error`` says why)."""
    if report is None:
        outcome = "error"
    elif report.complete:
        outcome = "complete"
    elif report.failed:
        outcome = "failed"
    else:
        outcome = "stopped"
    published = report.published if report is not None else None
    return {
        "job_id": job.job_id,
        "date": job.date,
        "ended": now,
        "outcome": outcome,
        "error": error,
        "planned": report.planned if report else None,
        "downloaded": report.downloaded if report else None,
        "failed": len(report.failed) if report else None,
        "failed_keys": [f.key for f in report.failed[:RUN_FAILED_KEYS]] if report else [],
        "remaining": report.remaining if report else None,
        "api": published.api if published is not None else None,
        "subset": report.subset.to_dict() if report and report.subset else None,
        "formulae": list(job.formulae) if job.formulae else None,
    }


def with_run(status: Any, run: Mapping[str, Any]) -> dict[str, Any]:
    """status.json after a job that did not complete: the last complete job's record as
    it was (every reader of it, the enqueuer's too, keeps reading the same), and this
    run's ``last_run``."""
    kept = dict(status) if isinstance(status, dict) else {}
    kept["last_run"] = dict(run)
    return kept


@dataclass(frozen=True, slots=True)
class Held:
    """The mirror's bottles as the hash file records them (no listing)."""

    bottles: int  # hash-file entries
    objects: int  # distinct objects they point at (links share one)
    bytes: int  # of those objects, as recorded
    unknown_size: int  # objects recorded without a size (migrated v1 entries)
    last_updated: str
    quarantined: tuple[str, ...]  # keys in quarantine (3 runs in a row)
    suspects: tuple[str, ...]  # keys that failed verification, not yet quarantined

    @classmethod
    def of(cls, hf: HashFile) -> Held:
        sizes: dict[str, int | None] = {}
        for entry in hf.bottles.values():
            sizes.setdefault(entry.s3_key, entry.file_size)
        quarantine = sorted(k for k, q in hf.quarantine.items() if q.quarantined)
        suspects = sorted(k for k, q in hf.quarantine.items() if not q.quarantined)
        return cls(
            bottles=len(hf.bottles),
            objects=len(sizes),
            bytes=sum(n or 0 for n in sizes.values()),
            unknown_size=sum(1 for n in sizes.values() if n is None),
            last_updated=hf.last_updated,
            quarantined=tuple(quarantine),
            suspects=tuple(suspects),
        )


@dataclass(frozen=True, slots=True)
class ApiState:
    """The published API files against upstream's. ``state``: current (every file the
    mirror serves is upstream's, byte for byte) | stale (upstream has moved on: the
    next complete sync publishes) | not published | unknown (upstream not asked, or
    unreachable: ``error``) | off (MIRRORD_BREW_MIRROR false)."""

    state: str
    files: int = 0  # api/ objects in the bucket
    published_at: str | None = None  # the newest api/ object's LastModified (UTC)
    differ: tuple[str, ...] = ()  # endpoints whose bytes upstream has changed
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    bucket: str
    now: str
    status_json: Any  # parsed, or None
    held: Held
    api: ApiState
    running: Mapping[str, Any] | None  # the bucket lock's live holder
    max_age_days: float = MAX_AGE_DAYS
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def last_success(self) -> dict[str, Any] | None:
        s = self.status_json
        if not isinstance(s, dict) or not isinstance(s.get("last_success"), str):
            return None
        keys = ("job_id", "date", "planned", "downloaded", "adopted", "skipped", "bytes")
        found = {k: s.get(k) for k in keys}
        published = s.get("published")
        api = published.get("api") if isinstance(published, dict) else None
        quarantined = s.get("quarantined")
        count = len(quarantined) if isinstance(quarantined, list) else 0
        return {"at": s["last_success"], **found, "api": api, "quarantined": count}

    def last_run(self) -> dict[str, Any] | None:
        s = self.status_json
        run = s.get("last_run") if isinstance(s, dict) else None
        return run if isinstance(run, dict) else None

    def to_dict(self) -> dict[str, Any]:
        run = self.last_run()
        # The last sync's subset; a status.json older than last_run: its complete job's.
        subset = recorded_subset(run) if run is not None else recorded_subset(self.status_json)
        held = self.held
        return {
            "bucket": self.bucket,
            "checked_at": self.now,
            "healthy": self.healthy,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "running": dict(self.running) if self.running else None,
            "last_run": self.last_run(),
            "last_success": self.last_success(),
            "held": {
                "source": "hash file",
                "bottles": held.bottles,
                "objects": held.objects,
                "bytes": held.bytes,
                "unknown_size": held.unknown_size,
                "last_updated": held.last_updated or None,
            },
            "quarantine": {
                "count": len(held.quarantined),
                "keys": list(held.quarantined),
                "suspects": list(held.suspects),
            },
            "api": {
                "state": self.api.state,
                "files": self.api.files,
                "published_at": self.api.published_at,
                "differ": list(self.api.differ),
                "error": self.api.error,
            },
            "subset": subset.to_dict() if subset else None,
        }


def _age_days(stamp: str, now: str) -> float | None:
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        at = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (at - then).total_seconds() / 86400


def judge(status: Status) -> Status:
    """Fill in ``problems`` (each makes the check fail) and ``notes``."""
    problems, notes = status.problems, status.notes
    success, run = status.last_success(), status.last_run()
    if success is None:
        problems.append("no complete sync recorded (status.json has no last_success)")
    else:
        age = _age_days(success["at"], status.now)
        if age is not None and age > status.max_age_days:
            problems.append(
                f"the last complete sync ended {age:.1f} days ago "
                f"(more than {status.max_age_days:g})"
            )
    if run is not None and run.get("outcome") in ("failed", "error"):
        why = run.get("error") or f"failed bottles: {run.get('failed')}"
        problems.append(f"the last sync ({run.get('job_id')}) did not complete: {why}")
    elif run is not None and run.get("outcome") == "stopped":
        notes.append(f"the last sync ({run.get('job_id')}) stopped early; its rest is queued")
    if status.held.quarantined:
        notes.append(f"bottles in quarantine (broken upstream): {len(status.held.quarantined)}")
    api = status.api
    last_api = success.get("api") if success else None
    if api.state == "not published":
        problems.append("no API files are published: brew cannot use the mirror's API")
    elif api.state != "off" and isinstance(last_api, str) and last_api != "published":
        problems.append(f"the last complete sync kept the API files back ({last_api})")
    if api.state == "stale":
        notes.append(
            f"upstream has changed {len(api.differ)} API files since they were published; "
            "the next complete sync publishes them"
        )
    elif api.state == "unknown" and api.error:
        notes.append(f"API files not compared with upstream: {api.error}")
    if status.running:
        notes.append(f"a sync is running now: {status.running.get('job_id')}")
    return status


def api_state(
    published: Mapping[str, str],
    upstream: Mapping[str, str] | None,
    *,
    newest: str | None,
    error: str | None = None,
) -> ApiState:
    """``published``: endpoint → sha256 of each api/ object; ``upstream``: endpoint →
    sha256 of upstream's file (None: not asked or unreachable, ``error`` says which)."""
    if not published:
        return ApiState("not published")
    if upstream is None:
        return ApiState("unknown", len(published), newest, error=error)
    differ = sorted(e for e, digest in published.items() if upstream.get(e) != digest)
    state = "stale" if differ else "current"
    return ApiState(state, len(published), newest, tuple(differ))


def endpoints_of(keys: Sequence[str], prefix: str) -> list[str]:
    return [k.removeprefix(prefix) for k in keys if k.startswith(prefix)]
