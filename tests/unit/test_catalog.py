"""Catalog parsing and brew's bottle choice: pure functions, real-shaped entries."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import pytest
from mirrord_dev.emulator.content import synthetic_catalog

from mirrord.core import catalog as catalog_module
from mirrord.core.catalog import (
    filter_formulae,
    formula_from_api,
    parse_catalog,
    select_bottles,
    select_file,
)
from mirrord.core.errors import CatalogError, FormulaError, SettingsError
from mirrord.core.releases import auto_targets, validate_targets

GHCR = "https://ghcr.io/v2/homebrew/core"


def sha(n: int) -> str:
    return f"{n:064x}"


def entry(
    name: str,
    version: str,
    tags: list[str],
    *,
    revision: int = 0,
    rebuild: int = 0,
    image: str | None = None,
    shas: dict[str, int] | None = None,
) -> dict[str, Any]:
    image = image or name.replace("@", "/").replace("+", "x")
    files = {}
    for i, tag in enumerate(tags):
        digest = sha((shas or {}).get(tag, hash((name, tag)) % 10**12 + i))
        files[tag] = {
            "cellar": ":any",
            "url": f"{GHCR}/{image}/blobs/sha256:{digest}",
            "sha256": digest,
        }
    return {
        "name": name,
        "full_name": name,
        "tap": "homebrew/core",
        "desc": "d",
        "versions": {"stable": version, "head": None, "bottle": True},
        "revision": revision,
        "version_scheme": 0,
        "bottle": {"stable": {"rebuild": rebuild, "root_url": GHCR, "files": files}}
        if tags
        else {},
    }


JQ = entry(
    "jq",
    "1.7.1",
    ["arm64_tahoe", "arm64_sequoia", "arm64_sonoma", "sonoma", "arm64_linux", "x86_64_linux"],
    revision=1,
)
OPENSSL = entry(
    "openssl@3", "3.4.0", ["arm64_tahoe", "arm64_sequoia", "tahoe", "sequoia"], rebuild=1
)
CERTS = entry("ca-certificates", "2026-09-23", ["all"])
OLD = entry("oldie", "1.0", ["arm64_big_sur", "big_sur", "catalina", "mojave"])
LINUX = entry("linux-only", "2.0", ["x86_64_linux", "arm64_linux"])
NONE = entry("nobottle", "0.1", [])


def test_parse_keeps_fields_and_file_order() -> None:
    """Names, pkg_version (revision), rebuild and the files order survive parsing."""
    cat = parse_catalog(orjson.dumps([JQ, OPENSSL, CERTS, NONE]))
    jq = cat.formulae[0]
    assert jq.pkg_version == "1.7.1_1"
    assert [f.tag for f in jq.files] == list(JQ["bottle"]["stable"]["files"])
    assert cat.formulae[1].rebuild == 1
    assert cat.formulae[1].pkg_version == "3.4.0"
    assert cat.formulae[3].files == ()
    assert cat.rejected == ()


def test_exact_tag_then_all_then_older_same_arch() -> None:
    """brew's order: the exact tag; else `all`; else the first older release of the arch."""
    jq, certs, old = (formula_from_api(e) for e in (JQ, CERTS, OLD))
    assert select_file(jq, "arm64_sequoia").tag == "arm64_sequoia"
    assert select_file(jq, "sonoma").tag == "sonoma"
    # Intel tahoe/sequoia have no bottle: fall back to the first older Intel one.
    assert select_file(jq, "tahoe").tag == "sonoma"
    assert select_file(certs, "arm64_tahoe").tag == "all"
    assert select_file(old, "arm64_tahoe").tag == "arm64_big_sur"
    assert select_file(old, "sequoia").tag == "big_sur"


def test_fallback_keeps_files_order_not_newest() -> None:
    """Among older releases, the first in files order wins (docs/design.md §4)."""
    f = formula_from_api(entry("x", "1", ["arm64_ventura", "arm64_sonoma"]))
    assert select_file(f, "arm64_tahoe").tag == "arm64_ventura"


