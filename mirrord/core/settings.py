"""Settings decided once at start: flag > environment > default. Pure.

Every environment name lives in this file. A bad value raises ``SettingsError`` with one
line naming the variable, so the program stops before doing anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mirrord.core.errors import SettingsError
from mirrord.core.models import BUCKET_RE, VERSION_RE

if TYPE_CHECKING:  # the catalog's imports (msgspec, orjson) only where tags are read
    from mirrord.core.releases import Releases

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


def _number(text: str, name: str, kind: type[int] | type[float], low: float, high: float) -> Any:
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


def _int(text: str, name: str, low: int, high: int) -> int:
    return int(_number(text, name, int, low, high))


def _float(text: str, name: str, low: float, high: float) -> float:
    return float(_number(text, name, float, low, high))


def parse_platforms(
    text: str, name: str = "MIRRORD_PLATFORMS", releases: Releases | None = None
) -> tuple[str, ...] | None:
    """``auto`` → None (decided from the catalog); else validated machine tags."""
    if text.strip().lower() == "auto":
        return None
    # Here, not at the top: `mirrord health` (ECS, every minute) reads this module and
    # must not pay for the catalog's imports (msgspec, orjson).
    from mirrord.core.releases import DEFAULT_RELEASES, validate_targets

    tags = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return validate_targets(tags, releases or DEFAULT_RELEASES)
    except SettingsError as exc:
        raise SettingsError(str(exc).replace("MIRRORD_PLATFORMS", name, 1)) from None


# One ``codename=number`` of MIRRORD_MACOS_RELEASES: the number as macOS names its
# releases (28, 10.15), ASCII digits only; the codename is checked by Releases.extended.
_RELEASE_RE = re.compile(r"([A-Za-z0-9_]{1,64})[ \t]*=[ \t]*([0-9]{1,3}(?:\.[0-9]{1,2})?)")


def parse_releases(text: str, name: str = "MIRRORD_MACOS_RELEASES") -> Releases:
    """``redwood=28`` or a comma list: macOS releases beyond the built-in table, so a new
    macOS can be mirrored (``auto`` sees it, targets may name it) before mirrord knows it."""
    extra: dict[str, float] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        match = _RELEASE_RE.fullmatch(item)
        if match is None:
            raise SettingsError(f"{name}: {item!r:.60} is not codename=number (e.g. redwood=28)")
        codename, number = match.group(1), float(match.group(2))
        if not 10 <= number < 1000:
            raise SettingsError(f"{name}: {number:g} is no macOS release number (10 to 999)")
        if extra.get(codename, number) != number:
            raise SettingsError(f"{name}: {codename} is given twice with different numbers")
        extra[codename] = number
    from mirrord.core.releases import DEFAULT_RELEASES  # see parse_platforms

    try:
        return DEFAULT_RELEASES.extended(extra)
    except SettingsError as exc:
        raise SettingsError(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    bucket: str
    api_url: str = "https://formulae.brew.sh/api/formula.json"
    platforms: tuple[str, ...] | None = None  # None = auto
    brewfile: str | None = None  # a Brewfile: its formulae and their closure only (CLI)
    # MIRRORD_MACOS_RELEASES: the built-in table plus these; None, the built-in one alone.
    macos_releases: Releases | None = None
    concurrency: int = 16
    part_size: int = 16 * MiB
    batch_size: int = 100
    checkpoint_seconds: float = 60.0
    hash_key: str = "bottles_hash.json"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # longest silence between two reads of a body
    max_attempts: int = 5
    # Hostile or broken upstreams (issue 12): a bottle's body may not pass this many bytes
    # (the largest real bottle is ~1.7 GB), nor take longer than this many seconds in all
    # (1.7 GB at 0.5 MB/s); a trickle that never trips the read timeout still ends.
    max_bottle_bytes: int = 4 * 2**30
    bottle_timeout: float = 3600.0
    # Hosts besides the registry's own that may answer its 401 challenge (a token realm).
    auth_realm_hosts: tuple[str, ...] = ()
    log_level: str = "info"
    # Log the job's CloudWatch metrics record (EMF); from_env decides when not set.
    emf: bool = False
    # The control plane (daemon, Lambdas, notifications).
    queue_url: str | None = None
    size_threshold_gb: float = 20.0
    # The enqueuer's size estimate reads one image index per new formula version: a first
    # sync has ~8-9k of them, and the enqueue Lambda has 300 s (infra/modules/lambda) for
    # the catalog, the hash file, the v2/ listing, the estimate and the send. Past either
    # bound the estimate is partial (a lower bound) and the job goes to Fargate.
    estimate_seconds: float = 120.0
    estimate_max_indexes: int = 2000
    sync_function: str | None = None  # the sync Lambda the enqueuer invokes
    # Scale-out (docs/design.md §12): a Fargate job estimated over shard_bytes goes out as
    # ceil(bytes / shard_bytes) shards, at most max_shards; shard_bytes 0: never sharded.
    shard_bytes: int = 16 * 10**9  # GB, as the size threshold and Terraform's shard_gb
    max_shards: int = 8
    max_receives: int = 3  # the queue's maxReceiveCount: a shard's last try gives up
    lambda_margin_seconds: float = 120.0
    stop_grace: float = 90.0
    heartbeat_seconds: float = 60.0
    health_file: str = "/tmp/mirrord-healthy"  # noqa: S108  # nosec B108  # a heartbeat file in the task's own /tmp
    status_key: str = "status.json"
    external_hash_url: str | None = None
    external_hash_allow_http: bool = False
    # Opt-in for a hash file on a loopback/private address (tests, a mirror on the LAN).
    external_hash_allow_private: bool = False
    slack_secret_id: str | None = None
    slack_webhook_url: str | None = field(default=None, repr=False)  # a secret
    logs_hint: str = "the mirrord logs (CloudWatch)"
    # Which deployment speaks (dev, staging, prod…): named in every Slack message. None
    # (a local run): no name.
    environment: str | None = None
    # brew 6 straight from the bucket (services/publish.py): image indexes, blob keys, API,
    # portable Ruby.
    brew_mirror: bool = True
    brew_api_url: str | None = None  # None: the folder of api_url (…/api)
    # ("latest",): the newest two versions the registry lists; or versions; () for none.
    portable_ruby: tuple[str, ...] = ("latest",)
    mirror_url: str | None = None  # what check-client walks (the CloudFront URL)
    # The reader token a restricted mirror asks for (infra/README.md, mirror_token_sha256):
    # check-client sends it as brew's clients do. A secret: never shown.
    mirror_token: str | None = field(default=None, repr=False)
    # Reliability testing only (tests/test_reliability.py): signal ourselves at the nth
    # pass through a named point of the data path. None: the hook is a no-op.
    crash_at: tuple[str, int] | None = None
    crash_signal: str = "KILL"

    @property
    def releases(self) -> Releases:
        """macOS codenames → numbers, as every reading of a tag goes by."""
        from mirrord.core.releases import DEFAULT_RELEASES  # see parse_platforms

        return self.macos_releases or DEFAULT_RELEASES

    @property
    def api_base(self) -> str:
        """Where the Homebrew API files are: MIRRORD_BREW_API_URL, else beside formula.json."""
        return self.brew_api_url or self.api_url.rsplit("/", 1)[0]


# variable → (field, parser). Parsers take (text, variable name).
ENV: dict[str, tuple[str, Any]] = {
    "MIRRORD_BUCKET": ("bucket", lambda t, n: _bucket(t, n)),
    "MIRRORD_API_URL": ("api_url", lambda t, n: _url(t, n)),
    "MIRRORD_BREWFILE": ("brewfile", lambda t, n: t),
    # Before MIRRORD_PLATFORMS: its tags are read with this table (see from_env).
    "MIRRORD_MACOS_RELEASES": ("macos_releases", parse_releases),
    "MIRRORD_PLATFORMS": ("platforms", parse_platforms),
    "MIRRORD_CONCURRENCY": ("concurrency", lambda t, n: _int(t, n, 1, 256)),
    "MIRRORD_PART_SIZE": ("part_size", lambda t, n: _part_size(parse_size(t, n), n)),
    "MIRRORD_BATCH_SIZE": ("batch_size", lambda t, n: _int(t, n, 1, 100_000)),
    "MIRRORD_CHECKPOINT_SECONDS": ("checkpoint_seconds", lambda t, n: _float(t, n, 0.1, 3600)),
    "MIRRORD_HASH_KEY": ("hash_key", lambda t, n: _key(t, n)),
    "MIRRORD_CONNECT_TIMEOUT": ("connect_timeout", lambda t, n: _float(t, n, 0.1, 600)),
    "MIRRORD_READ_TIMEOUT": ("read_timeout", lambda t, n: _float(t, n, 0.1, 3600)),
    "MIRRORD_MAX_ATTEMPTS": ("max_attempts", lambda t, n: _int(t, n, 1, 20)),
    "MIRRORD_MAX_BOTTLE_BYTES": (
        "max_bottle_bytes",
        lambda t, n: _bounded_size(parse_size(t, n), n, MiB, 5 * 2**40),
    ),
    "MIRRORD_BOTTLE_TIMEOUT": ("bottle_timeout", lambda t, n: _float(t, n, 1, 86_400)),
    "MIRRORD_AUTH_REALM_HOSTS": ("auth_realm_hosts", lambda t, n: _hosts(t, n)),
    "MIRRORD_LOG_LEVEL": (
        "log_level",
        lambda t, n: _choice(t, n, ("debug", "info", "warning", "error")),
    ),
    "MIRRORD_EMF": ("emf", lambda t, n: _bool(t, n)),
    "MIRRORD_QUEUE_URL": ("queue_url", lambda t, n: _url(t, n)),
    "MIRRORD_SIZE_THRESHOLD_GB": ("size_threshold_gb", lambda t, n: _float(t, n, 0, 100_000)),
    "MIRRORD_ESTIMATE_SECONDS": ("estimate_seconds", lambda t, n: _float(t, n, 1, 900)),
    "MIRRORD_ESTIMATE_MAX_INDEXES": (
        "estimate_max_indexes",
        lambda t, n: _int(t, n, 0, 1_000_000),
    ),
    "MIRRORD_SHARD_BYTES": ("shard_bytes", lambda t, n: parse_size(t, n)),
    "MIRRORD_MAX_SHARDS": ("max_shards", lambda t, n: _int(t, n, 1, 64)),  # shards.MAX_SHARDS
    "MIRRORD_MAX_RECEIVES": ("max_receives", lambda t, n: _int(t, n, 1, 1000)),
    "MIRRORD_SYNC_FUNCTION": ("sync_function", lambda t, n: _text(t, n, 256)),
    "MIRRORD_LAMBDA_MARGIN_SECONDS": (
        "lambda_margin_seconds",
        lambda t, n: _float(t, n, 10, 900),
    ),
    "MIRRORD_STOP_GRACE": ("stop_grace", lambda t, n: _float(t, n, 0, 3600)),
    "MIRRORD_HEARTBEAT_SECONDS": ("heartbeat_seconds", lambda t, n: _float(t, n, 0.5, 3600)),
    "MIRRORD_HEALTH_FILE": ("health_file", lambda t, n: _text(t, n, 1024)),
    "MIRRORD_STATUS_KEY": ("status_key", lambda t, n: _key(t, n)),
    "MIRRORD_EXTERNAL_HASH_URL": ("external_hash_url", lambda t, n: _external(t, n)),
    "MIRRORD_EXTERNAL_HASH_ALLOW_HTTP": ("external_hash_allow_http", lambda t, n: _bool(t, n)),
    "MIRRORD_EXTERNAL_HASH_ALLOW_PRIVATE": (
        "external_hash_allow_private",
        lambda t, n: _bool(t, n),
    ),
    "MIRRORD_SLACK_SECRET_ID": ("slack_secret_id", lambda t, n: _text(t, n, 2048)),
    "MIRRORD_SLACK_WEBHOOK_URL": ("slack_webhook_url", lambda t, n: _url(t, n, secret=True)),
    "MIRRORD_LOGS_HINT": ("logs_hint", lambda t, n: _text(t, n, 512)),
    "MIRRORD_ENVIRONMENT": ("environment", lambda t, n: _environment(t, n)),
    "MIRRORD_BREW_MIRROR": ("brew_mirror", lambda t, n: _bool(t, n)),
    "MIRRORD_BREW_API_URL": ("brew_api_url", lambda t, n: _url(t, n)),
    "MIRRORD_PORTABLE_RUBY": ("portable_ruby", lambda t, n: _versions(t, n)),
    "MIRRORD_MIRROR_URL": ("mirror_url", lambda t, n: _url(t, n)),
    "MIRRORD_MIRROR_TOKEN": ("mirror_token", lambda t, n: _token(t, n)),
    "MIRRORD_CRASH_AT": ("crash_at", lambda t, n: _crash_at(t, n)),
    "MIRRORD_CRASH_SIGNAL": ("crash_signal", lambda t, n: _choice(t, n, ("kill", "term")).upper()),
}

# Where a crash hook can fire, in the order a bottle meets them.
CRASH_POINTS = (
    "after_part_upload",
    "before_complete",
    "after_complete_before_checkpoint",
    "during_hashfile_write",
    "after_checkpoint",
)


def _crash_at(text: str, name: str) -> tuple[str, int]:
    """``<point>[:<nth>]``: the nth pass (from 1) through one of ``CRASH_POINTS``."""
    point, _, nth = text.partition(":")
    if point not in CRASH_POINTS:
        raise SettingsError(f"{name}: {point!r} is not one of {', '.join(CRASH_POINTS)}")
    return point, _int(nth, name, 1, 1_000_000) if nth else 1


def _bucket(text: str, name: str) -> str:
    if not BUCKET_RE.fullmatch(text):
        raise SettingsError(f"{name}: {text!r:.80} is not a valid S3 bucket name")
    return text


def _printable(text: str) -> bool:
    """No control characters, spaces or NUL: what would split a header or a log line."""
    return all(" " < c != "\x7f" for c in text)


def _url(text: str, name: str, *, secret: bool = False) -> str:
    shown = "the value" if secret else f"{text!r:.80}"  # a webhook URL is a credential
    if len(text) > 2048 or not text.isascii() or not _printable(text):
        raise SettingsError(f"{name}: {shown} must be an http(s) URL of printable ASCII")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingsError(f"{name}: {shown} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"{name}: {shown} must be an http(s) URL")
    return text


def _external(text: str, name: str) -> str:
    if text.startswith("s3://"):
        bucket, _, key = text.removeprefix("s3://").partition("/")
        if not BUCKET_RE.fullmatch(bucket) or not key or len(key) > 1024 or not _printable(key):
            raise SettingsError(f"{name}: {text!r:.80} must be s3://bucket/key")
        return text
    if not text.startswith(("https://", "http://")):
        raise SettingsError(f"{name}: {text!r:.80} must be s3://bucket/key or https://…")
    return _url(text, name)


def _text(text: str, name: str, limit: int) -> str:
    if len(text) > limit:
        raise SettingsError(f"{name}: longer than {limit} characters")
    if any(c < " " or c == "\x7f" for c in text):
        raise SettingsError(f"{name}: holds control characters")
    return text


def _token(text: str, name: str) -> str:
    """Goes into two request headers: printable ASCII only, and never echoed back."""
    if not 0 < len(text) <= 512 or not text.isascii() or not _printable(text):
        raise SettingsError(f"{name}: the value must be 1-512 printable ASCII characters")
    return text


_ENVIRONMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def _environment(text: str, name: str) -> str:
    if not _ENVIRONMENT_RE.fullmatch(text):
        raise SettingsError(f"{name}: {text!r:.60} is not an environment name (e.g. prod)")
    return text


def _bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}: {text!r:.60} is not a boolean (true/false)")
    return value in ("1", "true", "yes")


def _versions(text: str, name: str) -> tuple[str, ...]:
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


def _key(text: str, name: str) -> str:
    if len(text) > 512 or not _KEY_RE.fullmatch(text) or ".." in text:
        raise SettingsError(f"{name}: {text!r:.80} is not a key inside the bucket")
    return text


def _bounded_size(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise SettingsError(f"{name}: {value} bytes is outside {low}..{high}")
    return value


# A DNS name or an IP literal as a URL's host holds it (lowercase, no port, no brackets).
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|[0-9a-f:.]{2,45}")


def _hosts(text: str, name: str) -> tuple[str, ...]:
    hosts = tuple(dict.fromkeys(h.strip().lower() for h in text.split(",") if h.strip()))
    for host in hosts:
        if not _HOST_RE.fullmatch(host):
            raise SettingsError(f"{name}: {host!r:.60} is not a host name (e.g. auth.example.com)")
    return hosts


def _part_size(value: int, name: str) -> int:
    if not S3_MIN_PART <= value <= S3_MAX_PART:
        raise SettingsError(f"{name}: {value} bytes is outside S3's 5MiB..5GiB part sizes")
    return value


def _choice(text: str, name: str, allowed: tuple[str, ...]) -> str:
    if text.lower() not in allowed:
        raise SettingsError(f"{name}: {text!r:.60} is not one of {', '.join(allowed)}")
    return text.lower()


def from_env(
    env: Mapping[str, str],
    flags: Mapping[str, str | None] | None = None,
    *,
    require_bucket: bool = True,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings; ``flags`` maps variable names to flag values (None = not given),
    ``flag_names`` variable names to the flag as the user types it (``--platform`` sets
    MIRRORD_PLATFORMS), so an error names what was typed; default ``--<field>``.
    ``require_bucket=False`` for commands that never touch the bucket (``check-client``)."""
    values: dict[str, Any] = {}
    for variable, (field_name, parser) in ENV.items():
        text = (flags or {}).get(variable)
        source = variable
        if text is None:
            text = env.get(variable)
        else:
            source = (flag_names or {}).get(variable) or f"--{field_name.replace('_', '-')}"
        if text is None or text == "":
            continue
        if parser is parse_platforms:  # the tags a table given beside them defines
            values[field_name] = parse_platforms(text, source, values.get("macos_releases"))
            continue
        values[field_name] = parser(text, source)
    if "emf" not in values:
        # CloudWatch turns the metrics record into metrics where it reads the log: in a
        # Lambda and on ECS (each runtime sets its variable); elsewhere it is noise.
        values["emf"] = bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) or bool(
            env.get("ECS_CONTAINER_METADATA_URI_V4")
        )
    if "bucket" not in values:
        if require_bucket:
            flag = (flag_names or {}).get("MIRRORD_BUCKET")
            named = f"MIRRORD_BUCKET (or {flag})" if flag else "MIRRORD_BUCKET"
            raise SettingsError(f"{named}: required (the mirror's S3 bucket)")
        values["bucket"] = ""
    return Settings(**values)
