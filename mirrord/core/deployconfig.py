"""``config.yaml``: every deployment in one file, the one place a team edits. Pure.

``defaults`` apply to every environment; each environment (any name matching
``ENV_NAME``) overrides what it needs. The result for one environment is exactly the set
of variables the Terraform root module in ``infra/`` declares, written as
``infra/environments/<env>/terraform.tfvars.json``, plus the folder's ``backend.hcl``
(from ``state``). Four keys are config.yaml's own and derive variables:
``image_repository``/``image_tag`` (→ ``image_uri`` in the account's ECR), ``state``, and
``brewfile`` (its homebrew/core formulae join ``formulae``, a subset mirror's roots).
A bad file gives one error per problem, each naming ``<environment>.<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mirrord.core.closure import parse_brewfile
from mirrord.core.errors import ConfigError, SettingsError
from mirrord.core.models import BUCKET_RE, is_formula_name
from mirrord.core.settings import parse_platforms

# An environment's name: its folder infra/environments/<name>, the `environment` variable
# and part of every resource name. "moto" is the emulator's hand-written folder.
ENV_NAME = re.compile(r"[a-z][a-z0-9-]{1,15}")
RESERVED_ENVIRONMENTS = frozenset({"moto"})
ACCOUNT_HINT = (
    "the 12-digit id of the AWS account this environment deploys to, in quotes "
    "(aws sts get-caller-identity --query Account --output text)"
)
FARGATE_CPU = (256, 512, 1024, 2048, 4096, 8192, 16384)
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)  # what CloudWatch Logs accepts


Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong


def _int(low: int, high: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            return f"must be a whole number in {low}..{high}"
        return None

    return check


def _number(low: float) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, int | float) or isinstance(v, bool) or v < low:
            return f"must be a number ≥ {low}"
        return None

    return check


def _matches(pattern: str, what: str, *, optional: bool = False) -> Check:
    regex = re.compile(pattern)

    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str) or not regex.fullmatch(v):
            return f"must be {what}"
        return None

    return check


def _one_of(allowed: tuple[Any, ...]) -> Check:
    def check(v: Any) -> str | None:
        ok = v in allowed and not isinstance(v, bool)
        return None if ok else f"must be one of {', '.join(map(str, allowed))}"

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _platforms(v: Any) -> str | None:
    if not isinstance(v, str):
        return "must be 'auto' or a comma list of bottle tags"
    try:
        parse_platforms(v, "platforms")
    except SettingsError as exc:
        return str(exc).removeprefix("platforms: ")
    return None


def _emails(v: Any) -> str | None:
    email = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
    if not isinstance(v, list) or not all(isinstance(e, str) and email.fullmatch(e) for e in v):
        return "must be a list of e-mail addresses"
    return None


def _sha256_list(v: Any) -> str | None:
    digest = re.compile(r"[0-9a-f]{64}")
    if not isinstance(v, list) or not all(isinstance(h, str) and digest.fullmatch(h) for h in v):
        return "must be a list of SHA-256 hex digests of the tokens (never the tokens)"
    return None


def _names(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(n, str) and is_formula_name(n) for n in v)
    return None if ok else "must be a list of formula names (e.g. [jq, openssl@3])"


def _https_list(v: Any) -> str | None:
    url = re.compile(r"https://[^/?#@\s]+(/[^?#\s]*)?")
    if not isinstance(v, list) or not all(isinstance(u, str) and url.fullmatch(u) for u in v):
        return "must be a list of https:// URLs without credentials, query or fragment"
    return None


def _optional_gb(v: Any) -> str | None:
    if v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v > 0):
        return None
    return "must be null or a positive number of GB"


def _cdn_pairs(env: str, v: Mapping[str, Any]) -> list[str]:
    """The CloudFront settings that only work together (infra/variables.tf agrees)."""
    problems = []
    if (v["mirror_domain"] is None) != (v["mirror_certificate_arn"] is None):
        problems.append(f"{env}.mirror_domain: needs mirror_certificate_arn, and vice versa")
    if v["mirror_route53_zone_id"] is not None and v["mirror_domain"] is None:
        problems.append(f"{env}.mirror_route53_zone_id: needs mirror_domain")
    if v["mirror_daily_gb_alarm"] is not None and v["aws_region"] != "us-east-1":
        problems.append(
            f"{env}.mirror_daily_gb_alarm: CloudFront's metrics are in us-east-1 only, "
            "so the alarm needs aws_region: us-east-1"
        )
    return problems


# The Terraform root module's variables: name → (check, default; REQUIRED when none).
REQUIRED = object()
VARIABLES: Mapping[str, tuple[Check, Any]] = {
    "name_prefix": (_matches(r"[a-z][a-z0-9-]{1,20}", "lowercase letters, digits, '-'"), "mirrord"),
    # ASCII-only patterns: \d and \w also take other scripts' digits and letters.
    "aws_region": (_matches(r"[a-z]{2}(-[a-z]+)+-[0-9]", "an AWS region like eu-west-1"), REQUIRED),
    "bucket_name": (
        _matches(BUCKET_RE.pattern, "a valid S3 bucket name"),
        REQUIRED,
    ),
    "schedule_expression": (
        _matches(r"(cron|rate)\(.+\)", "cron(…) or rate(…)"),
        "cron(0 3 ? * SUN *)",
    ),
    "schedule_enabled": (_bool, True),  # false pauses the schedule; the rule stays
    "platforms": (_platforms, "auto"),
    "concurrency": (_int(1, 256), 16),
    "part_size_mib": (_int(5, 5120), 16),
    "size_threshold_gb": (_number(0), 20),
    "task_cpu": (_one_of(FARGATE_CPU), 2048),
    "task_memory": (_int(512, 122880), 8192),
    "sync_memory_size": (_int(512, 10240), 2048),
    "image_uri": (_matches(r"\S+", "a container image URI"), REQUIRED),
    "lambda_package_path": (_matches(r"\S+", "a path to the Lambda zip"), REQUIRED),
    "log_retention_days": (_one_of(LOG_RETENTION_DAYS), 30),
    "alarm_emails": (_emails, []),
    "kms_key_arn": (
        _matches(
            r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9_-]+",
            "null or a KMS key ARN",
            optional=True,
        ),
        None,
    ),
    "use_nat_gateway": (_bool, False),
    "enable_autoscaling": (_bool, True),
    # Scale-out (docs/design.md §12): tasks at once = the most shards a job fans out to.
    "max_tasks": (_int(1, 16), 1),
    "shard_gb": (_int(0, 100_000), 16),
    "enable_monitoring": (_bool, True),
    "noncurrent_version_days": (_int(1, 3650), 30),
    "external_hash_url": (
        _matches(r"(s3|https)://\S+", "null, s3://… or https://…", optional=True),
        None,
    ),
    # One switch for serving brew 6: MIRRORD_BREW_MIRROR (the v2/ and api/ copies) and
    # the CloudFront distribution that serves them, never one without the other.
    "brew_mirror": (_bool, True),
    "cloudfront_price_class": (
        _matches(r"PriceClass_(100|200|All)", "PriceClass_100, PriceClass_200 or PriceClass_All"),
        "PriceClass_100",
    ),
    # Quoted in YAML: a string of 12 ASCII digits (Terraform's allowed_account_ids).
    "account_id": (_matches(r"[0-9]{12}", ACCOUNT_HINT), REQUIRED),
    # The account's monthly AWS Budgets alert (80 % spent, 100 % forecast); null: none.
    "monthly_budget_usd": (
        lambda v: None if v is None or (_number(0.01)(v) is None) else "must be null or > 0",
        None,
    ),
    # CloudFront options (infra/README.md): custom domain, reader token, bytes alarm.
    "mirror_domain": (
        _matches(
            r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}",
            "null or a DNS name such as brew.example.com",
            optional=True,
        ),
        None,
    ),
    "mirror_certificate_arn": (
        _matches(
            r"arn:aws[a-z-]*:acm:us-east-1:[0-9]{12}:certificate/[A-Za-z0-9-]+",
            "null or an ACM certificate ARN in us-east-1 (CloudFront's only region)",
            optional=True,
        ),
        None,
    ),
    "mirror_route53_zone_id": (
        _matches(r"Z[A-Z0-9]{1,31}", "null or a Route 53 hosted zone ID", optional=True),
        None,
    ),
    "mirror_token_sha256": (_sha256_list, []),
    "mirror_daily_gb_alarm": (_optional_gb, None),
    # What to keep and what to mirror (docs/operations.md): a subset's roots (brewfile's
    # names join these), fallback mirrors for bottles GHCR fails, and pruning.
    "formulae": (_names, []),
    "fallback_urls": (_https_list, []),
    "prune_after_sync": (_bool, False),
    "prune_keep_versions": (_int(1, 100), 2),
    "prune_keep_days": (_int(0, 3650), 30),
}
# config.yaml's own keys: not Terraform variables, they derive some.
OWN_KEYS: Mapping[str, tuple[Check, Any]] = {
    # ECR repository in the environment's account (infra/bootstrap makes it);
    # image_uri = <account_id>.dkr.ecr.<aws_region>.amazonaws.com/<repo>:<tag>
    "image_repository": (_matches(r"[a-z0-9][a-z0-9._/-]{1,255}", "an ECR repository name"), None),
    "image_tag": (_matches(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", "an image tag"), None),
    "state": (lambda v: None, None),  # checked by _state
    # A Brewfile, relative to config.yaml: its homebrew/core formulae join `formulae`.
    "brewfile": (_matches(r"[^\x00-\x1f]{1,1024}", "a path to a Brewfile", optional=True), None),
}
STATE_KEYS = frozenset({"bucket", "region"})
# What makes infra/environments/<env>/ a Terraform root: links to the one shared copy
# (dev/ holds the files, variables.tf is the module's own), relative to the folder.
FOLDER_LINKS = {
    "main.tf": "../dev/main.tf",
    "outputs.tf": "../dev/outputs.tf",
    "versions.tf": "../dev/versions.tf",
    "variables.tf": "../../variables.tf",
    ".terraform.lock.hcl": "../dev/.terraform.lock.hcl",
}
ROOT_VARIABLES = frozenset({*VARIABLES, "environment"})  # environment: the entry's name
# Settings that were replaced: the problem says by what.
RENAMED = {
    "enable_cloudfront": "replaced by brew_mirror, which turns on CloudFront and the "
    "brew-6 publication (MIRRORD_BREW_MIRROR) together",
}


@dataclass(frozen=True, slots=True)
class DeployConfig:
    environments: Mapping[str, Mapping[str, Any]]  # fully resolved, validated variables
    states: Mapping[str, Mapping[str, str]]  # per environment: bucket, region

    def _known(self, env: str) -> None:
        if env not in self.environments:
            raise ConfigError([f"no environment {env!r} (have: {', '.join(self.environments)})"])

    def tfvars(self, env: str) -> dict[str, Any]:
        self._known(env)
        return {"environment": env, **self.environments[env]}

    def backend(self, env: str) -> str:
        """The folder's backend.hcl: `terraform init -backend-config=backend.hcl`."""
        self._known(env)
        state = self.states[env]
        lines = {
            "bucket": f'"{state["bucket"]}"',
            "key": f'"mirrord/{env}/terraform.tfstate"',
            "region": f'"{state["region"]}"',
            "encrypt": "true",
            "use_lockfile": "true",  # S3's own lock file (Terraform ≥ 1.10), no DynamoDB
        }
        width = max(map(len, lines))
        body = "".join(f"{k.ljust(width)} = {v}\n" for k, v in lines.items())
        return f"# Rendered from config.yaml by `mirrord config render --env {env}`.\n{body}"