def test_linux_never_chosen_for_macos_and_no_newer_fallback() -> None:
    """A Linux bottle is never a macOS fallback, nor a newer release's bottle."""
    linux = formula_from_api(LINUX)
    assert select_file(linux, "arm64_tahoe") is None
    assert select_file(linux, "sonoma") is None
    assert select_file(linux, "x86_64_linux").tag == "x86_64_linux"
    newer_only = formula_from_api(entry("n", "1", ["arm64_tahoe"]))
    assert select_file(newer_only, "arm64_sequoia") is None
    intel_only = formula_from_api(entry("i", "1", ["sonoma"]))
    assert select_file(intel_only, "arm64_tahoe") is None


def test_auto_targets_three_newest_releases_with_intel_where_it_runs() -> None:
    """auto = Apple Silicon for the three newest releases seen, Intel up to tahoe."""
    cat = parse_catalog(orjson.dumps([JQ, OPENSSL, OLD]))
    assert auto_targets(cat.formulae) == (
        "arm64_tahoe",
        "tahoe",
        "arm64_sequoia",
        "sequoia",
        "arm64_sonoma",
        "sonoma",
    )
    future = parse_catalog(
        orjson.dumps([entry("f", "1", ["arm64_golden_gate", "arm64_tahoe", "sequoia"])])
    )
    assert auto_targets(future.formulae) == (
        "arm64_golden_gate",
        "arm64_tahoe",
        "tahoe",
        "arm64_sequoia",
        "sequoia",
    )
    only_old = parse_catalog(orjson.dumps([OLD]))
    # No arm64 catalina; mojave is only ever a fallback, never a target.
    assert auto_targets(only_old.formulae) == ("arm64_big_sur", "big_sur", "catalina")


def test_shared_bottles_are_selected_once() -> None:
    """Several targets picking one file yield it once; `all` serves every target."""
    cat = parse_catalog(orjson.dumps([CERTS, OLD]))
    sel = select_bottles(cat.formulae, ("arm64_tahoe", "arm64_sequoia", "sonoma"))
    assert [b.hash_key for b in sel.bottles] == [
        "ca-certificates-2026-09-23-all",
        "oldie-1.0-arm64_big_sur",
        "oldie-1.0-big_sur",
    ]
    assert sel.no_bottle == 0


def test_no_bottle_counted_not_failed() -> None:
    """A formula without a bottle for a target counts as no_bottle."""
    cat = parse_catalog(orjson.dumps([NONE, LINUX]))
    sel = select_bottles(cat.formulae, ("arm64_tahoe", "sonoma"))
    assert sel.bottles == ()
    assert sel.no_bottle == 4


def test_bottle_names_follow_brew() -> None:
    """File names carry pkg_version and `.rebuild` only when rebuild > 0."""
    cat = parse_catalog(orjson.dumps([JQ, OPENSSL]))
    sel = select_bottles(cat.formulae, ("arm64_sequoia",))
    assert [b.s3_key("2026-11-22") for b in sel.bottles] == [
        "2026-11-22/jq-1.7.1_1.arm64_sequoia.bottle.tar.gz",
        "2026-11-22/openssl@3-3.4.0.arm64_sequoia.bottle.1.tar.gz",
    ]


@pytest.mark.parametrize(
    "name",
    ["../../x", "a b", "/etc", "x/y", "", ".hidden", "a%2Fb", "nul\x00", "ｊｑ", "a" * 10_000],
)
def test_unsafe_names_rejected_rest_kept(name: str) -> None:
    """A name that could shape a key or path is rejected and reported; others go on."""
    cat = parse_catalog(orjson.dumps([entry(name, "1.0", ["arm64_tahoe"], image="x"), JQ]))
    assert [f.name for f in cat.formulae] == ["jq"]
    assert len(cat.rejected) == 1
    assert "name" in str(cat.rejected[0])


