"""The job report (docs/design.md §10), and what a stage reports its progress to
(the bar and the log lines that show it: adapters/terminal.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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
    rejected: tuple[dict[str, str], ...] = field(default_factory=tuple)  # formulae refused
    checkpoints: int = 0
    stopped: bool = False  # ended early (SIGTERM, Lambda deadline); ``remaining`` not done
    remaining: int = 0
    estimated_bytes: int | None = None  # what the enqueuer expected to fetch
    # What the brew-facing publication did (brew.Published.to_dict()); None when off.
    # Its problems never change the exit status: that is about the bottles.
    published: dict[str, Any] | None = None
    # macOS-looking tags of the catalog that MIRRORD_MACOS_RELEASES does not name either:
    # a new macOS that ``auto`` cannot see and no target may name until it is added.
    unknown_tags: tuple[str, ...] = ()
    # Failed verification again after QUARANTINE_AFTER runs in a row: listed here, not in
    # ``failed``, so they neither fail the job nor hold back the API files.
    quarantined: tuple[Quarantined, ...] = ()
    released: tuple[str, ...] = ()  # quarantine records ended: the bottle verified

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
        return self.published is not None and self.published.get("finished") is False

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.complete else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["duration_s"] = round(self.duration_s, 3)
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
    }
    if report.estimated_bytes:
        error = (report.bytes - report.estimated_bytes) / report.estimated_bytes * 100
        values["EstimateErrorPercent"] = (round(error, 2), "Percent")
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