def _memory_floor(values: Mapping[str, Any]) -> int:
    """A sync holds about 3 parts per transfer in flight (tests bound it there), in the
    daemon's task and in the sync Lambda alike."""
    c, p = values.get("concurrency"), values.get("part_size_mib")
    if isinstance(c, int) and isinstance(p, int) and not isinstance(c, bool):
        return c * 3 * p + 512
    return 0


def _unknown(where: str, values: Mapping[Any, Any]) -> list[str]:
    unknown = sorted(map(str, set(values) - set(VARIABLES) - set(OWN_KEYS)))
    return [f"{where}.{k}: {RENAMED.get(k, 'unknown setting')}" for k in unknown]


def _derive(env: str, merged: dict[str, Any]) -> None:
    """Fill bucket_name and image_uri from the account, region and names when not set."""
    account, region, prefix = merged["account_id"], merged["aws_region"], merged["name_prefix"]
    if not all(isinstance(v, str) for v in (account, region, prefix)):
        for key in ("bucket_name", "image_uri"):  # derivable: the cause is reported instead
            merged[key] = None if merged[key] is REQUIRED else merged[key]
        return
    if merged["bucket_name"] is REQUIRED:  # unique: S3 names are global, account ids too
        merged["bucket_name"] = f"{prefix}-{env}-{account}"
    if merged["image_uri"] is REQUIRED:
        repo = merged["image_repository"] or prefix
        tag = merged["image_tag"] or env
        merged["image_uri"] = f"{account}.dkr.ecr.{region}.amazonaws.com/{repo}:{tag}"


