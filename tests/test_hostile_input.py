"""Issue 12, hostile and careless input: catalog entries that would wedge the hash file,
numbers from upstream that crashed the program, formulae whose keys collide, a
`rebuild-hash` that raced a sync, and a `verify` that stayed red after every rebottle.

Real peers throughout: the emulator over loopback HTTP for upstream, the moto server for
S3, the CLI as a separate process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from conftest import make_settings, run_cli

from mirrord import catalog as catalog_module
from mirrord.app import open_app
from mirrord.catalog import formula_from_api, parse_catalog
from mirrord.emulator import Emulator, catalog_from_entries
from mirrord.errors import FormulaError, HashFileError
from mirrord.hashfile import HashFile, dumps, entry_problem, parse
from mirrord.models import Bottle, HashEntry
from mirrord.s3 import S3Store

DATE = "2026-11-22"
SHA = "ab" * 32


def formula(
    name: str, version: str, *, revision: Any = 0, rebuild: Any = 0, tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    tags = tags or ("arm64_tahoe",)
    files = {
        tag: {"url": f"https://ghcr.io/v2/homebrew/core/{name}/blobs/sha256:{SHA}", "sha256": SHA}
        for tag in tags
    }
    return {
        "name": name,
        "versions": {"stable": version},
        "revision": revision,
        "bottle": {"stable": {"rebuild": rebuild, "files": files}},
    }


def both_paths(entries: list[Any]) -> catalog_module.Catalog:
    """parse_catalog's answer, after checking the msgspec path gave way to the checked one
    (or agreed with it): both paths must refuse the same entries."""
    raw = json.dumps(entries).encode()  # orjson cannot write integers past 64 bits
    fast = catalog_module._fast(raw)
    slow = catalog_module._slow(raw)
    assert fast is None or fast == slow
    parsed = parse_catalog(raw)
    assert parsed.formulae == slow.formulae
    assert [str(r) for r in parsed.rejected] == [str(r) for r in slow.rejected]
    return slow


# --- 1. one catalog entry must not wedge the mirror ------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("revision", 10**60),
        ("revision", 2**64),
        ("rebuild", 10**60),
        ("rebuild", 2**64),
    ],
)
def test_revision_or_rebuild_too_long_for_a_key_is_rejected_alone(field: str, bad: int) -> None:
    """A revision or rebuild past 64 bits (20 digits, what the hash-file reader's key
    lengths allow) is rejected naming the field, on both parser paths; the rest go on."""
    entry = formula("jq", "1.7.1", **{field: bad})
    catalog = both_paths([entry, formula("wget", "1.25.0")])
    assert [f.name for f in catalog.formulae] == ["wget"]
    [rejected] = catalog.rejected
    assert rejected.name == "jq"
    assert field in rejected.reason


def test_the_largest_accepted_revision_and_rebuild_still_make_readable_keys() -> None:
    """2**64 - 1 is accepted, and its hash key and bottle key read back."""
    top = 2**64 - 1
    tag = "arm64_golden_gate"
    long_name, long_version = "n" * 128, "v" * 64
    catalog = both_paths([formula(long_name, long_version, revision=top, rebuild=top, tags=(tag,))])
    [f] = catalog.formulae
    bottle = Bottle(f.name, f.pkg_version, tag, f.rebuild, SHA, "https://x/y")
    entry = HashEntry(SHA, DATE, 1, bottle.s3_key(DATE))
    assert entry_problem(bottle.hash_key, entry) is None
    assert parse(dumps(HashFile({bottle.hash_key: entry}))).bottles == {bottle.hash_key: entry}


def test_an_overlong_tag_is_rejected() -> None:
    """Tags are bounded as the reader bounds them (32 characters)."""
    catalog = both_paths([formula("jq", "1", tags=("a" * 33,)), formula("wget", "1")])
    assert [f.name for f in catalog.formulae] == ["wget"]
    assert "tag" in catalog.rejected[0].reason


def test_a_huge_python_int_is_refused_without_quoting_it() -> None:
    """repr() of an int past 4,300 digits raises: the error must not try."""
    with pytest.raises(FormulaError, match="revision must be an int from 0 to"):
        formula_from_api(formula("jq", "1", revision=10**5000))


def test_dumps_refuses_an_entry_the_reader_would_refuse_naming_the_key() -> None:
    """Never write a hash file that every later sync and verify would stop at."""
    good_key = "jq-1.7.1-sonoma"
    good = HashEntry(SHA, DATE, 5, f"{DATE}/jq-1.7.1.sonoma.bottle.tar.gz")
    # The longest name and version the catalog takes, and a revision of 61 digits.
    stem = f"{'n' * 128}-{'v' * 64}_{10**60}"
    bad_key = f"{stem}-sonoma"
    bad = HashEntry(SHA, DATE, 5, f"{DATE}/{stem}.sonoma.bottle.tar.gz")
    assert entry_problem(good_key, good) is None
    problem = entry_problem(bad_key, bad)
    assert problem is not None
    assert bad_key[:40] in problem
    with pytest.raises(HashFileError, match="refusing to write") as caught:
        dumps(HashFile({good_key: good, bad_key: bad}))
    assert bad_key[:40] in str(caught.value)
    # What dumps refused is what the reader refuses:
    raw = {"sha256": SHA, "download_date": DATE, "file_size": 5, "s3_key": bad.s3_key}
    with pytest.raises(HashFileError):
        parse(orjson.dumps({"version": 2, "bottles": {bad_key: raw}}))
    for size in (-1, 2**64, True, 1.0):
        wrong = HashEntry(SHA, DATE, size, good.s3_key)  # type: ignore[arg-type]
        assert entry_problem(good_key, wrong) is not None


@dataclass
class Upstream:
    """An emulator serving the blobs, and the catalog as given (which orjson, and so the
    emulator itself, cannot write: integers past 64 bits)."""

    env: dict[str, str]
    store: S3Store


@pytest.fixture
async def wide_revision(bucket_name: str) -> AsyncIterator[Upstream]:
    # The longest name and version the catalog takes: with a revision of 61 digits, the
    # hash key is longer than the reader allows.
    entries = [formula("n" * 128, "v" * 64), formula("wget", "1.25.0")]
    served = catalog_from_entries(entries)
    async with Emulator(served) as blobs:
        hostile = orjson.loads(
            orjson.dumps(served.formulae).replace(b"{registry}", blobs.registry_url.encode())
        )
        hostile[0]["revision"] = 10**60
        async with (
            Emulator(served, raw_api=json.dumps(hostile).encode()) as api,
            open_app(make_settings(bucket_name, api.api_url)) as app,
        ):
            await app.store._client.create_bucket(Bucket=bucket_name)
            env = {
                "MIRRORD_BUCKET": bucket_name,
                "MIRRORD_API_URL": api.api_url,
                "MIRRORD_PLATFORMS": "arm64_tahoe",
            }
            yield Upstream(env, app.store)


async def test_a_formula_with_revision_10_to_the_60_does_not_wedge_later_runs(
    wide_revision: Upstream,
) -> None:
    """The finding: sync exited 0 and wrote a key the reader refuses, so every later
    sync and verify exited 1. Now the formula is rejected, the rest is mirrored, and the
    next sync and verify are green."""
    first = await run_cli("sync", "--json", "--date", DATE, env=wide_revision.env)
    assert first.code == 0, first.stderr[-2000:]
    report = first.json()
    assert [r["name"] for r in report["rejected"]] == ["n" * 128]
    assert "revision" in report["rejected"][0]["error"]
    assert report["downloaded"] == 1
    again = await run_cli("sync", "--json", "--date", DATE, env=wide_revision.env)
    assert again.code == 0, again.stderr[-2000:]
    verify = await run_cli("verify", env=wide_revision.env)
    assert verify.code == 0, verify.stdout + verify.stderr[-2000:]
