"""core/prune.py on pure data: which bottles a prune removes, and which it keeps why."""

from __future__ import annotations

import hashlib
import subprocess  # nosec B404
import sys
from pathlib import Path

import orjson
import pytest

from mirrord.core.models import BottleFile, Formula, HashEntry
from mirrord.core.prune import (
    Held,
    Named,
    Rules,
    held_bottles,
    joined,
    named_by,
    parse_bottle_key,
    plan_prune,
    split_stem,
)

TODAY = "2026-12-01"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def entry(name: str, version: str, tag: str, day: str, rebuild: int = 0) -> tuple[str, HashEntry]:
    suffix = f".{rebuild}" if rebuild else ""
    key = f"{day}/{name}-{version}.{tag}.bottle{suffix}.tar.gz"
    return f"{name}-{version}-{tag}", HashEntry(sha(key), day, 1000, key)


def formula(name: str, version: str, *tags: str, day: str) -> Formula:
    files = tuple(BottleFile(t, "u", entry(name, version, t, day)[1].sha256) for t in tags)
    return Formula(name, version, files=files)


# jq moves through three versions, a month apart; the catalog names the newest.
HISTORY = dict(
    [
        entry("jq", "1.6", "arm64_tahoe", "2026-08-01"),
        entry("jq", "1.6", "sonoma", "2026-08-01"),
        entry("jq", "1.7", "arm64_tahoe", "2026-09-01"),
        entry("jq", "1.7", "sonoma", "2026-09-01"),
        entry("jq", "1.8", "arm64_tahoe", "2026-10-01"),
        entry("jq", "1.8", "sonoma", "2026-10-01"),
    ]
)
CATALOG = named_by([formula("jq", "1.8", "arm64_tahoe", "sonoma", day="2026-10-01")])


def held(entries: dict[str, HashEntry]) -> list[Held]:
    return held_bottles(entries, {e.s3_key: e.file_size or 0 for e in entries.values()}, {})


def test_three_versions_keep_versions_one_keeps_only_the_current() -> None:
    plan = plan_prune(held(HISTORY), CATALOG, Rules(1, 30, TODAY))
    assert sorted(plan.entries) == [
        "jq-1.6-arm64_tahoe",
        "jq-1.6-sonoma",
        "jq-1.7-arm64_tahoe",
        "jq-1.7-sonoma",
    ]
    assert plan.kept == {"named": 2}
    assert plan.bytes == 4000
    # index then blob of each gone bottle; one index per version
    assert "v2/homebrew/core/jq/manifests/1.6" in plan.v2
    assert "v2/homebrew/core/jq/manifests/1.7" in plan.v2
    assert "v2/homebrew/core/jq/manifests/1.8" not in plan.v2
    assert f"v2/homebrew/core/jq/blobs/sha256:{HISTORY['jq-1.6-sonoma'].sha256}" in plan.v2
    assert len(plan.v2) == 2 + 4


def test_keep_versions_two_keeps_the_one_before_too() -> None:
    plan = plan_prune(held(HISTORY), CATALOG, Rules(2, 30, TODAY))
    assert sorted(plan.entries) == ["jq-1.6-arm64_tahoe", "jq-1.6-sonoma"]
    assert plan.kept == {"named": 2, "latest": 2}


def test_keep_days_keeps_what_is_younger() -> None:
    # 1.7 is 91 days old on TODAY, 1.6 122: keep 100 days keeps 1.7 whatever N says.
    plan = plan_prune(held(HISTORY), CATALOG, Rules(1, 100, TODAY))
    assert sorted(plan.entries) == ["jq-1.6-arm64_tahoe", "jq-1.6-sonoma"]
    assert plan.kept == {"named": 2, "recent": 2}
    # the boundary: an object exactly keep_days old goes
    assert Rules(1, 91, TODAY).cutoff == "2026-09-01"
    assert len(plan_prune(held(HISTORY), CATALOG, Rules(1, 91, TODAY)).entries) == 4


def test_versions_are_counted_per_tag() -> None:
    """sonoma's bottles stopped at 1.6 (the formula dropped Intel): its last version is
    1.6, kept, while arm64_tahoe's 1.6 is two versions back."""
    entries = {k: e for k, e in HISTORY.items() if not k.endswith("sonoma") or "1.6" in k}
    plan = plan_prune(held(entries), CATALOG, Rules(2, 0, TODAY))
    assert sorted(plan.entries) == ["jq-1.6-arm64_tahoe"]


def test_the_api_files_and_the_catalog_name_by_sha256_too() -> None:
    api = named_by([formula("jq", "1.6", "arm64_tahoe", day="2026-08-01")])
    plan = plan_prune(held(HISTORY), joined(CATALOG, api), Rules(1, 0, TODAY))
    assert sorted(plan.entries) == ["jq-1.6-sonoma", "jq-1.7-arm64_tahoe", "jq-1.7-sonoma"]
    # an index goes only when no kept bottle is of its version
    assert "v2/homebrew/core/jq/manifests/1.6" not in plan.v2
    by_sha = Named(sha256s=frozenset({HISTORY["jq-1.7-sonoma"].sha256}))
    plan = plan_prune(held(HISTORY), joined(CATALOG, by_sha), Rules(1, 0, TODAY))
    assert "jq-1.7-sonoma" not in plan.entries


