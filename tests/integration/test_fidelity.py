"""Fidelity to the real upstream (issue 13 items 1-3): brew 6's packages files in the
shape formulae.brew.sh generates them, API files newer than the formula.json they came
with, and portable Ruby followed as upstream moves on. Real peers throughout: the
emulator over loopback HTTP, the moto server, a CloudFront stand-in for check-client, a
subprocess for the CLI and a Slack stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import boto3
import orjson
import pytest
from conftest import DATE, MakeWorld, Receiver, make_settings, run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mirrord_dev.emulator import (
    Emulator,
    EmulatorCatalog,
    Fault,
    catalog_from_entries,
    packages_payload,
    sample_catalog,
)
from mirrord_dev.emulator.content import SAMPLE_LARGE, jws
from mirrord_dev.local import Front, bucket_front

from mirrord.app import App, open_app
from mirrord.core.brew import (
    api_gaps,
    newest_rubies,
    packages_endpoint,
    packages_formulae,
    ruby_version_key,
)
from mirrord.core.catalog import parse_catalog, select_bottles, select_file
from mirrord.core.errors import InputError, SettingsError
from mirrord.core.hashfile import parse
from mirrord.core.jobs import Job
from mirrord.core.models import Formula
from mirrord.core.oci import blob_key, index_key
from mirrord.core.report import Report
from mirrord.core.settings import from_env
from mirrord.services.check import check_client
from mirrord.services.job import run_job
from mirrord.services.publish import publication_lag

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
TAHOE = packages_endpoint("arm64_tahoe")


def sample_entries() -> list[dict[str, Any]]:
    raw = resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes()
    entries: list[dict[str, Any]] = orjson.loads(raw)
    return entries


def served(entries: list[dict[str, Any]], rebuilt: tuple[str, ...] = ()) -> EmulatorCatalog:
    """As ``sample_catalog`` serves them: an entry left as it was keeps its bytes; the
    formulae ``rebuilt`` get bottles of other bytes (the emulator's bytes follow name,
    tag and size only)."""

    def size(name: str, tag: str) -> int:
        if (name, tag) == SAMPLE_LARGE:
            return 20 * 2**20
        return 200_001 if name in rebuilt else 200_000

    return catalog_from_entries(entries, size_of=size)


# --- item 1: the packages file as generate-internal-api writes it -----------------------


def brew_packages(formulae: dict[str, Any], tag: str = "arm64_tahoe") -> dict[str, Any]:
    """A packages.<tag> document as brew's generate-internal-api writes it (its keys,
    in its order), around formula hashes as FormulaStruct#serialize writes them."""
    return {
        "metadata": {"homebrew_version": "6.0.0", "bottle_tag": tag, "generated_at": 1},
        "formulae": formulae,
        "casks": {},
        "formula_aliases": {},
        "formula_renames": {},
        "cask_renames": {},
        "formula_tap_git_head": "0" * 40,
        "cask_tap_git_head": "0" * 40,
        "formula_tap_migrations": {},
        "cask_tap_migrations": {},
    }


BREW_FORMULAE = {
    # Its own tag's bottle: no bottle_tag; a non-default cellar is named.
    "jq": {"stable_version": "1.7.1", "revision": 1, "bottle_cellar": ":any", "bottle_checksum": A},
    # An older release's bottle (brew's fallback), rebuilt once.
    "wget": {
        "stable_version": "1.25.0",
        "bottle_rebuild": 1,
        "bottle_tag": ":arm64_sequoia",
        "bottle_cellar": "/opt/homebrew/Cellar",
        "bottle_checksum": B,
    },
    # `all`, on the default cellar: no bottle_cellar.
    "ca-certificates": {"stable_version": "2025-05-20", "bottle_tag": ":all", "bottle_checksum": C},
    # No bottle for this machine: no bottle field at all.
    "abi-dumper": {"desc": "x", "stable_version": "1.2"},
}


def test_packages_formulae_reads_brews_flat_fields() -> None:
    """stable_version, revision and bottle_rebuild (0 when left out), the one bottle as
    bottle_checksum under bottle_tag (a symbol, ":tag") or the file's own tag; the url
    is the one brew builds from its domain, the image and the checksum."""
    formulae, rejected = packages_formulae(brew_packages(BREW_FORMULAE), TAHOE)
    assert rejected == []
    by_name = {f.name: f for f in formulae}
    jq, wget = by_name["jq"], by_name["wget"]
    assert (jq.pkg_version, jq.rebuild, [(f.tag, f.sha256) for f in jq.files]) == (
        "1.7.1_1",
        0,
        [("arm64_tahoe", A)],
    )
    assert jq.files[0].url == f"https://ghcr.io/v2/homebrew/core/jq/blobs/sha256:{A}"
    assert (wget.pkg_version, wget.rebuild, wget.files[0].tag) == ("1.25.0", 1, "arm64_sequoia")
    assert by_name["ca-certificates"].files[0].tag == "all"
    assert by_name["abi-dumper"] == Formula("abi-dumper", "1.2")


