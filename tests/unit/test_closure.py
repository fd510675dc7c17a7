"""Subset mirrors: Brewfile parsing and the runtime dependency closure per target, on
formula.json entries of the real shape (variations by bottle tag, uses_from_macos with
its bounds, aliases, oldnames and the older oldname)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrord.core.catalog import parse_catalog
from mirrord.core.closure import (
    closure,
    dependency_index,
    job_closure,
    job_selection,
    parse_brewfile,
    select_closure,
)
from mirrord.core.errors import CatalogError, SettingsError
from mirrord.core.releases import DEFAULT_RELEASES

GHCR = "https://ghcr.io/v2/homebrew/core"
TAGS = ["arm64_sequoia", "arm64_sonoma", "sonoma", "x86_64_linux"]
MAC, OLD_MAC, LINUX = "arm64_sequoia", "arm64_sonoma", "x86_64_linux"


def formula(name: str, **fields: Any) -> dict[str, Any]:
    """One formula.json entry as formulae.brew.sh serves it (the fields that matter)."""
    image = name.replace("@", "/").replace("+", "x")
    files = {}
    for i, tag in enumerate(fields.pop("tags", TAGS)):
        digest = f"{abs(hash((name, tag))) % 10**12 + i:064x}"
        files[tag] = {"cellar": ":any", "url": f"{GHCR}/{image}/blobs/sha256:{digest}",
                      "sha256": digest}  # fmt: skip
    return {
        "name": name,
        "full_name": name,
        "tap": "homebrew/core",
        "oldnames": [],
        "aliases": [],
        "versioned_formulae": [],
        "versions": {"stable": "1.0", "head": None, "bottle": True},
        "revision": 0,
        "bottle": {"stable": {"rebuild": 0, "root_url": GHCR, "files": files}},
        "build_dependencies": [],
        "dependencies": [],
        "test_dependencies": [],
        "recommended_dependencies": [],
        "optional_dependencies": [],
        "uses_from_macos": [],
        "uses_from_macos_bounds": [],
        "requirements": [],
        **fields,
    }


def catalog_of(*entries: dict[str, Any]) -> Any:
    return parse_catalog(orjson.dumps(list(entries)))


# wget as formulae.brew.sh has it, trimmed: build and test deps, a recommended one,
# uses_from_macos with a build-only use and a `since` bound, and a Linux variation.
WORLD = catalog_of(
    formula(
        "wget",
        dependencies=["libidn2", "openssl@3"],
        build_dependencies=["pkgconf"],
        test_dependencies=["python@3.13"],
        recommended_dependencies=["gettext"],
        optional_dependencies=["libproxy"],
        uses_from_macos=["zlib", {"m4": "build"}, "curl"],
        uses_from_macos_bounds=[{}, {}, {"since": "sequoia"}],
        variations={"x86_64_linux": {"dependencies": ["libidn2", "openssl@3", "glibc"]}},
    ),
    formula("libidn2", dependencies=["libunistring"]),
    formula("libunistring"),
    formula("openssl@3", aliases=["openssl"], dependencies=["ca-certificates"]),
    formula("ca-certificates", tags=["all"]),
    formula("gettext"),
    formula("zlib"),
    formula("curl", oldnames=["curl-openssl"]),
    formula("glibc", tags=["x86_64_linux"]),
    formula("pkgconf"),
    formula("m4"),
    formula("python@3.13"),
    formula("libproxy"),
    formula("jq", oldname="jq-old", dependencies=["oniguruma"]),
    formula("oniguruma"),
)


def run(asked: list[str], targets: list[str] = [MAC]) -> Any:  # noqa: B006
    return closure(dependency_index(WORLD), asked, targets, DEFAULT_RELEASES)


def test_runtime_deps_only_build_test_optional_excluded() -> None:
    found = run(["wget"])
    assert set(found.by_target[MAC]) == {
        "wget", "libidn2", "libunistring", "openssl@3", "ca-certificates", "gettext",
    }  # fmt: skip
    assert found.roots == ("wget",)
    assert "pkgconf" not in found.added
    assert "python@3.13" not in found.added
    assert found.missing == ()
    assert found.cycles == ()


def test_dependencies_come_before_their_dependents() -> None:
    """Depth first, post-order: what brew installs first comes first."""
    order = run(["wget"]).by_target[MAC]
    assert order.index("libunistring") < order.index("libidn2") < order.index("wget")
    assert order.index("ca-certificates") < order.index("openssl@3")


def test_linux_takes_uses_from_macos_and_its_variation() -> None:
    found = run(["wget"], [MAC, LINUX])
    linux = set(found.by_target[LINUX])
    assert {"zlib", "curl", "glibc"} <= linux  # uses_from_macos, the x86_64_linux variation
    assert "m4" not in linux  # a build-only use
    assert "gettext" in linux  # the variation overrides dependencies only
    assert not {"zlib", "curl", "glibc"} & set(found.by_target[MAC])


def test_macos_older_than_since_needs_the_use() -> None:
    """`uses_from_macos "curl", since: :sequoia`: sonoma lacks it, sequoia ships it."""
    found = run(["wget"], [MAC, OLD_MAC])
    assert "curl" in found.by_target[OLD_MAC]
    assert "curl" not in found.by_target[MAC]
    assert "zlib" not in found.by_target[OLD_MAC]  # no bound: macOS has it always


def test_aliases_old_names_and_tap_prefix_resolve() -> None:
    found = run(["openssl", "jq-old", "curl-openssl", "homebrew/core/gettext"])
    assert found.roots == ("openssl@3", "jq", "curl", "gettext")
    assert dict(found.renamed) == {"openssl": "openssl@3", "jq-old": "jq", "curl-openssl": "curl"}
    assert "oniguruma" in found.added


def test_missing_names_are_reported_not_fatal() -> None:
    cat = catalog_of(formula("a", dependencies=["gone", "b"]), formula("b"))
    found = closure(dependency_index(cat), ["a", "nope"], [MAC], DEFAULT_RELEASES)
    assert found.by_target[MAC] == ("b", "a")
    assert set(found.missing) == {("gone", "a"), ("nope", "(asked)")}


def test_cycles_are_reported_once_and_the_walk_ends() -> None:
    cat = catalog_of(
        formula("a", dependencies=["b"]),
        formula("b", dependencies=["c"]),
        formula("c", dependencies=["a", "d"]),
        formula("d", dependencies=["d"]),
    )
    found = closure(dependency_index(cat), ["a", "c"], [MAC, OLD_MAC], DEFAULT_RELEASES)
    assert set(found.by_target[MAC]) == {"a", "b", "c", "d"}
    assert sorted(found.cycles) == [("a", "b", "c", "a"), ("d", "d")]


def test_a_long_chain_needs_no_recursion() -> None:
    n = 5000
    cat = catalog_of(*(formula(f"f{i}", dependencies=[f"f{i + 1}"], tags=["all"]) for i in range(n)),
                     formula(f"f{n}", tags=["all"]))  # fmt: skip
    found = closure(dependency_index(cat), ["f0"], [MAC], DEFAULT_RELEASES)
    assert len(found.by_target[MAC]) == n + 1


def test_selection_is_per_target() -> None:
    """glibc's bottle is only for Linux and only the Linux closure names it; a Mac
    target never gets the Linux bottles of zlib and curl."""
    found = run(["wget"], [MAC, LINUX])
    picked = {(b.name, b.tag) for b in select_closure(WORLD, found).bottles}
    assert ("glibc", LINUX) in picked
    assert ("zlib", LINUX) in picked
    assert ("zlib", MAC) not in picked
    assert ("wget", MAC) in picked
    assert ("wget", LINUX) in picked
    assert ("ca-certificates", "all") in picked  # one bottle for both targets
    assert sum(1 for name, _ in picked if name == "ca-certificates") == 1


def test_job_selection_whole_catalog_and_unknown_roots() -> None:
    everything = job_selection(WORLD, None, [MAC])
    assert len({b.name for b in everything.bottles}) == len(WORLD.formulae) - 1  # no glibc
    assert job_closure(WORLD, None, [MAC]) is None
    with pytest.raises(SettingsError, match="not in the catalog: nope"):
        job_selection(WORLD, ["nope"], [MAC])
    assert {b.name for b in job_selection(WORLD, ["jq", "nope"], [MAC]).bottles} == {
        "jq",
        "oniguruma",
    }


def test_rejected_formula_is_missing_and_odd_fields_are_tolerated() -> None:
    cat = catalog_of(
        formula(
            "a",
            dependencies=["bad", 7, None],
            uses_from_macos=[{"x": 1, "y": 2}, 3, {"z": [{}, ["build"]]}, {"c": [["build"]]}],
            uses_from_macos_bounds=[{}, {}, {"since": 7}, {}],
        ),
        {**formula("bad"), "versions": {"stable": "no spaces allowed"}},
        formula("c", variations=[1], aliases="c2", uses_from_macos_bounds="x"),
    )
    found = closure(dependency_index(cat), ["a", "c"], [LINUX], DEFAULT_RELEASES)
    assert found.missing == (("bad", "a"), ("z", "a"))  # odd tags are no "build" tag
    assert set(found.by_target[LINUX]) == {"a", "c"}


def test_a_catalog_without_its_bytes_is_an_error() -> None:
    bare = type(WORLD)(WORLD.formulae)
    with pytest.raises(CatalogError, match="dependency fields"):
        dependency_index(bare)


BREWFILE = """\
# the team's tools
tap "homebrew/core"
tap "hashicorp/tap"
cask_args appdir: "~/Applications"
brew "jq"
brew 'openssl@3', restart_service: :changed, link: true
brew "homebrew/core/wget", args: ["with-libressl"]   # comment after
brew "hashicorp/tap/terraform"
brew("gnupg") if OS.mac?
  brew "jq"
