"""The job report (docs/design.md §10) and how progress is shown while a job runs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO

import structlog

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


class LogProgress:
    """Structured progress lines for daemons and pipes: one every ``every`` seconds.
    ``event`` names them: ``progress`` for bottles, ``publish_progress`` for the brew-6
    publication's formula versions."""

    def __init__(
        self,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        event: str = "progress",
    ) -> None:
        self._log = structlog.get_logger("mirrord.progress")
        self._event = event
        self._every = every
        self._clock = clock
        self._total = self._done = self._failed = self._bytes = 0
        self._started = self._last = clock()

    @property
    def left(self) -> int:
        """Bottles started or still queued (what a stop leaves to finish or for later)."""
        return self._total - self._done

    def start(self, total: int) -> None:
        self._total = total
        self._started = self._last = self._clock()

    def add_bytes(self, n: int) -> None:
        self._bytes += n

    def done(self, ok: bool) -> None:
        self._done += 1
        self._failed += not ok
        now = self._clock()
        if now - self._last >= self._every or self._done == self._total:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        left = self._total - self._done
        self._log.info(
            self._event,
            done=self._done,
            total=self._total,
            failed=self._failed,
            bytes=self._bytes,
            mb_per_s=round(self._bytes / elapsed / 1e6, 2),
            eta_s=round(left / rate, 1) if rate else None,
        )

    def close(self) -> None:
        pass


class BarProgress:
    """A terminal progress bar: bottles, bytes, rate, ETA. Drawn from ``start`` on, so
    the lines logged while the catalog loads come first, not under an empty bar."""

    def __init__(self, stream: TextIO = sys.stderr, unit: str = "bottle") -> None:
        self._stream = stream
        self._unit = unit
        self._bar: Any = None
        self._bytes = 0
        self._failed = 0
        self._total = self._done = 0
        self._started = time.monotonic()

    @property
    def left(self) -> int:
        """Bottles started or still queued (what a stop leaves to finish or for later)."""
        return self._total - self._done

    def start(self, total: int) -> None:
        from tqdm import tqdm  # only a terminal needs it

        if self._bar is None:
            self._bar = tqdm(total=total, unit=self._unit, file=self._stream, dynamic_ncols=True)
        else:
            self._bar.reset(total=total)
        self._total, self._done = total, 0
        self._started = time.monotonic()

    def add_bytes(self, n: int) -> None:
        self._bytes += n

    def done(self, ok: bool) -> None:
        self._done += 1
        self._failed += not ok
        if self._bar is None:
            return
        rate = self._bytes / max(time.monotonic() - self._started, 1e-9) / 1e6
        moved = f"{self._bytes / 1e6:,.1f} MB, {rate:,.1f} MB/s, " if self._bytes else ""
        self._bar.set_postfix_str(f"{moved}{self._failed} failed", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class TerminalLogger:
    """structlog's logger for a terminal: each rendered line goes through ``tqdm.write``,
    which takes the bars' lock, clears the bar, writes the line and draws the bar again
    below it, so log lines never land in the middle of the bar."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=self._stream)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def progress_for(stream: TextIO, unit: str = "bottle") -> BarProgress | LogProgress:
    """A bar in a terminal, log lines elsewhere; ``unit`` "version" for the publication."""
    if stream.isatty():
        return BarProgress(stream, unit)
    return LogProgress(event="progress" if unit == "bottle" else "publish_progress")


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
