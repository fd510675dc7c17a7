"""Pure core: hash file (v1→v2, validation, merge), plan, settings, retry policy."""

from __future__ import annotations

import random
from dataclasses import fields
from typing import Any

import orjson
import pytest

from mirrord.core import hashfile as hashfile_module
from mirrord.core.errors import HashFileError, SettingsError
from mirrord.core.hashfile import HashFile, dumps, merge, missing_from, parse
from mirrord.core.models import Bottle, HashEntry
from mirrord.core.plan import make_plan
from mirrord.core.retry import RetryPolicy, is_retryable_status, parse_retry_after
from mirrord.core.settings import ENV, Settings, from_env, parse_size

A, B, C = "a" * 64, "b" * 64, "c" * 64


def v2(bottles: dict[str, Any]) -> bytes:
    return orjson.dumps({"version": 2, "last_updated": "2026-11-01T00:00:00Z", "bottles": bottles})


def e(sha: str, date: str = "2026-11-01", size: int | None = 10, key: str = "") -> HashEntry:
    return HashEntry(sha, date, size, key or f"{date}/x-{sha[:4]}.tar.gz")


# --- hash file -------------------------------------------------------------------------


def test_v2_round_trip() -> None:
    """dumps → parse gives the same entries and writes version 2."""
    hf = HashFile(
        {"jq-1.7.1_1-arm64_sequoia": e(A, key="2026-11-01/jq-1.7.1_1.arm64_sequoia.bottle.tar.gz")}
    )
    raw = dumps(hf)
    assert orjson.loads(raw)["version"] == 2
    assert parse(raw).bottles == hf.bottles


def test_v1_is_migrated_with_derived_keys() -> None:
    """A v1 file (no version, no s3_key) reads as v2 entries with the brew file name."""
    raw = orjson.dumps(
        {
            "last_updated": "2026-01-01",
            "bottles": {
                "jq-1.7.1_1-arm64_sequoia": {
                    "sha256": A,
                    "download_date": "2026-01-02",
                    "file_size": 5,
                },
                "go-1.22-rc1-sonoma": {"sha256": B, "download_date": "2026-01-03"},
            },
        }
    )
    hf = parse(raw)
    assert hf.migrated_from == 1
    assert (
        hf.bottles["jq-1.7.1_1-arm64_sequoia"].s3_key
        == "2026-01-02/jq-1.7.1_1.arm64_sequoia.bottle.tar.gz"
    )
    assert hf.bottles["go-1.22-rc1-sonoma"] == HashEntry(
        B, "2026-01-03", None, "2026-01-03/go-1.22-rc1.sonoma.bottle.tar.gz"
    )
    assert parse(dumps(hf)).bottles == hf.bottles


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "top level"),
        (orjson.dumps({"version": 3, "bottles": {}}), "unsupported version"),
        (
            v2(
                {
                    "k": {
                        "sha256": "nope",
                        "download_date": "2026-01-01",
                        "file_size": 1,
                        "s3_key": "a",
                    }
                }
            ),
            "sha256",
        ),
        (
            v2({"k": {"sha256": A, "download_date": "yesterday", "file_size": 1, "s3_key": "a"}}),
            "download_date",
        ),
        (
            v2({"k": {"sha256": A, "download_date": "2026-01-01", "file_size": -1, "s3_key": "a"}}),
            "file_size",
        ),
        (
            v2(
                {
                    "k": {
                        "sha256": A,
                        "download_date": "2026-01-01",
                        "file_size": 1,
                        "s3_key": "../etc",
                    }
                }
            ),
            "s3_key",
        ),
        (
            v2(
                {"k": {"sha256": A, "download_date": "2026-01-01", "file_size": "9", "s3_key": "a"}}
            ),
            "file_size",
        ),
        (v2({"k": []}), "object"),
    ],
)
def test_corrupt_hash_file_is_a_clear_error(raw: bytes, needle: str) -> None:
    """Every way a file can be corrupt raises HashFileError naming the problem."""
    with pytest.raises(HashFileError, match=needle):
        parse(raw)