MALFORMED: list[tuple[Any, str]] = [
    (lambda e: e.pop("versions"), "versions"),
    (lambda e: e["versions"].update(stable=7), "versions.stable"),
    (lambda e: e["versions"].update(stable="1.0/../../x"), "versions.stable"),
    (lambda e: e.update(revision=-1), "revision"),
    (lambda e: e["bottle"]["stable"].update(rebuild="1"), "rebuild"),
    (lambda e: e["bottle"]["stable"]["files"]["arm64_tahoe"].update(sha256="zz"), "sha256"),
    (
        lambda e: e["bottle"]["stable"]["files"]["arm64_tahoe"].update(url="file:///etc/passwd"),
        "url",
    ),
    (lambda e: e["bottle"]["stable"]["files"].update({"../x": {}}), "tag"),
]


@pytest.mark.parametrize(("mutate", "field"), MALFORMED)
def test_malformed_entry_names_the_field(mutate: Any, field: str) -> None:
    """Each malformed field gives a FormulaError that names it."""
    bad = orjson.loads(orjson.dumps(JQ))
    mutate(bad)
    with pytest.raises(FormulaError, match=field.split(".")[-1]):
        formula_from_api(bad)


@pytest.mark.parametrize("mutate", [m for m, _ in MALFORMED] + [lambda e: e.update(name="a" * 200)])
def test_one_malformed_entry_leaves_the_fast_path_and_is_rejected_alone(mutate: Any) -> None:
    """The msgspec fast path gives way: the bad entry is rejected, the others kept."""
    bad = orjson.loads(orjson.dumps(JQ))
    mutate(bad)
    raw = orjson.dumps([bad, OPENSSL, CERTS])
    assert catalog_module._fast(raw) is None
    cat = parse_catalog(raw)
    assert [f.name for f in cat.formulae] == ["openssl@3", "ca-certificates"]
    assert len(cat.rejected) == 1


@pytest.mark.parametrize(
    "raw",
    [
        resources.files("mirrord_dev.emulator").joinpath("sample_catalog.json").read_bytes(),
        orjson.dumps(synthetic_catalog(300).formulae).replace(b"{registry}", b"https://ghcr.io"),
        orjson.dumps([JQ, OPENSSL, CERTS, OLD, LINUX, NONE, {**JQ, "name": "nob", "bottle": None}]),
    ],
)
def test_fast_and_slow_paths_give_the_same_catalog(raw: bytes) -> None:
    """Well-formed catalogs take the fast path, and it agrees with the checked one."""
    fast = catalog_module._fast(raw)
    assert fast is not None
    assert fast == catalog_module._slow(raw)
    assert fast.formulae
    assert not fast.rejected


@pytest.mark.parametrize("raw", [b"", b'[{"name": "jq"', b"{}", b'"x"', b"[1, 2]"])
def test_unusable_catalog_is_one_clear_error(raw: bytes) -> None:
    """Truncated, non-list or all-garbage formula.json raises CatalogError."""
    with pytest.raises(CatalogError):
        parse_catalog(raw)


def test_duplicate_formula_rejected() -> None:
    """A formula listed twice keeps its first entry and reports the second."""
    cat = parse_catalog(orjson.dumps([JQ, JQ]))
    assert len(cat.formulae) == 1
    assert "twice" in str(cat.rejected[0])


def test_targets_and_filter_validation() -> None:
    """Unknown or impossible machine tags and unknown formulae are usage errors."""
    assert validate_targets(["arm64_tahoe", "x86_64_linux"]) == ("arm64_tahoe", "x86_64_linux")
    for bad in (["arm64_catalina"], ["golden_gate"], ["mojave"], ["all"], ["windows"], []):
        with pytest.raises(SettingsError):
            validate_targets(bad)
    cat = parse_catalog(orjson.dumps([JQ]))
    assert filter_formulae(cat, ["jq"])[0].name == "jq"
    with pytest.raises(SettingsError, match="nope"):
        filter_formulae(cat, ["nope"])