def test_a_shared_object_and_digest_stay_while_a_kept_entry_uses_them() -> None:
    """A link: jq 1.7's sonoma entry points at its arm64_tahoe object (the same bytes).
    While the catalog names another bottle with that digest, both entries, the object
    and the blob stay; without it both entries go and the object is deleted once."""
    entries = dict(HISTORY)
    link = entries["jq-1.7-arm64_tahoe"]
    entries["jq-1.7-sonoma"] = link
    other = Formula("other", "1", files=(BottleFile("all", "u", link.sha256),))
    named = joined(CATALOG, named_by([other]))
    plan = plan_prune(held(entries), named, Rules(1, 0, TODAY))
    assert "jq-1.7-sonoma" not in plan.entries
    assert "jq-1.7-arm64_tahoe" not in plan.entries
    assert link.s3_key not in plan.objects
    # and without it both entries go, and the object once
    plan = plan_prune(held(entries), CATALOG, Rules(1, 0, TODAY))
    assert {"jq-1.7-sonoma", "jq-1.7-arm64_tahoe"} <= set(plan.entries)
    assert plan.objects.count(link.s3_key) == 1
    assert HISTORY["jq-1.7-sonoma"].s3_key not in plan.objects  # no one held it


def test_an_object_a_kept_entry_names_is_not_deleted() -> None:
    entries = dict(HISTORY)
    # a kept (current) key pointing at an old version's object: dedupe across versions
    entries["jq-1.8-sonoma"] = entries["jq-1.6-sonoma"]
    plan = plan_prune(held(entries), CATALOG, Rules(1, 0, TODAY))
    assert "jq-1.6-sonoma" in plan.entries
    assert entries["jq-1.6-sonoma"].s3_key not in plan.objects
    blob = f"v2/homebrew/core/jq/blobs/sha256:{entries['jq-1.6-sonoma'].sha256}"
    assert blob not in plan.v2


def test_unrecorded_leftovers_are_judged_like_entries() -> None:
    """A prune that died after cutting the hash file: its objects are unrecorded; the
    rerun deletes them by the same rules, and keeps an unrecorded current bottle (a sync
    that died before its checkpoint)."""
    cut = {k: e for k, e in HISTORY.items() if "1.6" not in k}
    listing = {e.s3_key: 1000 for e in HISTORY.values()}
    current_loose = "2026-11-30/jq-1.8.arm64_tahoe.bottle.1.tar.gz"
    listing[current_loose] = 5
    shas = {e.s3_key: e.sha256 for k, e in HISTORY.items() if "1.6" in k}
    shas[current_loose] = HISTORY["jq-1.8-arm64_tahoe"].sha256  # bytes the catalog names
    plan = plan_prune(held_bottles(cut, listing, shas), CATALOG, Rules(2, 0, TODAY))
    assert plan.entries == {}
    assert sorted(plan.objects) == sorted(e.s3_key for k, e in HISTORY.items() if "1.6" in k)
    assert plan.unrecorded == 2
    assert "v2/homebrew/core/jq/manifests/1.6" in plan.v2
    # without its digest an unrecorded object stays (no blob key to delete with it)
    plan = plan_prune(held_bottles(cut, listing, {}), CATALOG, Rules(2, 0, TODAY))
    assert plan.objects == []
    assert plan.kept["unreadable"] == 3


def test_v2_listing_bounds_what_is_deleted_and_counts_blob_bytes() -> None:
    plan = plan_prune(held(HISTORY), CATALOG, Rules(1, 0, TODAY))
    listing = {k: 700 for k in plan.v2[:3]}
    bounded = plan_prune(held(HISTORY), CATALOG, Rules(1, 0, TODAY), listing)
    assert bounded.v2 == plan.v2[:3]
    assert bounded.v2_bytes == 700 * sum("/blobs/" in k for k in plan.v2[:3])
    assert bounded.freed == bounded.bytes + bounded.v2_bytes


@pytest.mark.parametrize(
    ("stem", "names", "split"),
    [
        ("ca-certificates-2024-03-11", {"ca-certificates"}, ("ca-certificates", "2024-03-11")),
        ("ca-certificates-2024-03-11", set(), ("ca-certificates", "2024-03-11")),
        ("python-tk@3.12-3.12.1", {"python-tk@3.12"}, ("python-tk@3.12", "3.12.1")),
        ("foo-bar-baz", set(), None),
        ("x-1", set(), ("x", "1")),
    ],
)
def test_stems_split_by_known_names_else_before_a_digit(
    stem: str, names: set[str], split: tuple[str, str] | None
) -> None:
    assert split_stem(stem, frozenset(names)) == split


