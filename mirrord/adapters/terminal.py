"""How a job's progress is shown: a bar in a terminal, structured log lines elsewhere,
and the structlog logger that keeps log lines from landing inside a bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog


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
    """A bar in a terminal, log lines elsewhere; ``unit`` "version" for the publication,
    "key" for a prune's deletes."""
    if stream.isatty():
        return BarProgress(stream, unit)
    events = {"bottle": "progress", "key": "prune_progress"}
    return LogProgress(event=events.get(unit, "publish_progress"))
