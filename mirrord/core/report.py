"""The job report (docs/design.md §10), and what a stage reports its progress to
(the bar and the log lines that show it: adapters/terminal.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mirrord.core.hashfile import Suspect

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Failure:
    key: str  # the hash-file key, <name>-<pkg_version>-<tag>
    error: str
    url: str = ""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A bottle that failed verification again this run, in quarantine (the hash file's
    record, hashfile.Suspect, with this run's error): a known miss, not a failure."""

    key: str  # the hash-file key, <name>-<pkg_version>-<tag>
    expected_sha256: str
    actual_sha256: str | None  # None: cut off past its size cap
    first_seen: str
    last_seen: str
    count: int  # consecutive runs it failed in
    error: str = ""
    url: str = ""

    @classmethod
    def of(cls, key: str, suspect: Suspect, error: str = "", url: str = "") -> Quarantined:
        return cls(
            key,
            suspect.expected_sha256,
            suspect.actual_sha256,
            suspect.first_seen,
            suspect.last_seen,
            suspect.count,
            error,
            url,
        )


@dataclass(frozen=True, slots=True)
class FallbackServed:
    """A bottle a fallback mirror served (MIRRORD_FALLBACK_URLS) after the registry
    failed it: ``source`` the base URL, ``upstream_error`` why the registry did not."""

    key: str  # the hash-file key
    source: str
    url: str
    upstream_error: str


@dataclass(frozen=True, slots=True)
class FallbackMiss:
    """A fallback mirror that could not serve a bottle: unreachable, a 404, or bytes that
    failed verification (nothing of them was stored)."""

    key: str
    source: str
    error: str