def test_a_packages_file_naming_a_bottle_the_mirror_lacks_keeps_the_api_back() -> None:
    """The check that published API files never send brew to a missing bottle reads the
    real packages files: before, it looked for bottle.stable.files, which they do not
    have, and found nothing to check on real data."""
    files = {TAHOE: jws(orjson.dumps(brew_packages(BREW_FORMULAE)))}
    stored = {sha: None for sha in (A, C)}
    assert api_gaps(files, ["arm64_tahoe"], stored) == [  # type: ignore[arg-type]
        f"wget-1.25.0-arm64_sequoia ({TAHOE})"
    ]
    assert api_gaps(files, ["arm64_tahoe"], {**stored, B: None}) == []  # type: ignore[arg-type]


def test_malformed_packages_entries_are_refused_naming_the_field() -> None:
    """Bad entries are rejected one by one with the field brew writes; a file that is
    another machine's, or has no formulae object, is refused whole."""
    bad = {
        "a": {"stable_version": "1", "bottle_checksum": "nothex"},
        "b": {"stable_version": "1", "bottle_tag": ":../x", "bottle_checksum": A},
        "c": {"stable_version": "../1"},
        "d": {"stable_version": "1", "revision": -1},
        "e": {"stable_version": "1", "bottle_rebuild": True},
        "f": [],
        "g h": {"stable_version": "1"},
    }
    formulae, rejected = packages_formulae(brew_packages(bad), TAHOE)
    assert formulae == []
    why = {r.name: r.reason for r in rejected}
    assert "bottle_checksum" in why["a"]
    assert "bottle_tag" in why["b"]
    assert "stable_version" in why["c"]
    assert "revision" in why["d"]
    assert "bottle_rebuild" in why["e"]
    assert "object" in why["f"]
    assert "name" in why["g h"]
    with pytest.raises(InputError, match=r"metadata\.bottle_tag"):
        packages_formulae(brew_packages({}, tag="sonoma"), TAHOE)
    with pytest.raises(InputError, match="formulae"):
        packages_formulae({"formulae": []}, TAHOE)


FIELD = st.none() | st.booleans() | st.integers(-2, 2**65) | st.text(max_size=6) | st.just(A)
ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "stable_version": st.just("1.0") | FIELD,
        "revision": FIELD,
        "bottle_rebuild": FIELD,
        "bottle_tag": st.sampled_from([":all", ":sonoma", "arm64_tahoe", ":"]) | FIELD,
        "bottle_cellar": FIELD,
        "bottle_checksum": st.just(A) | FIELD,
    },
) | st.lists(FIELD, max_size=2)
DOCUMENT = (
    st.fixed_dictionaries(
        {"formulae": st.dictionaries(st.text(max_size=6) | st.just("jq"), ENTRY, max_size=4)},
        optional={"metadata": st.just({"bottle_tag": "arm64_tahoe"}) | FIELD},
    )
    | FIELD
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENT)
@example(
    document={"formulae": {"jq": {"stable_version": "1", "bottle_checksum": A, "bottle_tag": 7}}}
)
def test_packages_formulae_is_total_over_brews_shape(document: Any) -> None:
    """Any document near brew's shape: formulae with at most one valid bottle, and
    rejected entries, or InputError for the whole; never another exception."""
    try:
        formulae, rejected = packages_formulae(document, TAHOE)
    except InputError:
        return
    assert all(isinstance(f, Formula) and len(f.files) <= 1 for f in formulae)
    assert all(isinstance(r, InputError) for r in rejected)


