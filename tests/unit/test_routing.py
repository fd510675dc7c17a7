"""Routing a job to N workers (docs/design.md §12): the job message's shard field, the
shard count the enqueuer picks, and the settings that drive it. Pure."""

from __future__ import annotations

import orjson
import pytest

from mirrord.core.errors import JobError, SettingsError
from mirrord.core.jobs import Job, parse_job
from mirrord.core.settings import Settings, from_env
from mirrord.core.shards import Shard
from mirrord.services.enqueue import shard_count, sharded

DATE = "2026-11-22"
GB = 10**9


def body(**extra: object) -> bytes:
    return orjson.dumps({"v": 1, "job_id": "j1", "date": DATE, **extra})


def test_a_shard_round_trips_through_the_message() -> None:
    job = Job("j1", DATE, shard=Shard(2, 4))
    assert orjson.loads(job.body())["shard"] == "2/4"
    assert parse_job(job.body(), today=None) == job
    assert parse_job(body(shard="3/8")).shard == Shard(3, 8)


def test_a_whole_job_has_no_shard_field_and_reads_as_before() -> None:
    """An older daemon reads the body of an unsharded job unchanged; null means whole."""
    assert "shard" not in orjson.loads(Job("j1", DATE).body())
    assert parse_job(body()).shard is None
    assert parse_job(body(shard=None)).shard is None
    assert parse_job(body(shard=None, newer_field={"x": 1})).shard is None  # tolerance kept


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("5/4", "job.shard 5/4: need 1 ≤ K ≤ N ≤ 64"),
        ("0/4", "job.shard '0/4': expected K/N"),
        ("1/65", "job.shard 1/65: need"),
        ("two/4", "expected K/N"),
        ("", "expected K/N"),
        (3, "job.shard must be null or a string K/N"),
        (["1/2"], "job.shard must be null or a string K/N"),
    ],
)
def test_a_bad_shard_is_a_job_error_naming_the_field(value: object, words: str) -> None:
    with pytest.raises(JobError, match=r"job\.shard") as caught:
        parse_job(body(shard=value))
    assert words in str(caught.value)


def settings(**kw: object) -> Settings:
    return Settings(bucket="b", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("estimate", "partial", "kw", "count"),
    [
        (0, False, {}, 1),
        (16 * GB, False, {}, 1),  # exactly one shard's worth: one worker
        (16 * GB + 1, False, {}, 2),
        (100 * GB, False, {}, 7),  # the real first sync: ceil(100 / 16)
        (1000 * GB, False, {}, 8),  # capped at MIRRORD_MAX_SHARDS
        (1000 * GB, False, {"max_shards": 3}, 3),
        (5 * GB, True, {}, 8),  # a partial estimate is a lower bound: the cap
        (1000 * GB, False, {"shard_bytes": 0}, 1),  # 0: never shard
        (1000 * GB, True, {"shard_bytes": 0}, 1),
        (1000 * GB, False, {"max_shards": 1}, 1),
    ],
)
def test_shard_count(estimate: int, partial: bool, kw: dict[str, int], count: int) -> None:
    assert shard_count(estimate, partial, settings(**kw)) == count


def test_sharded_sends_one_message_per_shard_with_one_job_id_and_date() -> None:
    job = Job("j1", DATE, platforms=("arm64_tahoe",), estimated_bytes=7)
    assert sharded(job, 1) == [job]
    parts = sharded(job, 3)
    assert [p.shard for p in parts] == [Shard(1, 3), Shard(2, 3), Shard(3, 3)]
    assert {(p.job_id, p.date, p.platforms, p.estimated_bytes) for p in parts} == {
        ("j1", DATE, ("arm64_tahoe",), 7)
    }


def test_the_scale_out_settings() -> None:
    s = from_env({"MIRRORD_BUCKET": "mirror"})
    assert (s.shard_bytes, s.max_shards, s.max_receives) == (16 * GB, 8, 3)
    s = from_env(
        {
            "MIRRORD_BUCKET": "mirror",
            "MIRRORD_SHARD_BYTES": "4GB",
            "MIRRORD_MAX_SHARDS": "16",
            "MIRRORD_MAX_RECEIVES": "5",
        }
    )
    assert (s.shard_bytes, s.max_shards, s.max_receives) == (4 * GB, 16, 5)
    assert from_env({"MIRRORD_BUCKET": "mirror", "MIRRORD_SHARD_BYTES": "0"}).shard_bytes == 0
    for name, bad, words in [
        ("MIRRORD_MAX_SHARDS", "65", "outside 1..64"),
        ("MIRRORD_MAX_SHARDS", "0", "outside 1..64"),
        ("MIRRORD_SHARD_BYTES", "lots", "is not a size"),
        ("MIRRORD_MAX_RECEIVES", "0", "outside 1..1000"),
    ]:
        with pytest.raises(SettingsError, match=name) as caught:
            from_env({"MIRRORD_BUCKET": "mirror", name: bad})
        assert words in str(caught.value)
