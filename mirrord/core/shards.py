"""One job shared by N workers (docs/design.md §12): which shard owns what, and the
records the shards leave for the fan-in. Pure.

A bottle's shard is a hash of its object key, not its place in the plan: a shard that
re-plans after a crash, on a hash file its siblings have since grown, still owns exactly
the bottles it owned before, and no two shards ever fetch the same bytes (each distinct
blob is one transfer with one key). The multipart-upload sweep uses the same rule, so a
shard only ever aborts uploads of keys it owns.

In the bucket, next to the job's other state::

    jobs/<job_id>/shards/<K>-of-<N>.json   a ShardRecord, written when shard K ends
    jobs/<job_id>/finalize.json            created once (If-None-Match: *) by the fan-in
    jobs/<job_id>/locks/<K>-of-<N>.lock    shard K's own lock, while it runs
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from mirrord.core.errors import InputError
from mirrord.core.plan import Plan
from mirrord.core.report import Fallbacks

MAX_SHARDS = 64
_SHARD_RE = re.compile(r"([1-9][0-9]{0,2})/([1-9][0-9]{0,2})")
JOBS_PREFIX = "jobs/"
ShardState = Literal["done", "given_up"]


@dataclass(frozen=True, slots=True, order=True)
class Shard:
    """Shard ``index`` of ``count``, counted from 1 as people write it: 1/4 … 4/4."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 1 <= self.index <= self.count:
            raise InputError(f"shard {self.index}/{self.count}: need 1 ≤ K ≤ N ≤ {MAX_SHARDS}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``K/N`` → ``Shard``; ``InputError`` names what is wrong."""
    found = _SHARD_RE.fullmatch(text.strip())
    if found is None:
        raise InputError(f"shard {text[:20]!r}: expected K/N, e.g. 2/4")
    return Shard(int(found[1]), int(found[2]))


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) that owns ``key``: uniform, and the same on every machine
    and Python (a SHA-256 prefix, never ``hash()``, which is salted per process)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def split(plan: Plan, shard: Shard) -> Plan:
    """The part of ``plan`` that ``shard`` carries out: its transfers (by object key) and
    its links (by hash key). The counts stay whole: they describe the job, and the
    fan-in reports them once."""
    return replace(
        plan,
        transfers=tuple(t for t in plan.transfers if shard.owns(t.key)),
        links={k: e for k, e in plan.links.items() if shard.owns(k)},
    )


def record_key(job_id: str, shard: Shard) -> str:
    return f"{JOBS_PREFIX}{job_id}/shards/{shard.index}-of-{shard.count}.json"


def lock_key(job_id: str, shard: Shard) -> str:
    """The lock that keeps one shard from running twice at once (a duplicate delivery);
    outside ``shards/``, where the fan-in reads only records."""
    return f"{JOBS_PREFIX}{job_id}/locks/{shard.index}-of-{shard.count}.lock"


def finalize_key(job_id: str) -> str:
    return f"{JOBS_PREFIX}{job_id}/finalize.json"


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """How one shard ended. ``given_up``: its worker failed for the last time (the queue
    would dead-letter it next); the fan-in still runs, and reports ``failed`` by key."""

    job_id: str
    shard: Shard
    state: ShardState
    stored: int = 0
    bytes: int = 0
    failed: tuple[tuple[str, str], ...] = ()  # (hash key, reason)
    finished_at: str = ""
    # Bottles of the job's plan already mirrored when this shard planned. The fan-in
    # reports the smallest: the shards start together, so the first to plan saw the
    # mirror before the job stored anything (a re-plan at the fan-in sees it after).
    skipped: int | None = None
    fallback: Fallbacks | None = None  # what the fallback mirrors did (the report's)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": 1,
            "job_id": self.job_id,
            "shard": str(self.shard),
            "state": self.state,
            "stored": self.stored,
            "bytes": self.bytes,
            "failed": [{"key": k, "reason": r} for k, r in self.failed],
            "finished_at": self.finished_at,
            "skipped": self.skipped,
            **({} if self.fallback is None else {"fallback": self.fallback.to_dict()}),
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> ShardRecord:
        """Strict: a record the fan-in cannot read is an error naming ``where``."""
        try:
            if not isinstance(data, dict) or data.get("v") != 1:
                raise ValueError("not a v1 shard record")
            state = data["state"]
            if state not in ("done", "given_up"):
                raise ValueError(f"state {state!r:.20}")
            failed = tuple((str(f["key"]), str(f["reason"])) for f in data["failed"])
            counts = [data["stored"], data["bytes"]]
            skipped = data.get("skipped")  # absent in records written before it existed
            if not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for n in (*counts, *([] if skipped is None else [skipped]))
            ):
                raise ValueError("stored, bytes and skipped must be non-negative integers")
            return cls(
                str(data["job_id"]),
                parse_shard(str(data["shard"])),
                state,
                counts[0],
                counts[1],
                failed,
                str(data.get("finished_at", "")),
                skipped,
                None if data.get("fallback") is None else Fallbacks.from_dict(data["fallback"]),
            )
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise InputError(f"{where}: unreadable shard record ({exc})") from None


def missing_shards(records: Mapping[int, ShardRecord], count: int) -> list[int]:
    """The shards (1..count) with no record yet: the fan-in waits until this is empty."""
    return [k for k in range(1, count + 1) if k not in records]
