"""Settings decided once at start: flag > environment > default. Pure.

Every environment name lives in this file. A bad value raises ``SettingsError`` with one
line naming the variable, so the program stops before doing anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mirrord.core import values as v
from mirrord.core.errors import SettingsError
from mirrord.core.fallback import check_fallbacks, parse_fallback_urls
from mirrord.core.values import MiB, parse_size

if TYPE_CHECKING:  # the catalog's imports (msgspec, orjson) only where tags are read
    from mirrord.core.releases import Releases


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
    # A subset mirror's roots: what a job naming no formulae mirrors (with their closure).
    formulae: tuple[str, ...] | None = None
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
    fallback_urls: tuple[str, ...] = ()  # other mirrors' bottles/ folders (core/fallback.py)
    fallback_allow_http: bool = False  # the external hash file's opt-ins, for these
    fallback_allow_private: bool = False
    # mirrord prune (core/prune.py): after each clean scheduled sync (daemon), and its rules.
    prune_after_sync: bool = False
    prune_keep_versions: int = 2
    prune_keep_days: int = 30
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
    "MIRRORD_BUCKET": ("bucket", lambda t, n: v.bucket(t, n)),
    "MIRRORD_API_URL": ("api_url", lambda t, n: v.url(t, n)),
    "MIRRORD_BREWFILE": ("brewfile", lambda t, n: v.limited(t, n, 1024)),
    "MIRRORD_FORMULAE": ("formulae", lambda t, n: v.formula_names(t, n)),
    # Before MIRRORD_PLATFORMS: its tags are read with this table (see from_env).
    "MIRRORD_MACOS_RELEASES": ("macos_releases", parse_releases),
    "MIRRORD_PLATFORMS": ("platforms", parse_platforms),
    "MIRRORD_CONCURRENCY": ("concurrency", lambda t, n: v.integer(t, n, 1, 256)),
    "MIRRORD_PART_SIZE": ("part_size", lambda t, n: v.part_size(parse_size(t, n), n)),
    "MIRRORD_BATCH_SIZE": ("batch_size", lambda t, n: v.integer(t, n, 1, 100_000)),
    "MIRRORD_CHECKPOINT_SECONDS": ("checkpoint_seconds", lambda t, n: v.real(t, n, 0.1, 3600)),
    "MIRRORD_HASH_KEY": ("hash_key", lambda t, n: v.key(t, n)),
    "MIRRORD_CONNECT_TIMEOUT": ("connect_timeout", lambda t, n: v.real(t, n, 0.1, 600)),
    "MIRRORD_READ_TIMEOUT": ("read_timeout", lambda t, n: v.real(t, n, 0.1, 3600)),
    "MIRRORD_MAX_ATTEMPTS": ("max_attempts", lambda t, n: v.integer(t, n, 1, 20)),
    "MIRRORD_MAX_BOTTLE_BYTES": (
        "max_bottle_bytes",
        lambda t, n: v.bounded_size(parse_size(t, n), n, MiB, 5 * 2**40),
    ),
    "MIRRORD_BOTTLE_TIMEOUT": ("bottle_timeout", lambda t, n: v.real(t, n, 1, 86_400)),
    "MIRRORD_AUTH_REALM_HOSTS": ("auth_realm_hosts", lambda t, n: v.hosts(t, n)),
    "MIRRORD_LOG_LEVEL": (
        "log_level",
        lambda t, n: v.choice(t, n, ("debug", "info", "warning", "error")),
    ),
    "MIRRORD_EMF": ("emf", lambda t, n: v.boolean(t, n)),
    "MIRRORD_QUEUE_URL": ("queue_url", lambda t, n: v.url(t, n)),
    "MIRRORD_SIZE_THRESHOLD_GB": ("size_threshold_gb", lambda t, n: v.real(t, n, 0, 100_000)),
    "MIRRORD_ESTIMATE_SECONDS": ("estimate_seconds", lambda t, n: v.real(t, n, 1, 900)),
    "MIRRORD_ESTIMATE_MAX_INDEXES": (
        "estimate_max_indexes",
        lambda t, n: v.integer(t, n, 0, 10**6),
    ),
    "MIRRORD_SHARD_BYTES": ("shard_bytes", lambda t, n: parse_size(t, n)),
    "MIRRORD_MAX_SHARDS": ("max_shards", lambda t, n: v.integer(t, n, 1, 64)),  # shards.MAX_SHARDS
    "MIRRORD_MAX_RECEIVES": ("max_receives", lambda t, n: v.integer(t, n, 1, 1000)),
    "MIRRORD_SYNC_FUNCTION": ("sync_function", lambda t, n: v.limited(t, n, 256)),
    "MIRRORD_LAMBDA_MARGIN_SECONDS": ("lambda_margin_seconds", lambda t, n: v.real(t, n, 10, 900)),
    "MIRRORD_STOP_GRACE": ("stop_grace", lambda t, n: v.real(t, n, 0, 3600)),
    "MIRRORD_HEARTBEAT_SECONDS": ("heartbeat_seconds", lambda t, n: v.real(t, n, 0.5, 3600)),
    "MIRRORD_HEALTH_FILE": ("health_file", lambda t, n: v.limited(t, n, 1024)),
    "MIRRORD_STATUS_KEY": ("status_key", lambda t, n: v.key(t, n)),
    "MIRRORD_EXTERNAL_HASH_URL": ("external_hash_url", lambda t, n: v.external(t, n)),
    "MIRRORD_EXTERNAL_HASH_ALLOW_HTTP": ("external_hash_allow_http", v.boolean),
    "MIRRORD_EXTERNAL_HASH_ALLOW_PRIVATE": ("external_hash_allow_private", v.boolean),
    "MIRRORD_FALLBACK_URLS": ("fallback_urls", parse_fallback_urls),
    "MIRRORD_FALLBACK_ALLOW_HTTP": ("fallback_allow_http", v.boolean),
    "MIRRORD_FALLBACK_ALLOW_PRIVATE": ("fallback_allow_private", v.boolean),
    "MIRRORD_PRUNE_AFTER_SYNC": ("prune_after_sync", v.boolean),
    "MIRRORD_PRUNE_KEEP_VERSIONS": ("prune_keep_versions", lambda t, n: v.integer(t, n, 1, 100)),
    "MIRRORD_PRUNE_KEEP_DAYS": ("prune_keep_days", lambda t, n: v.integer(t, n, 0, 3650)),
    "MIRRORD_SLACK_SECRET_ID": ("slack_secret_id", lambda t, n: v.limited(t, n, 2048)),
    "MIRRORD_SLACK_WEBHOOK_URL": ("slack_webhook_url", lambda t, n: v.url(t, n, secret=True)),
    "MIRRORD_LOGS_HINT": ("logs_hint", lambda t, n: v.limited(t, n, 512)),
    "MIRRORD_ENVIRONMENT": ("environment", lambda t, n: v.environment(t, n)),
    "MIRRORD_BREW_MIRROR": ("brew_mirror", lambda t, n: v.boolean(t, n)),
    "MIRRORD_BREW_API_URL": ("brew_api_url", lambda t, n: v.url(t, n)),
    "MIRRORD_PORTABLE_RUBY": ("portable_ruby", lambda t, n: v.versions(t, n)),
    "MIRRORD_MIRROR_URL": ("mirror_url", lambda t, n: v.url(t, n)),
    "MIRRORD_MIRROR_TOKEN": ("mirror_token", lambda t, n: v.token(t, n)),
    "MIRRORD_CRASH_AT": ("crash_at", lambda t, n: _crash_at(t, n)),
    "MIRRORD_CRASH_SIGNAL": ("crash_signal", lambda t, n: v.choice(t, n, ("kill", "term")).upper()),
}

# Where a crash hook can fire, in the order a bottle meets them.
CRASH_POINTS = (
    "after_part_upload",
    "before_complete",
    "after_complete_before_checkpoint",
    "during_hashfile_write",
    "after_checkpoint",
)
# mirrord prune's: the hash file cut and nothing deleted yet; before each key it deletes.
PRUNE_CRASH_POINTS = ("after_prune_cut", "prune_delete")


def _crash_at(text: str, name: str) -> tuple[str, int]:
    """``<point>[:<nth>]``: the nth pass (from 1) through one of ``CRASH_POINTS``."""
    point, _, nth = text.partition(":")
    if point not in (*CRASH_POINTS, *PRUNE_CRASH_POINTS):
        points = ", ".join((*CRASH_POINTS, *PRUNE_CRASH_POINTS))
        raise SettingsError(f"{name}: {point!r} is not one of {points}")
    return point, v.integer(nth, name, 1, 1_000_000) if nth else 1


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
    check_fallbacks(values)  # the URLs against their opt-ins, whatever order they came in
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
