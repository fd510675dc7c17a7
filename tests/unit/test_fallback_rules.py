"""The fallback upstreams' rules (issue 17, item 2), pure: the settings, the refusals of
plain http and private addresses unless allowed, and a bottle's URL in a flat
``bottles/`` folder named as TUNA's and USTC's mirrors name it."""

from __future__ import annotations

import re

import orjson
import pytest

from mirrord.core.errors import InputError, SettingsError
from mirrord.core.fallback import fallback_url
from mirrord.core.models import Bottle
from mirrord.core.report import FallbackMiss, Fallbacks, FallbackServed, Report
from mirrord.core.settings import from_env
from mirrord.core.shards import Shard, ShardRecord
from mirrord.render import sync_result

SHA = "a" * 64


def env(**kw: str) -> dict[str, str]:
    return {"MIRRORD_BUCKET": "b-ucket", **{f"MIRRORD_FALLBACK_{k}": v for k, v in kw.items()}}


def test_urls_are_a_comma_list_in_order_without_trailing_slash_or_repeats() -> None:
    s = from_env(
        env(URLS=" https://mirrors.example.edu.cn/homebrew-bottles/bottles/ ,"
            "https://mirror2.example.org/bottles,,https://mirror2.example.org/bottles/")
    )  # fmt: skip
    assert s.fallback_urls == (
        "https://mirrors.example.edu.cn/homebrew-bottles/bottles",
        "https://mirror2.example.org/bottles",
    )
    assert (s.fallback_allow_http, s.fallback_allow_private) == (False, False)
    assert from_env(env()).fallback_urls == ()


@pytest.mark.parametrize(
    ("urls", "says"),
    [
        ("ftp://mirror.example/bottles", "must be an http(s) URL"),
        ("https://", "must be an http(s) URL"),
        ("https://mirror.example:99999/b", "is not a URL"),
        ("https://mirror.example/b?token=1", "query or fragment"),
        ("https://mirror.example/b#x", "query or fragment"),
        ("https://mirror.example/a b", "printable ASCII"),
        (",".join(f"https://m{i}.example/b" for i in range(9)), "at most 8"),
    ],
)
def test_a_bad_url_list_stops_at_start_naming_the_variable(urls: str, says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)) as caught:
        from_env(env(URLS=urls))
    assert str(caught.value).startswith("MIRRORD_FALLBACK_URLS: ")


@pytest.mark.parametrize(
    ("url", "allowed", "says"),
    [
        ("http://mirror.example/bottles", {}, "plain http refused (MIRRORD_FALLBACK_ALLOW_HTTP"),
        ("https://127.0.0.1:8080/bottles", {}, "not a public address (MIRRORD_FALLBACK_ALLOW_PRIVATE"),
        ("https://10.1.2.3/bottles", {}, "not a public address"),
        ("https://[::1]/bottles", {}, "not a public address"),
        ("https://[::ffff:192.168.1.1]/b", {}, "not a public address"),
        # Never, whatever is allowed: the instance metadata service and its kin.
        ("http://169.254.169.254/latest", {"ALLOW_HTTP": "1", "ALLOW_PRIVATE": "1"}, "never allowed"),
        ("https://[fd00:ec2::254]/b", {"ALLOW_PRIVATE": "true"}, "never allowed"),
        ("https://0.0.0.0/b", {"ALLOW_PRIVATE": "true"}, "never allowed"),
        # One opt-in does not stand for the other.
        ("http://127.0.0.1/b", {"ALLOW_PRIVATE": "true"}, "plain http refused"),
        ("http://127.0.0.1/b", {"ALLOW_HTTP": "true"}, "not a public address"),
    ],
)  # fmt: skip
def test_http_and_private_addresses_are_refused_unless_allowed(
    url: str, allowed: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)) as caught:
        from_env(env(URLS=url, **allowed))
    assert str(caught.value).startswith("MIRRORD_FALLBACK_URLS: ")


def test_the_opt_ins_allow_what_they_name() -> None:
    s = from_env(env(URLS="http://127.0.0.1:8080/bottles", ALLOW_HTTP="true", ALLOW_PRIVATE="1"))
    assert s.fallback_urls == ("http://127.0.0.1:8080/bottles",)
    # A name is judged when it resolves (the guarded resolver), not here.
    assert from_env(env(URLS="https://localhost/b")).fallback_urls == ("https://localhost/b",)
    with pytest.raises(
        SettingsError, match="MIRRORD_FALLBACK_ALLOW_HTTP: 'maybe' is not a boolean"
    ):
        from_env(env(URLS="https://m.example/b", ALLOW_HTTP="maybe"))


