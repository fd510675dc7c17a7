"""What ``mirrord prune`` frees, for the cost figures (docs/benchmarks.md, "Pruning").

    python -m bench.prune [--weeks 52] [--every 12] [--json]

The sample catalog (dev/mirrord_dev/emulator/sample_catalog.json: 12 real formulae, the
emulator's bottle sizes) is given a version history: formula i (in the file's order) gets
a new version, with new bottles for every tag, every max(1, round(EVERY·(i+1)/12)) weeks
(``--every``: the slowest formula's cadence; 12 gives 1, 2, … 12 weeks), and a weekly sync
stores what the ``auto`` targets need. After ``--weeks`` weeks, the history held is
judged by prune's own rules (core/prune.py, the code ``mirrord prune`` runs) with the
last catalog as both the catalog and the published API files. Bytes count the dated object
and its brew-6 blob copy (each bottle is stored twice). Pure: no bucket, no network.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import orjson
from mirrord_dev.emulator import sample_catalog

from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.messages import human_size
from mirrord.core.models import BottleFile, Formula, HashEntry
from mirrord.core.oci import blob_key, image_name
from mirrord.core.prune import Rules, held_bottles, joined, named_by, plan_prune, split_stem
from mirrord.core.releases import auto_targets

RULES = ((2, 30), (1, 0), (1, 30), (3, 90))
GB_MONTH = 0.023  # S3 Standard, us-east-1, first 50 TB, USD per GB-month


def at_version(formula: Formula, n: int, size_of: dict[str, int]) -> tuple[Formula, dict[str, int]]:
    """``formula`` at its n-th version since the sample's: new bytes for every tag."""
    if n == 0:
        return formula, size_of
    files, sizes = [], {}
    for f in formula.files:
        sha = hashlib.sha256(f"{formula.name} {n} {f.tag}".encode()).hexdigest()
        files.append(BottleFile(f.tag, f.url, sha, f.cellar))
        sizes[sha] = size_of.get(f.sha256, 200_000)
    return replace(formula, version=f"{formula.version}.{n}", files=tuple(files)), sizes


def history(
    weeks: int, today: date, every: int = 12
) -> tuple[dict[str, HashEntry], list[Formula], dict[str, int]]:
    """The hash file after ``weeks`` weekly syncs, the last catalog, and sha256 → bytes."""
    sample = sample_catalog()
    served = orjson.dumps(sample.formulae).replace(b"{registry}", b"https://ghcr.io")
    base = list(parse_catalog(served).formulae)
    sizes = {sha: blob.size for sha, blob in sample.blobs.items()}
    targets = auto_targets(base)
    entries: dict[str, HashEntry] = {}
    current = base
    for week in range(weeks + 1):
        day = (today - timedelta(weeks=weeks - week)).isoformat()
        current = []
        for i, formula in enumerate(base):
            cadence = max(1, round(every * (i + 1) / len(base)))
            moved, new_sizes = at_version(formula, week // cadence, sizes)
            sizes.update(new_sizes)
            current.append(moved)
        stored = {e.sha256 for e in entries.values()}
        for bottle in select_bottles(current, targets).bottles:
            if bottle.hash_key in entries or bottle.sha256 in stored:
                continue
            size = sizes[bottle.sha256]
            entries[bottle.hash_key] = HashEntry(bottle.sha256, day, size, bottle.s3_key(day))
    return entries, current, sizes


def figures(weeks: int, today: date, every: int = 12) -> dict[str, Any]:
    entries, catalog, _ = history(weeks, today, every)
    listing = {e.s3_key: e.file_size or 0 for e in entries.values()}
    names = frozenset(f.name for f in catalog)
    blobs = {}
    for key, e in entries.items():
        split = split_stem(key.rpartition("-")[0], names)
        image = image_name(split[0]) if split is not None else None
        if image is not None:
            blobs[blob_key(image, e.sha256)] = e.file_size or 0
    held = sum(listing.values()) + sum(blobs.values())
    current = named_by(catalog)
    keep_now = sum(e.file_size or 0 for e in entries.values() if e.sha256 in current.sha256s) * 2
    rows = []
    for n, days in RULES:
        plan = plan_prune(
            held_bottles(entries, listing, {}),
            joined(current, current),
            Rules(n, days, today.isoformat()),
            blobs,
        )
        rows.append(
            {
                "keep_versions": n,
                "keep_days": days,
                "bottles_deleted": len(plan.objects),
                "freed_bytes": plan.freed,
                "held_after_bytes": held - plan.freed,
                "freed_share": round(plan.freed / held, 3) if held else 0.0,
            }
        )
    return {
        "weeks": weeks,
        "every": every,
        "formulae": len(catalog),
        "bottles_held": len(entries),
        "held_bytes": held,
        "current_bytes": keep_now,
        "rules": rows,
    }


def text(found: dict[str, Any]) -> str:
    held = found["held_bytes"]
    lines = [
        f"sample catalog, {found['formulae']} formulae, {found['weeks']} weekly syncs, a new "
        f"version every 1 to {found['every']} weeks: "
        f"{found['bottles_held']} bottles, {human_size(held)} held (object + blob copy), "
        f"of which the current catalog's: {human_size(found['current_bytes'])}",
        "keep_versions keep_days  deleted  freed        held after   freed share  USD/month saved"
        " per 100 GB held",
    ]
    for r in found["rules"]:
        saved = r["freed_share"] * 100 * GB_MONTH
        lines.append(
            f"{r['keep_versions']:>13} {r['keep_days']:>9} {r['bottles_deleted']:>8}  "
            f"{human_size(r['freed_bytes']):>11}  {human_size(r['held_after_bytes']):>11}  "
            f"{r['freed_share']:>11.1%}  {saved:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__.split("\n")[0])
    p.add_argument("--weeks", type=int, default=52)
    p.add_argument("--every", type=int, default=12, help="the slowest formula's weeks per version")
    p.add_argument("--json", action="store_true")
    p.add_argument("--today", default=date.today().isoformat(), help="YYYY-MM-DD")
    args = p.parse_args(argv)
    found = figures(args.weeks, date.fromisoformat(args.today), args.every)
    if args.json:
        print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    else:
        print(text(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
