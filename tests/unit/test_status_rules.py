"""The pure rules of `mirrord status` (core/status.py) and of a subset's API check
(core/subset.py), on data built here: no server."""

from __future__ import annotations

from typing import Any

import orjson
from mirrord_dev.emulator.content import api_file

from mirrord.core.catalog import parse_catalog
from mirrord.core.closure import closure, dependency_index
from mirrord.core.hashfile import HashFile, Suspect
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry
from mirrord.core.releases import DEFAULT_RELEASES
from mirrord.core.report import Failure, Published, Report, Subset
from mirrord.core.status import (
    ApiState,
    Held,
    Status,
    api_state,
    judge,
    run_record,
    with_run,
)
from mirrord.core.subset import last_job_was_full, outside_sha256s, recorded_subset, subset_of

NOW = "2026-12-02T00:00:00Z"
JOB = Job("2026-12-01-weekly", "2026-12-01")


def entry(name: str, files: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "versions": {"stable": "1.0", "head": None, "bottle": True},
        "revision": 0,
        "bottle": {
            "stable": {
                "rebuild": 0,
                "files": {
                    tag: {
                        "cellar": ":any",
                        "url": f"https://ghcr.io/v2/homebrew/core/{name}/blobs/sha256:{sha}",
                        "sha256": sha,
                    }
                    for tag, sha in files.items()
                },
            }
        },
        **fields,
    }


def sha(c: str) -> str:
    return c * 64


# app needs lib; on Linux also zlib (uses_from_macos); other is outside every closure.
FORMULAE = [
    entry("app", {"arm64_sonoma": sha("1"), "x86_64_linux": sha("2")},
          dependencies=["lib"], uses_from_macos=["zlib"]),
    entry("lib", {"arm64_sonoma": sha("3"), "x86_64_linux": sha("4")}),
    entry("zlib", {"arm64_sonoma": sha("5"), "x86_64_linux": sha("6")}),
    entry("other", {"arm64_sonoma": sha("7"), "x86_64_linux": sha("8")}),
]  # fmt: skip
TARGETS = ("arm64_sonoma", "x86_64_linux")


def api_files() -> dict[str, bytes]:
    source = orjson.dumps(FORMULAE)
    endpoints = ("formula.jws.json", *(f"internal/packages.{t}.jws.json" for t in TARGETS))
    files = {e: api_file(source, e) for e in endpoints}
    return {e: body for e, body in files.items() if body is not None}


def test_outside_sha256s_is_per_target_closure() -> None:
    """zlib is in app's closure on Linux only: its macOS bottle is outside, its Linux
    one inside; `other` is outside on both; nothing of the closure is ignored."""
    catalog = parse_catalog(orjson.dumps(FORMULAE))
    found = closure(dependency_index(catalog), ["app"], TARGETS, DEFAULT_RELEASES)
    assert set(found.by_target["x86_64_linux"]) == {"app", "lib", "zlib"}
    assert set(found.by_target["arm64_sonoma"]) == {"app", "lib"}
    files = api_files()
    assert set(files) == {"formula.jws.json", *(f"internal/packages.{t}.jws.json" for t in TARGETS)}
    outside = outside_sha256s(files, found.by_target, TARGETS)
    assert outside == {sha("5"), sha("7"), sha("8")}
    assert subset_of(found) == Subset(("app",), 3, {"arm64_sonoma": 2, "x86_64_linux": 3})


def test_recorded_subset_and_full_mirror() -> None:
    record = {"roots": ["jq"], "formulae": 2, "per_target": {"arm64_sonoma": 2}}
    assert recorded_subset({"subset": record}) == Subset(("jq",), 2, {"arm64_sonoma": 2})
    for bad in (None, [], {"subset": None}, {"subset": {"roots": "jq", "formulae": 1}},
                {"subset": {"roots": ["jq"], "formulae": True}}):  # fmt: skip
        assert recorded_subset(bad) is None
    assert last_job_was_full({"last_success": NOW})  # written before subsets were recorded
    assert last_job_was_full({"last_success": NOW, "subset": None})
    assert not last_job_was_full({"last_success": NOW, "subset": record})
    assert not last_job_was_full({"last_run": {}})  # no complete job yet
    assert not last_job_was_full(None)


def report(**kw: Any) -> Report:
    return Report(JOB.job_id, JOB.date, planned=3, downloaded=3, **kw)