@pytest.mark.parametrize(
    "tag", ["arm64_tahoe", "tahoe", "arm64_sequoia", "sonoma", "arm64_big_sur", "x86_64_linux"]
)
def test_emulator_packages_name_the_bottle_brew_picks_from_formula_json(tag: str) -> None:
    """What the emulator's packages.<tag> names, read as brew 6 reads it, is the bottle
    brew's rule picks from formula.json for that machine, for every sample formula."""
    entries = sample_catalog().formulae
    document = packages_payload(entries, tag)
    assert document["metadata"]["bottle_tag"] == tag
    from_packages, rejected = packages_formulae(document, packages_endpoint(tag))
    assert rejected == []
    raw = orjson.dumps(entries).replace(b"{registry}", b"https://ghcr.io")
    picked = {
        f.name: (f.pkg_version, f.rebuild, file.tag, file.sha256)
        for f in parse_catalog(raw).formulae
        if (file := select_file(f, tag)) is not None
    }
    assert {
        f.name: (f.pkg_version, f.rebuild, f.files[0].tag, f.files[0].sha256)
        for f in from_packages
        if f.files
    } == picked


# --- the mirror, end to end -------------------------------------------------------------


@dataclass
class Mirror:
    app: App
    emu: Emulator

    async def sync(self, job_id: str = "t") -> Report:
        return await run_job(self.app, Job(job_id, DATE), route="test")

    async def keys(self, prefix: str = "") -> set[str]:
        return {o.key async for o in self.app.store.list_objects(prefix)}

    async def hash_file(self) -> Any:
        found = await self.app.store.get(self.app.settings.hash_key)
        assert found is not None
        return parse(found[0])


TARGETS = ("arm64_tahoe", "sonoma")


def newer_upstream() -> EmulatorCatalog:
    """The sample catalog as republished minutes later: jq at a new version (new
    bottles) and a formula that did not exist; every other bottle unchanged."""
    entries = sample_entries()
    jq = next(e for e in entries if e["name"] == "jq")
    jq["versions"]["stable"], jq["revision"] = "1.8.0", 0
    newtool = {
        **jq,
        "name": "newtool",
        "full_name": "newtool",
        "versions": {"stable": "0.1", "head": None, "bottle": True},
        "dependencies": [],
    }
    # Bottles of its own (catalog_from_entries shares a blob between equal sha256s).
    newtool["bottle"] = orjson.loads(orjson.dumps(jq["bottle"]))
    for i, spec in enumerate(newtool["bottle"]["stable"]["files"].values()):
        spec["sha256"] = f"{i:064x}"
    entries.append(newtool)
    return served(entries, rebuilt=("jq",))


@pytest.fixture
async def skewed(make_world: MakeWorld) -> Mirror:
    """formula.json as it was read; the API files, as formulae.brew.sh republished them."""
    made = await make_world(emulator={"api_catalog": newer_upstream()}, platforms=TARGETS)
    return Mirror(made.app, made.emu)


@pytest.fixture
def front(bucket_name: str) -> Iterator[Front]:
    """CloudFront+OAC stand-in over the moto bucket (signed GETs, viewer headers dropped)."""
    with bucket_front(boto3.client("s3"), bucket_name) as served_front:
        yield served_front


def _sha(catalog: EmulatorCatalog, name: str, tag: str) -> str:
    entry = next(e for e in catalog.formulae if e["name"] == name)
    sha: str = entry["bottle"]["stable"]["files"][tag]["sha256"]
    return sha


async def test_api_newer_than_formula_json_is_fetched_recorded_and_published(
    skewed: Mirror, front: Front
) -> None:
    """Bottles only the API files name are fetched by digest from their image, checked,
    recorded in the hash file under the job's date and published with their image
    index; then the API files go out and check-client finds every bottle they name."""
    newer = skewed.emu.api_catalog
    assert newer is not None
    report = await skewed.sync()
    assert report.complete
    assert report.published is not None
    assert report.published.api == "published", report.published
    assert report.published.fetched == 4  # jq 1.8.0 and newtool, on each target
    hf = await skewed.hash_file()
    for name, version in (("jq", "1.8.0"), ("newtool", "0.1")):
        for tag in TARGETS:
            entry = hf.bottles[f"{name}-{version}-{tag}"]
            assert entry.sha256 == _sha(newer, name, tag)
            assert entry.s3_key == f"{DATE}/{name}-{version}.{tag}.bottle.tar.gz"
            assert entry.download_date == DATE
            assert entry.file_size == (200_001 if name == "jq" else 200_000)
    assert hf.bottles["jq-1.7.1_1-arm64_tahoe"].sha256 == _sha(
        sample_catalog(), "jq", "arm64_tahoe"
    )
    keys = await skewed.keys()
    assert index_key("jq", "1.8.0") in keys
    assert blob_key("newtool", _sha(newer, "newtool", "sonoma")) in keys
    skewed.emu.reset_stats()
    for target in TARGETS:
        coverage = await check_client(skewed.app.http, front.url, target, ruby_versions=())
        assert coverage.misses == (), coverage.misses
        assert coverage.installable == coverage.with_bottle >= 10
    assert skewed.emu.total_requests() == 0