def test_hash_file_fast_and_slow_paths_agree() -> None:
    """A well-formed v2 file takes the msgspec path and reads exactly as the checked one."""
    raw = v2(
        {
            "jq-1.7.1_1-arm64_sequoia": {
                "sha256": A,
                "download_date": "2026-01-01",
                "file_size": 7,
                "s3_key": "2026-01-01/jq-1.7.1_1.arm64_sequoia.bottle.tar.gz",
            },
            "go-1.22-rc1-sonoma": {
                "sha256": B,
                "download_date": "2026-01-02",
                "file_size": None,
                "s3_key": "2026-01-02/go-1.22-rc1.sonoma.bottle.tar.gz",
            },
        }
    )
    fast = hashfile_module._fast(raw)
    assert fast is not None
    assert fast == hashfile_module._slow(raw, "x")
    assert fast.bottles["go-1.22-rc1-sonoma"].file_size is None


def test_merge_is_a_union_where_the_writers_own_entries_win() -> None:
    """Every entry of both sides is kept; a disputed key takes the writer's entry, even
    one of the same date with a smaller sha256 (a rebottle the same day: the running
    sync's catalog names the current bottle, issue 12 #6)."""
    stored = HashFile({"x": e(C), "shared": e(C, "2026-11-02")})
    mine = {"y": e(B), "shared": e(A, "2026-11-02")}
    merged = merge(stored, mine)
    assert set(merged.bottles) == {"x", "y", "shared"}
    assert merged.bottles["shared"] == e(A, "2026-11-02")
    assert merge(HashFile(mine), stored.bottles).bottles["shared"] == e(C, "2026-11-02")
    assert missing_from(merged, {"x": e(C), "z": e(C)}) == {"z": e(C)}


# --- plan ------------------------------------------------------------------------------


def bottle(name: str, tag: str, sha: str, version: str = "1.0") -> Bottle:
    return Bottle(
        name, version, tag, 0, sha, f"https://ghcr.io/v2/homebrew/core/{name}/blobs/sha256:{sha}"
    )


def test_plan_skips_links_and_dedups() -> None:
    """Known sha256 → skipped; sha256 stored under another key → linked, not fetched;
    two new keys with one sha256 → one transfer with an alias."""
    hf = HashFile(
        {
            "jq-1.0-arm64_tahoe": e(A, key="2026-11-01/jq-1.0.arm64_tahoe.bottle.tar.gz"),
            "jq-0.9-sonoma": e(C, size=9_000_000),
        }
    )
    bottles = (
        bottle("jq", "arm64_tahoe", A),  # skipped
        bottle("jq", "arm64_sequoia", A),  # same bytes under another tag: link
        bottle("jq", "sonoma", B),  # new
        bottle("jq", "ventura", B),  # same new bytes: alias of the above
        bottle("big", "arm64_tahoe", "d" * 64),  # new, no size known
    )
    plan = make_plan(bottles, hf, "2026-11-22")
    assert plan.skipped == 2
    assert plan.links == {"jq-1.0-arm64_sequoia": hf.bottles["jq-1.0-arm64_tahoe"]}
    assert [t.bottle.hash_key for t in plan.transfers] == ["jq-1.0-sonoma", "big-1.0-arm64_tahoe"]
    first = plan.transfers[0]
    assert first.key == "2026-11-22/jq-1.0.sonoma.bottle.tar.gz"
    assert first.size_hint == 9_000_000  # the previous version's size orders it first
    assert [a.hash_key for a in first.aliases] == ["jq-1.0-ventura"]


def test_plan_refetches_when_sha_changes_for_same_key() -> None:
    """A key whose sha256 changed upstream (rebottled) is fetched again."""
    hf = HashFile({"jq-1.0-sonoma": e(A)})
    plan = make_plan((bottle("jq", "sonoma", B),), hf, "2026-11-22")
    assert len(plan.transfers) == 1
    assert plan.skipped == 0


def test_size_hint_handles_dashes_in_names() -> None:
    """Names and versions with '-' still find their previous size."""
    hf = HashFile({"git-lfs-3.5-rc1-sonoma": e(A, size=123)})
    plan = make_plan((bottle("git-lfs", "sonoma", B, "3.6"),), hf, "2026-11-22")
    assert plan.transfers[0].size_hint == 123


# --- settings --------------------------------------------------------------------------


