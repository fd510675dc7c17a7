"""The brew-6 publication against hostile upstreams (issue 12): API files of any shape,
catalog entries whose urls name another image or digest, formulae that would share one
image, a bug inside a job. Real peers throughout: the emulator and a small hostile
registry over loopback HTTP, the moto server, a subprocess for the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import boto3
import orjson
import pytest
from aiohttp import web
from conftest import DATE, ROOT, Receiver, loopback, make_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mirrord_dev.emulator import Emulator, catalog_from_entries, sample_catalog

from mirrord.adapters.registry import INDEX_MEDIA_TYPE
from mirrord.app import open_app, run_job
from mirrord.core.brew import (
    api_formulae,
    api_gaps,
    packages_formulae,
    portable_ruby_formula,
    versions,
)
from mirrord.core.errors import InputError
from mirrord.core.jobs import Job
from mirrord.core.models import Bottle, Formula, HashEntry
from mirrord.core.oci import OCI_PREFIX, blob_key, image_name, index_key, manifest_ref

SHA = "ab" * 32
TAGS = ["arm64_tahoe", "sonoma", "all", "arm64_sequoia"]

# --- item 2: parsing the API files is total ---------------------------------------------

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from(["jq", "openssl@3", "libxml++", "a@", "Foo", "a@..", "x"]) | st.text(
    max_size=6
)


def shaped(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly an object with these fields (each of them a right or a wrong value),
    sometimes any JSON value at all: the shapes one level off are where a parser breaks."""
    return st.fixed_dictionaries(required, optional=optional) | JSON


FILE = shaped(
    {},
    {
        "sha256": st.just(SHA) | JSON,
        "url": st.just(f"https://ghcr.io/v2/homebrew/core/jq/blobs/sha256:{SHA}") | JSON,
        "cellar": JSON,
    },
)
STABLE = shaped(
    {},
    {
        "files": st.dictionaries(st.sampled_from(TAGS) | st.text(max_size=5), FILE, max_size=3)
        | JSON,
        "root_url": st.just("https://ghcr.io/v2/homebrew/core") | JSON,
        "rebuild": st.integers(0, 2) | JSON,
    },
)
ENTRY = shaped(
    {},
    {
        "versions": shaped({"stable": st.sampled_from(["1.0", "2_1"]) | JSON}, {}),
        "revision": st.integers(0, 2) | JSON,
        "bottle": shaped({}, {"stable": STABLE}),
    },
)
PACKAGES = shaped({"formulae": st.dictionaries(NAMES, ENTRY, max_size=3)}, {})
CATALOG = (
    st.lists(ENTRY.map(lambda e: e if not isinstance(e, dict) else {"name": "jq", **e}), max_size=3)
    | JSON
)


def jws(payload: Any) -> bytes:
    return orjson.dumps({"payload": orjson.dumps(payload).decode(), "signatures": []})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=PACKAGES)
@example(document={"formulae": {"jq": {"bottle": None}}})
@example(document={"formulae": {"jq": {"bottle": {"stable": []}}}})
@example(document={"formulae": {"jq": {"bottle": {"stable": {"files": {}, "root_url": 7}}}}})
def test_packages_formulae_is_total_over_any_json(document: Any) -> None:
    """Any JSON document: formulae and rejected entries, or an InputError for the whole;
    never another exception (``"bottle": null`` raised AttributeError and killed the
    daemon a second after its job arrived)."""
    try:
        formulae, rejected = packages_formulae(document, "internal/packages.arm64_tahoe.jws.json")
    except InputError:
        return
    assert all(isinstance(f, Formula) for f in formulae)
    assert all(isinstance(r, InputError) for r in rejected)


ENDPOINTS = ["formula.jws.json", "internal/packages.arm64_tahoe.jws.json", "cask.jws.json"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=30)
    | JSON.map(orjson.dumps)
    | PACKAGES.map(jws)
    | CATALOG.map(jws)
    | JSON.map(jws),
)
@example(endpoint=ENDPOINTS[1], raw=jws({"formulae": {"jq": {"bottle": None}}}))
@example(endpoint=ENDPOINTS[0], raw=jws([{"name": "jq", "versions": None}]))
def test_api_formulae_and_api_gaps_are_total_over_any_file(endpoint: str, raw: bytes) -> None:
    """Any bytes as any API file: a result or an InputError, from api_formulae and from
    api_gaps (which decides whether the API files are published)."""
    try:
        found = api_formulae(endpoint, raw)
    except InputError:
        found = None
    assert found is None or all(isinstance(f, Formula) for f in found)
    stored = {SHA: HashEntry(SHA, DATE, 1, f"{DATE}/jq-1.0.arm64_tahoe.bottle.tar.gz")}
    try:
        gaps = api_gaps({endpoint: raw}, ["arm64_tahoe", "sonoma"], stored)
    except InputError:
        return
    assert all(isinstance(g, str) for g in gaps)


