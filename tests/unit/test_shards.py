"""core/shards.py: who owns a bottle, the split of a plan, and the shard record."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

import pytest

from mirrord.core.errors import InputError
from mirrord.core.hashfile import HashFile
from mirrord.core.models import Bottle, HashEntry
from mirrord.core.plan import make_plan
from mirrord.core.shards import (
    MAX_SHARDS,
    Shard,
    ShardRecord,
    finalize_key,
    missing_shards,
    parse_shard,
    record_key,
    shard_of,
    split,
)

DATE = "2026-11-22"


def bottles(n: int, *, dup_every: int = 0) -> tuple[Bottle, ...]:
    """n bottles; with ``dup_every``, every such bottle repeats the previous one's bytes
    (an alias: one transfer, not two)."""
    made = []
    for i in range(n):
        shared = dup_every and i % dup_every == 0 and i > 0
        sha = hashlib.sha256(str(i - 1 if shared else i).encode()).hexdigest()
        made.append(Bottle(f"f{i}", "1.0", "arm64_tahoe", 0, sha, f"https://ghcr.io/x/{sha}"))
    return tuple(made)


@pytest.mark.parametrize("text", ["1/1", "2/4", "64/64", " 3/8 "])
def test_parse_shard_reads_k_of_n(text: str) -> None:
    shard = parse_shard(text)
    assert str(shard) == text.strip()


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "1/65", "a/b", "1-4", "", "1/4/8", "-1/4"])
def test_parse_shard_refuses_what_is_not_k_of_n(text: str) -> None:
    with pytest.raises(InputError, match="shard"):
        parse_shard(text)


def test_shard_of_is_the_same_in_every_process() -> None:
    """Python's hash() is salted per process; a shard rule built on it would give two
    workers different ideas of who owns a key."""
    keys = [f"{DATE}/f{i}-1.0.arm64_tahoe.bottle.tar.gz" for i in range(50)]
    here = [shard_of(k, 7) for k in keys]
    code = (
        "import sys; from mirrord.core.shards import shard_of; "
        "print(' '.join(str(shard_of(k, 7)) for k in sys.argv[1:]))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, *keys],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert [int(x) for x in out.stdout.split()] == here


def test_shard_of_spreads_keys_evenly() -> None:
    counts = Counter(shard_of(f"{DATE}/f{i}.bottle.tar.gz", 8) for i in range(16_000))
    assert set(counts) == set(range(1, 9))
    assert max(counts.values()) < 1.1 * 2000 < 1.21 * min(counts.values())


@pytest.mark.parametrize("count", [1, 2, 3, 8, MAX_SHARDS])
def test_the_shards_of_a_plan_cover_it_once(count: int) -> None:
    plan = make_plan(bottles(300, dup_every=7), HashFile({}), DATE)
    parts = [split(plan, Shard(k, count)) for k in range(1, count + 1)]
    keys = [t.key for p in parts for t in p.transfers]
    assert sorted(keys) == sorted(t.key for t in plan.transfers)
    assert len(keys) == len(set(keys))  # no bottle fetched by two shards
    shas = [t.bottle.sha256 for p in parts for t in p.transfers]
    assert len(shas) == len(set(shas))
    assert all(p.skipped == plan.skipped and p.date == plan.date for p in parts)


def test_a_shard_keeps_its_bottles_when_it_replans_after_its_siblings_stored_theirs() -> None:
    """Shard 2 crashes; shards 1 and 3 finish and grow the hash file; shard 2's retry
    plans again and owns exactly the bottles it had left, nothing of its siblings'."""
    chosen = bottles(200, dup_every=9)
    first = make_plan(chosen, HashFile({}), DATE)
    mine = {t.key for t in split(first, Shard(2, 3)).transfers}
    stored = {
        t.bottle.hash_key: HashEntry(t.bottle.sha256, DATE, 1, t.key)
        for k in (1, 3)
        for t in split(first, Shard(k, 3)).transfers
    }
    again = make_plan(chosen, HashFile(stored), DATE)
    assert {t.key for t in split(again, Shard(2, 3)).transfers} == mine
    assert {t.key for t in again.transfers} == mine
    # The siblings' aliases became links, shared out by hash key, each to one shard.
    linked = [set(split(again, Shard(k, 3)).links) for k in (1, 2, 3)]
    assert set().union(*linked) == set(again.links)
    assert sum(map(len, linked)) == len(again.links)


def test_keys_in_the_bucket() -> None:
    assert (
        record_key("2026-11-22-weekly", Shard(3, 8)) == "jobs/2026-11-22-weekly/shards/3-of-8.json"
    )
    assert finalize_key("j1") == "jobs/j1/finalize.json"


def test_a_shard_record_reads_back_and_a_bad_one_is_named() -> None:
    record = ShardRecord(
        "j1", Shard(2, 4), "given_up", 5, 1234, (("jq-1.7-arm64_tahoe", "HTTP 500"),), "t", 7
    )
    assert ShardRecord.from_json(record.to_json(), "k") == record
    older = {k: v for k, v in record.to_json().items() if k != "skipped"}  # before the field
    assert ShardRecord.from_json(older, "k").skipped is None
    for bad in (
        {**record.to_json(), "state": "maybe"},
        {**record.to_json(), "stored": -1},
        {**record.to_json(), "bytes": True},
        {**record.to_json(), "skipped": -3},
        {**record.to_json(), "shard": "5/4"},
        {**record.to_json(), "v": 2},
        {k: v for k, v in record.to_json().items() if k != "failed"},
        [],
    ):
        with pytest.raises(InputError, match=r"jobs/j1/shards/2-of-4\.json: unreadable"):
            ShardRecord.from_json(bad, "jobs/j1/shards/2-of-4.json")


def test_missing_shards_lists_who_the_fan_in_waits_for() -> None:
    done = {k: ShardRecord("j", Shard(k, 4), "done") for k in (1, 3)}
    assert missing_shards(done, 4) == [2, 4]
    assert missing_shards({**done, 2: done[1], 4: done[1]}, 4) == []
