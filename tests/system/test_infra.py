"""infra/: the Terraform is formatted and valid in every module and environment, and
infra/environments/moto applies against the session's moto server, where the real CLI
then syncs into the bucket it created, before terraform destroy removes it again.

Terraform runs in a copy of infra/ under a temporary directory, so no .terraform folder,
lock file or state lands in the repository. Each directory is initialised once, from the
local plugin folder (TERRAFORM_PLUGIN_DIR, default /opt/tf-plugins) when it exists. The
inits and validations run in a background pool while the moto apply waits on AWS-style
propagation delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import ROOT, run_cli
from mirrord_dev.emulator import Emulator, sample_catalog
from test_cdn_function import OTHER, TOKEN, check_token_rules, sha256

INFRA = ROOT / "infra"
TERRAFORM = shutil.which("terraform")
PLUGIN_DIR = Path(os.environ.get("TERRAFORM_PLUGIN_DIR", "/opt/tf-plugins"))
MODULES = sorted(p.name for p in (INFRA / "modules").iterdir() if p.is_dir())
ENVIRONMENTS = ("dev", "staging", "prod", "moto")
# environments/moto first: the apply test needs it, the others can finish meanwhile.
DIRECTORIES = (
    "environments/moto",
    *(f"modules/{m}" for m in MODULES),
    *(f"environments/{e}" for e in ENVIRONMENTS if e != "moto"),
)
# What `mirrord config render` writes to terraform.tfvars.json (mirrord/core/deployconfig.py).
ROOT_VARIABLES = frozenset(
    {
        "name_prefix",
        "environment",
        "aws_region",
        "bucket_name",
        "schedule_expression",
        "schedule_enabled",
        "platforms",
        "concurrency",
        "part_size_mib",
        "size_threshold_gb",
        "task_cpu",
        "task_memory",
        "sync_memory_size",
        "image_uri",
        "lambda_package_path",
        "log_retention_days",
        "alarm_emails",
        "kms_key_arn",
        "use_nat_gateway",
        "enable_autoscaling",
        "max_tasks",
        "shard_gb",
        "enable_monitoring",
        "noncurrent_version_days",
        "external_hash_url",
        "brew_mirror",
        "cloudfront_price_class",
        "account_id",
        "monthly_budget_usd",
        "mirror_domain",
        "mirror_certificate_arn",
        "mirror_route53_zone_id",
        "mirror_token_sha256",
        "mirror_daily_gb_alarm",
        "formulae",
        "fallback_urls",
        "prune_after_sync",
        "prune_keep_versions",
        "prune_keep_days",
    }
)
# Environment variables the app reads, as each runtime must receive them.
SHARED_ENV = {
    "MIRRORD_BUCKET",
    "MIRRORD_QUEUE_URL",
    "MIRRORD_PLATFORMS",
    "MIRRORD_CONCURRENCY",
    "MIRRORD_PART_SIZE",
    "MIRRORD_SIZE_THRESHOLD_GB",
    "MIRRORD_HEARTBEAT_SECONDS",
    "MIRRORD_SLACK_SECRET_ID",
    "MIRRORD_LOGS_HINT",
    "MIRRORD_BREW_MIRROR",
    "MIRRORD_ENVIRONMENT",
}
MOTO_ACCOUNT = "123456789012"  # moto's default account (no MOTO_ACCOUNT_ID on the server)
FALLBACK = "https://mirrors.ustc.edu.cn/homebrew-bottles/bottles"
BOTTLE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}/[^/]+\.bottle(\.\d+)?\.tar\.gz$")


def declared_variables(path: Path) -> set[str]:
    return set(re.findall(r'^variable\s+"(\w+)"', path.read_text(), re.M))


def terraform_env(config_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(config_file),  # no ~/.terraformrc, no warning about it
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
    }


def terraform(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM, "terraform is not installed (see infra/README.md: testing)"
    return subprocess.run(
        [TERRAFORM, *args, "-no-color"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


@dataclass(frozen=True)
class Workspace:
    root: Path  # the copy of infra/
    env: dict[str, str]
    ready: dict[str, Future[tuple[subprocess.CompletedProcess[str], ...]]]


def init_and_validate(
    directory: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], ...]:
    plugins = [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []
    init = terraform("init", "-backend=false", "-input=false", *plugins, cwd=directory, env=env)
    if init.returncode != 0:
        return (init,)
    return init, terraform("validate", cwd=directory, env=env)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A copy of infra/ (symlinks kept) whose directories are initialised and validated
    in the background, one at a time (the moto apply uses the other core)."""
    assert TERRAFORM, "terraform is not installed (see infra/README.md: testing)"
    base = tmp_path_factory.mktemp("terraform")
    root = base / "infra"
    shutil.copytree(
        INFRA, root, symlinks=True, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    config = base / "terraformrc"
    config.write_text("")
    env = terraform_env(config)
    with ThreadPoolExecutor(max_workers=1) as pool:
        ready = {d: pool.submit(init_and_validate, root / d, env) for d in DIRECTORIES}
        yield Workspace(root, env, ready)
        for future in ready.values():
            future.cancel()


# --- static checks -----------------------------------------------------------------


def test_terraform_is_formatted() -> None:
    """`terraform fmt -check -recursive infra/` finds nothing to rewrite."""
    assert TERRAFORM, "terraform is not installed (see infra/README.md: testing)"
    proc = subprocess.run(
        [TERRAFORM, "fmt", "-check", "-recursive", "-diff", "-no-color", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", "TF_CLI_CONFIG_FILE": os.devnull},
        check=False,
    )
    assert proc.returncode == 0, output_of(proc)


def test_root_variables_are_the_rendered_set() -> None:
    """infra/variables.tf declares exactly the keys `mirrord config render` writes, and
    every environment shares that file (a symlink) and passes each variable through."""
    assert declared_variables(INFRA / "variables.tf") == ROOT_VARIABLES
    for env in ENVIRONMENTS:
        folder = INFRA / "environments" / env
        link = folder / "variables.tf"
        assert link.is_symlink(), f"{link} should link to ../../variables.tf"
        assert link.resolve() == (INFRA / "variables.tf").resolve()
        main = (folder / "main.tf").read_text()
        passed = set(re.findall(r"^\s*(\w+)\s*=\s*var\.(\w+)\s*$", main, re.M))
        assert {(v, v) for v in ROOT_VARIABLES} <= passed, f"{env}/main.tf misses a variable"


def test_every_checkov_skip_has_a_reason() -> None:
    """Each `#checkov:skip=ID: reason` in infra/ names its check and says why."""
    skips = [
        (path, line)
        for path in INFRA.rglob("*.tf")
        if ".terraform" not in path.parts
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips
    for path, line in skips:
        assert re.search(r"#checkov:skip=CKV2?_AWS_\d+: \S.{20,}", line), f"{path}: {line}"


# --- the moto apply ----------------------------------------------------------------


def empty_bucket(s3: Any, bucket: str) -> None:
    """Delete every version and delete marker: a versioned mirror is never force-destroyed."""
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchBucket":
            raise


def check_deployed(clients: dict[str, Any], out: dict[str, Any]) -> dict[str, str]:
    """What the code expects of the infrastructure, read back from moto; returns the sync
    Lambda's environment."""
    s3, sqs, lam, ecs = clients["s3"], clients["sqs"], clients["lambda"], clients["ecs"]
    bucket = out["bucket_name"]

    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(
        r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules
    )
    assert not any("Days" in r.get("Expiration", {}) for r in rules), (
        "current bottles must not expire"
    )
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"

    attrs = sqs.get_queue_attributes(QueueUrl=out["queue_url"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert int(attrs["VisibilityTimeout"]) >= 3 * 60  # 3 heartbeats of MIRRORD_HEARTBEAT_SECONDS
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 3
    assert attrs["SqsManagedSseEnabled"] == "true"
    sqs.get_queue_attributes(QueueUrl=out["dlq_url"], AttributeNames=["QueueArn"])

    functions = {
        name: lam.get_function_configuration(FunctionName=out[f"{name}_function_name"])
        for name in ("enqueue", "sync")
    }
    for name, conf in functions.items():
        assert conf["Handler"] == f"mirrord.lambdas.{name}.handler"
        assert conf["Runtime"] == "python3.13"
        assert set(conf["Environment"]["Variables"]) >= SHARED_ENV, name
    enqueue_env = functions["enqueue"]["Environment"]["Variables"]
    assert enqueue_env["MIRRORD_SYNC_FUNCTION"] == out["sync_function_name"]
    sync_env: dict[str, str] = functions["sync"]["Environment"]["Variables"]
    assert sync_env["MIRRORD_BUCKET"] == bucket
    assert sync_env["MIRRORD_QUEUE_URL"] == out["queue_url"]
    assert sync_env["MIRRORD_PART_SIZE"] == "16MiB"
    assert functions["sync"]["MemorySize"] == 2048  # sync_memory_size's default

    task = ecs.describe_task_definition(taskDefinition=out["task_definition_arn"])["taskDefinition"]
    assert (task["cpu"], task["memory"]) == ("2048", "8192")
    (container,) = task["containerDefinitions"]
    assert container["entryPoint"] + container["command"] == ["mirrord", "daemon"]
    assert container["readonlyRootFilesystem"] is True
    assert container["user"] not in ("", "0", "root")
    assert container["stopTimeout"] == 120
    assert container["healthCheck"]["command"] == ["CMD", "mirrord", "health"]
    assert {"containerPath": "/tmp", "sourceVolume": "tmp", "readOnly": False} in container[
        "mountPoints"
    ]
    task_env = {e["name"]: e["value"] for e in container["environment"]}
    assert set(task_env) >= SHARED_ENV
    assert task_env["MIRRORD_STOP_GRACE"] == "90"
    assert task_env["MIRRORD_HEALTH_FILE"] == "/tmp/mirrord-healthy"
    assert (
        container["logConfiguration"]["options"]["awslogs-group"]
        == out["log_group_names"]["daemon"]
    )
    (service,) = ecs.describe_services(cluster=out["cluster_name"], services=[out["service_name"]])[
        "services"
    ]
    assert service["desiredCount"] == 0

    # brew_mirror off: no brew-6 copies are written, and no CloudFront serves them.
    for runtime_env in (*(f["Environment"]["Variables"] for f in functions.values()), task_env):
        assert runtime_env["MIRRORD_BREW_MIRROR"] == "false"
        assert "MIRRORD_MIRROR_URL" not in runtime_env
    assert out["mirror_url"] is None
    check_schedule(clients, out)
    check_alarm_route(clients, out)
    check_subset_prune_fallback(clients, out, task_env, sync_env)
    return sync_env


def check_subset_prune_fallback(
    clients: dict[str, Any], out: dict[str, Any], task_env: dict[str, str], sync_env: dict[str, str]
) -> None:
    """config.yaml's formulae, fallback_urls and prune_* reach every runtime, and only
    the roles that sync (the task, the sync Lambda) may delete, and only bottles."""
    for runtime_env in (task_env, sync_env):
        assert runtime_env["MIRRORD_FORMULAE"] == "jq"
        assert runtime_env["MIRRORD_FALLBACK_URLS"] == FALLBACK
        assert runtime_env["MIRRORD_PRUNE_AFTER_SYNC"] == "true"
        assert runtime_env["MIRRORD_PRUNE_KEEP_VERSIONS"] == "3"
        assert runtime_env["MIRRORD_PRUNE_KEEP_DAYS"] == "30"
    iam, bucket = clients["iam"], f"arn:aws:s3:::{out['bucket_name']}"
    deleting: dict[str, list[Any]] = {}
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            for st in doc["Statement"]:
                actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                if any(a.startswith("s3:Delete") for a in actions) and bucket in str(st):
                    deleting.setdefault(role["RoleName"], []).append(st)
    assert {r.rsplit("-", 1)[1] for r in deleting} == {"sync", "task"}, deleting
    for statements in deleting.values():
        (st,) = statements
        assert st["Action"] == "s3:DeleteObject"
        assert sorted(st["Resource"]) == [f"{bucket}/????-??-??/*", f"{bucket}/v2/homebrew/core/*"]


def check_alarm_route(clients: dict[str, Any], out: dict[str, Any]) -> None:
    """The alarm Lambda is subscribed to the alarm topic, SNS may invoke it from that
    topic only, it reads no more than the secret and the environment's name, and the
    topic lets CloudWatch alarms and Budgets publish. Every runtime names the environment."""
    lam, sns = clients["lambda"], clients["sns"]
    topic = out["alarm_topic_arn"]
    conf = lam.get_function_configuration(FunctionName=out["alarm_function_name"])
    assert conf["Handler"] == "mirrord.lambdas.alarm.handler"
    assert conf["Runtime"] == "python3.13"
    assert conf["Environment"]["Variables"] == {
        "MIRRORD_SLACK_SECRET_ID": out["slack_secret_arn"],
        "MIRRORD_ENVIRONMENT": "moto",
    }
    assert conf["Role"].endswith("-alarm")
    subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert {(s["Protocol"], s["Endpoint"]) for s in subs} == {("lambda", conf["FunctionArn"])}
    (grant,) = json.loads(lam.get_policy(FunctionName=conf["FunctionName"])["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "sns.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == topic
    policy = json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
    publishers = {s["Sid"]: s["Principal"] for s in policy["Statement"]}
    assert publishers["CloudWatchAlarms"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publishers["Budgets"] == {"Service": "budgets.amazonaws.com"}
    assert out["budget_name"] is None  # monthly_budget_usd: null (moto has no Budgets read)
    for name in ("enqueue", "sync"):
        env = lam.get_function_configuration(FunctionName=out[f"{name}_function_name"])
        assert env["Environment"]["Variables"]["MIRRORD_ENVIRONMENT"] == "moto"


def check_schedule(clients: dict[str, Any], out: dict[str, Any]) -> None:
    """The rule is paused (schedule_enabled false) and its target's undeliverable events
    go to an encrypted DLQ that only this rule may send to, over TLS."""
    events, sqs = clients["events"], clients["sqs"]
    rule = events.describe_rule(Name=out["schedule_rule_name"])
    assert rule["ScheduleExpression"] == "cron(0 3 ? * SUN *)"
    assert rule["State"] == "DISABLED"
    assert out["schedule_enabled"] is False
    (target,) = events.list_targets_by_rule(Rule=out["schedule_rule_name"])["Targets"]
    attrs = sqs.get_queue_attributes(QueueUrl=out["schedule_dlq_url"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert target["DeadLetterConfig"]["Arn"] == attrs["QueueArn"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    statements = {s["Sid"]: s for s in json.loads(attrs["Policy"])["Statement"]}
    send = statements["EventBridgeDeadLetters"]
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert send["Action"] == "sqs:SendMessage"
    assert send["Condition"]["ArnEquals"]["aws:SourceArn"] == rule["Arn"]
    assert statements["DenyInsecureTransport"]["Effect"] == "Deny"


@pytest.mark.slow
async def test_moto_apply_then_the_cli_syncs_into_the_bucket_then_destroy(
    workspace: Workspace, moto_url: str, tmp_path: Path
) -> None:
    """environments/moto applies (autoscaling and monitoring off: moto cannot emulate
    them); the resources match what the code expects; `mirrord sync --json`, run with the
    sync Lambda's own environment, fills the bucket from the emulator; after emptying the
    bucket, terraform destroy removes it."""
    for proc in workspace.ready["environments/moto"].result(timeout=600):  # the one init
        assert proc.returncode == 0, output_of(proc)
    moto_dir = workspace.root / "environments" / "moto"
    package = tmp_path / "lambda.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("mirrord/__init__.py", "")
    suffix = uuid.uuid4().hex[:8]
    bucket = f"mirrord-tf-{suffix}"
    # The renderer's file, read by Terraform without any -var flag.
    (moto_dir / "terraform.tfvars.json").write_text(
        json.dumps(
            {
                "moto_endpoint": moto_url,
                "name_prefix": f"t{suffix}",  # unique in the shared moto server
                "environment": "moto",
                "aws_region": "us-east-1",
                "bucket_name": bucket,
                "image_uri": "registry.invalid/mirrord:test",
                "lambda_package_path": str(package),
                "enable_autoscaling": False,
                "enable_monitoring": False,
                "brew_mirror": False,  # moto has no CloudFront: see the plan test below
                "schedule_enabled": False,
                "account_id": MOTO_ACCOUNT,  # what moto's STS answers: allowed_account_ids
                # A subset mirror that prunes, with a fallback (issue 17's settings).
                "formulae": ["jq"],
                "fallback_urls": [FALLBACK],
                "prune_after_sync": True,
                "prune_keep_versions": 3,
            }
        )
    )
    clients = {
        name: boto3.client(name, endpoint_url=moto_url, region_name="us-east-1")
        for name in ("s3", "sqs", "lambda", "ecs", "events", "sns", "iam")
    }
    s3 = clients["s3"]

    def tf(*args: str) -> subprocess.CompletedProcess[str]:
        return terraform(*args, cwd=moto_dir, env=workspace.env, timeout=600)

    try:
        apply = await asyncio.to_thread(tf, "apply", "-auto-approve", "-input=false")
        assert apply.returncode == 0, output_of(apply)
        shown = await asyncio.to_thread(tf, "output", "-json", "mirrord")
        assert shown.returncode == 0, output_of(shown)
        out = json.loads(shown.stdout)
        assert out["bucket_name"] == bucket
        s3.head_bucket(Bucket=bucket)
        clients["sqs"].get_queue_url(QueueName=out["queue_url"].rsplit("/", 1)[1])
        sync_env = check_deployed(clients, out)

        # moto speaks plain HTTP and enforces bucket policies: the TLS-only statement
        # refuses it, as it would refuse any client without TLS. Lift it for the CLI.
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket=bucket, Key="probe", Body=b"")
        assert refused.value.response["Error"]["Code"] in ("403", "AccessDenied")
        s3.delete_bucket_policy(Bucket=bucket)

        async with Emulator(sample_catalog()) as emu:
            result = await run_cli(
                "sync", "--json", env={**sync_env, "MIRRORD_API_URL": emu.api_url}
            )
        assert result.code == 0, result.stderr.decode()[-4000:]
        report = result.json()
        assert report["downloaded"] > 0
        assert report["failed"] == []
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert {"bottles_hash.json", "status.json"} <= keys
        bottles = [k for k in keys if BOTTLE_KEY.match(k)]
        assert len(bottles) == report["downloaded"]
        # MIRRORD_FORMULAE=jq: jq and its dependency, nothing else of the catalog.
        assert {k.split("/")[1].split("-")[0] for k in bottles} == {"jq", "oniguruma"}
        status = json.loads(s3.get_object(Bucket=bucket, Key="status.json")["Body"].read())
        assert status["last_success"]
    finally:
        with contextlib.suppress(ClientError):
            s3.delete_bucket_policy(Bucket=bucket)
        empty_bucket(s3, bucket)
        # The state was written by the apply above: no need to refresh it first.
        destroy = await asyncio.to_thread(
            tf, "destroy", "-auto-approve", "-input=false", "-refresh=false"
        )
    assert destroy.returncode == 0, output_of(destroy)
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket=bucket)
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchBucket")


# --- every module and environment (validated in the background meanwhile) ---------


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_terraform_validates(workspace: Workspace, directory: str) -> None:
    """`terraform init -backend=false` and `terraform validate` succeed without warnings."""
    procs = workspace.ready[directory].result(timeout=600)
    for proc in procs:
        assert proc.returncode == 0, output_of(proc)
    assert len(procs) == 2
    validate = procs[1]
    assert "Success! The configuration is valid." in validate.stdout, output_of(validate)
    assert "Warning" not in validate.stdout + validate.stderr, output_of(validate)


def moto_copy(workspace: Workspace, tmp_path: Path, moto_url: str, **tfvars: Any) -> Path:
    """A copy of the initialised environments/moto with its own terraform.tfvars.json
    (the apply test owns the original's state); the folder must still be called moto
    (outputs.tf checks it), and only its .terraform is needed."""
    for proc in workspace.ready["environments/moto"].result(timeout=600):
        assert proc.returncode == 0, output_of(proc)

    def skip(folder: str, names: list[str]) -> set[str]:
        own = Path(folder).name == "moto" and Path(folder).parent.name == "environments"
        return {
            n
            for n in names
            if n.endswith((".tfstate", ".tfstate.backup"))
            or n == "terraform.tfvars.json"
            or (n == ".terraform" and not own)
        }

    shutil.copytree(workspace.root, tmp_path / "infra", symlinks=True, ignore=skip)
    planned = tmp_path / "infra" / "environments" / "moto"
    package = tmp_path / "lambda.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("mirrord/__init__.py", "")
    (planned / "terraform.tfvars.json").write_text(
        json.dumps(
            {
                "moto_endpoint": moto_url,
                "environment": "moto",
                "aws_region": "us-east-1",
                "bucket_name": f"mirrord-plan-{uuid.uuid4().hex[:8]}",
                "image_uri": "registry.invalid/mirrord:test",
                "lambda_package_path": str(package),
                "enable_autoscaling": False,
                "enable_monitoring": False,
                "brew_mirror": False,
                "account_id": MOTO_ACCOUNT,
                **tfvars,
            }
        )
    )
    return planned


@pytest.mark.slow
def test_moto_plan_with_cloudfront(workspace: Workspace, moto_url: str, tmp_path: Path) -> None:
    """With brew_mirror the root module plans the distribution (OAC, https-only), grants
    it read on the bucket, outputs its URL as mirror_url, and turns MIRRORD_BREW_MIRROR
    on in every runtime: the one switch does both.
    A plan, not an apply: moto has no CloudFront cache policies (CreateCachePolicy 404s)."""
    planned = moto_copy(workspace, tmp_path, moto_url, brew_mirror=True)
    plan = terraform(
        "plan", "-input=false", "-lock=false", "-out=cdn.tfplan", cwd=planned, env=workspace.env
    )
    assert plan.returncode == 0, output_of(plan)
    text = plan.stdout
    assert "module.mirrord.module.cdn[0].aws_cloudfront_distribution.this will be created" in text
    assert 'viewer_protocol_policy = "https-only"' in text
    assert 'signing_behavior                  = "always"' in text
    assert "CloudFrontReadsThroughOAC" in text
    shown = terraform("show", "-json", "cdn.tfplan", cwd=planned, env=workspace.env)
    assert shown.returncode == 0, output_of(shown)
    # The URL is known only after apply: it is among the output's unknown values.
    planned_json = json.loads(shown.stdout)
    output = planned_json["output_changes"]["mirrord"]
    assert output["after_unknown"]["mirror_url"] is True
    # The distribution may read brew's two prefixes and nothing else: no ListBucket (no
    # listing of keys), no status.json, sync.lock, bottles_hash.json or dated folder.
    bucket = json.loads((planned / "terraform.tfvars.json").read_text())["bucket_name"]
    (grant,) = [
        s
        for rc in planned_json["resource_changes"]
        if rc["address"] == "module.mirrord.module.s3.data.aws_iam_policy_document.cloudfront"
        for s in rc["change"]["after"]["statement"]
        if s.get("sid") == "CloudFrontReadsThroughOAC"
    ]
    assert grant["actions"] == ["s3:GetObject"]
    assert sorted(grant["resources"]) == [
        f"arn:aws:s3:::{bucket}/api/*",
        f"arn:aws:s3:::{bucket}/v2/*",
    ]


CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/9f3e2a1b-0c4d-4e5f-8a6b-7c8d9e0f1a2b"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def planned_resource(planned: dict[str, Any], address: str) -> dict[str, Any]:
    (change,) = [rc["change"] for rc in planned["resource_changes"] if rc["address"] == address]
    return change


@pytest.mark.slow
def test_moto_plan_with_cloudfront_options(
    workspace: Workspace, moto_url: str, tmp_path: Path
) -> None:
    """A custom domain (mirror_url is https://<domain>, its certificate at TLSv1.2_2021
    sni-only, alias A/AAAA records), readers restricted by a token (the function on
    viewer request in every behaviour; its planned code admits the token on v2/ and api/
    and answers 403 otherwise), the daily bytes alarm, and the key-policy statement a CMK
    needs: kms:Decrypt only, for cloudfront.amazonaws.com, on this distribution's ARN."""
    planned = moto_copy(
        workspace,
        tmp_path,
        moto_url,
        brew_mirror=True,
        kms_key_arn=KMS_KEY,
        mirror_domain="brew.example.com",
        mirror_certificate_arn=CERTIFICATE,
        mirror_route53_zone_id="Z0123456789ABCDEFGHIJ",
        mirror_token_sha256=[sha256(TOKEN), sha256(OTHER)],
        mirror_daily_gb_alarm=50,
    )
    plan = terraform(
        "plan", "-input=false", "-lock=false", "-out=cdn.tfplan", cwd=planned, env=workspace.env
    )
    assert plan.returncode == 0, output_of(plan)
    shown = terraform("show", "-json", "cdn.tfplan", cwd=planned, env=workspace.env)
    assert shown.returncode == 0, output_of(shown)
    p = json.loads(shown.stdout)
    cdn = "module.mirrord.module.cdn[0]"
    out = p["output_changes"]["mirrord"]
    assert out["after"]["mirror_url"] == "https://brew.example.com"

    dist = planned_resource(p, f"{cdn}.aws_cloudfront_distribution.this")["after"]
    assert dist["aliases"] == ["brew.example.com"]
    (cert,) = dist["viewer_certificate"]
    assert cert["acm_certificate_arn"] == CERTIFICATE
    assert (cert["ssl_support_method"], cert["minimum_protocol_version"]) == (
        "sni-only",
        "TLSv1.2_2021",
    )
    assert cert["cloudfront_default_certificate"] is False
    # The function guards every behaviour: v2/*/blobs/*, api/* and the rest (manifests).
    behaviours = dist["default_cache_behavior"] + dist["ordered_cache_behavior"]
    assert len(behaviours) == 3
    for behaviour in behaviours:
        (assoc,) = behaviour["function_association"]
        assert assoc["event_type"] == "viewer-request"
    function = planned_resource(p, f"{cdn}.aws_cloudfront_function.token_check[0]")["after"]
    assert function["runtime"] == "cloudfront-js-2.0"
    assert function["publish"] is True
    assert TOKEN not in function["code"]
    assert TOKEN not in shown.stdout
    check_token_rules(function["code"], tmp_path)

    records = {
        (r["change"]["after"]["name"], r["change"]["after"]["type"])
        for r in p["resource_changes"]
        if r["address"].startswith(f"{cdn}.aws_route53_record.alias")
    }
    assert records == {("brew.example.com", "A"), ("brew.example.com", "AAAA")}

    alarm = planned_resource(p, f"{cdn}.aws_cloudwatch_metric_alarm.bytes_downloaded[0]")
    after = alarm["after"]
    assert (after["namespace"], after["metric_name"], after["statistic"]) == (
        "AWS/CloudFront",
        "BytesDownloaded",
        "Sum",
    )
    assert after["period"] == 86400
    assert after["threshold"] == 50 * 2**30
    cdn_config = p["configuration"]["root_module"]["module_calls"]["mirrord"]["module"]
    cdn_config = cdn_config["module_calls"]["cdn"]["module"]
    (alarm_config,) = [
        r
        for r in cdn_config["resources"]
        if r["address"] == "aws_cloudwatch_metric_alarm.bytes_downloaded"
    ]
    # The dimensions map is unknown as a whole until the distribution's ID exists.
    assert alarm["after_unknown"]["dimensions"] is True
    dims = alarm_config["expressions"]["dimensions"]["references"]
    assert "aws_cloudfront_distribution.this.id" in dims
    assert alarm["after_unknown"]["alarm_actions"] is True  # [the alarm topic's ARN]

    # The key-policy statement: all known but the distribution's ARN, which is exactly
    # what the condition names (the ARN exists only after apply).
    (statement,) = out["after"]["kms_key_policy_statements"]
    assert set(statement) == {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
    assert statement["Action"] == "kms:Decrypt"
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    (unknown,) = out["after_unknown"]["kms_key_policy_statements"]
    # (after_unknown mirrors every nested object, empty where all is known)
    assert {k: v for k, v in unknown.items() if v} == {
        "Condition": {"StringEquals": {"AWS:SourceArn": True}}
    }
    references = cdn_config["outputs"]["kms_key_policy_statements"]["expression"]["references"]
    assert "aws_cloudfront_distribution.this.arn" in references


def test_moto_plan_refuses_bad_cloudfront_options(
    workspace: Workspace, moto_url: str, tmp_path: Path
) -> None:
    """A certificate outside us-east-1, a token instead of its hash, the bytes alarm in
    a region without CloudFront's metrics, and a domain without a certificate: each
    refused at plan time with its own message."""
    planned = moto_copy(
        workspace,
        tmp_path,
        moto_url,
        brew_mirror=True,
        aws_region="eu-west-1",
        mirror_certificate_arn=CERTIFICATE.replace("us-east-1", "eu-west-1"),
        mirror_token_sha256=["NOT-A-HASH"],
        mirror_daily_gb_alarm=50,
    )
    tfvars = planned / "terraform.tfvars.json"
    alone = {"mirror_domain": "brew.example.com", "mirror_certificate_arn": None}
    for change, messages in (
        (
            {},
            (
                "mirror_certificate_arn: null or an ACM certificate ARN in us-east-1",
                "mirror_token_sha256: lower-case hex SHA-256 digests",
                "mirror_daily_gb_alarm: CloudFront publishes BytesDownloaded in us-east-1 only",
            ),
        ),
        (alone, ("mirror_domain and mirror_certificate_arn go together",)),
    ):
        tfvars.write_text(json.dumps({**json.loads(tfvars.read_text()), **change}))
        plan = terraform("plan", "-input=false", "-lock=false", cwd=planned, env=workspace.env)
        assert plan.returncode != 0, output_of(plan)
        for message in messages:
            assert message in " ".join(plan.stderr.split()), output_of(plan)


def test_moto_plan_refuses_a_sync_lambda_too_small_for_its_concurrency(
    workspace: Workspace, moto_url: str, tmp_path: Path
) -> None:
    """The sync Lambda runs the same sync as the task: concurrency 64 at 16 MiB parts
    needs 64 × 3 × 16 + 512 = 3,584 MB, so the default 2,048 MB is refused at plan time
    (naming sync_memory_size), and 3,584 MB is accepted."""
    planned = moto_copy(workspace, tmp_path, moto_url, concurrency=64)
    plan = terraform("plan", "-input=false", "-lock=false", cwd=planned, env=workspace.env)
    assert plan.returncode != 0, output_of(plan)
    assert "sync_memory_size: the sync Lambda holds" in plan.stderr, output_of(plan)
    tfvars = planned / "terraform.tfvars.json"
    tfvars.write_text(json.dumps({**json.loads(tfvars.read_text()), "sync_memory_size": 3584}))
    plan = terraform("plan", "-input=false", "-lock=false", cwd=planned, env=workspace.env)
    assert plan.returncode == 0, output_of(plan)
    assert "memory_size                    = 3584" in plan.stdout, output_of(plan)


# The monitoring module's metric alarms, each to the topic. Its composite alarm (and the
# two children that exist only for it) cannot apply in moto (no PutCompositeAlarm), so
# the apply targets the metric alarms by name.
MOTO_ALARMS = (
    "dlq_not_empty",
    "schedule_dlq_not_empty",
    "sync_failed",
    "lambda_errors",
    "queue_stuck",
    "job_too_long",
    "stalled_runs",
)
MONITORING_ROOT = """
variable "moto_endpoint" {{
  type = string
}}

provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {{
    cloudwatch = var.moto_endpoint
    logs       = var.moto_endpoint
    sts        = var.moto_endpoint
  }}
}}

module "monitoring" {{
  source                = "../../modules/monitoring"
  name                  = "{name}"
  topic_arn             = "arn:aws:sns:us-east-1:123456789012:{name}-alarms"
  queue_name            = "{name}-jobs"
  dlq_name              = "{name}-jobs-dlq"
  schedule_dlq_name     = "{name}-schedule-dlq"
  enqueue_function_name = "{name}-enqueue"
  sync_function_name    = "{name}-sync"
  cluster_name          = "{name}-daemon"
  service_name          = "{name}-daemon"
  log_group_names       = {{ enqueue = "e", sync = "s", daemon = "d" }}
}}
"""


@pytest.mark.slow
def test_moto_applies_the_metric_alarms(workspace: Workspace, moto_url: str) -> None:
    """The monitoring module's metric alarms (the three of issue 15 among them) apply in
    moto and read back as the Slack route needs: every one notifies the topic on ALARM
    and on OK; queue-stuck counts the oldest message's age only while one is visible."""
    name = f"m{uuid.uuid4().hex[:8]}"
    folder = workspace.root / "environments" / f"monitoring-{name}"
    folder.mkdir()
    (folder / "main.tf").write_text(MONITORING_ROOT.format(name=name))
    plugins = [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []
    init = terraform(
        "init", "-backend=false", "-input=false", *plugins, cwd=folder, env=workspace.env
    )
    assert init.returncode == 0, output_of(init)
    targets = [f"-target=module.monitoring.aws_cloudwatch_metric_alarm.{a}" for a in MOTO_ALARMS]
    apply = terraform(
        "apply",
        "-auto-approve",
        "-input=false",
        f"-var=moto_endpoint={moto_url}",
        *targets,
        cwd=folder,
        env=workspace.env,
    )
    assert apply.returncode == 0, output_of(apply)
    cw = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")
    alarms = {
        a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=f"{name}-")["MetricAlarms"]
    }
    topic = f"arn:aws:sns:us-east-1:123456789012:{name}-alarms"
    assert set(alarms) == {f"{name}-{a.replace('_', '-')}" for a in MOTO_ALARMS}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [topic], alarm["AlarmName"]
        assert alarm["OKActions"] == [topic], alarm["AlarmName"]
    stuck = alarms[f"{name}-queue-stuck"]
    assert stuck["Threshold"] == 1800
    assert stuck["EvaluationPeriods"] == stuck["DatapointsToAlarm"] == 3
    queries = {q["Id"]: q for q in stuck["Metrics"]}
    assert queries["waiting"]["Expression"] == "IF(FILL(visible, 0) >= 1, FILL(age, 0), 0)"
    assert queries["age"]["MetricStat"]["Metric"]["MetricName"] == "ApproximateAgeOfOldestMessage"
    too_long = alarms[f"{name}-job-too-long"]
    assert (too_long["MetricName"], too_long["Threshold"]) == ("JobRunningSeconds", 12 * 3600)
    assert too_long["Dimensions"] == [{"Name": "Route", "Value": "fargate"}]
    stalled = alarms[f"{name}-stalled-runs"]
    assert stalled["Threshold"] == 3
    routes = {
        q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for q in stalled["Metrics"]
        if "MetricStat" in q
    }
    assert routes == {"lambda", "fargate"}
    destroy = terraform(
        "destroy",
        "-auto-approve",
        "-input=false",
        f"-var=moto_endpoint={moto_url}",
        *targets,
        cwd=folder,
        env=workspace.env,
    )
    assert destroy.returncode == 0, output_of(destroy)
    assert not cw.describe_alarms(AlarmNamePrefix=f"{name}-")["MetricAlarms"]


@pytest.mark.slow
def test_moto_plan_scales_one_task_per_message_up_to_max_tasks(
    workspace: Workspace, moto_url: str, tmp_path: Path
) -> None:
    """With max_tasks 3 (docs/design.md §12) the wake policy sets one task per message
    visible or in flight (1, 2, then 3 for any more), its alarm counts both while one is
    visible, and the target's ceiling is 3. A plan: the moto apply runs without
    autoscaling. (The runtimes' MIRRORD_MAX_SHARDS / MIRRORD_SHARD_BYTES are known only
    after apply: their map holds the bucket's name.)"""
    planned = moto_copy(
        workspace, tmp_path, moto_url, enable_autoscaling=True, max_tasks=3, shard_gb=10
    )
    plan = terraform(
        "plan", "-input=false", "-lock=false", "-out=scale.tfplan", cwd=planned, env=workspace.env
    )
    assert plan.returncode == 0, output_of(plan)
    shown = terraform("show", "-json", "scale.tfplan", cwd=planned, env=workspace.env)
    assert shown.returncode == 0, output_of(shown)
    p = json.loads(shown.stdout)
    ecs = "module.mirrord.module.ecs"
    wake = planned_resource(p, f'{ecs}.aws_appautoscaling_policy.wake["this"]')["after"]
    steps = wake["step_scaling_policy_configuration"][0]["step_adjustment"]
    assert sorted(
        (
            s["metric_interval_lower_bound"],
            s["metric_interval_upper_bound"],
            s["scaling_adjustment"],
        )
        for s in steps
    ) == [("0", "1", 1), ("1", "2", 2), ("2", "", 3)]  # "": no upper bound
    target = planned_resource(p, f'{ecs}.aws_appautoscaling_target.this["this"]')["after"]
    assert (target["min_capacity"], target["max_capacity"]) == (0, 3)
    alarm = planned_resource(p, f'{ecs}.aws_cloudwatch_metric_alarm.wake["this"]')["after"]
    (backlog,) = [q for q in alarm["metric_query"] if q["return_data"]]
    assert backlog["expression"] == "IF(visible >= 1, visible + inflight, 0)"