@pytest.mark.parametrize("depth", [300, 1100])
def test_deeply_nested_formula_api_file_is_an_input_error(depth: int) -> None:
    """A formula.jws.json nested deeper than orjson writes (255) or msgspec reads (~1,000)
    is refused as input; it raised TypeError or RecursionError."""
    nested = "[" * depth + "]" * depth
    payload = (
        '[{"name": "jq", "versions": {"stable": "1"}, "bottle": {"stable": {"files": '
        f'{{"all": {{"url": "https://x/y", "sha256": "{SHA}", "cellar": {nested}}}}}}}}}}}]'
    )
    raw = orjson.dumps({"payload": payload, "signatures": []})
    try:
        found = api_formulae("formula.jws.json", raw)
    except InputError:
        return
    assert found is not None
    assert [f.name for f in found] == ["jq"]


# --- item 5: keys from the formula's name and sha256 ------------------------------------


def test_image_names_and_refs_follow_brew() -> None:
    """brew's rule (@ → /, + → x); a name that makes no OCI repository path (an empty,
    "." or ".." segment, upper case) makes none; refs as brew tags image indexes."""
    assert image_name("openssl@3") == "openssl/3"
    assert image_name("libxml++") == "libxmlxx"
    assert image_name("python@3.13") == "python/3.13"
    for bad in ("a@", "a@@b", "a@..", "a..b", "Foo", "-a", "a@.b"):
        assert image_name(bad) is None, bad
    assert manifest_ref("1.7.1_1", 0) == "1.7.1_1"
    assert manifest_ref("1.7.1_1", 2) == "1.7.1_1-2"
    assert manifest_ref("1,2", 0) == "1.2"
    assert index_key("openssl/3", "3.5.0") == "v2/homebrew/core/openssl/3/manifests/3.5.0"
    assert blob_key("jq", SHA) == f"v2/homebrew/core/jq/blobs/sha256:{SHA}"


def _bottle(name: str, sha: str, url: str, version: str = "1.0") -> Bottle:
    return Bottle(name, version, "arm64_tahoe", 0, sha, url)


def test_versions_name_every_key_from_the_formula_and_refuse_shared_images() -> None:
    """The index and blob keys come from the formula's name, version and sha256, never
    from the url (which only says where to GET the index); two formulae whose names make
    one image, or a formula named like portable Ruby, are each refused."""
    other = "cd" * 32
    evil_url = f"https://evil.example/v2/homebrew/core/victim/blobs/sha256:{other}"
    bottles = [
        _bottle("evil", SHA, evil_url),
        _bottle(
            "foo+bar", "1" * 64, f"https://ghcr.io/v2/homebrew/core/fooxbar/blobs/sha256:{'1' * 64}"
        ),
        _bottle(
            "portable-ruby", "2" * 64, f"https://ghcr.io/v2/homebrew/core/x/blobs/sha256:{'2' * 64}"
        ),
        _bottle(
            "Upper", "3" * 64, f"https://ghcr.io/v2/homebrew/core/upper/blobs/sha256:{'3' * 64}"
        ),
    ]
    stored = {b.sha256: HashEntry(b.sha256, DATE, 1, f"{DATE}/{b.filename}") for b in bottles}
    found, refused = versions(bottles, stored, ["evil", "foo+bar", "fooxbar", "portable-ruby"])
    (evil,) = found
    assert evil.url == "https://evil.example/v2/homebrew/core/victim/manifests/1.0"
    assert evil.key == "v2/homebrew/core/evil/manifests/1.0"
    assert evil.blob_keys() == [f"v2/homebrew/core/evil/blobs/sha256:{SHA}"]
    why = {f.key: f.error for f in refused}
    assert set(why) == {"foo+bar", "portable-ruby", "Upper"}
    assert "fooxbar" in why["foo+bar"]
    assert "portable Ruby" in why["portable-ruby"]