def _state(env: str, state: Any, region: Any) -> tuple[dict[str, str], list[str]]:
    hint = "the Terraform state bucket infra/bootstrap made (infra/bootstrap/README.md)"
    if not isinstance(state, dict) or not state.get("bucket"):
        return {}, [f"{env}.state.bucket: required: {hint}"]
    problems = [
        f"{env}.state.{k}: unknown setting" for k in sorted(map(str, set(state) - STATE_KEYS))
    ]
    merged = {"region": region, **state}
    if (why := VARIABLES["bucket_name"][0](merged["bucket"])) is not None:
        problems.append(f"{env}.state.bucket: {why} (got {merged['bucket']!r:.60})")
    if "region" in state and (why := VARIABLES["aws_region"][0](state["region"])) is not None:
        problems.append(f"{env}.state.region: {why} (got {merged['region']!r:.60})")
    return {k: str(v) for k, v in merged.items()}, problems


Reader = Callable[[str], str]  # a Brewfile's path (relative to config.yaml) → its text


def _brewfile(env: str, merged: dict[str, Any], read: Reader | None) -> list[str]:
    """The Brewfile's homebrew/core formulae join ``formulae``."""
    path = merged["brewfile"]
    if not isinstance(path, str) or _names(merged["formulae"]) is not None:
        return []  # no Brewfile, or problems the checks report
    if read is None:
        return [f"{env}.brewfile: no file can be read here"]
    try:
        names = parse_brewfile(read(path)).names
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{env}.brewfile: {path} cannot be read: {exc}"]
    if not names:
        return [f"{env}.brewfile: {path} names no homebrew/core formula (brew lines)"]
    merged["formulae"] = list(dict.fromkeys([*names, *merged["formulae"]]))
    return []


