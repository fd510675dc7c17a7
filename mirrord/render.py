"""What the ``mirrord`` command shows: each command's result as one JSON object
(``--json``) or as lines for a person, the sentences said above the progress bar, and
which progress display a run gets.

stdout carries results only; everything else goes to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from mirrord.adapters.terminal import BarProgress, LogProgress, TerminalLogger, progress_for
from mirrord.adapters.web import source_url
from mirrord.core.closure import Closure
from mirrord.core.messages import human_size
from mirrord.core.plan import Estimate
from mirrord.core.report import Report
from mirrord.core.status import Status
from mirrord.services.check import Coverage
from mirrord.services.enqueue import Enqueued
from mirrord.services.plan import Planned
from mirrord.services.prune import PruneResult
from mirrord.services.subset import MirrorSubset
from mirrord.services.verify import RebuildReport, VerifyReport

log = structlog.get_logger("mirrord.cli")

Rendered = tuple[dict[str, Any], str]  # the --json body, and the lines for a person


def emit(as_json: bool, rendered: Rendered) -> None:
    """A command's result on stdout: the JSON object, or the lines."""
    body, human = rendered
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(body) + b"\n")
    else:
        sys.stdout.write(human + "\n")
    sys.stdout.flush()


def progress(quiet: bool, unit: str = "bottle") -> BarProgress | LogProgress:
    """A bar at a terminal, log lines elsewhere; with -q (``quiet``) no bar, and the
    LogProgress's lines are info, so not shown either."""
    if quiet:
        return LogProgress()
    return progress_for(sys.stderr, unit)


def tell(text: str, event: str, **fields: Any) -> None:
    """A sentence for the person at the terminal (above the bar); for pipes, ECS and
    tests a log event like every other."""
    if sys.stderr.isatty():
        TerminalLogger(sys.stderr).msg(f"mirrord: {text}")
    else:
        log.warning(event, **fields)


def sync_result(report: Report, bucket: str) -> Rendered:
    failed = "".join(f"\n  FAILED {f.key}: {f.error}" for f in report.failed)
    stopped = ""
    if report.stopped:
        still = (
            f"{report.remaining} of {report.planned} bottles remain"
            if report.remaining
            else "every bottle is stored, the files for brew are not all published"
        )
        stopped = f"\nstopped early: {still}; `mirrord sync` again finishes the job"
    served = report.fallback.served if report.fallback is not None else ()
    via = f" ({len(served)} from fallback mirrors)" if served else ""
    return report.to_dict(), (
        f"{report.date}: {report.downloaded} downloaded{via}, {report.adopted} adopted, "
        f"{report.skipped} already mirrored, {len(report.failed)} failed of "
        f"{report.planned} planned; {report.bytes / 1e6:,.1f} MB in {report.duration_s:.1f}s"
        f" → s3://{bucket}/{report.date}/{failed}{stopped}"
    )


def _closure(
    found: Closure, plan_bottles: int, estimate: Estimate | None, partial: str | None
) -> Rendered:
    """``estimate``: the subset's bytes, from its image indexes, else the hash file's
    history; ``partial``: why the indexes were not all read, or None."""
    body: dict[str, Any] = {
        "roots": list(found.roots),
        "added": list(found.added),
        "renamed": [{"asked": a, "formula": f} for a, f in found.renamed],
        "missing": [{"name": n, "needed_by": by} for n, by in found.missing],
        "cycles": [list(c) for c in found.cycles],
        "per_target": {t: len(ns) for t, ns in found.by_target.items()},
        "bottles": plan_bottles,
        "estimated_bytes": estimate.bytes if estimate else None,
        "estimate_unknown": estimate.unknown if estimate else None,
        "estimate_partial": partial if estimate else None,
    }
    lines = [
        f"closure: {len(found.roots)} asked ({', '.join(found.roots)}), "
        f"{len(found.added)} dependencies added ({', '.join(found.added) or 'none'})",
        "  per target: " + ", ".join(f"{t} {len(ns)}" for t, ns in found.by_target.items()),
    ]
    if estimate is not None:
        unknown = f", {estimate.unknown} of unknown size" if estimate.unknown else ""
        bound = f" (a lower bound: {partial})" if partial else ""
        lines.append(
            f"  {plan_bottles} bottles to fetch, estimated {estimate.bytes / 1e6:,.1f} MB"
            f"{unknown}{bound}"
        )
    lines += [f"  renamed: {a} → {f}" for a, f in found.renamed]
    lines += [f"  MISSING {n} (needed by {by})" for n, by in found.missing]
    lines += [f"  CYCLE {' → '.join(c)}" for c in found.cycles]
    return body, "\n".join(lines)