def test_portable_ruby_descriptors_that_name_no_sha256_or_tag_are_left_out() -> None:
    """A portable Ruby index is upstream input: a digest that is no sha256 (it names a
    key) or a tag that is no bottle tag is dropped, never turned into a key or a url."""
    notes = [
        ("sha256:" + SHA, "4.0.7_1.arm64_big_sur"),
        ("sha256:../../../api/formula.jws.json", "4.0.7_1.catalina"),
        ("sha256:" + "AB" * 32, "4.0.7_1.catalina"),
        ("sha256:" + "cd" * 32, "4.0.7_1.../x"),
    ]
    index = {
        "manifests": [
            {
                "annotations": {
                    "sh.brew.bottle.digest": d,
                    "org.opencontainers.image.ref.name": r,
                }
            }
            for d, r in notes
        ]
    }
    ruby = portable_ruby_formula(index, "4.0.7_1", "https://ghcr.io")
    assert [(f.tag, f.sha256) for f in ruby.files] == [("arm64_big_sur", SHA)]
    assert ruby.files[0].url == f"https://ghcr.io/v2/homebrew/core/portable-ruby/blobs/sha256:{SHA}"


@dataclass
class Hostile:
    """A registry on another host answering what it is told at any path, blobs as 200."""

    url: str = ""
    formula_json: bytes = b"[]"
    files: dict[str, bytes] = field(default_factory=dict)  # path → body

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/api/formula.json":
            return web.Response(body=self.formula_json, content_type="application/json")
        body = self.files.get(request.path)
        if body is None:
            return web.Response(status=404, text="Not Found")
        kind = INDEX_MEDIA_TYPE if "/manifests/" in request.path else "application/octet-stream"
        return web.Response(body=body, content_type=kind)

    def bottle(self, name: str, stable: str, image: str, digest: str, data: bytes) -> Any:
        """A formula.json entry whose arm64_tahoe bottle url names ``image`` and
        ``digest`` on this host, which serves ``data`` there and an index describing it."""
        sha = hashlib.sha256(data).hexdigest()
        self.files[f"/v2/homebrew/core/{image}/blobs/sha256:{digest}"] = data
        self.files[f"/v2/homebrew/core/{image}/manifests/{stable}"] = orjson.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "annotations": {
                            "sh.brew.bottle.digest": f"sha256:{sha}",
                            "org.opencontainers.image.ref.name": f"{stable}.arm64_tahoe",
                            "sh.brew.tab": "{}",
                        }
                    }
                ],
            }
        )
        url = f"{self.url}/v2/homebrew/core/{image}/blobs/sha256:{digest}"
        return {
            "name": name,
            "versions": {"stable": stable},
            "bottle": {
                "stable": {"rebuild": 0, "files": {"arm64_tahoe": {"url": url, "sha256": sha}}}
            },
        }


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    host = Hostile()
    app = web.Application()
    app.router.add_get("/{path:.*}", host.handle)
    async with loopback(app) as host.url:
        yield host


async def _blob_keys_hash_to_their_names(app: Any) -> list[str]:
    """Every ``…/blobs/sha256:<hex>`` key in the bucket whose bytes hash to another hex."""
    wrong = []
    async for o in app.store.list_objects(OCI_PREFIX):
        _, marker, digest = o.key.partition("/blobs/sha256:")
        if marker:
            body = (await app.store.get(o.key))[0]
            if hashlib.sha256(body).hexdigest() != digest:
                wrong.append(o.key)
    return wrong


async def test_a_url_naming_another_image_or_digest_publishes_under_its_own_name(
    bucket_name: str, hostile: Hostile
) -> None:
    """Two entries on another host: "evil" with a url naming image victim and another
    digest, "evil2" at jq's version with a url naming jq's image. Each is published under
    its own image and sha256; jq's index, published by the run before, stays byte for
    byte GHCR's; every blob key holds bytes that hash to its name."""
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    async with Emulator(sample_catalog()) as emu:
        sample = orjson.loads(
            orjson.dumps(emu.catalog.formulae).replace(b"{registry}", emu.registry_url.encode())
        )
        settings = make_settings(
            bucket_name,
            f"{hostile.url}/api/formula.json",
            platforms=("arm64_tahoe",),
            brew_api_url=f"{emu.registry_url}/api",
        )
        async with open_app(settings) as app:
            hostile.formula_json = orjson.dumps(sample)
            first = await run_job(app, Job("first", DATE), route="test")
            assert first.published is not None
            assert first.published.every_problem == []
            jq_index = index_key("jq", "1.7.1_1")
            upstream = (await app.store.get(jq_index))[0]

            victim_digest = hashlib.sha256(b"the victim's bytes").hexdigest()
            evil = hostile.bottle("evil", "1.0", "victim", victim_digest, b"evil bytes" * 99)
            evil_sha = evil["bottle"]["stable"]["files"]["arm64_tahoe"]["sha256"]
            data2 = b"evil2 bytes" * 99
            evil2 = hostile.bottle(
                "evil2", "1.7.1_1", "jq", hashlib.sha256(data2).hexdigest(), data2
            )
            hostile.formula_json = orjson.dumps([*sample, evil, evil2])
            report = await run_job(app, Job("second", DATE), route="test")

            assert report.complete, report.failed
            assert report.published is not None
            assert report.published.every_problem == [], report.published.every_problem
            keys = {o.key async for o in app.store.list_objects(OCI_PREFIX)}
            assert not any(k.startswith(f"{OCI_PREFIX}victim/") for k in keys)
            assert blob_key("evil", evil_sha) in keys
            assert index_key("evil", "1.0") in keys
            assert index_key("evil2", "1.7.1_1") in keys
            assert (await app.store.get(jq_index))[0] == upstream
            assert await _blob_keys_hash_to_their_names(app) == []