def test_run_record_outcomes() -> None:
    assert run_record(JOB, NOW, report())["outcome"] == "complete"
    failed = run_record(JOB, NOW, report(failed=(Failure("jq-1-arm64_sonoma", "HTTP 500"),)))
    assert failed["outcome"] == "failed"
    assert failed["failed"] == 1
    assert failed["failed_keys"] == ["jq-1-arm64_sonoma"]
    assert run_record(JOB, NOW, report(remaining=2, stopped=True))["outcome"] == "stopped"
    died = run_record(JOB, NOW, None, "catalog unreachable")
    assert (died["outcome"], died["error"], died["planned"]) == (
        "error",
        "catalog unreachable",
        None,
    )
    kept = run_record(JOB, NOW, report(published=Published(api="kept: x")))
    assert kept["api"] == "kept: x"
    # A failed run keeps the last complete job's record as it was.
    before = {"last_success": NOW, "planned": 9, "last_run": {"outcome": "complete"}}
    after = with_run(before, died)
    assert after == {**before, "last_run": died}
    assert with_run("not a dict", died) == {"last_run": died}


def held(hf: HashFile | None = None) -> Held:
    return Held.of(hf or HashFile())


def status(status_json: Any, api: ApiState | None = None, **kw: Any) -> Status:
    return judge(Status("b", NOW, status_json, held(), api or ApiState("current", 7), None, **kw))


def success(at: str = "2026-12-01T00:00:00Z", api: str = "published", **kw: Any) -> dict[str, Any]:
    return {
        "last_success": at,
        "job_id": JOB.job_id,
        "published": {"api": api},
        "last_run": {"job_id": JOB.job_id, "outcome": "complete"},
        **kw,
    }


def test_judge_healthy_and_each_problem() -> None:
    assert status(success()).healthy
    assert status(success(), max_age_days=0.5).problems == [
        "the last complete sync ended 1.0 days ago (more than 0.5)"
    ]
    fresh = status(None, ApiState("not published"))
    assert len(fresh.problems) == 2
    assert "no complete sync recorded" in fresh.problems[0]
    failed = success(last_run={"job_id": "w2", "outcome": "failed", "failed": 2, "error": None})
    assert status(failed).problems == ["the last sync (w2) did not complete: failed bottles: 2"]
    kept = status(success(api="kept: the API names 3 bottles the mirror lacks"))
    assert kept.problems == [
        "the last complete sync kept the API files back "
        "(kept: the API names 3 bottles the mirror lacks)"
    ]
    assert status(success(api="kept: x"), ApiState("off")).healthy  # brew mirror off
    stopped = status(success(last_run={"job_id": "w3", "outcome": "stopped"}))
    assert stopped.healthy
    assert "stopped early" in stopped.notes[0]


def test_judge_notes_a_stale_api_and_the_quarantine() -> None:
    stale = api_state({"a": sha("1"), "b": sha("2")}, {"a": sha("1"), "b": sha("3")}, newest=NOW)
    assert (stale.state, stale.differ, stale.files) == ("stale", ("b",), 2)
    judged = status(success(), stale)
    assert judged.healthy
    assert "changed 1 API files" in judged.notes[0]
    assert api_state({"a": sha("1")}, {"a": sha("1")}, newest=NOW).state == "current"
    assert api_state({}, None, newest=None).state == "not published"
    assert api_state({"a": sha("1")}, None, newest=None, error="down").error == "down"

    t = "2026-11-30T00:00:00Z"
    hf = HashFile(
        bottles={
            "a-1-x": HashEntry(sha("1"), "2026-11-30", 10, "2026-11-30/a-1.x.bottle.tar.gz"),
            "b-1-x": HashEntry(sha("1"), "2026-11-30", 10, "2026-11-30/a-1.x.bottle.tar.gz"),
            "c-1-x": HashEntry(sha("2"), "2026-11-30", None, "2026-11-30/c-1.x.bottle.tar.gz"),
        },
        quarantine={
            "d-1-x": Suspect(sha("3"), sha("4"), t, t, 3, "j"),
            "e-1-x": Suspect(sha("5"), None, t, t, 1, "j"),
        },
    )
    found = Held.of(hf)
    assert (found.bottles, found.objects, found.bytes, found.unknown_size) == (3, 2, 10, 1)
    assert (found.quarantined, found.suspects) == (("d-1-x",), ("e-1-x",))
