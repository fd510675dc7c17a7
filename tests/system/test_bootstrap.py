"""infra/bootstrap: the one-time, per-account root module (state bucket, ECR repository,
GitHub OIDC provider, per-environment deploy and plan roles) is formatted and valid,
refuses the wrong account and ambiguous environment names, and applies against the
session's moto server, where its resources are read back: the state bucket's settings,
the repository's, the roles' trust (who is admitted and who is not) and the deploy
policies (evaluated against probes: an environment's deploy reaches its own
<name_prefix>-<env>-* resources and nothing of another environment's); a tiny root
with the backend.hcl the module outputs then keeps its state and lock file in the
bucket; terraform destroy removes it all.

moto implements everything the module creates (the ECR lifecycle policy and the OIDC
provider included), so nothing is switched off for the moto apply. moto does not
evaluate IAM policies: the policy checks below are an evaluator of Allow statements
(action and resource wildcards; conditions are read separately), not AWS's.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from test_infra import (
    INFRA,
    PLUGIN_DIR,
    TERRAFORM,
    declared_variables,
    empty_bucket,
    output_of,
    terraform,
    terraform_env,
)

BOOTSTRAP = INFRA / "bootstrap"
ACCOUNT = "123456789012"  # moto's account
REPO = "example-org/mirrord"
DEV_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0f1e2d3c-dev"  # the largest policies: with a key
# The GitHub environment variables the deploy workflow reads (deploy.yml's header): only
# the deploy role; the region, the repository and the state come from config.yaml.
GITHUB_VARIABLES = {"AWS_DEPLOY_ROLE_ARN"}
# The repository variable of the pull request's plan job (no environment), and the keys
# of each of its entries (deploy.yml's matrix).
REPOSITORY_VARIABLES = {"PLAN_TARGETS"}
PLAN_TARGET_KEYS = {"env", "role"}
WORKFLOW = INFRA.parent / ".github" / "workflows" / "deploy.yml"
# Actions granted on "*" (no resource-level permissions, or ARNs with AWS-made ids).
# A new one must be added here on purpose, with its reason in policies.tf.
UNSCOPED = {
    "ec2:describe*",
    "ecs:describetaskdefinition",
    "logs:describeloggroups",
    "logs:describemetricfilters",
    "logs:describequerydefinitions",
    "cloudwatch:describealarms",
    "application-autoscaling:describescalabletargets",
    "application-autoscaling:describescalingpolicies",
    "application-autoscaling:listtagsforresource",
    "cloudfront:getdistribution",
    "cloudfront:getdistributionconfig",
    "cloudfront:getoriginaccesscontrol",
    "cloudfront:getcachepolicy",
    "cloudfront:listtagsforresource",
    "ecs:registertaskdefinition",
    "ecs:deregistertaskdefinition",
    "application-autoscaling:registerscalabletarget",
    "application-autoscaling:deregisterscalabletarget",
    "application-autoscaling:putscalingpolicy",
    "application-autoscaling:deletescalingpolicy",
    "application-autoscaling:tagresource",
    "application-autoscaling:untagresource",
    "logs:putquerydefinition",
    "logs:deletequerydefinition",
    "cloudfront:createdistribution",
    "cloudfront:createdistributionwithtags",
    "cloudfront:updatedistribution",
    "cloudfront:deletedistribution",
    "cloudfront:tagresource",
    "cloudfront:untagresource",
    "cloudfront:createoriginaccesscontrol",
    "cloudfront:updateoriginaccesscontrol",
    "cloudfront:deleteoriginaccesscontrol",
    "cloudfront:createcachepolicy",
    "cloudfront:updatecachepolicy",
    "cloudfront:deletecachepolicy",
    "ecr:getauthorizationtoken",
}
# The service (IAM prefix) each resource type of infra/ is written through: a module
# that adds a type not listed here fails test_deploy_policy_covers_every_resource_type
# until the bootstrap's deploy policy grants it.
SERVICE_OF = {
    "aws_appautoscaling_policy": "application-autoscaling",
    "aws_appautoscaling_target": "application-autoscaling",
    "aws_budgets_budget": "budgets",
    "aws_cloudfront_cache_policy": "cloudfront",
    "aws_cloudfront_distribution": "cloudfront",
    "aws_cloudfront_function": "cloudfront",
    "aws_cloudfront_origin_access_control": "cloudfront",
    "aws_cloudwatch_composite_alarm": "cloudwatch",
    "aws_cloudwatch_dashboard": "cloudwatch",
    "aws_cloudwatch_event_rule": "events",
    "aws_cloudwatch_event_target": "events",
    "aws_cloudwatch_log_group": "logs",
    "aws_cloudwatch_log_metric_filter": "logs",
    "aws_cloudwatch_metric_alarm": "cloudwatch",
    "aws_cloudwatch_query_definition": "logs",
    "aws_default_security_group": "ec2",
    "aws_ecs_cluster": "ecs",
    "aws_ecs_service": "ecs",
    "aws_ecs_task_definition": "ecs",
    "aws_eip": "ec2",
    "aws_iam_role": "iam",
    "aws_iam_role_policy": "iam",
    "aws_internet_gateway": "ec2",
    "aws_lambda_function": "lambda",
    "aws_lambda_function_event_invoke_config": "lambda",
    "aws_lambda_permission": "lambda",
    "aws_nat_gateway": "ec2",
    "aws_route": "ec2",
    "aws_route53_record": "route53",
    "aws_route_table": "ec2",
    "aws_route_table_association": "ec2",
    "aws_s3_bucket": "s3",
    "aws_s3_bucket_lifecycle_configuration": "s3",
    "aws_s3_bucket_ownership_controls": "s3",
    "aws_s3_bucket_policy": "s3",
    "aws_s3_bucket_public_access_block": "s3",
    "aws_s3_bucket_server_side_encryption_configuration": "s3",
    "aws_s3_bucket_versioning": "s3",
    "aws_secretsmanager_secret": "secretsmanager",
    "aws_security_group": "ec2",
    "aws_sns_topic": "sns",
    "aws_sns_topic_policy": "sns",
    "aws_sns_topic_subscription": "sns",
    "aws_sqs_queue": "sqs",
    "aws_sqs_queue_policy": "sqs",
    "aws_subnet": "ec2",
    "aws_vpc": "ec2",
    "aws_vpc_endpoint": "ec2",
    "aws_vpc_security_group_egress_rule": "ec2",
}


def moto_override(moto_url: str) -> str:
    """A Terraform override file: the module's own provider block (region,
    allowed_account_ids, default tags) with moto's endpoints and dummy credentials, as in
    infra/environments/moto/main.tf. The account id is still asked of STS (moto's)."""
    endpoints = "\n".join(f'    {s} = "{moto_url}"' for s in ("ecr", "iam", "s3", "sts"))
    return f"""provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
"""


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Path:
    """A copy of infra/bootstrap pointed at moto, initialised once from the plugin dir."""
    assert TERRAFORM, "terraform is not installed (see infra/README.md: testing)"
    base = tmp_path_factory.mktemp("bootstrap")
    folder = base / "bootstrap"
    shutil.copytree(BOOTSTRAP, folder, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    (folder / "moto_override.tf").write_text(moto_override(moto_url))
    config = base / "terraformrc"
    config.write_text("")
    init = tf(folder, "init", "-backend=false", "-input=false", *plugin_args())
    assert init.returncode == 0, output_of(init)
    return folder


def plugin_args() -> list[str]:
    return [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []


def tf(folder: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return terraform(
        *args, cwd=folder, env=terraform_env(folder.parent / "terraformrc"), timeout=timeout
    )


def tfvars(folder: Path, name: str, **values: Any) -> str:
    """Writes ``<name>.tfvars.json`` (not auto-loaded) and returns its -var-file flag."""
    suffix = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "account_id": ACCOUNT,
        "aws_region": "us-east-1",
        "github_repository": REPO,
        "name_prefix": f"b{suffix}",  # unique in the shared moto server
        "state_bucket_name": f"tfstate-{suffix}",
        "ecr_repository_name": f"b{suffix}/mirrord",
        "environments": {
            "dev": {"bucket_name": f"mirror-dev-{suffix}", "kms_key_arn": DEV_KEY},
            "prod": {"bucket_name": f"mirror-prod-{suffix}"},
        },
    }
    path = folder / f"{name}.tfvars.json"
    path.write_text(json.dumps({**base, **values}))
    return f"-var-file={path.name}"


# --- static checks -----------------------------------------------------------------


def test_bootstrap_is_formatted() -> None:
    proc = subprocess.run(
        [str(TERRAFORM), "fmt", "-check", "-diff", "-no-color", str(BOOTSTRAP)],
        capture_output=True,
        text=True,
        timeout=60,
        env=terraform_env(Path("/dev/null")),
        check=False,
    )
    assert proc.returncode == 0, output_of(proc)


def test_bootstrap_validates(bootstrap: Path) -> None:
    """`terraform init -backend=false` (the fixture) and `validate`, without warnings."""
    proc = tf(bootstrap, "validate")
    assert proc.returncode == 0, output_of(proc)
    assert "Success! The configuration is valid." in proc.stdout
    assert "Warning" not in proc.stdout + proc.stderr, output_of(proc)


def test_checkov_scans_the_bootstrap() -> None:
    """`make checkov` reads infra/.checkov.yaml, whose directory list covers
    infra/bootstrap (the skips' reasons are checked by test_infra)."""
    config = (INFRA / ".checkov.yaml").read_text()
    directories = re.findall(
        r"^\s*-\s*(\S+)\s*$", config.split("directory:")[1].split(":")[0], re.M
    )
    assert any(BOOTSTRAP.relative_to(INFRA.parent).is_relative_to(d) for d in directories)
    assert "#checkov:skip=" in (BOOTSTRAP / "main.tf").read_text()


def test_outputs_name_the_workflow_variables() -> None:
    """github_environment_variables has one key per environment variable the workflow
    reads, plan_targets' entries the plan job's matrix keys; both terraform inits take the
    rendered backend.hcl, whose state key (config.yaml's renderer) is the one the
    policies grant."""
    outputs = (BOOTSTRAP / "outputs.tf").read_text()
    block = outputs[outputs.index('output "github_environment_variables"') :]
    block = block[: block.index("\n}\n")]
    assert set(re.findall(r"^\s+([A-Z_]+)\s+=", block, re.M)) == GITHUB_VARIABLES
    deploy = WORKFLOW.read_text()
    assert set(re.findall(r"\bvars\.(\w+)", deploy)) == GITHUB_VARIABLES | REPOSITORY_VARIABLES
    assert set(re.findall(r"\bmatrix\.(\w+)", deploy)) == PLAN_TARGET_KEYS
    inits = re.findall(r"^\s+run: terraform .* init (.*)$", deploy, re.M)
    assert len(inits) == 2, inits  # the plan job's and the deploy job's
    assert all("-backend-config=backend.hcl" in i for i in inits), inits
    assert "dynamodb" not in deploy.lower()
    renderer = (INFRA.parent / "mirrord" / "core" / "deployconfig.py").read_text()
    assert '"mirrord/{env}/terraform.tfstate"' in renderer
    assert '"mirrord/${env}/terraform.tfstate"' in (BOOTSTRAP / "main.tf").read_text()
    assert {"account_id", "environments", "github_repository"} <= declared_variables(
        BOOTSTRAP / "variables.tf"
    )


def test_deploy_policy_covers_every_resource_type() -> None:
    """Each resource type infra/ creates is written through a service the deploy policy
    grants: a module that adds a new type must extend infra/bootstrap/policies.tf."""
    types = {
        t
        for path in INFRA.rglob("*.tf")
        if "bootstrap" not in path.parts and ".terraform" not in path.parts
        for t in re.findall(r'^resource\s+"(aws_\w+)"', path.read_text(), re.M)
    }
    unknown = types - set(SERVICE_OF)
    assert not unknown, f"infra/bootstrap/policies.tf: grant (and list here) {sorted(unknown)}"
    policies = (BOOTSTRAP / "policies.tf").read_text()
    write = policies[policies.index('data "aws_iam_policy_document" "write_compute"') :]
    granted = set(re.findall(r'"([a-z0-9-]+):[A-Za-z*]+"', write))
    assert {SERVICE_OF[t] for t in types} <= granted


# --- refusals (plans against moto) ---------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"account_id": "111111111111"}, "AWS account ID not allowed: 123456789012"),
        (
            {
                "environments": {
                    "dev": {"bucket_name": "a-dev-1"},
                    "dev-eu": {"bucket_name": "a-dev-2"},
                }
            },
            "no name may be another's name followed by '-'",
        ),
        ({"create_github_oidc_provider": False}, "github_oidc_provider_arn: give the existing"),
        ({"environments": {}}, "environments: at least one"),
    ],
    ids=["wrong-account", "overlapping-environments", "oidc-reuse-without-arn", "no-environment"],
)
def test_bootstrap_refuses(bootstrap: Path, values: dict[str, Any], message: str) -> None:
    proc = tf(bootstrap, "plan", "-input=false", "-lock=false", tfvars(bootstrap, "bad", **values))
    assert proc.returncode != 0, output_of(proc)
    assert message in " ".join(proc.stderr.split()), output_of(proc)


def test_bootstrap_reuses_an_existing_oidc_provider(bootstrap: Path) -> None:
    """create_github_oidc_provider = false: no provider is planned, and the roles trust
    the given one."""
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    flag = tfvars(
        bootstrap, "reuse", create_github_oidc_provider=False, github_oidc_provider_arn=arn
    )
    plan = tf(bootstrap, "plan", "-input=false", "-lock=false", flag, "-out=reuse.tfplan")
    assert plan.returncode == 0, output_of(plan)
    shown = tf(bootstrap, "show", "-json", "reuse.tfplan")
    changes = json.loads(shown.stdout)["resource_changes"]
    assert not [c for c in changes if c["type"] == "aws_iam_openid_connect_provider"]
    (role,) = [c for c in changes if c["address"] == 'aws_iam_role.deploy["dev"]']
    trust = json.loads(role["change"]["after"]["assume_role_policy"])
    assert trust["Statement"][0]["Principal"]["Federated"] == arn


# --- the moto apply ------------------------------------------------------------------


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> list[dict[str, Any]]:
    """The Allow statements whose actions and resources match (IAM wildcards; action
    names case-insensitive); their conditions are the caller's to read."""

    def listed(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    return [
        s
        for s in statements
        if s["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(s["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in listed(s["Resource"]))
    ]


def role_policies(iam: Any, role: str) -> list[dict[str, Any]]:
    """The statements of every managed policy attached to ``role`` (none inline)."""
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []
    statements: list[dict[str, Any]] = []
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        doc = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )["PolicyVersion"]["Document"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        # IAM's limit for a managed policy, whitespace excluded.
        assert len(json.dumps(doc, separators=(",", ":"))) < 6144, attached["PolicyName"]
        statements += doc["Statement"]
    return statements


def check_state_bucket(s3: Any, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert sse["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert len(block) == 4
    assert all(block.values())
    owner = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert owner["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert "Days" not in rule.get("Expiration", {}), "current state must never expire"
    (deny,) = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # moto speaks plain HTTP and enforces the policy: refused, as any non-TLS client is.
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="probe", Body=b"")
    assert refused.value.response["Error"]["Code"] in ("403", "AccessDenied")


def check_repository(ecr: Any, name: str) -> None:
    (repo,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    rules = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])[
        "rules"
    ]
    by_priority = {r["rulePriority"]: r["selection"] for r in rules}
    assert by_priority[1] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14,
    }
    kept = {tuple(s["tagPrefixList"]): s for p, s in by_priority.items() if p > 1}
    assert set(kept) == {("dev-",), ("prod-",)}
    for selection in kept.values():
        assert (selection["countType"], selection["countNumber"]) == ("imageCountMoreThan", 7)


def check_trust(iam: Any, role: str, admitted: str) -> None:
    """The role admits GitHub's token with exactly this sub (and aud sts), no other."""
    doc = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    (statement,) = doc["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].endswith(
        ":oidc-provider/token.actions.githubusercontent.com"
    )
    # StringEquals only: no StringLike, so no wildcard can widen the subject.
    assert set(statement["Condition"]) == {"StringEquals"}
    condition = statement["Condition"]["StringEquals"]
    assert condition["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    subs = condition["token.actions.githubusercontent.com:sub"]
    subs = [subs] if isinstance(subs, str) else subs
    assert subs == [admitted]
    for other in (
        admitted.replace(REPO, "example-org/fork"),
        admitted.replace(REPO, "someone-else/mirrord"),
        "repo:example-org/mirrord:environment:prod" if ":dev" in admitted else "",
        "repo:example-org/mirrord:ref:refs/heads/main",
        "repo:example-org/mirrord:pull_request" if "environment" in admitted else "",
    ):
        assert other not in subs


def check_deploy_policy(iam: Any, prefix: str, out: dict[str, Any]) -> None:
    """dev's deploy role reaches dev's resources, its state key and the repository, and
    nothing of prod's, of the bootstrap's, or of the mirror's data."""
    statements = role_policies(iam, f"{prefix}-deploy-dev")
    dev, prod = f"{prefix}-dev", f"{prefix}-prod"
    iam_arn, lam = f"arn:aws:iam::{ACCOUNT}", f"arn:aws:lambda:us-east-1:{ACCOUNT}"
    state = f"arn:aws:s3:::{out['state_bucket']}"
    repo = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{out['ecr_repository_name']}"
    secret = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{dev}/slack-webhook-AbCdEf"
    yes = [
        ("iam:PutRolePolicy", f"{iam_arn}:role/{dev}-task"),
        ("iam:PassRole", f"{iam_arn}:role/{dev}-execution"),
        ("lambda:UpdateFunctionCode", f"{lam}:function:{dev}-sync"),
        ("lambda:InvokeFunction", f"{lam}:function:{dev}-enqueue"),
        ("sqs:CreateQueue", f"arn:aws:sqs:us-east-1:{ACCOUNT}:{dev}-jobs"),
        ("ecs:RunTask", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{dev}-daemon:7"),
        ("ecs:DescribeTasks", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/{dev}-daemon/abc"),
        ("s3:PutObject", f"{state}/mirrord/dev/terraform.tfstate"),
        ("s3:DeleteObject", f"{state}/mirrord/dev/terraform.tfstate.tflock"),
        ("s3:PutBucketPolicy", f"arn:aws:s3:::{out['mirror_buckets']['dev']}"),
        ("secretsmanager:CreateSecret", secret),
        ("ecr:PutImage", repo),
        ("ec2:DescribeVpcs", "*"),
        ("kms:CreateGrant", DEV_KEY),
    ]
    no = [
        ("iam:PutRolePolicy", f"{iam_arn}:role/{prod}-task"),
        ("iam:PutRolePolicy", f"{iam_arn}:role/{prefix}-ci/{prefix}-deploy-dev"),
        ("iam:AttachRolePolicy", f"{iam_arn}:role/{dev}-task"),
        ("iam:CreatePolicyVersion", f"{iam_arn}:policy/{prefix}-ci/{prefix}-write-compute-dev"),
        ("iam:PassRole", f"{iam_arn}:role/{prod}-execution"),
        ("lambda:UpdateFunctionCode", f"{lam}:function:{prod}-sync"),
        ("lambda:InvokeFunction", f"{lam}:function:{dev}-sync"),
        ("s3:PutObject", f"{state}/mirrord/prod/terraform.tfstate"),
        ("s3:GetObject", f"{state}/mirrord/prod/terraform.tfstate"),
        ("s3:PutBucketPolicy", f"arn:aws:s3:::{out['mirror_buckets']['prod']}"),
        ("s3:DeleteBucket", f"arn:aws:s3:::{out['mirror_buckets']['dev']}"),
        ("s3:GetObject", f"arn:aws:s3:::{out['mirror_buckets']['dev']}/bottles_hash.json"),
        ("secretsmanager:GetSecretValue", secret),
        ("secretsmanager:PutSecretValue", secret),
        ("ecr:PutImage", f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/other"),
        ("sqs:DeleteQueue", f"arn:aws:sqs:us-east-1:{ACCOUNT}:{prod}-jobs"),
        ("kms:Decrypt", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/any"),
        ("ec2:AuthorizeSecurityGroupIngress", "*"),
    ]
    for action, resource in yes:
        assert allowed(statements, action, resource), f"dev's deploy cannot {action} {resource}"
    for action, resource in no:
        assert not allowed(statements, action, resource), f"dev's deploy may {action} {resource}"
    (passing,) = allowed(statements, "iam:PassRole", f"{iam_arn}:role/{dev}-task")
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == [
        "ecs-tasks.amazonaws.com",
        "lambda.amazonaws.com",
    ]
    # Everything not on "*" names dev (or its bucket, the state, the repository).
    for s in statements:
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        for r in resources:
            assert prod not in r, (s["Sid"], r)
            assert "/prod/" not in r, (s["Sid"], r)
            if r == "*":
                assert s["Sid"].startswith("Network") or {a.lower() for a in actions} <= UNSCOPED, s
    network = {s["Sid"]: s for s in statements if s["Sid"].startswith("Network")}
    for sid, statement in network.items():  # no unconditioned "*" in the VPC's grants
        assert statement["Resource"] != "*" or statement.get("Condition"), sid
    assert network["NetworkRules"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/Environment": "dev"}
    }
    assert network["NetworkBuild"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": "us-east-1"}
    }
    assert (
        network["NetworkDelete"]["Condition"]["StringEquals"]["aws:ResourceTag/Environment"]
        == "dev"
    )


def check_plan_policy(iam: Any, prefix: str, out: dict[str, Any]) -> None:
    """The plan role reads; its only writes are dev's lock file."""
    statements = role_policies(iam, f"{prefix}-plan-dev")
    state = f"arn:aws:s3:::{out['state_bucket']}"
    assert allowed(statements, "s3:GetObject", f"{state}/mirrord/dev/terraform.tfstate")
    assert allowed(statements, "s3:PutObject", f"{state}/mirrord/dev/terraform.tfstate.tflock")
    assert not allowed(statements, "s3:PutObject", f"{state}/mirrord/dev/terraform.tfstate")
    assert allowed(statements, "iam:GetRole", f"arn:aws:iam::{ACCOUNT}:role/{prefix}-dev-task")
    writes = re.compile(
        r":(Create|Delete|Put|Update|Modify|Attach|Detach|Tag|Untag|Pass|Invoke|Run|Set|Register)"
    )
    for s in statements:
        actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        for action in actions:
            if writes.search(action):
                assert s["Sid"] == "StateLockFile", (s["Sid"], action)


def check_backend(root: Path, moto_url: str, backend_hcl: str, s3: Any, bucket: str) -> None:
    """A root with the S3 backend and the module's backend.hcl for dev keeps its state at
    mirrord/dev/terraform.tfstate with S3's lock file (no DynamoDB), as an environment
    would; moto's endpoint and credentials are added on the command line."""
    root.mkdir()
    (root / "main.tf").write_text(
        'terraform {\n  backend "s3" {}\n}\n\noutput "probe" {\n  value = "state in S3"\n}\n'
    )
    (root / "backend.hcl").write_text(backend_hcl)
    config = root.parent / "terraformrc"
    config.write_text("")
    env = terraform_env(config)
    moto = [
        f'-backend-config=endpoints={{s3="{moto_url}"}}',
        "-backend-config=use_path_style=true",
        "-backend-config=access_key=testing",
        "-backend-config=secret_key=testing",
        "-backend-config=skip_credentials_validation=true",
        "-backend-config=skip_requesting_account_id=true",
    ]
    init = terraform(
        "init", "-input=false", "-backend-config=backend.hcl", *moto, cwd=root, env=env
    )
    assert init.returncode == 0, output_of(init)
    apply = terraform("apply", "-auto-approve", "-input=false", cwd=root, env=env)
    assert apply.returncode == 0, output_of(apply)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {"mirrord/dev/terraform.tfstate"}  # the lock file came and went
    versions = s3.list_object_versions(Bucket=bucket, Prefix="mirrord/dev/terraform.tfstate.tflock")
    assert versions.get("DeleteMarkers"), "the apply took S3's lock file"


@pytest.mark.slow
def test_moto_apply_then_read_back_then_destroy(
    bootstrap: Path, moto_url: str, tmp_path: Path
) -> None:
    """The module applies in moto; every setting above is read back from moto; an
    environment's backend uses the bucket; terraform destroy removes everything."""
    flag = tfvars(bootstrap, "apply", ecr_keep_images=7)
    values = json.loads((bootstrap / "apply.tfvars.json").read_text())
    prefix, bucket = values["name_prefix"], values["state_bucket_name"]
    client = {
        name: boto3.client(
            name,
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "ecr", "iam")
    }
    s3, iam = client["s3"], client["iam"]
    try:
        apply = tf(bootstrap, "apply", "-auto-approve", "-input=false", flag)
        assert apply.returncode == 0, output_of(apply)
        shown = tf(bootstrap, "output", "-json")
        assert shown.returncode == 0, output_of(shown)
        out = {k: v["value"] for k, v in json.loads(shown.stdout).items()}
        out["mirror_buckets"] = {e: v["bucket_name"] for e, v in values["environments"].items()}

        assert out["state_bucket"] == bucket
        assert out["ecr_repository_url"] == (
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{values['ecr_repository_name']}"
        )
        for env in ("dev", "prod"):
            variables = out["github_environment_variables"][env]
            assert set(variables) == GITHUB_VARIABLES
            assert variables["AWS_DEPLOY_ROLE_ARN"] == out["deploy_role_arns"][env]
            assert f'key          = "mirrord/{env}/terraform.tfstate"' in out["backend_hcl"][env]
        assert json.loads(out["plan_targets"]) == [
            {"env": env, "role": out["plan_role_arns"][env]} for env in ("dev", "prod")
        ]
        (provider,) = [
            p["Arn"]
            for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
            if p["Arn"] == out["github_oidc_provider_arn"]
        ]
        oidc = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider)
        assert oidc["ClientIDList"] == ["sts.amazonaws.com"]

        check_state_bucket(s3, bucket)
        check_repository(client["ecr"], values["ecr_repository_name"])
        for env in ("dev", "prod"):
            check_trust(iam, f"{prefix}-deploy-{env}", f"repo:{REPO}:environment:{env}")
            check_trust(iam, f"{prefix}-plan-{env}", f"repo:{REPO}:pull_request")
        check_deploy_policy(iam, prefix, out)
        check_plan_policy(iam, prefix, out)

        s3.delete_bucket_policy(Bucket=bucket)  # the backend below speaks moto's plain HTTP
        check_backend(tmp_path / "env", moto_url, out["backend_hcl"]["dev"], s3, bucket)
    finally:
        empty_bucket(s3, bucket)
        destroy = tf(bootstrap, "destroy", "-auto-approve", "-input=false", flag)
    assert destroy.returncode == 0, output_of(destroy)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket)
    assert not [
        p
        for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
        if p["Arn"].endswith("token.actions.githubusercontent.com")
    ]