async def test_formulae_sharing_an_image_are_neither_published(bucket_name: str) -> None:
    """foo+bar and fooxbar both make image fooxbar, and a formula named portable-ruby
    would write portable Ruby's keys: none of the three is published, each is reported,
    and the rest of the mirror is published as usual."""
    entries = orjson.loads(
        resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes()
    )
    jq = next(e for e in entries if e["name"] == "jq")
    for name in ("foo+bar", "fooxbar", "portable-ruby"):
        copy = orjson.loads(orjson.dumps(jq))  # its own bottle: the emulator rewrites urls
        entries.append({**copy, "name": name, "versions": {"stable": "1.0"}, "revision": 0})
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    async with Emulator(catalog_from_entries(entries)) as emu:
        settings = make_settings(bucket_name, emu.api_url, platforms=("arm64_tahoe",))
        async with open_app(settings) as app:
            report = await run_job(app, Job("t", DATE), route="test")
            assert report.complete
            assert report.published is not None
            problems = {p.key: p.error for p in report.published.every_problem}
            assert set(problems) == {"foo+bar", "fooxbar", "portable-ruby"}, problems
            assert "fooxbar" in problems["foo+bar"]
            assert "foo+bar" in problems["fooxbar"]
            keys = {o.key async for o in app.store.list_objects(OCI_PREFIX)}
            assert not any(k.startswith(f"{OCI_PREFIX}fooxbar/") for k in keys)
            assert not any(k.startswith(f"{OCI_PREFIX}portable-ruby/manifests/1.0") for k in keys)
            assert index_key("jq", "1.7.1_1") in keys
            assert report.published.indexes >= 9


# --- item 2: a bug inside a job, through the CLI -----------------------------------------

# A pure function that raises stands in for a bug no one has found yet.
BUGGY_CLI = """
import sys
import mirrord.services.publish

def versions(*args, **kwargs):
    raise RuntimeError("boom: a bug we have not found yet")

mirrord.services.publish.versions = versions
from mirrord.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_a_bug_inside_a_job_is_one_line_from_the_cli_and_a_slack_failure(
    bucket_name: str, receiver: Receiver
) -> None:
    """An exception that is no MirrordError inside `mirrord sync`: exit 1, one plain
    line on stderr naming the exception (the rest are JSON log lines, one of them with
    the traceback), and Slack gets a failure saying it is a bug."""
    boto3.client("s3").create_bucket(Bucket=bucket_name)
    async with Emulator(sample_catalog()) as emu:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            BUGGY_CLI,
            "sync",
            "--platform",
            "arm64_tahoe",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "MIRRORD_BUCKET": bucket_name,
                "MIRRORD_API_URL": emu.api_url,
                "MIRRORD_SLACK_WEBHOOK_URL": receiver.url,
            },
            cwd=ROOT,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1, err[-3000:]
    plain, logs = [], []
    for line in err.decode().splitlines():
        try:
            logs.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            plain.append(line)
    assert len(plain) == 1, plain
    assert plain[0].startswith("mirrord: sync failed: RuntimeError: boom"), plain
    crashed = [e for e in logs if e.get("event") == "job_crashed"]
    assert crashed
    assert "Traceback" in crashed[0]["exception"]
    texts = [b["text"] for b in receiver.bodies]
    assert any("RuntimeError" in t and "bug" in t for t in texts), texts