async def test_api_bottle_that_cannot_be_fetched_keeps_the_api_back(skewed: Mirror) -> None:
    """A bottle the API files name that cannot be fetched (corrupt upstream) is never
    recorded or stored, and the API files are not published; the ones that could be
    fetched are kept and recorded."""
    newer = skewed.emu.api_catalog
    assert newer is not None
    bad = _sha(newer, "jq", "arm64_tahoe")
    skewed.emu.set_faults(bad, [Fault("corrupt")])
    report = await skewed.sync()
    assert report.complete  # the catalog's bottles all synced
    assert report.published is not None
    assert report.published.api.startswith("kept: the API names"), report.published
    assert "jq-1.8.0-arm64_tahoe" in report.published.api
    problems = {p.key: p.error for p in report.published.every_problem}
    assert "sha256 mismatch" in problems["jq-1.8.0-arm64_tahoe"]
    hf = await skewed.hash_file()
    assert "jq-1.8.0-arm64_tahoe" not in hf.bottles
    assert "newtool-0.1-arm64_tahoe" in hf.bottles
    keys = await skewed.keys()
    assert f"{DATE}/jq-1.8.0.arm64_tahoe.bottle.tar.gz" not in keys
    assert not any(k.startswith("api/") for k in keys)


# --- item 3: portable Ruby follows the registry -----------------------------------------


def test_ruby_versions_compare_as_versions() -> None:
    """4.0.10 > 4.0.9 (not as text), 4.0.7_1 > 4.0.7; tags that are no version are left
    out of the choice."""
    tags = ["4.0.9", "4.0.10", "4.0.7_1", "4.0.7", "3.4.8", "latest", "sha256-x.sig", "4.0.٣"]
    assert newest_rubies(tags) == ["4.0.10", "4.0.9"]
    assert newest_rubies(["4.0.7", "4.0.7_1"]) == ["4.0.7_1", "4.0.7"]
    assert newest_rubies([7, None, "x"]) == []
    key = ruby_version_key
    assert key("4.0.7_1") == ((4, 0, 7), 1)
    assert key("4.0.7-1") is None
    assert key("4.0.7\n") is None


def test_portable_ruby_setting_defaults_to_latest() -> None:
    """Default and ``latest``: the newest two the registry lists; an explicit list and
    none still work; latest mixed with versions is refused, naming the variable."""
    base = {"MIRRORD_BUCKET": "b-1"}
    assert from_env(base).portable_ruby == ("latest",)
    assert from_env({**base, "MIRRORD_PORTABLE_RUBY": " Latest "}).portable_ruby == ("latest",)
    assert from_env({**base, "MIRRORD_PORTABLE_RUBY": "4.0.7_1,4.0.6"}).portable_ruby == (
        "4.0.7_1",
        "4.0.6",
    )
    assert from_env({**base, "MIRRORD_PORTABLE_RUBY": "none"}).portable_ruby == ()
    with pytest.raises(SettingsError, match=r"MIRRORD_PORTABLE_RUBY: latest stands alone"):
        from_env({**base, "MIRRORD_PORTABLE_RUBY": "latest,4.0.7"})


RUBIES = ("4.0.7", "4.0.10", "4.0.9", "4.0.7_1")


