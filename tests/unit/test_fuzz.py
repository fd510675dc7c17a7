"""Every input from outside, fuzzed (hypothesis): formula.json entries, SQS job bodies,
hash files (v1, v2, external) and settings.

The property, for each: either the project's own error naming the field, or a valid
result whose every derived S3 key stays inside the bucket layout of docs/design.md §6. Never
another exception. The strategies mix valid-shaped data with hostile strings: '..', '/',
'%2F', NUL, look-alikes (fullwidth digits and solidus, division slash), RTL marks and
10 KB names.

Profiles: ``dev`` (the default for `make test`, a few seconds), ``ci`` (the same counts,
derandomized so a CI run is reproducible; chosen when CI is set), ``deep`` (thousands of
examples: ``MIRRORD_FUZZ_PROFILE=deep .venv/bin/python -m pytest tests/unit/test_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from datetime import date as Date
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mirrord.core import catalog as catalog_module
from mirrord.core import hashfile as hashfile_module
from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.errors import CatalogError, FormulaError, HashFileError, JobError, SettingsError
from mirrord.core.hashfile import HashFile, dumps, entry_problem, parse
from mirrord.core.jobs import JOB_ID_RE, parse_job
from mirrord.core.models import Bottle, HashEntry, is_bottle_key, is_hash_key
from mirrord.core.plan import make_plan, sizes_from_index
from mirrord.core.releases import MACOS_RELEASES, is_machine, parse_tag
from mirrord.core.retry import parse_retry_after
from mirrord.core.settings import ENV, from_env

# Examples that hold the 10 KB strings make hypothesis warn that their repr is large.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

_COMMON = {
    "deadline": None,  # a shared 2-core machine: speed belongs to benchmarks, not here
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("dev", max_examples=60, **_COMMON)
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile("deep", max_examples=3000, **_COMMON)
settings.load_profile(
    os.environ.get("MIRRORD_FUZZ_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

# --- the oracle: the bucket layout, checked without mirrord's own regexes --------------


def assert_bottle_key(key: str) -> None:
    """``YYYY-MM-DD/<file>``: one folder, a real date, a plain printable ASCII file name
    ending in .tar.gz, nothing a path or URL would read differently."""
    assert key.isascii(), key
    assert key.isprintable(), key
    assert len(key.encode()) <= 1024, len(key)
    folder, slash, file = key.partition("/")
    assert slash, key
    assert "/" not in file, key
    assert len(folder) == 10, key
    assert Date.fromisoformat(folder).isoformat() == folder, key
    assert posixpath.normpath(key) == key, key
    assert not key.startswith("/"), key
    assert not {".", ".."} & set(key.split("/")), key
    assert not any(c in file for c in "%\\ \t?#"), key
    assert file.endswith(".tar.gz"), key
    assert ".bottle" in file, key
    assert file[0].isalnum(), key


def assert_hash_key(key: str) -> None:
    assert key.isascii(), key
    assert key.isprintable(), key
    assert not any(c in key for c in "/%\\ "), key
    assert key.count("-") >= 2, key
    assert len(key) <= 300, key


def to_json(value: Any) -> bytes:
    """JSON for documents that may hold integers past 64 bits, which orjson refuses to
    write (and which the readers must still meet)."""
    return json.dumps(value, ensure_ascii=False).encode()


def attempt(call: Any, error: type[Exception]) -> tuple[Any, Exception | None]:
    """(result, None), or (None, the error) when ``call`` raises ``error``: anything else
    propagates and fails the property."""
    try:
        return call(), None
    except error as exc:
        return None, exc


# --- hostile and valid material ---------------------------------------------------------

HOSTILE = [
    "..",
    "../",
    "/",
    "a/b",
    "/etc/passwd",
    "%2F",
    "%2e%2e",
    "\x00",
    "a\x00b",
    "\n",
    "a\r\nb",
    " ",
    "\\",
    "..\\..",
    "\uff0f",  # fullwidth solidus
    "\u2215",  # division slash
    "\uff11\uff12",  # fullwidth digits
    "\u0663",  # Arabic-Indic three
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u212a",  # Kelvin sign (lowercases to 'k')
    "İ",
    "ﬁ",
    "~",
    ".bottle.tar.gz",
    "-",
    "",
    "a" * 10240,
    "1" * 10240,
    "a-" * 5000,
]
# Valid, and odd on purpose: ".." inside a name is no path segment, and must round-trip.
VALID_NAMES = [
    *("jq", "openssl@3", "libxml++3", "python@3.13", "gtk+3", "a", "x-y.z_w", "a..b", "z-"),
    *("python", "python-tk@3.12"),  # with the two versions below: one <name>-<pkg_version>
]
VALID_VERSIONS = ["1.7.1", "3.4.0", "2024-01-02", "1.0,2", "9", "1..2", "0-", "tk@3.12-3.12.1"]
MACHINE_TAGS = sorted(
    {t for c in MACOS_RELEASES for t in (c, f"arm64_{c}") if is_machine(parse_tag(t))}
    | {"x86_64_linux", "arm64_linux"}
)
ALL_TAGS = [*MACHINE_TAGS, "all", "arm64_mojave", "yosemite", "weird_tag"]
SHA = "ab" * 32


def one_of_list(items: list[str]) -> st.SearchStrategy[str]:
    # By index: a strategy's repr would otherwise quote the 10 KB strings.
    return st.sampled_from(range(len(items))).map(items.__getitem__)


def hostile_mix(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid value, a hostile one, or pieces of both glued together."""
    pieces = one_of_list(valid + HOSTILE)
    return st.one_of(
        st.sampled_from(valid),
        one_of_list(HOSTILE),
        st.lists(pieces, min_size=1, max_size=4).map("".join),
        st.text(max_size=20),
    )


