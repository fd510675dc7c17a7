"""Slack messages, built from facts: pure, no I/O.

The builders (``start_message`` … ``nothing_to_do_message``) take facts and return a
:class:`Message` — Block Kit blocks plus the plain-text ``text`` that Slack shows in
notifications. Everything that comes from outside (errors, keys, names) is escaped for
mrkdwn, so an error text cannot ping ``<!channel>`` or forge a link, and every text
object stays inside Slack's limits however many bottles failed. Sending them is
adapters.slack's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mirrord.core.report import Failure, Quarantined, Report

LIST_MAX = 10  # failed bottles listed by name; the rest are counted

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_TEXT_MAX = 3000  # the fallback; Slack allows more, notifications show far less
_ERROR_MAX = 1500  # a crash's error text inside the failure message
_LINE_ERROR_MAX = 200  # one failed bottle's error
_KEY_MAX = 200

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


# --- formatting ----------------------------------------------------------------------


def human_size(n: int) -> str:
    """Bytes in decimal units, as people read them: ``1.2 GB``."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} PB"


def human_duration(seconds: float) -> str:
    """``4.2s``, ``45s``, ``3m 12s``, ``2h 5m``, ``1d 3h``."""
    s = max(0.0, seconds)
    if s < 9.95:
        return f"{s:.1f}s"
    total = round(s)
    if total < 60:
        return f"{total}s"
    minutes, sec = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {sec}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def estimate_line(estimated: int, actual: int) -> str:
    """``estimate 1.2 GB vs actual 1.1 GB (-8.3 %)``: how far off the plan's guess was."""
    line = f"estimate {human_size(estimated)} vs actual {human_size(actual)}"
    if estimated > 0:
        line += f" ({(actual - estimated) / estimated * 100:+.1f} %)"
    return line