async def test_latest_portable_ruby_is_the_newest_two_the_registry_lists(
    bucket_name: str, front: Front
) -> None:
    """With the default setting the mirror holds the newest two portable Rubies the
    registry's tags/list names (behind its token challenge), lists them in its own
    tags/list, and check-client's default walks exactly those; the enqueuer's lag check
    finds nothing behind."""
    async with Emulator(sample_catalog(), auth="challenge", portable_ruby_versions=RUBIES) as emu:
        settings = make_settings(bucket_name, emu.api_url, platforms=("arm64_tahoe",))
        async with open_app(settings) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            report = await run_job(app, Job("t", DATE), route="test")
            assert report.complete, report.failed
            assert report.published is not None
            assert report.published.ruby_versions == ["4.0.10", "4.0.9"]
            assert report.published.api == "published"
            keys = {o.key async for o in app.store.list_objects("v2/homebrew/core/portable-ruby/")}
            assert {k for k in keys if "/manifests/" in k} == {
                index_key("portable-ruby", "4.0.10"),
                index_key("portable-ruby", "4.0.9"),
            }
            found = await app.store.get("v2/homebrew/core/portable-ruby/tags/list")
            assert found is not None
            assert orjson.loads(found[0]) == {
                "name": "homebrew/core/portable-ruby",
                "tags": ["4.0.10", "4.0.9"],
            }
            async with app.http.get(emu.api_url) as response:
                catalog = parse_catalog(await response.read())
            bottles = select_bottles(catalog.formulae, ("arm64_tahoe",)).bottles
            lag = await publication_lag(
                app.store,
                app.settings.status_key,
                bottles,
                await _hash(app),
                (f.name for f in catalog.formulae),
                ("latest",),
            )
            assert lag is None
            await app.s3.delete_object(
                Bucket=bucket_name, Key="v2/homebrew/core/portable-ruby/tags/list"
            )
            lag = await publication_lag(
                app.store,
                app.settings.status_key,
                bottles,
                await _hash(app),
                (f.name for f in catalog.formulae),
                ("latest",),
            )
            assert lag is not None
            assert "portable-ruby/tags/list" in lag
            await run_job(app, Job("again", DATE), route="test")  # writes it back
    checked = await run_cli(
        "check-client", "--base", front.url, "--target", "arm64_tahoe", "--json"
    )
    assert checked.code == 0, checked.stderr[-2000:]
    body = checked.json()["targets"][0]
    assert (body["portable_ruby"], body["portable_ruby_expected"]) == (2, 2)
    assert body["misses"] == []


async def _hash(app: App) -> Any:
    found = await app.store.get(app.settings.hash_key)
    assert found is not None
    return parse(found[0])


async def test_missing_portable_ruby_fails_the_job_but_not_the_api(
    bucket_name: str, receiver: Receiver
) -> None:
    """A pinned portable Ruby the registry no longer has: the sync exits 1 and Slack
    names it, and the API files are published all the same (they were held back, and
    every mirror froze at brew's last upgrade). The default, latest, then takes the
    registry's newest."""
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    async with Emulator(sample_catalog(), portable_ruby_versions=("4.0.8",)) as emu:
        env = {
            "MIRRORD_BUCKET": bucket_name,
            "MIRRORD_API_URL": emu.api_url,
            "MIRRORD_PLATFORMS": "arm64_tahoe",
            "MIRRORD_SLACK_WEBHOOK_URL": receiver.url,
        }
        pinned = await run_cli(
            "sync", "--json", "--date", DATE, env={**env, "MIRRORD_PORTABLE_RUBY": "4.0.7_1"}
        )
        assert pinned.code == 1, pinned.stderr[-2000:]
        out = pinned.json()
        assert [f["key"] for f in out["failed"]] == ["portable-ruby-4.0.7_1"]
        assert "no portable Ruby of this version" in out["failed"][0]["error"]
        assert out["published"]["api"] == "published"
        assert receiver.bodies
        assert "portable-ruby-4.0.7_1" in orjson.dumps(receiver.bodies[-1]).decode()
        latest = await run_cli("sync", "--json", "--date", DATE, env=env)
        assert latest.code == 0, latest.stderr[-2000:]
        assert latest.json()["published"]["portable_ruby_versions"] == ["4.0.8"]
    s3 = boto3.client("s3")
    assert s3.get_object(Bucket=bucket_name, Key="api/formula.jws.json")["ContentLength"] > 0
    ruby = s3.list_objects_v2(
        Bucket=bucket_name, Prefix="v2/homebrew/core/portable-ruby/manifests/"
    )
    assert [o["Key"] for o in ruby["Contents"]] == [index_key("portable-ruby", "4.0.8")]


async def test_check_client_latest_needs_the_mirrors_own_tag_list(
    bucket_name: str, front: Front
) -> None:
    """check-client's default asks the mirror which portable Rubies it holds (its
    tags/list, as a registry answers): a mirror without one is a miss, not a pass."""
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    async with open_app(make_settings(bucket_name)) as app:
        coverage = await check_client(app.http, front.url, "arm64_tahoe", ruby_versions=("latest",))
    misses = {m.what: m.reason for m in coverage.misses}
    assert misses["portable-ruby"] == "HTTP 403"  # missing: without ListBucket, S3 says 403
    assert (coverage.portable_ruby, coverage.portable_ruby_expected) == (0, 0)