def plan_result(
    planned: Planned, estimate: Estimate | None = None, partial: str | None = None
) -> Rendered:
    plan, targets = planned.plan, planned.targets
    body: dict[str, Any] = {
        "date": plan.date,
        "platforms": list(targets),
        "transfers": len(plan.transfers),
        "links": len(plan.links),
        "skipped": plan.skipped,
        "no_bottle": plan.no_bottle,
        "known_bytes": plan.known_bytes,
        "unknown_size": sum(1 for t in plan.transfers if not t.size_hint),
        "rejected": [{"name": r.name, "error": r.reason} for r in planned.catalog.rejected],
        "bottles": [
            {
                "key": t.key,
                "url": source_url(t.bottle.url),
                "sha256": t.bottle.sha256,
                "size_hint": t.size_hint or None,
            }
            for t in plan.transfers
        ],
    }
    lines = [f"  {t.key}" for t in plan.transfers[:20]]
    more = len(plan.transfers) - len(lines)
    closure = ""
    if planned.closure is not None:
        body["closure"], closure = _closure(planned.closure, len(plan.transfers), estimate, partial)
        closure += "\n"
    return body, closure + (
        f"{plan.date} for {', '.join(targets)}: {len(plan.transfers)} to fetch "
        f"({plan.known_bytes / 1e6:,.1f} MB known), {len(plan.links)} to link, "
        f"{plan.skipped} already mirrored, {plan.no_bottle} without bottle\n"
        + "\n".join(lines)
        + (f"\n  … and {more} more" if more > 0 else "")
    )


def verify_result(result: VerifyReport) -> Rendered:
    problems = [{"kind": p.kind, "key": p.key, "detail": p.detail} for p in result.problems]
    # Older rebuilds of bottles the file now names elsewhere: listed, never a failure.
    superseded = [
        {"key": o.key, "hash_key": o.hash_key, "current": o.current} for o in result.superseded
    ]
    body = {
        "entries": result.entries,
        "objects": result.objects,
        "checked_deep": result.checked_deep,
        "problems": problems,
        "superseded": superseded,
    }
    return body, (
        f"{result.entries} entries, {result.objects} objects, {len(problems)} problems, "
        f"{len(superseded)} superseded"
        + "".join(f"\n  {p['kind']:10} {p['key']}: {p['detail']}" for p in problems)
        + "".join(
            f"\n  {'superseded':10} {o['key']}: {o['hash_key']} is now {o['current']}"
            for o in superseded
        )
    )


def rebuild_result(result: RebuildReport) -> Rendered:
    body = {
        "objects": result.objects,
        "entries": result.entries,
        "unrecognised": list(result.unrecognised),
        "replaced_corrupt": result.replaced_corrupt,
    }
    return body, (
        f"{result.entries} entries from {result.objects} objects; "
        f"{len(result.unrecognised)} objects without mirrord metadata"
    )


def prune_result(result: PruneResult) -> Rendered:
    """What went (or, dry, would go): keys and bytes; what stayed, by reason."""
    body, plan, rules = result.to_dict(), result.plan, result.rules
    kept = ", ".join(f"{n} {why}" for why, n in sorted(plan.kept.items())) or "none"
    sizes = (
        f"{len(plan.objects)} bottles ({human_size(plan.bytes)}) and {len(plan.v2)} brew-6 keys "
        f"({human_size(plan.v2_bytes)} of blob copies)"
    )
    if result.dry_run:
        head = (
            f"dry run, nothing changed: would cut {len(plan.entries)} hash-file entries and "
            f"delete {sizes}: {human_size(plan.freed)}"
        )
    else:
        head = (
            f"pruned: cut {result.cut} hash-file entries, deleted {result.deleted} keys of "
            f"{len(plan.objects) + len(plan.v2)}: {human_size(result.freed)} freed"
        )
    lines = [
        head,
        f"kept: {kept} (the newest {rules.keep_versions} of each formula per tag; "
        f"only bottles stored on or before {rules.cutoff} may go)",
    ]
    lines += [f"  {key}  {human_size(plan.sizes.get(key, 0))}" for key in plan.objects]
    if result.stopped:
        lines.append("stopped (the bucket lock was lost): run prune again to finish")
    lines += [f"  problem: {p}" for p in result.problems]
    return body, "\n".join(lines)