def test_bottle_keys_are_read_with_their_rebuild() -> None:
    p = parse_bottle_key("2026-01-02/openssl@3-3.4.0.arm64_tahoe.bottle.2.tar.gz", frozenset())
    assert p is not None
    assert (p.name, p.pkg_version, p.tag, p.rebuild) == ("openssl@3", "3.4.0", "arm64_tahoe", 2)
    assert parse_bottle_key("status.json", frozenset()) is None
    assert parse_bottle_key("2026-01-02/../x-1.all.bottle.tar.gz", frozenset()) is None


def test_unreadable_names_stay_and_portable_ruby_is_never_touched() -> None:
    entries = dict([entry("no-digits-here", "x", "all", "2020-01-01")])
    entries.update([entry("portable-ruby", "3.4.1", "arm64_tahoe", "2020-01-01")])
    entries.update([entry("portable-ruby", "3.4.2", "arm64_tahoe", "2020-02-01")])
    plan = plan_prune(held(entries), Named(), Rules(1, 0, TODAY))
    assert plan.kept == {"unreadable": 1, "latest": 1}
    assert list(plan.entries) == ["portable-ruby-3.4.1-arm64_tahoe"]
    assert not [k for k in plan.v2 if "portable-ruby" in k]


def test_same_day_versions_order_by_version_numbers() -> None:
    entries = dict(
        [
            entry("x", "1.10", "all", "2026-01-01"),
            entry("x", "1.9", "all", "2026-01-01"),
        ]
    )
    plan = plan_prune(held(entries), Named(), Rules(1, 0, TODAY))
    assert list(plan.entries) == ["x-1.9-all"]


def test_the_cost_figure_frees_history_and_never_the_current_catalog() -> None:
    """bench/prune.py (the cost figures): on the sample catalog's made-up history, keep 1
    version and 0 days leaves exactly the current catalog's bytes; the defaults less."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(  # our own module, fixed arguments
        [sys.executable, "-m", "bench.prune", "--json", "--weeks", "12", "--today", TODAY],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=120,
    )
    found = orjson.loads(out.stdout)
    rows = {(r["keep_versions"], r["keep_days"]): r for r in found["rules"]}
    assert rows[1, 0]["held_after_bytes"] == found["current_bytes"]
    assert 0 < rows[2, 30]["freed_bytes"] < rows[1, 0]["freed_bytes"] < found["held_bytes"]


def test_a_superseded_rebuild_goes_though_its_version_is_current() -> None:
    """jq 1.8 rebottled (rebuild 1) a week later: the entry moved to the new object; the
    old one is unrecorded, named by neither its bytes nor the version rule, and goes
    once old enough, with its own index (ref 1.8) and blob; the new rebuild stays."""
    entries = dict(HISTORY)
    old = entries["jq-1.8-arm64_tahoe"]
    key, new = entry("jq", "1.8", "arm64_tahoe", "2026-10-08", rebuild=1)
    entries[key] = new
    catalog = named_by(
        [
            Formula(
                "jq",
                "1.8",
                rebuild=1,
                files=(
                    BottleFile("arm64_tahoe", "u", new.sha256),
                    BottleFile("sonoma", "u", HISTORY["jq-1.8-sonoma"].sha256),
                ),
            )
        ]
    )
    listing = {e.s3_key: 1000 for e in [*HISTORY.values(), new]}
    shas = {old.s3_key: old.sha256}
    plan = plan_prune(held_bottles(entries, listing, shas), catalog, Rules(2, 30, TODAY))
    assert plan.objects == [
        HISTORY["jq-1.6-arm64_tahoe"].s3_key,
        HISTORY["jq-1.6-sonoma"].s3_key,
        old.s3_key,
    ]
    assert f"v2/homebrew/core/jq/blobs/sha256:{old.sha256}" in plan.v2
    assert "v2/homebrew/core/jq/manifests/1.8" not in plan.v2  # sonoma's 1.8 keeps it
    # named by its bytes (the API files still send clients to it), it stays
    api = Named(sha256s=frozenset({old.sha256}))
    plan = plan_prune(
        held_bottles(entries, listing, shas), joined(catalog, api), Rules(2, 30, TODAY)
    )
    assert old.s3_key not in plan.objects
    # and young, it stays
    plan = plan_prune(held_bottles(entries, listing, shas), catalog, Rules(2, 90, TODAY))
    assert old.s3_key not in plan.objects


def test_an_entry_whose_object_is_gone_is_cut_and_nothing_is_counted_for_it() -> None:
    listing = {e.s3_key: 1000 for k, e in HISTORY.items() if k != "jq-1.6-sonoma"}
    plan = plan_prune(held_bottles(HISTORY, listing, {}), CATALOG, Rules(1, 0, TODAY))
    assert "jq-1.6-sonoma" in plan.entries
    assert HISTORY["jq-1.6-sonoma"].s3_key not in plan.objects
    assert plan.bytes == 3000