def rarely(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` 19 times in 20, else ``bad``: most documents are then valid but for one
    or two fields, which is where a missed rule shows (all-hostile documents only ever
    test the first check)."""
    return st.integers(0, 19).flatmap(lambda i: bad if i == 0 else good)


def mostly(valid: list[str]) -> st.SearchStrategy[str]:
    return rarely(st.sampled_from(valid), hostile_mix(valid))


def wrong_type() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(st.integers(-5, 5), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2),
    )


def big_int(low: int) -> st.SearchStrategy[int]:
    """Integers from ``low`` without an upper bound, the 64-bit edges and far beyond them
    included: a JSON integer has no size, and past 20 digits it would shape keys the hash
    file refuses."""
    return st.one_of(
        st.integers(low, 200),
        st.integers(min_value=low),
        st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**20, 10**60, 10**300]),
    )


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes a value of the wrong type."""
    return rarely(strategy, wrong_type())


def sha_like() -> st.SearchStrategy[Any]:
    return maybe(rarely(st.just(SHA), st.sampled_from(["AB" * 32, "ab" * 31, SHA + "\n"])))


def url_like() -> st.SearchStrategy[Any]:
    return maybe(
        rarely(
            st.just(f"https://ghcr.io/v2/homebrew/core/jq/blobs/sha256:{SHA}"),
            st.one_of(
                st.sampled_from(["file:///etc/passwd", "http://169.254.169.254/", "ftp://x/y"]),
                hostile_mix(["https://example.com/x"]),
            ),
        )
    )


def absent_or(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value, or ABSENT (the field left out) one time in four."""
    return st.integers(0, 3).flatmap(lambda i: st.just(ABSENT) if i == 0 else strategy)


ABSENT = object()


@st.composite
def formula_entry(draw: st.DrawFn) -> Any:
    """A formula.json entry, valid but for a field or two (or of the wrong type)."""
    files = draw(
        st.dictionaries(
            rarely(st.sampled_from([*MACHINE_TAGS, "all", "all"]), hostile_mix(ALL_TAGS)),
            maybe(
                st.fixed_dictionaries(
                    {"url": url_like(), "sha256": sha_like()},
                    optional={"cellar": maybe(st.sampled_from([":any", "/opt/homebrew"]))},
                )
            ),
            min_size=1,
            max_size=4,
        )
    )
    stable = {"files": files, "rebuild": draw(absent_or(maybe(big_int(-1))))}
    entry = {
        "name": draw(maybe(mostly(VALID_NAMES))),
        "versions": draw(maybe(st.fixed_dictionaries({"stable": maybe(mostly(VALID_VERSIONS))}))),
        "revision": draw(absent_or(maybe(big_int(-2)))),
        "bottle": draw(absent_or(maybe(st.just({"stable": draw(maybe(st.just(stable)))})))),
        "caveats": draw(absent_or(st.text(max_size=5))),
    }
    for value in (entry, stable):
        for key in [k for k, v in value.items() if v is ABSENT]:
            del value[key]
    return draw(rarely(st.just(entry), wrong_type()))


FORMULA_FIELDS = ("entry", "name", "versions", "revision", "bottle", "listed twice")


def wide(revision: int = 0, rebuild: int = 0) -> list[Any]:
    """A valid entry with a wide revision or rebuild: the fuzzer meets these only now
    and then in a few thousand examples, so every run tries them."""
    files = {"arm64_tahoe": {"url": "https://x.example/b", "sha256": SHA}}
    return [
        {
            "name": "jq",
            "versions": {"stable": "1.7.1"},
            "revision": revision,
            "bottle": {"stable": {"rebuild": rebuild, "files": files}},
        }
    ]


@given(
    entries=st.lists(formula_entry(), max_size=6),
    day=st.dates(min_value=Date(2000, 1, 1), max_value=Date(2999, 12, 31)),
    targets=st.lists(st.sampled_from(MACHINE_TAGS), min_size=1, max_size=4, unique=True),
)
@example(entries=wide(revision=10**60), day=Date(2026, 11, 22), targets=["arm64_tahoe"])
@example(entries=wide(rebuild=10**60), day=Date(2026, 11, 22), targets=["arm64_tahoe"])
@example(entries=wide(revision=2**64), day=Date(2026, 11, 22), targets=["arm64_tahoe"])
@example(entries=wide(2**64 - 1, 2**64 - 1), day=Date(2026, 11, 22), targets=["arm64_tahoe"])
@example(
    entries=[
        {**wide()[0], "name": "python", "versions": {"stable": "tk@3.12-3.12.1"}},
        {**wide()[0], "name": "python-tk@3.12", "versions": {"stable": "3.12.1"}},
    ],
    day=Date(2026, 11, 22),
    targets=["arm64_tahoe"],
)
def test_catalog_entries_are_rejected_by_field_or_stay_inside_the_layout(
    entries: list[Any], day: Date, targets: list[str]
) -> None:
    """formula.json: each bad entry is rejected naming its field, the rest go on, and
    every key the accepted ones shape is a bottle key of the layout (also through the
    hash file: written, read back, the same)."""
    raw = to_json(entries)
    catalog, exc = attempt(lambda: parse_catalog(raw), CatalogError)
    if exc is not None:
        assert "formula.json" in str(exc)
        assert entries  # an empty list is a valid, empty catalog
        return
    for rejected in catalog.rejected:
        assert isinstance(rejected, FormulaError)
        assert any(f in rejected.reason for f in FORMULA_FIELDS), rejected.reason
        assert len(str(rejected)) < 400, "an error line quotes at most a bounded excerpt"
    fast = catalog_module._fast(raw)
    if fast is not None and fast.formulae:
        assert fast == catalog_module._slow(raw)
    selection = select_bottles(catalog.formulae, targets)
    date = day.isoformat()
    plan = make_plan(selection.bottles, HashFile(), date)
    for transfer in plan.transfers:
        assert_bottle_key(transfer.key)
        assert_hash_key(transfer.bottle.hash_key)
    entries_out = {
        b.hash_key: HashEntry(b.sha256, date, 1, b.s3_key(date)) for b in selection.bottles
    }
    assert parse(dumps(HashFile(entries_out))).bottles == entries_out
    # No two accepted formulae spell one <name>-<pkg_version>: their keys would collide.
    stems = [f"{f.name}-{f.pkg_version}" for f in catalog.formulae]
    assert len(set(stems)) == len(stems), stems
    # Every bottle of every accepted formula, whichever target picks it: its keys are
    # ones the hash-file reader accepts, so no catalog entry can wedge the mirror.
    every = {}
    for formula in catalog.formulae:
        for file in formula.files:
            bottle = Bottle(
                formula.name, formula.pkg_version, file.tag, formula.rebuild, file.sha256, file.url
            )
            entry = HashEntry(bottle.sha256, date, 2**64 - 1, bottle.s3_key(date))
            assert entry_problem(bottle.hash_key, entry) is None, (bottle, entry)
            every[bottle.hash_key] = entry
    assert parse(dumps(HashFile(every))).bottles == every


@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_catalog_bytes_never_raise_anything_else(raw: bytes) -> None:
    with contextlib.suppress(CatalogError):
        parse_catalog(raw)


# --- hash files: v1, v2, external -------------------------------------------------------


def date_like() -> st.SearchStrategy[Any]:
    return maybe(
        rarely(
            st.dates().map(Date.isoformat),
            st.one_of(
                st.sampled_from(
                    ["2026-02-30", "2026-13-01", "２０２６-11-22", "2026-11-22\n", "0000-00-00"]
                ),
                hostile_mix(["2026-11-22"]),
            ),
        )
    )


@st.composite
def hash_entry(draw: st.DrawFn, version: int | None) -> tuple[str, Any]:
    name, pkg_version, tag = (
        draw(mostly(VALID_NAMES)),
        draw(mostly(VALID_VERSIONS)),
        draw(mostly(ALL_TAGS)),
    )
    rebuild = draw(st.sampled_from(["", "", ".1", ".12"]))
    key = f"{name}-{pkg_version}-{tag}"
    date = draw(date_like())
    derived = f"{date}/{name}-{pkg_version}.{tag}.bottle{rebuild}.tar.gz"
    s3_key = draw(
        rarely(
            st.just(derived),
            st.one_of(
                st.sampled_from(["../etc/passwd", "/abs", "2026-11-22/a/../b-1.x.bottle.tar.gz"]),
                st.tuples(
                    st.sampled_from(["", "2026-11-22/"]),
                    hostile_mix(["jq-1.sonoma.bottle.tar.gz", ".bottle.tar.gz"]),
                ).map("".join),
                wrong_type(),
            ),
        )
    )
    entry: dict[str, Any] = {"sha256": draw(sha_like()), "download_date": date}
    if version != 1 or draw(st.booleans()):
        entry["s3_key"] = s3_key
    if draw(st.booleans()):
        entry["file_size"] = draw(maybe(st.one_of(st.none(), big_int(-1))))
    return key, draw(rarely(st.just(entry), wrong_type()))


@st.composite
def quarantine_record(draw: st.DrawFn) -> tuple[str, Any]:
    """One record of the quarantine section (hashfile.Suspect), valid but for a field."""
    key = draw(
        st.tuples(mostly(VALID_NAMES), mostly(VALID_VERSIONS), mostly(ALL_TAGS)).map("-".join)
    )
    seen = maybe(rarely(st.just("2026-11-22T03:04:05Z"), hostile_mix(["2026-11-22"])))
    record = {
        "expected_sha256": draw(sha_like()),
        "actual_sha256": draw(absent_or(st.one_of(st.none(), sha_like()))),
        "first_seen": draw(seen),
        "last_seen": draw(seen),
        "count": draw(maybe(rarely(st.integers(1, 5), big_int(-1)))),
        "last_job": draw(maybe(mostly(["2026-11-22-weekly", "w1"]))),
        "later_field": draw(absent_or(st.integers())),  # a newer writer's: ignored
    }
    record = {k: v for k, v in record.items() if v is not ABSENT}
    return key, draw(rarely(st.just(record), wrong_type()))


@st.composite
def hash_document(draw: st.DrawFn) -> Any:
    version = draw(st.sampled_from([None, 1, 2, 2, 2, 3]))
    bottles = dict(draw(st.lists(hash_entry(version), min_size=1, max_size=3)))
    doc: dict[str, Any] = {}
    if version is not None:
        doc["version"] = draw(rarely(st.just(version), wrong_type()))
    top_level_v1 = version is None and draw(st.booleans())
    if top_level_v1:
        doc.update(bottles)  # the oldest scripts wrote the entries at the top level
    else:
        doc["bottles"] = draw(rarely(st.just(bottles), wrong_type()))
    if draw(st.booleans()):
        doc["last_updated"] = draw(maybe(st.just("2026-11-22T03:04:05Z")))
    if version == 2 and draw(st.booleans()):
        records = dict(draw(st.lists(quarantine_record(), max_size=2)))
        doc["quarantine"] = draw(rarely(st.just(records), wrong_type()))
    return doc


HASH_FIELDS = (
    *("sha256", "download_date", "file_size", "s3_key", "key", "version", "bottles"),
    *("quarantine", "first_seen", "last_seen", "count", "last_job"),
)


def check_hash_file(raw: bytes, source: str) -> None:
    """parse() is the slow path's verdict; the msgspec path may decline (None) but never
    accept what the slow path refuses, nor read anything differently."""
    fast = hashfile_module._fast(raw)
    try:
        slow = hashfile_module._slow(raw, source)
    except HashFileError as exc:
        assert fast is None, "the fast path accepted what the checked path refuses"
        message = str(exc)
        assert message.startswith(source)
        assert any(f in message for f in (*HASH_FIELDS, "JSON", "top level", "object")), message
        with pytest.raises(HashFileError):
            parse(raw, source=source)
        return
    if fast is not None:
        assert fast == slow
    assert parse(raw, source=source) == slow
    for key, entry in slow.bottles.items():
        assert is_hash_key(key)
        assert is_bottle_key(entry.s3_key)
        assert_hash_key(key)
        assert_bottle_key(entry.s3_key)
    assert parse(dumps(slow)).bottles == slow.bottles
    assert parse(dumps(slow)).quarantine == slow.quarantine


@given(doc=hash_document())
def test_hash_files_v1_v2_fast_and_slow_agree_and_stay_inside_the_layout(doc: Any) -> None:
    check_hash_file(to_json(doc), "bottles_hash.json")


@given(doc=hash_document(), host=hostile_mix(["mirror.example.com"]))
def test_external_hash_files_name_their_source(doc: Any, host: str) -> None:
    """An external file is read by the same rules; its errors name the URL it came from."""
    check_hash_file(to_json(doc), f"https://{host}/bottles_hash.json")


@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_hash_file_bytes_fast_and_slow_agree(raw: bytes) -> None:
    check_hash_file(raw, "bottles_hash.json")


@pytest.mark.parametrize(
    "raw",
    [
        # Duplicate keys: both readers must keep the same one.
        b'{"version": 2, "bottles": {}, "bottles": {"x": 1}}',
        b'{"version": 2, "version": 3, "bottles": {}}',
        b'{"version": 2.0, "bottles": {}}',
        b'{"version": true, "bottles": {}}',
        b'{"version": 2, "bottles": {"jq-1-sonoma": {"sha256": "'
        + SHA.encode()
        + b'", "download_date": "2026-11-22", "s3_key": "2026-11-22/jq-1.sonoma.bottle.tar.gz",'
        b' "file_size": 1.0}}}',
        b'{"version": 2, "bottles": {"jq-1-sonoma": {"sha256": "\\u0061b'
        + b"ab" * 31
        + b'", "download_date": "2026-11-22", "s3_key": "2026-11-22/jq-1.sonoma.bottle.tar.gz"}}}',
        b'{"version": 2, "bottles": {"jq-1-sonoma": {"sha256": "'
        + SHA.encode()
        + b'", "download_date": "2026-11-22", "s3_key": "2026-11-22\\/jq-1.sonoma.bottle.tar.gz"}}}',
        b'{"version": 2, "bottles": {"jq-1-sonoma": {"sha256": "'
        + SHA.encode()
        + b'", "download_date": "2026-11-22", "s3_key": "2026-11-22/jq-1.sonoma.bottle.tar.gz\\u0000"}}}',
        # Past 64 bits: msgspec reads an int, orjson a float; both readers must refuse it.
        b'{"version": 2, "bottles": {"jq-1-sonoma": {"sha256": "'
        + SHA.encode()
        + b'", "download_date": "2026-11-22", "s3_key": "2026-11-22/jq-1.sonoma.bottle.tar.gz",'
        b' "file_size": 18446744073709551616}}}',
    ],
)
def test_hash_file_edge_documents_fast_and_slow_agree(raw: bytes) -> None:
    check_hash_file(raw, "bottles_hash.json")


@given(
    key=st.one_of(
        st.tuples(mostly(VALID_NAMES), mostly(VALID_VERSIONS), mostly(ALL_TAGS)).map("-".join),
        hostile_mix(["jq-1.7.1-sonoma"]),
    ),
    sha256=sha_like(),
    day=date_like(),
    size=maybe(st.one_of(st.none(), big_int(-1))),
    s3_key=maybe(
        st.tuples(
            date_like().map(str),
            st.just("/"),
            mostly(["jq-1.7.1.sonoma.bottle.tar.gz", "a-1.all.bottle.12.tar.gz"]),
        ).map("".join)
    ),
)
def test_dumps_writes_only_what_the_reader_reads_back(
    key: str, sha256: Any, day: Any, size: Any, s3_key: Any
) -> None:
    """A hash file is never written that the reader would refuse: dumps() refuses the
    entries entry_problem() names (naming the key), and what it writes reads back."""
    entry = HashEntry(sha256, day, size, s3_key)
    problem = entry_problem(key, entry)
    written, exc = attempt(lambda: dumps(HashFile({key: entry})), HashFileError)
    if problem is None:
        assert exc is None
        assert parse(written).bottles == {key: entry}
    else:
        assert exc is not None
        assert problem in str(exc)
        assert f"{key!r:.80}" in problem


# --- SQS job messages -------------------------------------------------------------------


@st.composite
def job_body(draw: st.DrawFn) -> Any:
    return draw(
        st.fixed_dictionaries(
            {
                "v": maybe(st.just(1)),
                "job_id": maybe(hostile_mix(["2026-11-22-weekly", "a:b.c"])),
                "date": maybe(
                    st.one_of(
                        st.dates().map(Date.isoformat),
                        st.sampled_from(["2026-W47-1", "20261122xx", "２０２６-11-22"]),
                        hostile_mix(["2026-11-22"]),
                    )
                ),
            },
            optional={
                "platforms": maybe(st.lists(hostile_mix(ALL_TAGS), max_size=3)),
                "formulae": maybe(st.lists(hostile_mix(VALID_NAMES), max_size=3)),
                "reason": maybe(hostile_mix(["schedule", "manual"])),
                "estimated_bytes": maybe(st.integers(-1, 2**63 - 1)),
                "unknown_field": st.text(max_size=5),
            },
        )
    )


def check_job(raw: bytes | str) -> None:
    job, exc = attempt(lambda: parse_job(raw), JobError)
    if exc is not None:
        assert str(exc).startswith("job"), str(exc)
        assert len(str(exc)) < 400
        return
    assert JOB_ID_RE.fullmatch(job.job_id)
    assert Date.fromisoformat(job.date).isoformat() == job.date
    for tag in job.platforms or ():
        assert is_machine(parse_tag(tag))
    for name in job.formulae or ():
        bottle = Bottle(name, "1.0", "arm64_tahoe", 0, SHA, "https://x/y")
        assert_bottle_key(bottle.s3_key(job.date))
        assert_hash_key(bottle.hash_key)


@given(body=job_body())
def test_job_messages_are_refused_by_field_or_shape_only_layout_keys(body: Any) -> None:
    check_job(orjson.dumps(body))


@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_job_message_bytes_never_raise_anything_else(raw: bytes | str) -> None:
    check_job(raw)


# --- settings ---------------------------------------------------------------------------

VALID_SETTINGS: dict[str, list[str]] = {
    "MIRRORD_BUCKET": ["my-mirror", "a.b-c"],
    "MIRRORD_API_URL": ["https://formulae.brew.sh/api/formula.json", "http://127.0.0.1:9/x"],
    "MIRRORD_PLATFORMS": ["auto", "arm64_tahoe,sonoma", "x86_64_linux", "arm64_redwood"],
    "MIRRORD_MACOS_RELEASES": ["redwood=28", "redwood=28,big_sky=29", "tahoe=26"],
    "MIRRORD_CONCURRENCY": ["16", "1", "256"],
    "MIRRORD_PART_SIZE": ["16MiB", "5242880", "8 MB"],
    "MIRRORD_BATCH_SIZE": ["100"],
    "MIRRORD_CHECKPOINT_SECONDS": ["60", "0.5"],
    "MIRRORD_HASH_KEY": ["bottles_hash.json", "mirror/bottles_hash.json"],
    "MIRRORD_STATUS_KEY": ["status.json"],
    "MIRRORD_EXTERNAL_HASH_URL": ["s3://other-bucket/bottles_hash.json", "https://m.example/h"],
    "MIRRORD_EXTERNAL_HASH_ALLOW_HTTP": ["true", "0"],
    "MIRRORD_EXTERNAL_HASH_ALLOW_PRIVATE": ["yes", "false"],
    "MIRRORD_LOG_LEVEL": ["debug", "INFO"],
    "MIRRORD_HEALTH_FILE": ["/tmp/mirrord-healthy"],
    "MIRRORD_PORTABLE_RUBY": ["4.0.7_1", "none"],
    "MIRRORD_SLACK_WEBHOOK_URL": ["https://hooks.slack.com/services/T/B/x"],
}


@st.composite
def environment(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.sampled_from(sorted(ENV)), max_size=5, unique=True))
    env = {"MIRRORD_BUCKET": draw(hostile_mix(VALID_SETTINGS["MIRRORD_BUCKET"]))}
    for name in names:
        env[name] = draw(
            hostile_mix(VALID_SETTINGS.get(name, ["1", "true", "https://x.example/y"]))
        )
    return {k: v.replace("\x00", "") for k, v in env.items()}  # no OS environment holds NUL


@given(env=environment())
def test_settings_are_one_line_naming_the_variable_or_valid(env: dict[str, str]) -> None:
    s, exc = attempt(lambda: from_env(env), SettingsError)
    if exc is not None:
        message = str(exc)
        assert "\n" not in message, message
        assert len(message) < 400, message
        variable = message.split(":", 1)[0]
        assert variable in env, message
        if variable == "MIRRORD_SLACK_WEBHOOK_URL":
            assert env[variable] not in message or not env[variable]
        return
    for key in (s.hash_key, s.status_key):
        assert key.isascii(), key
        assert key.isprintable(), key
        assert not key.startswith("/"), key
        assert not {"", ".", ".."} & set(key.split("/")), key
        assert "%" not in key, key
    for url in (s.api_url, s.brew_api_url, s.mirror_url, s.slack_webhook_url):
        if url is not None:
            assert url.isascii(), url
            assert url.isprintable(), url
            assert " " not in url, url
    assert 1 <= s.concurrency <= 256


def test_the_hostile_strings_reach_every_rule() -> None:
    """The fuzzing above is only as good as its material: each hostile string is refused
    where it would shape a key."""
    for text in HOSTILE:
        if text in ("-", "~") or text.isalnum():
            continue
        assert not is_bottle_key(f"2026-11-22/{text}-1.sonoma.bottle.tar.gz"), text
        assert not is_hash_key(f"{text}-1-sonoma"), text
        with pytest.raises(HashFileError):
            parse(
                orjson.dumps(
                    {
                        "version": 2,
                        "bottles": {
                            "jq-1-sonoma": {
                                "sha256": SHA,
                                "download_date": "2026-11-22",
                                "s3_key": f"2026-11-22/{text}.sonoma.bottle.tar.gz",
                            }
                        },
                    }
                )
            )


# --- numbers from upstream --------------------------------------------------------------

NUMBERISH = ["120", "0", "²", "10²", "١٢", "１２", "1_0", "1e3", "-1", " 7 ", "9" * 5000, "inf"]


def numberish() -> st.SearchStrategy[str]:
    return hostile_mix(NUMBERISH)


@given(
    value=st.one_of(
        st.none(),
        numberish(),
        st.text(max_size=60),
        st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Mon, 01 Jan 0001 00:00:00 -0000"]),
    ),
    now=st.floats(0, 2e9),
)
def test_retry_after_never_raises(value: str | None, now: float) -> None:
    """Whatever a server sends as Retry-After: None, or seconds not below zero."""
    seconds = parse_retry_after(value, now)
    assert seconds is None or seconds >= 0


def json_value() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.one_of(st.none(), st.booleans(), big_int(-(2**70)), st.floats(), numberish()),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    )


@st.composite
def image_index(draw: st.DrawFn) -> Any:
    """An OCI image index, valid but for a field or two, or any JSON at all."""
    notes = st.fixed_dictionaries(
        {
            "sh.brew.bottle.digest": maybe(st.just(f"sha256:{SHA}")),
            "sh.brew.bottle.size": maybe(rarely(st.just("1024"), numberish())),
        }
    )
    manifest = maybe(st.fixed_dictionaries({"annotations": maybe(notes)}))
    index = st.fixed_dictionaries({"manifests": maybe(st.lists(manifest, max_size=3))})
    return draw(st.one_of(index, json_value()))


@given(index=image_index())
def test_sizes_from_index_never_raises(index: Any) -> None:
    """Whatever the registry's index holds: sizes that are plain ASCII numbers, the
    rest left out."""
    sizes = sizes_from_index(index)
    for digest, size in sizes.items():
        assert isinstance(digest, str)
        assert isinstance(size, int)
        assert 0 <= size < 10**15
