"""The job message (docs/design.md §8): intent only, never a list of bottles. Pure.

``{"v": 1, "job_id": "2026-11-22-weekly", "date": "2026-11-22",
"platforms": ["arm64_tahoe"], "formulae": null, "reason": "schedule"}``

A job fanned out to N workers (docs/design.md §12) is N messages, the same body plus
``"shard": "K/N"`` each; a body without it is the whole job, as before.
Unknown fields are ignored, so a newer sender can add some; a bad body raises
``JobError`` naming the field, and the daemon leaves such a message for the DLQ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import date as Date
from typing import Any

import orjson

from mirrord.core.errors import InputError, JobError, SettingsError
from mirrord.core.models import is_formula_name
from mirrord.core.releases import DEFAULT_RELEASES, Releases, validate_targets
from mirrord.core.shards import Shard, parse_shard

VERSION = 1
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_BODY = 256 * 1024  # SQS's own cap


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    date: str
    platforms: tuple[str, ...] | None = None  # None: the configured default
    formulae: tuple[str, ...] | None = None  # None: all
    reason: str = "manual"
    estimated_bytes: int | None = None  # the enqueuer's estimate, for the report
    shard: Shard | None = None  # None: the whole job, one worker

    def body(self) -> bytes:
        # No "shard" field for a whole job: its body stays what an older daemon reads.
        shard = {"shard": str(self.shard)} if self.shard is not None else {}
        return orjson.dumps(
            {
                "v": VERSION,
                "job_id": self.job_id,
                "date": self.date,
                "platforms": list(self.platforms) if self.platforms is not None else None,
                "formulae": list(self.formulae) if self.formulae is not None else None,
                "reason": self.reason,
                "estimated_bytes": self.estimated_bytes,
                **shard,
            }
        )


def _strings(data: dict[str, Any], field: str) -> list[str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JobError(f"job.{field} must be null or a list of strings")
    if not value:
        raise JobError(f"job.{field} must not be empty (null means all)")
    return value


# A job date names the folder its bottles go to, and adoption after a crash looks for
# folders by date: a date far from today (9999-12-31) would hide a dead run's objects.
PAST_DAYS = 400
FUTURE_DAYS = 1  # a job sent just before midnight UTC, run just after it elsewhere


def parse_date(text: Any, field: str = "job.date", *, today: Date | None = None) -> str:
    """YYYY-MM-DD, from ``PAST_DAYS`` before ``today`` (UTC, default now) to
    ``FUTURE_DAYS`` after it."""
    if not isinstance(text, str) or len(text) != 10 or not text.isascii():
        raise JobError(f"{field} must be a date YYYY-MM-DD")
    try:
        day = Date.fromisoformat(text)
    except ValueError:
        raise JobError(f"{field} must be a date YYYY-MM-DD, got {text!r:.20}") from None
    today = today or datetime.now(UTC).date()
    low, high = today - timedelta(days=PAST_DAYS), today + timedelta(days=FUTURE_DAYS)
    if not low <= day <= high:
        raise JobError(f"{field} {day} is outside {low}..{high} (today ± what a job may need)")
    return day.isoformat()


def parse_job(
    raw: bytes | str, *, today: Date | None = None, releases: Releases = DEFAULT_RELEASES
) -> Job:
    """An SQS body (or a Lambda event's JSON) → ``Job``; ``JobError`` names the field.
    ``releases``: the macOS codenames its platforms are read with (the enqueuer names
    the targets ``auto`` chose, which MIRRORD_MACOS_RELEASES may extend)."""
    if len(raw) > MAX_BODY:
        raise JobError(f"job message of {len(raw)} bytes is over {MAX_BODY}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JobError(f"job message is not JSON: {exc}") from None
    return job_from_dict(data, today=today, releases=releases)


def job_from_dict(
    data: Any, *, today: Date | None = None, releases: Releases = DEFAULT_RELEASES
) -> Job:
    if not isinstance(data, dict):
        raise JobError("job message must be a JSON object")
    if data.get("v") != VERSION or isinstance(data.get("v"), bool):
        raise JobError(f"job.v must be {VERSION}, got {data.get('v')!r:.20}")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise JobError("job.job_id must be 1-128 characters of [A-Za-z0-9._:-]")
    day = parse_date(data.get("date"), today=today)
    platforms = _strings(data, "platforms")
    if platforms is not None:
        try:
            platforms = list(validate_targets(platforms, releases))
        except SettingsError as exc:
            raise JobError(str(exc).replace("MIRRORD_PLATFORMS", "job.platforms")) from None
    formulae = _strings(data, "formulae")
    for name in formulae or ():
        if not is_formula_name(name):
            raise JobError(f"job.formulae: {name[:60]!r} is not a formula name")
    reason = data.get("reason", "manual")
    if not isinstance(reason, str) or len(reason) > 64:
        raise JobError("job.reason must be a string of at most 64 characters")
    estimate = data.get("estimated_bytes")
    if estimate is not None and (
        not isinstance(estimate, int) or isinstance(estimate, bool) or estimate < 0
    ):
        raise JobError("job.estimated_bytes must be null or a non-negative integer")
    return Job(
        job_id,
        day,
        tuple(platforms) if platforms is not None else None,
        tuple(dict.fromkeys(formulae)) if formulae is not None else None,
        reason,
        estimate,
        _shard(data.get("shard")),
    )


def _shard(value: Any) -> Shard | None:
    """``job.shard``: absent or null for a whole job, else ``"K/N"``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobError("job.shard must be null or a string K/N")
    try:
        return parse_shard(value)
    except InputError as exc:
        raise JobError(f"job.{exc}") from None