def enqueue_result(result: Enqueued) -> Rendered:
    line = f"{result.job_id}: {result.bottles} bottles → {result.route}"
    if result.dry_run:
        size = human_size(result.estimate.bytes) if result.estimate else "0 B"
        line = f"dry run, nothing sent: {line} (estimate {size})"
    return result.to_dict(), line


def check_result(
    base: str, results: Sequence[Coverage], subset: MirrorSubset | None = None
) -> Rendered:
    lines = []
    if subset is not None:
        found = subset.found
        lines.append(
            f"subset (from {subset.source}): {len(found.roots)} roots "
            f"({', '.join(found.roots)}), {len(found.added)} dependencies added"
        )
        lines += [
            f"  not in the mirror's API files: {n} (needed by {by})" for n, by in found.missing
        ]
    for c in results:
        of = " of the subset" if c.outside_subset is not None else ""
        lines.append(
            f"{c.target}: {c.installable}/{c.with_bottle} formulae{of} installable "
            f"({c.percent:.1f} %), {c.no_bottle} without a bottle; API files "
            f"{c.api_files}/{c.api_expected}; portable Ruby {c.portable_ruby}/"
            f"{c.portable_ruby_expected}"
        )
        if c.outside_subset is not None:
            lines.append(f"  {c.outside_subset} formulae of the API files lie outside the subset")
        lines += [f"  MISS {m.what}: {m.reason} ({m.url})" for m in c.misses]
    complete = all(not c.misses for c in results)
    body: dict[str, Any] = {
        "base": base,
        "complete": complete,
        "targets": [c.to_dict() for c in results],
        "subset": None,
    }
    if subset is not None:
        found = subset.found
        body["subset"] = {
            "source": subset.source,
            "roots": list(found.roots),
            "added": list(found.added),
            "missing": [{"name": n, "needed_by": by} for n, by in found.missing],
            "per_target": {t: len(ns) for t, ns in found.by_target.items()},
        }
    return body, "\n".join(lines)


def _status_lines(body: dict[str, Any]) -> list[tuple[str, str]]:
    run, success, held, q, api = (
        body["last_run"],
        body["last_success"],
        body["held"],
        body["quarantine"],
        body["api"],
    )
    rows = []
    if run is not None:
        why = f": {run['error']}" if run.get("error") else ""
        rows.append(("last sync", f"{run['job_id']}: {run['outcome']}, ended {run['ended']}{why}"))
    else:
        rows.append(("last sync", "none recorded"))
    if success is not None:
        size = human_size(success["bytes"] or 0)
        rows.append(
            (
                "last success",
                f"{success['at']} ({success['job_id']}): {success['downloaded']} downloaded "
                f"of {success['planned']} planned, {size}",
            )
        )
    running = body["running"]
    rows.append(("running", f"{running['job_id']} ({running['owner']})" if running else "no"))
    unknown = f", {held['unknown_size']} of unknown size" if held["unknown_size"] else ""
    rows.append(
        (
            "held",
            f"{held['bottles']} bottles in {held['objects']} objects, "
            f"{human_size(held['bytes'])}{unknown} (the hash file's view)",
        )
    )
    shown = ", ".join(q["keys"][:5]) + (" …" if len(q["keys"]) > 5 else "")
    rows.append(("quarantine", f"{q['count']}" + (f": {shown}" if shown else "")))
    since = f", published {api['published_at']}" if api["published_at"] else ""
    changed = ", ".join(api["differ"][:3]) + (" …" if len(api["differ"]) > 3 else "")
    differ = f" ({changed} changed upstream)" if changed else ""
    rows.append(("API files", f"{api['state']}: {api['files']} files{since}{differ}"))
    subset = body["subset"]
    if subset is not None:
        roots = ", ".join(subset["roots"][:10]) + (" …" if len(subset["roots"]) > 10 else "")
        rows.append(
            ("subset", f"{len(subset['roots'])} roots ({roots}), {subset['formulae']} formulae")
        )
    return rows


def status_result(status: Status) -> Rendered:
    body = status.to_dict()
    verdict = "healthy" if status.healthy else "NEEDS ATTENTION"
    rows = _status_lines(body)
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"s3://{status.bucket}: {verdict}"]
    lines += [f"  {name:{width}}{text}" for name, text in rows]
    lines += [f"  PROBLEM {p}" for p in status.problems]
    lines += [f"  note    {n}" for n in status.notes]
    return body, "\n".join(lines)