def _esc(text: str, limit: int | None = None) -> str:
    """Escape for Slack (``&``, ``<``, ``>``), cut to ``limit`` characters after escaping
    without splitting an entity."""
    escaped = "".join(_ESCAPES.get(ch, ch) for ch in text)
    if limit is None or len(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = 0
    for ch in text:
        piece = _ESCAPES.get(ch, ch)
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + "…"


def _code(text: str, limit: int = _KEY_MAX) -> str:
    """Inline code: a backtick inside would end it early."""
    inner = _esc(text.replace("`", "'"), limit)
    return f"`{inner}`"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# --- Block Kit -----------------------------------------------------------------------


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(text, _HEADER_MAX), "emoji": True},
    }


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, _SECTION_MAX)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A section of up to 10 labelled fields (label plain, value already mrkdwn)."""
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", _FIELD_MAX)}
            for label, value in pairs[:10]
        ],
    }


def _context(*mrkdwn: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(t, _SECTION_MAX)} for t in mrkdwn[:10]],
    }


@dataclass(frozen=True, slots=True)
class Message:
    """One Slack message: ``text`` is the plain-text fallback (notifications, screen
    readers); ``blocks`` the Block Kit layout."""

    text: str
    blocks: tuple[dict[str, Any], ...]

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": list(self.blocks)}


def _s3_location(bucket: str, date: str) -> str:
    return f"s3://{bucket}/{date}/"


def start_message(
    *,
    job_id: str,
    date: str,
    bottles: int,
    estimated_bytes: int | None,
    route: str,
    bucket: str,
    partial: str | None = None,
) -> Message:
    """A job begins: what it will fetch, roughly how much, where it runs and writes.
    ``partial``: why the estimate is only a lower bound (the enqueuer's bounds were hit)."""
    size = human_size(estimated_bytes) if estimated_bytes is not None else "unknown"
    if partial is not None and estimated_bytes is not None:
        size = f"at least {size} (estimate partial: {partial})"
    where = _s3_location(bucket, date)
    text = (
        f"mirrord sync started: job {job_id} for {date}, {_count(bottles, 'bottle')} "
        f"({size if partial else f'about {size}'}) via {route} into {where}"
    )
    blocks = (
        _header(":arrow_down: mirrord sync started"),
        _fields(
            [
                ("Job", _code(job_id)),
                ("Date", _esc(date)),
                ("Bottles to fetch", f"{bottles:,}"),
                ("Estimated size", size),
                ("Route", _esc(route)),
                ("Destination", _code(where)),
            ]
        ),
    )
    return Message(_clip(_esc(text), _TEXT_MAX), blocks)


def _bar(fraction: float, width: int = 20) -> str:
    filled = min(width, max(0, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


def progress_message(
    *, job_id: str, done: int, total: int, bytes_done: int, elapsed_s: float, failed: int
) -> Message:
    """Part-way through: bottles done of total, bytes, rate, ETA, failures so far."""
    fraction = done / total if total else 1.0
    pct = f"{fraction * 100:.0f} %"
    rate = bytes_done / elapsed_s if elapsed_s > 0 else 0.0
    eta = ""
    if 0 < done < total and elapsed_s > 0:
        eta = f"ETA {human_duration(elapsed_s / done * (total - done))}"
    text = (
        f"mirrord job {job_id}: {done:,}/{total:,} bottles ({pct}), "
        f"{human_size(bytes_done)} in {human_duration(elapsed_s)}, {failed:,} failed"
    )
    facts = [
        human_size(bytes_done),
        f"{human_size(round(rate))}/s",
        f"elapsed {human_duration(elapsed_s)}",
        *([eta] if eta else []),
        f"{failed:,} failed" if failed else "no failures",
    ]
    blocks = (
        _section(
            f"*Progress* of {_code(job_id)}\n`{_bar(fraction)}` {pct} · "
            f"{done:,} / {total:,} bottles"
        ),
        _context(" · ".join(facts)),
    )
    return Message(_clip(_esc(text), _TEXT_MAX), blocks)


def _quarantine_line(q: Quarantined) -> str:
    served = f"served {q.actual_sha256[:12]}…" if q.actual_sha256 else "cut off past its size cap"
    return (
        f"• {_code(q.key)} — {q.count:,} runs since {_esc(q.first_seen[:10])}: "
        f"expected {q.expected_sha256[:12]}…, {served}"
    )


def _attention(report: Report) -> tuple[list[dict[str, Any]], list[str]]:
    """What an operator should know beyond the counts, as blocks and as plain-text parts:
    quarantined bottles (once each), releases from quarantine, and catalog tags of a
    macOS mirrord does not know."""
    blocks: list[dict[str, Any]] = []
    text: list[str] = []
    if report.quarantined:
        title = (
            f"*Quarantined ({len(report.quarantined):,})*: failed verification in runs in a "
            "row; retried each run, they no longer fail the job or hold back the API files"
        )
        shown = report.quarantined[:LIST_MAX]
        lines = [title, *(_quarantine_line(q) for q in shown)]
        if len(report.quarantined) > len(shown):
            lines.append(f"… and {len(report.quarantined) - len(shown):,} more")
        blocks.append(_section("\n".join(lines)))
        keys = ", ".join(_clip(q.key, _KEY_MAX) for q in shown)
        more = len(report.quarantined) - len(shown)
        text.append(f"quarantined: {keys}" + (f" … and {more:,} more" if more else ""))
    if report.released:
        shown_keys = report.released[:LIST_MAX]
        listed = ", ".join(_code(k) for k in shown_keys)
        more = len(report.released) - len(shown_keys)
        blocks.append(
            _context(
                f"Released from quarantine: {listed}" + (f" … and {more:,} more" if more else "")
            )
        )
        text.append(f"released from quarantine: {', '.join(shown_keys)}")
    if report.unknown_tags:
        block, line = _unknown_tags(report.unknown_tags)
        blocks.append(block)
        text.append(line)
    return blocks, text


def _unknown_tags(unknown: Sequence[str]) -> tuple[dict[str, Any], str]:
    """The catalog's tags of a macOS mirrord does not know, and the setting that fixes it."""
    tags = ", ".join(_code(t, 40) for t in unknown[:20])
    if len(unknown) > 20:
        tags += f" … and {len(unknown) - 20:,} more"
    codename = unknown[0].removeprefix("arm64_")
    block = _section(
        f"*Unknown macOS tags in the catalog*: {tags}. `auto` ignores them and no target "
        "may name them until the release is added to `MIRRORD_MACOS_RELEASES` "
        f"(e.g. `{_esc(f'{codename[:40]}=<release number>')}`)."
    )
    return block, f"unknown macOS tags: {', '.join(unknown[:20])}"


def success_message(report: Report, *, bucket: str, estimated_bytes: int | None = None) -> Message:
    """A job finished with every planned bottle in the bucket."""
    new = report.downloaded + report.adopted
    where = _s3_location(bucket, report.date)
    size = human_size(report.bytes)
    took = human_duration(report.duration_s)
    text = (
        f"mirrord sync finished: job {report.job_id} for {report.date}: "
        f"{_count(new, 'new bottle')} ({size}) in {took} into {where}"
    )
    if estimated_bytes is not None:
        text += f"; {estimate_line(estimated_bytes, report.bytes)}"
    pairs = [
        ("New bottles", f"{new:,} ({report.downloaded:,} downloaded, {report.adopted:,} adopted)"),
        ("Already mirrored", f"{report.skipped:,}"),
        ("Size", size),
        ("Duration", took),
        ("Location", _code(where)),
        ("Date", _esc(report.date)),
    ]
    if report.platforms:
        pairs.append(("Platforms", _esc(", ".join(report.platforms), 1000)))
    if report.failed:
        pairs.append(("Failed", f"{len(report.failed):,}"))
    if report.quarantined:
        pairs.append(("Quarantined", f"{len(report.quarantined):,}"))
    blocks: list[dict[str, Any]] = [
        _header(":white_check_mark: mirrord sync finished"),
        _fields(pairs),
    ]
    attention, parts = _attention(report)
    blocks += attention
    if parts:
        text += "; " + "; ".join(parts)
    notes = [f"job {_code(report.job_id)}"]
    if estimated_bytes is not None:
        notes.append(estimate_line(estimated_bytes, report.bytes))
    if report.no_bottle:
        notes.append(f"{report.no_bottle:,} without a bottle for a target")
    if report.rejected:
        notes.append(f"{len(report.rejected):,} formulae rejected")
    blocks.append(_context(" · ".join(notes)))
    return Message(_clip(_esc(text), _TEXT_MAX), tuple(blocks))


def _failure_list(failed: Sequence[Failure], budget: int) -> tuple[list[str], int]:
    """At most ``LIST_MAX`` ``• `key` — error`` lines fitting in ``budget`` characters
    (room kept for the "… and N more" line); returns the lines and how many are left."""
    reserve = len(f"\n… and {len(failed):,} more")
    lines: list[str] = []
    used = 0
    for f in failed[:LIST_MAX]:
        line = f"• {_code(f.key)} — {_esc(f.error, _LINE_ERROR_MAX)}"
        if used + len(line) + 1 + reserve > budget:
            break
        lines.append(line)
        used += len(line) + 1
    return lines, len(failed) - len(lines)


def failure_message(
    *, job_id: str, date: str, error: str | None, report: Report | None, logs_hint: str
) -> Message:
    """A job crashed (``error``) and/or finished with bottles that failed (``report``)."""
    failed: tuple[Failure, ...] = report.failed if report is not None else ()
    text_parts = [f"mirrord sync failed: job {job_id} for {date}"]
    blocks: list[dict[str, Any]] = [_header(":x: mirrord sync failed")]
    pairs = [("Job", _code(job_id)), ("Date", _esc(date))]
    if report is not None:
        new = report.downloaded + report.adopted
        pairs += [
            ("Failed", f"{len(failed):,} of {report.planned:,} planned"),
            ("New bottles", f"{new:,} ({human_size(report.bytes)})"),
            ("Duration", human_duration(report.duration_s)),
        ]
        text_parts.append(f"{len(failed):,} of {report.planned:,} bottles failed")
    blocks.append(_fields(pairs))
    if error is not None:
        fenced = _esc(error.replace("```", "'''"), _ERROR_MAX)
        blocks.append(_section(f"*Error*\n```{fenced}```"))
        text_parts.append(f"error: {_clip(error, 300)}")
    if failed:
        title = f"*Failed bottles ({len(failed):,})*"
        lines, more = _failure_list(failed, _SECTION_MAX - len(title) - 1)
        body = "\n".join([title, *lines])
        if more:
            body += f"\n… and {more:,} more"
        blocks.append(_section(body))
        keys = [f.key for f in failed[:LIST_MAX]]
        listed = ", ".join(_clip(k, _KEY_MAX) for k in keys)
        if len(failed) > len(keys):
            listed += f" … and {len(failed) - len(keys):,} more"
        text_parts.append(f"failed: {listed}")
    if report is not None:
        attention, parts = _attention(report)
        blocks += attention
        text_parts += parts
    blocks.append(_context(f"Logs: {_esc(logs_hint, 1000)}"))
    text_parts.append(f"logs: {logs_hint}")
    return Message(_esc("; ".join(text_parts), _TEXT_MAX), tuple(blocks))


def nothing_to_do_message(
    *, date: str, platforms: Sequence[str], skipped: int, unknown_tags: Sequence[str] = ()
) -> Message:
    """The plan is empty: every bottle the targets need is already in the bucket. A new
    macOS often comes without a new bottle for the known ones: its tags are named here
    too, since no sync runs to report them."""
    targets = ", ".join(platforms) if platforms else "the configured platforms"
    text = (
        f"mirrord: nothing to do for {date}: all {_count(skipped, 'bottle')} "
        f"for {targets} already mirrored"
    )
    blocks = [
        _header(":zzz: mirrord: nothing to do"),
        _section(
            f"All {_count(skipped, 'bottle')} for {_esc(targets, 2000)} are already in the "
            f"mirror; nothing was downloaded for {_esc(date)}."
        ),
    ]
    if unknown_tags:
        block, line = _unknown_tags(unknown_tags)
        blocks.append(block)
        text += f"; {line}"
    return Message(_esc(text, _TEXT_MAX), tuple(blocks))


def with_environment(message: Message, environment: str | None) -> Message:
    """``message`` naming the deployment it comes from: ``[prod]`` before the text, in
    the header (or, without one, a context line first). None (a local run): as it is."""
    if not environment:
        return message
    name = _esc(environment, 40)
    blocks = list(message.blocks)
    if blocks and blocks[0].get("type") == "header":
        blocks[0] = _header(f"{blocks[0]['text']['text']} [{environment[:40]}]")
    else:
        blocks.insert(0, _context(f"Environment: *{name}*"))
    return Message(_clip(f"[{name}] {message.text}", _TEXT_MAX), tuple(blocks))


# --- deploys (the deploy workflow's `mirrord notify deploy`) -------------------------

DEPLOY_STATUSES = {"success": ":rocket:", "failure": ":x:", "cancelled": ":warning:"}


def deploy_message(
    *, env: str, status: str, commit: str, image: str | None = None, url: str | None = None
) -> Message:
    """One deploy's outcome: environment, commit, the image digest it ran, and the
    workflow run to look at. ``status`` is the job's (success, failure, cancelled)."""
    icon = DEPLOY_STATUSES.get(status, ":grey_question:")
    short = commit[:12]
    text = f"mirrord deploy to {env}: {status} (commit {short})"
    pairs = [("Environment", _esc(env, 200)), ("Status", _esc(status, 100))]
    pairs.append(("Commit", _code(commit, 64)))
    if image:
        pairs.append(("Image", _code(image, 400)))
        text += f", image {_clip(image, 400)}"
    blocks = [_header(f"{icon} mirrord deploy to {_clip(env, 100)}: {status}"), _fields(pairs)]
    if url:
        blocks.append(_context(f"Run: {_esc(url, 1000)}"))
        text += f"; run: {url}"
    return Message(_esc(text, _TEXT_MAX), tuple(blocks))