def _environment(
    env: Any, values: Any, defaults: Mapping[str, Any], read: Reader | None = None
) -> tuple[Any, list[str]]:
    """One environment's variables and state, or the problems found."""
    if not isinstance(env, str) or not ENV_NAME.fullmatch(env):
        rule = "2-16 lowercase letters, digits and '-', starting with a letter"
        return None, [f"environments.{env}: an environment's name must be {rule}"]
    if env in RESERVED_ENVIRONMENTS:
        return None, [f"environments.{env}: reserved for infra/environments/{env}"]
    if not isinstance(values, dict):
        return None, [f"{env}: must be a mapping of settings"]
    problems = _unknown(env, values)
    known = {**VARIABLES, **OWN_KEYS}
    merged = {k: default for k, (_, default) in known.items()}
    merged.update({k: v for k, v in defaults.items() if k in known})
    merged.update({k: v for k, v in values.items() if k in known})
    if merged["account_id"] is None:  # `account_id:` left empty in the sample
        merged["account_id"] = REQUIRED
    _derive(env, merged)
    for key, (check, _) in known.items():
        value = merged[key]
        if value is REQUIRED:
            hint = f": {ACCOUNT_HINT}" if key == "account_id" else ""
            problems.append(f"{env}.{key}: required{hint}")
        elif value is not None and (why := check(value)) is not None:
            problems.append(f"{env}.{key}: {why} (got {value!r:.60})")
    memory_floor = _memory_floor(merged)
    for key in ("task_memory", "sync_memory_size"):
        memory = merged[key]
        if memory_floor and isinstance(memory, int) and memory < memory_floor:
            problems.append(
                f"{env}.{key}: {memory} MiB is under concurrency × 3 × part_size_mib "
                f"+ 512 = {memory_floor} MiB"
            )
    problems += _cdn_pairs(env, merged) + _brewfile(env, merged, read)
    state, state_problems = _state(env, merged["state"], merged["aws_region"])
    variables = {k: v for k, v in merged.items() if k in VARIABLES}
    return (variables, state), problems + state_problems


def parse(text: str | bytes, read: Reader | None = None) -> DeployConfig:
    """Read and validate config.yaml; ``ConfigError`` lists every problem. ``read``
    returns a Brewfile's text (an environment's ``brewfile``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}".replace("\n", " ")]) from None
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping with 'version' and 'environments'"])
    problems: list[str] = []
    if data.get("version") != 1:
        problems.append("version: must be 1")
    unknown_top = set(data) - {"version", "defaults", "environments"}
    problems += [f"{k}: unknown top-level key" for k in sorted(map(str, unknown_top))]
    defaults = data.get("defaults") or {}
    envs = data.get("environments")
    if not isinstance(defaults, dict):
        problems.append("defaults: must be a mapping")
        defaults = {}
    if not isinstance(envs, dict) or not envs:
        raise ConfigError([*problems, "environments: must map environment names to settings"])
    problems += _unknown("defaults", defaults)
    resolved: dict[str, dict[str, Any]] = {}
    states: dict[str, dict[str, str]] = {}
    for env, values in envs.items():
        result, found = _environment(env, values, defaults, read)
        problems += found
        if result is not None:
            resolved[env], states[env] = result
    if problems:
        raise ConfigError(problems)
    return DeployConfig(resolved, states)
