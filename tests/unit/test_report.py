"""Progress shown while a job runs, and the report's contract."""

from __future__ import annotations

import io

from conftest import REPORT_FIELDS
from structlog.testing import capture_logs

from mirrord.adapters.terminal import BarProgress, LogProgress
from mirrord.core.report import Failure, Report


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_progress_emits_on_interval_and_at_the_end() -> None:
    """Structured progress lines every `every` seconds and once at completion, with
    done/total/bytes/rate/ETA."""
    clock = Clock()
    with capture_logs() as logs:
        progress = LogProgress(every=10, clock=clock)
        progress.start(4)
        for step in range(4):
            clock.now += 4
            progress.add_bytes(2_000_000)
            progress.done(ok=step != 2)
    lines = [entry for entry in logs if entry["event"] == "progress"]
    assert [entry["done"] for entry in lines] == [3, 4]  # 12 s ≥ 10 s, then the last one
    last = lines[-1]
    assert (last["total"], last["failed"], last["bytes"]) == (4, 1, 8_000_000)
    assert last["mb_per_s"] == 0.5
    assert last["eta_s"] == 0.0


def test_bar_progress_shows_bottles_bytes_and_rate() -> None:
    """The terminal bar counts bottles and shows MB, MB/s and failures."""
    out = io.StringIO()
    bar = BarProgress(out)
    bar.start(2)
    bar.add_bytes(3_000_000)
    bar.done(ok=True)
    bar.done(ok=False)
    bar.close()
    text = out.getvalue()
    assert "2/2" in text
    assert "3.0 MB" in text
    assert "MB/s" in text
    assert "1 failed" in text


def test_report_contract_and_exit_code() -> None:
    """docs/design.md §10 fields; exit 1 exactly when something failed."""
    ok = Report("j", "2026-11-22", planned=2, downloaded=2, bytes=10, duration_s=1.23456)
    assert ok.exit_code == 0
    body = ok.to_dict()
    assert set(body) >= REPORT_FIELDS
    assert body["duration_s"] == 1.235
    bad = Report("j", "2026-11-22", planned=1, failed=(Failure("k", "sha256 mismatch"),))
    assert bad.exit_code == 1
    assert bad.to_dict()["failed"] == [{"key": "k", "error": "sha256 mismatch", "url": ""}]
