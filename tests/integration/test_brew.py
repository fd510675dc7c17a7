"""The bucket as a mirror brew 6 uses directly: image indexes, blob keys, API files and
portable Ruby published after a sync, proven by check-client walking it as brew does —
through a CloudFront+OAC stand-in over the moto bucket, with the upstream untouched."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import boto3
import orjson
import pytest
from conftest import DATE, MakeWorld, make_settings, run_cli
from mirrord_dev.emulator import (
    PORTABLE_RUBY_VERSIONS,
    Emulator,
    Fault,
    catalog_from_entries,
    sample_catalog,
)
from mirrord_dev.local import Front, bucket_front

from mirrord.app import App, open_app
from mirrord.core.brew import API_ENDPOINTS, api_gaps, jws_payload, packages_endpoint
from mirrord.core.catalog import parse_catalog
from mirrord.core.errors import InputError, SettingsError
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.models import HashEntry
from mirrord.core.oci import blob_key, descriptor_problem
from mirrord.core.report import Report
from mirrord.core.settings import from_env
from mirrord.services.check import check_client
from mirrord.services.job import run_job

TARGETS = ("arm64_tahoe", "tahoe", "arm64_sequoia", "sequoia", "arm64_sonoma", "sonoma")
RUBY = PORTABLE_RUBY_VERSIONS[0]


@dataclass
class Mirror:
    app: App
    emu: Emulator

    async def sync(self, job_id: str = "t", **job: Any) -> Report:
        return await run_job(self.app, Job(job_id, DATE, **job), route="test")

    async def body(self, key: str) -> bytes:
        found = await self.app.store.get(key)
        assert found is not None, key
        return found[0]

    async def upstream(self, path: str, accept: str | None = None) -> bytes:
        headers = {"Authorization": "Bearer QQ=="}
        if accept:
            headers["Accept"] = accept
        async with self.app.http.get(f"{self.emu.registry_url}/{path}", headers=headers) as r:
            assert r.status == 200, path
            return await r.read()

    async def check(self, front: Front, target: str) -> Any:
        return await check_client(self.app.http, front.url, target, ruby_versions=(RUBY,))


@pytest.fixture
async def mirror(make_world: MakeWorld) -> Mirror:
    made = await make_world(platforms=TARGETS)
    return Mirror(made.app, made.emu)


@pytest.fixture
def front(mirror: Mirror) -> Iterator[Front]:
    """CloudFront+OAC stand-in over the moto bucket (signed GETs, viewer headers dropped)."""
    with bucket_front(boto3.client("s3"), mirror.app.settings.bucket) as served:
        yield served


async def test_check_client_full_coverage_for_every_target_without_upstream(
    mirror: Mirror, front: Front
) -> None:
    """After a sync, every target machine can install every formula it has a bottle for
    from the mirror alone: zero requests reach the upstream during the walk."""
    report = await mirror.sync()
    assert report.complete
    assert report.published is not None
    assert report.published.api == "published", report.published
    assert report.published.every_problem == []
    mirror.emu.reset_stats()
    for target in TARGETS:
        coverage = await mirror.check(front, target)
        assert coverage.misses == (), coverage.misses
        assert coverage.installable == coverage.with_bottle >= 9
        assert coverage.api_files == coverage.api_expected == len(API_ENDPOINTS) + 1
        assert coverage.portable_ruby == 1
    assert mirror.emu.total_requests() == 0
    assert front.with_authorization == 0
    assert any("/blobs/sha256:" in p for p in front.paths)


async def test_the_front_serves_what_brew_fetches_and_nothing_else(
    mirror: Mirror, front: Front
) -> None:
    """As the deployed grant (infra/modules/cdn: GetObject on v2/* and api/*, no
    ListBucket) makes it: brew's files are served; the hash file, the lock, status.json,
    the dated bottles and a listing are refused (403, as S3 answers without ListBucket)."""
    report = await mirror.sync()
    assert report.complete
    hf = orjson.loads(await mirror.body("bottles_hash.json"))
    dated = next(iter(hf["bottles"].values()))["s3_key"]
    async with mirror.app.http.get(f"{front.url}/api/formula.jws.json") as served:
        assert served.status == 200
    for private in ("bottles_hash.json", "status.json", "sync.lock", dated, "", "?list-type=2"):
        async with mirror.app.http.get(f"{front.url}/{private}") as refused:
            assert refused.status == 403, private
    async with mirror.app.http.get(f"{front.url}/v2/homebrew/core/nope/blobs/sha256:00") as r:
        assert r.status == 403  # missing, and without ListBucket S3 does not say so


async def test_published_files_are_byte_identical_to_upstream(mirror: Mirror) -> None:
    """Image indexes and API files are stored exactly as served, with brew's Content-Type;
    blob keys hold the dated bottle's bytes."""
    await mirror.sync()
    index_key = "v2/homebrew/core/openssl/3/manifests/3.5.0"
    found = await mirror.app.s3.get_object(Bucket=mirror.app.settings.bucket, Key=index_key)
    assert found["ContentType"] == "application/vnd.oci.image.index.v1+json"
    upstream = await mirror.upstream(index_key, "application/vnd.oci.image.index.v1+json")
    assert await mirror.body(index_key) == upstream
    for endpoint in (*API_ENDPOINTS, packages_endpoint("arm64_tahoe")):
        assert await mirror.body(f"api/{endpoint}") == await mirror.upstream(f"api/{endpoint}")
    hf_raw = orjson.loads(await mirror.body("bottles_hash.json"))
    entry = hf_raw["bottles"]["jq-1.7.1_1-arm64_tahoe"]
    catalog = parse_catalog(await mirror.upstream("api/formula.json"))
    jq = next(f for f in catalog.formulae if f.name == "jq")
    jq_blob = blob_key("jq", next(f.sha256 for f in jq.files if f.tag == "arm64_tahoe"))
    assert await mirror.body(jq_blob) == await mirror.body(entry["s3_key"])


async def test_portable_ruby_is_mirrored_for_both_architectures(mirror: Mirror) -> None:
    """portable Ruby's arm64 and Intel bottles land at the blob keys vendor-install asks
    for, with the right bytes; its Linux bottles are not fetched for macOS targets."""
    await mirror.sync()
    stored = {o.key async for o in mirror.app.store.list_objects("v2/homebrew/core/portable-ruby/")}
    by_tag = {b.tag: sha for sha, b in mirror.emu.portable_ruby_blobs().items()}
    for tag in ("arm64_big_sur", "catalina"):
        key = f"v2/homebrew/core/portable-ruby/blobs/sha256:{by_tag[tag]}"
        assert key in stored
        assert hashlib.sha256(await mirror.body(key)).hexdigest() == by_tag[tag]
    assert f"v2/homebrew/core/portable-ruby/blobs/sha256:{by_tag['x86_64_linux']}" not in stored
    assert f"v2/homebrew/core/portable-ruby/manifests/{RUBY}" in stored


async def test_second_publish_asks_the_upstream_for_nothing(mirror: Mirror) -> None:
    """A mirror that is up to date costs one listing: no image index is fetched again."""
    await mirror.sync()
    mirror.emu.reset_stats()
    report = await mirror.sync(job_id="again")
    assert report.published is not None
    assert report.published.indexes == report.published.blobs == 0
    assert report.published.current >= 9
    assert sum(mirror.emu.manifest_requests(n) for n in ("jq", "openssl@3", "xz")) == 0


async def test_api_kept_when_the_sync_had_failures(mirror: Mirror) -> None:
    """A sync with a failed bottle publishes no API files, and a later clean sync does;
    the previous set stays in place until then."""
    jq = next(e for e in mirror.emu.catalog.formulae if e["name"] == "jq")
    sha = jq["bottle"]["stable"]["files"]["arm64_tahoe"]["sha256"]
    mirror.emu.set_faults(sha, [Fault("corrupt")])
    report = await mirror.sync()
    assert report.failed
    assert report.published is not None
    assert report.published.api.startswith("kept:")
    assert await mirror.app.store.get("api/formula.jws.json") is None
    mirror.emu.clear_faults()
    report = await mirror.sync(job_id="clean")
    assert report.complete
    assert report.published is not None
    assert report.published.api == "published"


async def test_index_that_does_not_describe_the_bottle_is_not_published(
    bucket_name: str,
) -> None:
    """A version whose image index is missing upstream is a publication problem; its
    bottles get no blob key and the API files are kept back."""
    async with Emulator(sample_catalog()) as emu:
        emu.hide_manifest("wget")
        settings = make_settings(bucket_name, emu.api_url, platforms=("arm64_tahoe",))
        async with open_app(settings) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            report = await run_job(app, Job("t", DATE), route="test")
            assert report.complete
            assert report.published is not None
            problems = report.published.every_problem
            assert [p.key for p in problems] == ["v2/homebrew/core/wget/manifests/1.25.0-1"]
            assert "no image index" in problems[0].error
            assert report.published.api.startswith("kept:")
            keys = {o.key async for o in app.store.list_objects("v2/homebrew/core/wget/")}
            assert keys == set()


async def _run_check(front: Front, *args: str, env: dict[str, str] | None = None) -> Any:
    return await run_cli(
        "check-client", "--base", front.url, "--portable-ruby", RUBY, "--json", *args, env=env
    )


async def test_check_client_reports_each_kind_of_miss_with_exit_1(
    mirror: Mirror, front: Front
) -> None:
    """A missing blob, a tampered image index and a missing API file each show up as a
    miss, and the command exits 1; the intact mirror exits 0."""
    await mirror.sync()
    ok = await _run_check(front, "--target", "arm64_sonoma")
    assert ok.code == 0, ok.stderr[-2000:]
    assert ok.json()["complete"] is True
    assert ok.json()["targets"][0]["coverage_percent"] == 100.0

    s3, bucket = mirror.app.s3, mirror.app.settings.bucket
    catalog = parse_catalog(await mirror.upstream("api/formula.json"))
    by_name = {f.name: f for f in catalog.formulae}
    jq_blob = blob_key("jq", next(f.sha256 for f in by_name["jq"].files if f.tag == "arm64_sonoma"))
    await s3.delete_object(Bucket=bucket, Key=jq_blob)
    xz_index = "v2/homebrew/core/xz/manifests/5.8.1"
    tampered = (await mirror.body(xz_index)).replace(b"sh.brew.bottle.digest", b"sh.brew.x")
    await s3.put_object(Bucket=bucket, Key=xz_index, Body=tampered)
    await s3.delete_object(Bucket=bucket, Key="api/cask.jws.json")

    result = await _run_check(front, "--target", "arm64_sonoma")
    assert result.code == 1
    body = result.json()["targets"][0]
    misses = {m["what"]: m for m in body["misses"]}
    assert set(misses) == {"jq", "xz", "cask.jws.json"}
    assert misses["jq"]["reason"] == "HTTP 403"  # missing: without ListBucket, S3 says 403
    assert "no descriptor" in misses["xz"]["reason"]
    assert body["installable"] == body["with_bottle"] - 2


async def test_check_client_bad_usage_exits_2(front: Front) -> None:
    """A target that is no machine, or no base URL, is a usage error (exit 2)."""
    bad = await run_cli("check-client", "--target", "arm64_catalina", "--base", front.url)
    assert bad.code == 2
    assert b"arm64_catalina" in bad.stderr
    no_base = await run_cli("check-client", "--target", "arm64_tahoe")
    assert no_base.code == 2
    assert b"--base" in no_base.stderr


async def test_check_client_sends_the_reader_token_a_restricted_mirror_asks_for(
    mirror: Mirror,
) -> None:
    """Behind the reader-token function (mirror_token_sha256), check-client with
    MIRRORD_MIRROR_TOKEN walks the mirror as a brew client with the token does; without
    it, or with a wrong one, every request is refused; the token is never printed."""
    await mirror.sync()
    token = "team-reader-7f3a"
    hashes = (hashlib.sha256(token.encode()).hexdigest(),)
    s3 = boto3.client("s3")
    with bucket_front(s3, mirror.app.settings.bucket, token_sha256=hashes) as guarded:
        ok = await _run_check(
            guarded, "--target", "arm64_sonoma", env={"MIRRORD_MIRROR_TOKEN": token}
        )
        assert ok.code == 0, ok.stderr[-2000:]
        assert ok.json()["targets"][0]["coverage_percent"] == 100.0
        assert token.encode() not in ok.stdout + ok.stderr
        for env in ({}, {"MIRRORD_MIRROR_TOKEN": "not-the-token"}):
            refused = await _run_check(guarded, "--target", "arm64_sonoma", env=env)
            assert refused.code == 1
            misses = refused.json()["targets"][0]["misses"]
            assert misses
            assert {m["reason"] for m in misses} == {"HTTP 403"}, misses
    bad = await _run_check(guarded, "--target", "arm64_sonoma", env={"MIRRORD_MIRROR_TOKEN": "a b"})
    assert bad.code == 2
    assert b"MIRRORD_MIRROR_TOKEN" in bad.stderr
    assert b"a b" not in bad.stderr


def test_descriptor_problem_names_what_is_wrong() -> None:
    """The descriptor must match digest and ref.name and carry sh.brew.tab."""
    sha = "a" * 64
    notes = {
        "sh.brew.bottle.digest": sha,
        "org.opencontainers.image.ref.name": "1.0.arm64_tahoe.1",
        "sh.brew.tab": "{}",
    }
    index = {"manifests": [{"annotations": notes}]}
    assert descriptor_problem(index, sha, "1.0.arm64_tahoe.1") is None
    assert "no descriptor" in str(descriptor_problem(index, sha, "1.0.arm64_tahoe"))
    assert "no descriptor" in str(descriptor_problem(index, "b" * 64, "1.0.arm64_tahoe.1"))
    no_tab = {"manifests": [{"annotations": {**notes, "sh.brew.tab": ""}}]}
    assert "sh.brew.tab" in str(descriptor_problem(no_tab, sha, "1.0.arm64_tahoe.1"))
    assert "manifests" in str(descriptor_problem({}, sha, "x"))


def test_jws_payload_rejects_malformed_files_naming_the_field() -> None:
    """A JWS file whose payload is not a JSON string is refused with the file's name."""
    good = orjson.dumps({"payload": '{"a": 1}', "signatures": []})
    assert jws_payload(good, "x.jws.json") == {"a": 1}
    for raw, field in (
        (b"nope", "not JSON"),
        (orjson.dumps({"payload": {"a": 1}, "signatures": []}), "payload"),
        (orjson.dumps({"payload": "{}"}), "signatures"),
        (orjson.dumps({"payload": "{", "signatures": []}), "payload is not JSON"),
    ):
        with pytest.raises(InputError, match=field):
            jws_payload(raw, "x.jws.json")


def test_api_gaps_finds_bottles_the_mirror_lacks() -> None:
    """The API files are held back when they name a bottle the hash file does not have."""
    cat = catalog_from_entries(
        [
            {
                "name": "jq",
                "versions": {"stable": "1.7"},
                "bottle": {
                    "stable": {
                        "rebuild": 0,
                        "files": {
                            "arm64_sonoma": {"url": "x", "sha256": "0" * 64},
                            "sonoma": {"url": "x", "sha256": "1" * 64},
                        },
                    }
                },
            }
        ]
    )
    raw = orjson.dumps(cat.formulae).replace(b"{registry}", b"https://ghcr.io")
    files = {"formula.jws.json": orjson.dumps({"payload": raw.decode(), "signatures": []})}
    shas = [f["sha256"] for f in cat.formulae[0]["bottle"]["stable"]["files"].values()]
    entry = HashEntry(shas[0], DATE, 1, "k")
    assert api_gaps(files, ["arm64_tahoe"], HashFile({"a": entry}).by_sha256()) == []
    gaps = api_gaps(files, ["arm64_tahoe", "sonoma"], HashFile({"a": entry}).by_sha256())
    assert gaps == ["jq-1.7-sonoma (formula.jws.json)"]


def test_brew_settings_are_parsed_and_bad_ones_named() -> None:
    """The brew mirror's settings: versions or none, a boolean, URLs; a bad value names
    its variable; the API base defaults to formula.json's folder."""
    base = {"MIRRORD_BUCKET": "b-1"}
    s = from_env({**base, "MIRRORD_PORTABLE_RUBY": "none", "MIRRORD_BREW_MIRROR": "false"})
    assert s.portable_ruby == ()
    assert s.brew_mirror is False
    assert s.api_base == "https://formulae.brew.sh/api"
    s = from_env({**base, "MIRRORD_PORTABLE_RUBY": "4.0.7_1, 3.4.7"})
    assert s.portable_ruby == ("4.0.7_1", "3.4.7")
    for name, value in (
        ("MIRRORD_PORTABLE_RUBY", "4.0/../x"),
        ("MIRRORD_MIRROR_URL", "mirror.example"),
        ("MIRRORD_BREW_API_URL", "ftp://x"),
        ("MIRRORD_BREW_MIRROR", "maybe"),
    ):
        with pytest.raises(SettingsError, match=name):
            from_env({**base, name: value})


async def test_new_rebuild_gets_its_own_index_and_the_old_one_stays(bucket_name: str) -> None:
    """A formula whose rebuild changes is published under its new ref; the previous
    version's index and blob stay for clients that still hold the old API files."""
    entries = orjson.loads(
        resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes()
    )
    jq = next(e for e in entries if e["name"] == "jq")
    jq["bottle"]["stable"]["rebuild"] = 1
    for spec in jq["bottle"]["stable"]["files"].values():
        spec["sha256"] = "f" * 64  # a new bottle: new bytes, generated from another seed
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    for catalog in (sample_catalog(), catalog_from_entries(entries, seed=1)):
        async with Emulator(catalog) as emu:
            settings = make_settings(bucket_name, emu.api_url, platforms=("arm64_tahoe",))
            async with open_app(settings) as app:
                report = await run_job(app, Job("t", DATE), route="test")
                assert report.published is not None
                assert report.published.every_problem == []
                keys = {o.key async for o in app.store.list_objects("v2/homebrew/core/jq/")}
    assert sorted(k for k in keys if "/manifests/" in k) == [
        "v2/homebrew/core/jq/manifests/1.7.1_1",
        "v2/homebrew/core/jq/manifests/1.7.1_1-1",
    ]
    assert sum("/blobs/" in k for k in keys) == 2