def bottle(name: str, pkg_version: str, tag: str, rebuild: int = 0) -> Bottle:
    return Bottle(name, pkg_version, tag, rebuild, SHA, f"https://ghcr.io/v2/x/blobs/sha256:{SHA}")


def test_a_bottle_url_is_the_mirrors_file_name_percent_encoded_as_brew_does() -> None:
    """<name>-<pkg_version>.<tag>.bottle[.<rebuild>].tar.gz (ustcmirror-images'
    homebrew-bottles), revision in pkg_version; '@' and '+' encoded as brew's url_encode."""
    base = "https://mirrors.example.edu.cn/homebrew-bottles/bottles"
    assert fallback_url(base, bottle("jq", "1.7.1_1", "arm64_tahoe")) == (
        f"{base}/jq-1.7.1_1.arm64_tahoe.bottle.tar.gz"
    )
    assert fallback_url(base, bottle("wget", "1.25.0", "sonoma", 1)) == (
        f"{base}/wget-1.25.0.sonoma.bottle.1.tar.gz"
    )
    assert fallback_url(base, bottle("openssl@3", "3.5.0", "all")) == (
        f"{base}/openssl%403-3.5.0.all.bottle.tar.gz"
    )
    assert fallback_url(base, bottle("libxml++", "5.4.0", "sonoma")).endswith(
        "/libxml%2B%2B-5.4.0.sonoma.bottle.tar.gz"
    )


def test_the_report_counts_per_source_and_lists_each_bottle_and_miss() -> None:
    a, b = "https://a.example/bottles", "https://b.example/bottles"
    used = Fallbacks(
        (a, b),
        served=(FallbackServed("jq-1.7.1-sonoma", b, f"{b}/jq-1.7.1.sonoma.bottle.tar.gz", "HTTP 503"),),
        misses=(FallbackMiss("jq-1.7.1-sonoma", a, "sha256 mismatch: …"),),
    )  # fmt: skip
    body = Report("j", "2026-12-01", 1, fallback=used).to_dict()["fallback"]
    assert body["served_by_source"] == {a: 0, b: 1}
    assert body["misses_by_source"] == {a: 1, b: 0}
    assert body["served"][0]["upstream_error"] == "HTTP 503"
    assert body["misses"] == [
        {"key": "jq-1.7.1-sonoma", "source": a, "error": "sha256 mismatch: …"}
    ]
    assert Report("j", "2026-12-01", 1).to_dict()["fallback"] is None


def test_a_shard_record_carries_the_fallback_section_and_the_fan_in_joins_them() -> None:
    a, b = "https://a.example/bottles", "https://b.example/bottles"
    one = Fallbacks(
        (a, b), served=(FallbackServed("x-1-all", a, f"{a}/x-1.all.bottle.tar.gz", "HTTP 503"),)
    )
    two = Fallbacks((a, b), misses=(FallbackMiss("y-1-all", a, "HTTP 404 Not Found"),))
    record = ShardRecord("j", Shard(1, 2), "done", stored=1, fallback=one)
    assert ShardRecord.from_json(orjson.loads(orjson.dumps(record.to_json())), "r") == record
    plain = ShardRecord("j", Shard(2, 2), "done")
    assert "fallback" not in plain.to_json()  # records stay as before without fallbacks
    assert ShardRecord.from_json(plain.to_json(), "r").fallback is None
    assert Fallbacks.merged([one, None, two]) == Fallbacks((a, b), one.served, two.misses)
    assert Fallbacks.merged([None, None]) is None
    broken = {**record.to_json(), "fallback": {"sources": [a]}}
    with pytest.raises(InputError, match="r: unreadable shard record"):
        ShardRecord.from_json(broken, "r")


def test_the_summary_says_how_many_bottles_the_fallbacks_served() -> None:
    a = "https://a.example/bottles"
    served = (FallbackServed("x-1-all", a, f"{a}/x-1.all.bottle.tar.gz", "HTTP 503"),)
    report = Report("j", "2026-12-01", 2, downloaded=2, fallback=Fallbacks((a,), served))
    assert "2 downloaded (1 from fallback mirrors), 0 adopted" in sync_result(report, "b")[1]
    plain = Report("j", "2026-12-01", 2, downloaded=2, fallback=Fallbacks((a,)))
    assert "2 downloaded, 0 adopted" in sync_result(plain, "b")[1]


def test_a_password_in_a_fallback_url_is_never_in_an_error() -> None:
    with pytest.raises(SettingsError) as caught:
        from_env(env(URLS="http://mirror:s3cr3t@10.0.0.7/bottles"))
    assert "s3cr3t" not in str(caught.value)
    assert "'http://…@10.0.0.7/bottles'" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        from_env(env(URLS="https://mirror:s3cr3t@m.example/b?x=1"))
    assert "s3cr3t" not in str(caught.value)