def test_settings_defaults_env_and_flag_precedence() -> None:
    """Defaults per docs/design.md §10; env overrides defaults; flags override env."""
    s = from_env({"MIRRORD_BUCKET": "my-mirror"})
    assert (s.concurrency, s.part_size, s.batch_size, s.hash_key, s.platforms) == (
        16,
        16 * 2**20,
        100,
        "bottles_hash.json",
        None,
    )
    s = from_env(
        {
            "MIRRORD_BUCKET": "my-mirror",
            "MIRRORD_CONCURRENCY": "8",
            "MIRRORD_PART_SIZE": "32MiB",
            "MIRRORD_PLATFORMS": "arm64_tahoe, sonoma",
        },
        {"MIRRORD_CONCURRENCY": "3"},
    )
    assert (s.concurrency, s.part_size, s.platforms) == (3, 32 * 2**20, ("arm64_tahoe", "sonoma"))
    assert (s.estimate_seconds, s.estimate_max_indexes) == (120.0, 2000)  # inside 300 s
    s = from_env(
        {
            "MIRRORD_BUCKET": "b-1",
            "MIRRORD_ESTIMATE_SECONDS": "45.5",
            "MIRRORD_ESTIMATE_MAX_INDEXES": "0",
        }
    )
    assert (s.estimate_seconds, s.estimate_max_indexes) == (45.5, 0)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "MIRRORD_BUCKET"),
        ({"MIRRORD_BUCKET": "Bad_Bucket"}, "MIRRORD_BUCKET"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_CONCURRENCY": "many"}, "MIRRORD_CONCURRENCY"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_CONCURRENCY": "0"}, "MIRRORD_CONCURRENCY"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_PART_SIZE": "1MiB"}, "MIRRORD_PART_SIZE"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_PART_SIZE": "16 parsecs"}, "MIRRORD_PART_SIZE"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_PLATFORMS": "arm64_windows"}, "MIRRORD_PLATFORMS"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_API_URL": "ftp://x"}, "MIRRORD_API_URL"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_HASH_KEY": "../x"}, "MIRRORD_HASH_KEY"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_ESTIMATE_SECONDS": "0"}, "MIRRORD_ESTIMATE_SECONDS"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_ESTIMATE_SECONDS": "901"}, "ESTIMATE_SECONDS"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_ESTIMATE_MAX_INDEXES": "-1"}, "MAX_INDEXES"),
        ({"MIRRORD_BUCKET": "ok-b", "MIRRORD_ESTIMATE_MAX_INDEXES": "lots"}, "MAX_INDEXES"),
    ],
)
def test_bad_setting_names_the_variable(env: dict[str, str], needle: str) -> None:
    """Each bad value stops start-up with one line naming the variable."""
    with pytest.raises(SettingsError, match=needle) as info:
        from_env(env)
    assert "\n" not in str(info.value)


def test_parse_size_units() -> None:
    """Bytes, binary and decimal units."""
    assert [parse_size(t, "X") for t in ("1024", "16MiB", "16MB", "1GiB")] == [
        1024,
        16 * 2**20,
        16 * 10**6,
        2**30,
    ]


# --- retry policy ----------------------------------------------------------------------


def test_retry_classification() -> None:
    """5xx, 401, 408, 429 retry; 404 and other 4xx never do."""
    assert all(is_retryable_status(s) for s in (500, 502, 503, 401, 408, 429))
    assert not any(is_retryable_status(s) for s in (400, 403, 404, 410, 416))


def test_full_jitter_is_bounded_and_retry_after_wins() -> None:
    """Delays lie in [0, min(cap, base·2^(n-1))]; Retry-After overrides, capped."""
    policy = RetryPolicy(base=1.0, cap=8.0, max_retry_after=60)
    rng = random.Random(1)
    for attempt in range(1, 10):
        d = policy.delay(attempt, rng)
        assert 0 <= d <= min(8.0, 2 ** (attempt - 1))
    assert policy.delay(1, rng, retry_after=7) == 7
    assert policy.delay(1, rng, retry_after=999) == 60
    assert parse_retry_after("3", 0) == 3
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == 6.0
    assert parse_retry_after("soon", 0) is None


def test_every_setting_has_one_environment_variable() -> None:
    """The env table and the Settings fields stay in step (one name per field)."""
    assert sorted(field for field, _ in ENV.values()) == sorted(f.name for f in fields(Settings))
    assert all(name.startswith("MIRRORD_") for name in ENV)