cask "firefox", args: { appdir: "~/my-apps/Applications" }
mas "Xcode", id: 497799835
vscode "golang.go"
brew "bad name"
if OS.linux?
  brew "glibc"
end
"""


def test_brewfile_takes_core_brews_and_reports_the_rest() -> None:
    parsed = parse_brewfile(BREWFILE)
    assert parsed.names == ("jq", "openssl@3", "wget", "gnupg", "glibc")
    lines = {s.split(":", 1)[0]: s for s in parsed.skipped}
    assert set(lines) == {"line 3", "line 8", "line 11", "line 12", "line 13", "line 14",
                          "line 15", "line 17"}  # fmt: skip
    assert "hashicorp/tap" in lines["line 8"]
    assert "not homebrew/core" in lines["line 8"]
    assert "cask" in lines["line 11"]
    assert "Mac App Store" in lines["line 12"]
    assert "not a formula name" in lines["line 14"]
    assert "not a Brewfile entry" in lines["line 15"]


def test_brewfile_without_brews() -> None:
    assert parse_brewfile("").names == ()
    assert parse_brewfile('cask "x"\n').names == ()


def test_an_entry_that_is_no_object_leaves_the_rest_usable() -> None:
    """The catalog rejects such an entry alone; the dependency fields of the others
    are read all the same."""
    raw = orjson.dumps([formula("a", dependencies=["b"]), "junk", formula("b"), 7])
    cat = parse_catalog(raw)
    found = closure(dependency_index(cat), ["a"], [MAC], DEFAULT_RELEASES)
    assert found.by_target[MAC] == ("b", "a")


# --- the closure against a plain reference, on random graphs (hypothesis) ---------------

NODES = [f"n{i}" for i in range(8)]
GRAPHS = st.dictionaries(
    st.sampled_from(NODES),
    st.fixed_dictionaries(
        {
            "dependencies": st.lists(st.sampled_from([*NODES, "gone"]), max_size=4),
            "recommended_dependencies": st.lists(st.sampled_from(NODES), max_size=2),
            "build_dependencies": st.lists(st.sampled_from(NODES), max_size=2),
            "uses_from_macos": st.lists(st.sampled_from(NODES), max_size=2),
            "linux": st.none() | st.lists(st.sampled_from(NODES), max_size=3),
        }
    ),
    min_size=1,
)


def reachable(graph: dict[str, dict[str, Any]], roots: list[str], linux: bool) -> set[str]:
    """Breadth first, the plain way: what the closure must hold."""
    seen: set[str] = set()
    todo = [r for r in roots if r in graph]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = graph[name]
        deps = node["linux"] if linux and node["linux"] is not None else node["dependencies"]
        nxt = deps + node["recommended_dependencies"] + (node["uses_from_macos"] if linux else [])
        todo += [n for n in nxt if n in graph]
    return seen


@given(graph=GRAPHS, roots=st.lists(st.sampled_from(NODES), min_size=1, max_size=3))
@settings(max_examples=150, deadline=None)
def test_closure_matches_a_plain_walk(graph: dict[str, dict[str, Any]], roots: list[str]) -> None:
    entries = []
    for name, node in graph.items():
        fields: dict[str, Any] = {k: v for k, v in node.items() if k != "linux"}
        if node["linux"] is not None:
            fields["variations"] = {LINUX: {"dependencies": node["linux"]}}
        entries.append(formula(name, **fields))
    cat = catalog_of(*entries)
    if not any(r in graph for r in roots):
        with pytest.raises(SettingsError):
            job_closure(cat, roots, [MAC, LINUX])
        return
    found = job_closure(cat, roots, [MAC, LINUX])
    assert found is not None
    for target, linux in ((MAC, False), (LINUX, True)):
        got = found.by_target[target]
        assert len(got) == len(set(got))
        assert set(got) == reachable(graph, roots, linux)
    edges = {
        (a, b)
        for a, node in graph.items()
        for b in (*node["dependencies"], *node["recommended_dependencies"],
                  *node["uses_from_macos"], *(node["linux"] or ()))
    }  # fmt: skip
    for cycle in found.cycles:  # each a real cycle of the graph
        assert cycle[0] == cycle[-1]
        assert set(pairwise(cycle)) <= edges
    wanted = set(roots)
    for linux in (False, True):
        for name in reachable(graph, roots, linux):
            node = graph[name]
            deps = node["linux"] if linux and node["linux"] is not None else node["dependencies"]
            wanted |= {*deps, *node["recommended_dependencies"]}
            wanted |= set(node["uses_from_macos"]) if linux else set()
    assert {n for n, _ in found.missing} == wanted - set(graph)