@dataclass(frozen=True, slots=True)
class Fallbacks:
    """What the fallback mirrors did in one sync: per stored bottle, per source, per miss."""

    sources: tuple[str, ...]
    served: tuple[FallbackServed, ...] = ()
    misses: tuple[FallbackMiss, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        by_source = {s: sum(1 for b in self.served if b.source == s) for s in self.sources}
        failed = {s: sum(1 for m in self.misses if m.source == s) for s in self.sources}
        return {
            "sources": list(self.sources),
            "served_by_source": by_source,
            "misses_by_source": failed,
            "served": [asdict(b) for b in self.served],
            "misses": [asdict(m) for m in self.misses],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Fallbacks:
        """What ``to_dict`` wrote (a shard record's); KeyError or TypeError if not."""
        return cls(
            tuple(str(s) for s in data["sources"]),
            tuple(
                FallbackServed(
                    str(b["key"]), str(b["source"]), str(b["url"]), str(b["upstream_error"])
                )
                for b in data["served"]
            ),
            tuple(
                FallbackMiss(str(m["key"]), str(m["source"]), str(m["error"]))
                for m in data["misses"]
            ),
        )

    @classmethod
    def merged(cls, parts: Iterable[Fallbacks | None]) -> Fallbacks | None:
        """The shards' together (the fan-in's report); None when none had fallbacks."""
        found = [p for p in parts if p is not None]
        if not found:
            return None
        sources = tuple(dict.fromkeys(s for p in found for s in p.sources))
        served = tuple(b for p in found for b in p.served)
        return cls(sources, served, tuple(m for p in found for m in p.misses))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A formula of the catalog refused as a whole (its entry breaks a rule)."""

    name: str
    error: str


@dataclass(frozen=True, slots=True)
class Subset:
    """A subset job (--formula, --brewfile): its roots, resolved, and how many formulae
    their closure holds, in all and per target (core/subset.py)."""

    roots: tuple[str, ...]
    formulae: int
    per_target: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "roots": list(self.roots),
            "formulae": self.formulae,
            "per_target": dict(self.per_target),
        }


@dataclass
class Published:
    """What one brew-6 publication did (services/publish.py fills it in as it goes).
    ``problems`` never fail the bottle sync itself, while ``ruby_problems`` do (the caller
    adds them to the job's failures). ``finished`` is False when it was cut short (a stop,
    a failure): the rest is left for the next run, and the job is not done. Every url is
    as a report may show it (``source_url``: no credentials, no query)."""

    indexes: int = 0  # image indexes written
    blobs: int = 0  # blob keys copied
    current: int = 0  # versions already complete
    fetched: int = 0  # bottles only the API files named, fetched by digest (skew)
    portable_ruby: int = 0  # portable Ruby blobs stored
    ruby_versions: list[str] = field(default_factory=list)  # what "latest" meant, or the list
    api: str = "not fetched"  # published | kept: <why> | not fetched
    problems: list[Failure] = field(default_factory=list)  # they keep the API files back
    # portable Ruby that could not be stored: a failure of the job, never a reason to keep
    # the API files (brew needs both; one missing is no cause to freeze the other).
    ruby_problems: list[Failure] = field(default_factory=list)
    finished: bool = True

    @property
    def every_problem(self) -> list[Failure]:
        return [*self.problems, *self.ruby_problems]

    def to_dict(self) -> dict[str, Any]:
        """As the report (status.json) writes it."""
        return {
            "finished": self.finished,
            "indexes": self.indexes,
            "blobs": self.blobs,
            "current": self.current,
            "fetched": self.fetched,
            "portable_ruby": self.portable_ruby,
            "portable_ruby_versions": list(self.ruby_versions),
            "api": self.api,
            "problems": [asdict(p) for p in self.every_problem],
        }


@dataclass(frozen=True, slots=True)
class Report:
    job_id: str
    date: str
    planned: int
    downloaded: int = 0
    adopted: int = 0
    skipped: int = 0
    failed: tuple[Failure, ...] = ()
    bytes: int = 0
    duration_s: float = 0.0
    platforms: tuple[str, ...] = ()
    no_bottle: int = 0
    rejected: tuple[Rejected, ...] = ()  # formulae refused
    checkpoints: int = 0
    stopped: bool = False  # ended early (SIGTERM, Lambda deadline); ``remaining`` not done
    remaining: int = 0
    estimated_bytes: int | None = None  # what the enqueuer expected to fetch
    # What the brew-facing publication did; None when off. Its problems never change the
    # exit status: that is about the bottles.
    published: Published | None = None
    # macOS-looking tags of the catalog that MIRRORD_MACOS_RELEASES does not name either:
    # a new macOS that ``auto`` cannot see and no target may name until it is added.
    unknown_tags: tuple[str, ...] = ()
    # Failed verification again after QUARANTINE_AFTER runs in a row: listed here, not in
    # ``failed``, so they neither fail the job nor hold back the API files.
    quarantined: tuple[Quarantined, ...] = ()
    released: tuple[str, ...] = ()  # quarantine records ended: the bottle verified
    fallback: Fallbacks | None = None  # None: no MIRRORD_FALLBACK_URLS
    subset: Subset | None = None  # None: every formula

    @property
    def complete(self) -> bool:
        """Every planned bottle is in the bucket, or quarantined: a bottle broken upstream
        (brew fails on it as much) must not keep a mirror from ever being complete."""
        return not self.failed and not self.remaining

    @property
    def unfinished(self) -> bool:
        """Work is left for another run: bottles, or a publication cut short (a stop, a
        failure). The sync Lambda hands such a job on, the daemon hands it back."""
        if self.remaining:
            return True
        return self.published is not None and not self.published.finished

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.complete else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["duration_s"] = round(self.duration_s, 3)
        body["published"] = None if self.published is None else self.published.to_dict()
        body["fallback"] = None if self.fallback is None else self.fallback.to_dict()
        body["subset"] = None if self.subset is None else self.subset.to_dict()
        for name in ("failed", "platforms", "rejected", "unknown_tags", "quarantined", "released"):
            body[name] = list(body[name])
        return body


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def add_bytes(self, n: int) -> None: ...
    def done(self, ok: bool) -> None: ...
    def close(self) -> None: ...


def emf(report: Report, *, route: str, now_ms: int, namespace: str = "mirrord") -> dict[str, Any]:
    """One CloudWatch Embedded Metric Format record for a finished job: logged as a JSON
    line, CloudWatch Logs turns it into metrics (no PutMetricData call, no extra IAM)."""
    values: dict[str, tuple[float, str]] = {
        "BottlesDownloaded": (report.downloaded, "Count"),
        "BottlesAdopted": (report.adopted, "Count"),
        "BottlesFailed": (len(report.failed), "Count"),
        "BottlesQuarantined": (len(report.quarantined), "Count"),
        "BottlesRemaining": (report.remaining, "Count"),
        "BytesDownloaded": (report.bytes, "Bytes"),
        "DurationSeconds": (round(report.duration_s, 3), "Seconds"),
        # The stall signal (the stalled-runs alarm): the plan found bottles the mirror
        # lacks (the catalog changed since the last complete run) and this run stored
        # none of them, whether they failed, or the run was stopped or handed off first.
        "CatalogChanged": (int(report.planned > 0), "Count"),
        "BottlesStored": (report.downloaded + report.adopted, "Count"),
        "StalledRun": (
            int(report.planned > 0 and report.downloaded + report.adopted == 0),
            "Count",
        ),
    }
    if report.estimated_bytes:
        error = (report.bytes - report.estimated_bytes) / report.estimated_bytes * 100
        values["EstimateErrorPercent"] = (round(error, 2), "Percent")
    return _record(values, route=route, now_ms=now_ms, namespace=namespace)


def running_emf(
    seconds: float, *, route: str, now_ms: int, namespace: str = "mirrord"
) -> dict[str, Any]:
    """The EMF record a running job logs every heartbeat: ``JobRunningSeconds`` since it
    started (the job-too-long alarm), so a job that never ends is seen while it runs."""
    values = {"JobRunningSeconds": (round(seconds, 1), "Seconds")}
    return _record(values, route=route, now_ms=now_ms, namespace=namespace)


def _record(
    values: dict[str, tuple[float, str]], *, route: str, now_ms: int, namespace: str
) -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["Route"]],
                    "Metrics": [{"Name": k, "Unit": unit} for k, (_, unit) in values.items()],
                }
            ],
        },
        "Route": route,
        **{k: v for k, (v, _) in values.items()},
    }
