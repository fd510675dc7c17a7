"""Parsers for setting values, each taking (text, variable name). Pure.

A bad value raises ``SettingsError`` with one line naming the variable (or the flag as
typed); a secret value is never echoed back.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from mirrord.core.errors import SettingsError
from mirrord.core.models import BUCKET_RE, VERSION_RE, is_formula_name

MiB = 2**20
S3_MIN_PART = 5 * MiB  # S3 refuses smaller parts except the last
S3_MAX_PART = 5 * 2**30

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


# ASCII digits only (\d takes any script's), and few enough for int() (it refuses > 4,300).
_SIZE_RE = re.compile(r"[ \t]*([0-9]{1,20})[ \t]*([a-zA-Z]{0,3})[ \t]*")


def parse_size(text: str, name: str) -> int:
    """``16777216``, ``16MiB``, ``16MB`` → bytes."""
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise SettingsError(f"{name}: {text!r:.60} is not a size (e.g. 16MiB or 16777216)")
    return int(match.group(1)) * _UNITS[unit]


def number(text: str, name: str, kind: type[int] | type[float], low: float, high: float) -> Any:
    what = "an integer" if kind is int else "a number"
    # int() and float() also take fullwidth or Arabic-Indic digits and '_': not here.
    if not text.isascii() or "_" in text or len(text) > 32:
        raise SettingsError(f"{name}: {text!r:.60} is not {what}")
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r:.60} is not {what}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: {value} is outside {low}..{high}")
    return value


def integer(text: str, name: str, low: int, high: int) -> int:
    return int(number(text, name, int, low, high))


def real(text: str, name: str, low: float, high: float) -> float:
    return float(number(text, name, float, low, high))


def bucket(text: str, name: str) -> str:
    if not BUCKET_RE.fullmatch(text):
        raise SettingsError(f"{name}: {text!r:.80} is not a valid S3 bucket name")
    return text


def printable(text: str) -> bool:
    """No control characters, spaces or NUL: what would split a header or a log line."""
    return all(" " < c != "\x7f" for c in text)


def url(
    text: str, name: str, *, secret: bool = False, shown: str | None = None, limit: int = 2048
) -> str:
    """An http(s) URL of printable ASCII. An error shows ``shown``, or nothing of a
    ``secret`` value (a webhook URL is a credential), else the value itself."""
    if shown is None:
        shown = "the value" if secret else f"{text!r:.80}"
    if len(text) > limit or not text.isascii() or not printable(text):
        raise SettingsError(f"{name}: {shown} must be an http(s) URL of printable ASCII")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingsError(f"{name}: {shown} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"{name}: {shown} must be an http(s) URL")
    return text


def external(text: str, name: str) -> str:
    if text.startswith("s3://"):
        bucket, _, key = text.removeprefix("s3://").partition("/")
        if not BUCKET_RE.fullmatch(bucket) or not key or len(key) > 1024 or not printable(key):
            raise SettingsError(f"{name}: {text!r:.80} must be s3://bucket/key")
        return text
    if not text.startswith(("https://", "http://")):
        raise SettingsError(f"{name}: {text!r:.80} must be s3://bucket/key or https://…")
    return url(text, name)


def limited(text: str, name: str, limit: int) -> str:
    if len(text) > limit:
        raise SettingsError(f"{name}: longer than {limit} characters")
    if any(c < " " or c == "\x7f" for c in text):
        raise SettingsError(f"{name}: holds control characters")
    return text


def token(text: str, name: str) -> str:
    """Goes into two request headers: printable ASCII only, and never echoed back."""
    if not 0 < len(text) <= 512 or not text.isascii() or not printable(text):
        raise SettingsError(f"{name}: the value must be 1-512 printable ASCII characters")
    return text


_ENVIRONMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def environment(text: str, name: str) -> str:
    if not _ENVIRONMENT_RE.fullmatch(text):
        raise SettingsError(f"{name}: {text!r:.60} is not an environment name (e.g. prod)")
    return text


def boolean(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}: {text!r:.60} is not a boolean (true/false)")
    return value in ("1", "true", "yes")


def versions(text: str, name: str) -> tuple[str, ...]:
    """``latest``, ``4.0.7_1`` or a comma list; ``none`` for no portable Ruby."""
    word = text.strip().lower()
    if word == "none":
        return ()
    if word == "latest":
        return ("latest",)
    versions = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if "latest" in (v.lower() for v in versions):
        raise SettingsError(f"{name}: latest stands alone (the newest two); or list versions")
    for version in versions:
        if not VERSION_RE.fullmatch(version) or len(version) > 64:
            raise SettingsError(
                f"{name}: {version!r:.60} is not a version (e.g. 4.0.7_1), latest or none"
            )
    return versions


# A key of the bucket's own: ASCII segments joined by single '/', none of them "." or
# "..", nothing percent-encoded, at most 512 characters.
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


def key(text: str, name: str) -> str:
    if len(text) > 512 or not _KEY_RE.fullmatch(text) or ".." in text:
        raise SettingsError(f"{name}: {text!r:.80} is not a key inside the bucket")
    return text


def bounded_size(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise SettingsError(f"{name}: {value} bytes is outside {low}..{high}")
    return value


# A DNS name or an IP literal as a URL's host holds it (lowercase, no port, no brackets).
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|[0-9a-f:.]{2,45}")


def hosts(text: str, name: str) -> tuple[str, ...]:
    hosts = tuple(dict.fromkeys(h.strip().lower() for h in text.split(",") if h.strip()))
    for host in hosts:
        if not _HOST_RE.fullmatch(host):
            raise SettingsError(f"{name}: {host!r:.60} is not a host name (e.g. auth.example.com)")
    return hosts


def part_size(value: int, name: str) -> int:
    if not S3_MIN_PART <= value <= S3_MAX_PART:
        raise SettingsError(f"{name}: {value} bytes is outside S3's 5MiB..5GiB part sizes")
    return value


def choice(text: str, name: str, allowed: tuple[str, ...]) -> str:
    if text.lower() not in allowed:
        raise SettingsError(f"{name}: {text!r:.60} is not one of {', '.join(allowed)}")
    return text.lower()


def formula_names(text: str, name: str) -> tuple[str, ...]:
    """A comma list of formula names (a subset mirror's roots), as a job message takes them."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or len(names) > 10_000:
        raise SettingsError(f"{name}: 1 to 10000 comma-separated formula names")
    for formula in names:
        if not is_formula_name(formula):
            raise SettingsError(f"{name}: {formula!r:.60} is not a formula name (e.g. jq)")
    return names
