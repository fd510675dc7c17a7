"""The first deploy of docs/first-deploy.md, rehearsed against moto, step by step.

A NEW environment name ("rehearsal"), in moto's account, goes from a bootstrapped account
to a synced mirror that `mirrord check-client` accepts: `terraform apply` of infra/bootstrap
(state bucket, ECR repository, roles) → config.yaml filled in from its outputs
(state.bucket, image_repository) → validate → `make package` → render (its backend.hcl is
exactly bootstrap's backend_hcl output; deploy.yml's config step reads bootstrap's
repository from it) → terraform init with the rendered backend.hcl (the state in the
bootstrap's bucket, locked by S3's own lock file) → apply of the SAME shared root every real environment uses (only
AWS_ENDPOINT_URL points it at moto) → the Slack webhook into the secret → the enqueue
handler with {"source": "manual"} and the deployed settings → the daemon runs the job →
check-client through a CloudFront stand-in. And the guard: with another account_id than
the credentials' the plan fails before any change.

Where moto stops the rehearsal, the step is changed, with the reason at the spot:
- bootstrap: the account's GitHub OIDC provider is given as existing
  (create_github_oidc_provider = false), as for an account that has one: moto holds one
  per account and tests/system/test_bootstrap.py creates (and destroys) it in the same
  server; the state bucket's TLS-only policy is lifted (below);
- `make image` and the push: no Docker here; the task definition names an image nothing
  runs (the daemon runs as a local process with the task definition's environment);
- autoscaling, monitoring and brew_mirror off in the apply (as tests/system/test_infra.py:
  moto's Application Auto Scaling never settles, it has no PutCompositeAlarm and no
  CloudFront cache policies); the daemon then gets MIRRORD_BREW_MIRROR=true, as
  brew_mirror = true gives every runtime (test_infra's plan test), so brew's files exist;
- the Lambda runtime: moto cannot run it, so the handler runs in a Python process with
  the deployed function's environment; size_threshold_gb = 0 sends the job to the queue;
- TLS: moto speaks plain HTTP, which the buckets' TLS-only policies refuse: lifted (the
  state bucket's right after the bootstrap, the mirror's after the apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from conftest import ROOT, Receiver, run_cli, spawn_cli
from mirrord_dev.emulator import Emulator, sample_catalog
from mirrord_dev.local import bucket_front
from test_bootstrap import BOOTSTRAP, moto_override
from test_deploy_workflow import step
from test_infra import (
    MOTO_ACCOUNT,
    PLUGIN_DIR,
    empty_bucket,
    output_of,
    terraform,
    terraform_env,
)

ENV = "rehearsal"  # no folder of that name exists in the repository
CONFIG_STEP = "Read the region and the image repository (config.yaml)"  # deploy.yml's
OTHER_ACCOUNT = "210987654321"
pytestmark = pytest.mark.slow


def bootstrap(work: Path, moto_url: str, env: dict[str, str], suffix: str) -> Path:
    """Step 1: infra/bootstrap/README.md's terraform.tfvars.json for this account and
    environment, then init and apply (its own local state), pointed at moto by an override
    file (test_bootstrap's). Returns the folder, for its outputs and the destroy."""
    folder = work / "bootstrap"  # the test destroys it, whatever happens after the copy
    shutil.copytree(BOOTSTRAP, folder, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    (folder / "moto_override.tf").write_text(moto_override(moto_url))
    provider = f"arn:aws:iam::{MOTO_ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    values = {
        "account_id": MOTO_ACCOUNT,
        "aws_region": "us-east-1",
        "github_repository": "example-org/mirrord",
        "name_prefix": f"r{suffix}",  # unique in the session's moto server
        "state_bucket_name": f"tfstate-{suffix}-{MOTO_ACCOUNT}",
        "ecr_repository_name": f"r{suffix}/mirrord",  # not the default: read from the output
        "environments": {ENV: {"bucket_name": f"r{suffix}-{ENV}-{MOTO_ACCOUNT}"}},
        "create_github_oidc_provider": False,  # moto: one per account (module docstring)
        "github_oidc_provider_arn": provider,
    }
    (folder / "terraform.tfvars.json").write_text(json.dumps(values))
    plugins = [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []
    for args in (
        ("init", "-input=false", *plugins),
        ("apply", "-auto-approve", "-input=false", "-var-file=terraform.tfvars.json"),
    ):
        proc = terraform(*args, cwd=folder, env=env, timeout=900)
        assert proc.returncode == 0, output_of(proc)
    return folder


def bootstrap_outputs(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """The outputs, as infra/bootstrap/README.md step 4 reads them (-json, and -raw for
    the ones pasted as they are)."""
    shown = terraform("output", "-json", cwd=folder, env=env)
    assert shown.returncode == 0, output_of(shown)
    out = {k: v["value"] for k, v in json.loads(shown.stdout).items()}
    for name in ("plan_targets", "state_bucket", "ecr_repository_name"):
        raw = terraform("output", "-raw", name, cwd=folder, env=env)
        assert (raw.returncode, raw.stdout) == (0, out[name]), output_of(raw)
    return out


def backend_agrees(folder: Path, env: dict[str, str], rendered: Path) -> None:
    """infra/bootstrap/README.md step 5's check: backend_hcl[ENV] | diff - the rendered
    backend.hcl."""
    check = (
        "terraform output -json backend_hcl | jq -j --arg env \"$ENV\" '.[$env]' |"
        ' diff - "$RENDERED" && echo "backend.hcl agrees"'
    )
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", check],
        env={**env, "ENV": ENV, "RENDERED": str(rendered)},
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "backend.hcl agrees\n"


def destroy_bootstrap(
    folder: Path, env: dict[str, str], s3: Any, state_bucket: str
) -> subprocess.CompletedProcess[str]:
    """The end: the state bucket emptied (never force_destroy), then terraform destroy."""
    empty_bucket(s3, state_bucket)
    return terraform(
        "destroy",
        "-auto-approve",
        "-input=false",
        "-var-file=terraform.tfvars.json",
        cwd=folder,
        env=env,
        timeout=900,
    )


def workflow_reads(work: Path, env: str) -> dict[str, str]:
    """deploy.yml's "Read the region and the image repository" step, as GitHub runs it,
    on the rendered infra/ under ``work``: its outputs."""
    outputs = work / "github-output"
    outputs.write_text("")
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step(CONFIG_STEP)],
        env={**os.environ, "DEPLOY_ENV": env, "GITHUB_OUTPUT": str(outputs)},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split("=", 1) for line in outputs.read_text().splitlines())


def edit_config(tmp: Path, boot: dict[str, Any], package: Path, suffix: str) -> Path:
    """Step 2: the shipped config.yaml, with what a team fills in (the bootstrap's
    state_bucket and ecr_repository_name) and a new environment."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["defaults"]["state"]["bucket"] = boot["state_bucket"]
    data["defaults"]["image_repository"] = boot["ecr_repository_name"]
    data["defaults"]["name_prefix"] = f"r{suffix}"  # unique in the session's moto server
    data["environments"] = {
        ENV: {
            "account_id": MOTO_ACCOUNT,
            "aws_region": "us-east-1",
            "lambda_package_path": str(package),
            "size_threshold_gb": 0,  # to the queue: moto cannot run the sync Lambda
            "enable_autoscaling": False,  # moto: never settles
            "enable_monitoring": False,  # moto: no PutCompositeAlarm
            "brew_mirror": False,  # moto: no CloudFront cache policies
        }
    }
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def make_package(out: Path) -> None:
    """Step 3: `make package` (Linux wheels for the Lambda's Python); `make image` needs
    Docker, which this machine lacks (tests/system/test_packaging.py builds it where
    Docker runs)."""
    proc = subprocess.run(
        ["make", "package", f"LAMBDA_ZIP={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def infra_copy(tmp: Path) -> Path:
    """The repository's infra/ as committed (the lock file included), without anything a
    local init or render left behind."""
    infra = tmp / "infra"
    shutil.copytree(
        ROOT / "infra",
        infra,
        symlinks=True,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfvars.json", "backend.hcl"),
    )
    return infra


def moto_backend(folder: Path, moto_url: str) -> Path:
    """What the state backend needs beyond the rendered backend.hcl to reach moto."""
    extra = folder / "moto-backend.hcl"
    extra.write_text(
        f'endpoints = {{ s3 = "{moto_url}", sts = "{moto_url}" }}\n'
        "use_path_style = true\nskip_credentials_validation = true\n"
    )
    return extra


async def run_daemon_until_done(env: dict[str, str], sqs: Any, queue_url: str) -> bytes:
    """Step 6 (the Fargate side): `mirrord daemon` with the task definition's environment
    takes the job, syncs and deletes the message; SIGTERM then. Returns its log."""
    daemon = await spawn_cli("daemon", env=env, stdout=subprocess.DEVNULL)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    try:
        for _ in range(1200):  # a bound, not a timing check: the daemon's own pace
            depth = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
            if sum(map(int, depth["Attributes"].values())) == 0 or daemon.returncode is not None:
                break
            await asyncio.sleep(0.25)
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
        assert daemon.stderr is not None
        log = await daemon.stderr.read()
        await daemon.wait()
    return log


async def test_first_deploy_rehearsal(moto_url: str, receiver: Receiver, tmp_path: Path) -> None:
    """docs/first-deploy.md, steps 1-7, against moto, plus the wrong-account guard."""
    suffix = uuid.uuid4().hex[:6]
    rc = tmp_path / "terraformrc"
    rc.write_text("")
    tf_env = {**terraform_env(rc), "AWS_ENDPOINT_URL": moto_url}
    clients = {
        n: boto3.client(n, endpoint_url=moto_url, region_name="us-east-1")
        for n in ("s3", "sqs", "lambda", "ecs", "secretsmanager")
    }
    s3 = clients["s3"]

    boot_dir = tmp_path / "bootstrap"
    state_bucket = f"tfstate-{suffix}-{MOTO_ACCOUNT}"
    try:
        await asyncio.to_thread(bootstrap, tmp_path, moto_url, tf_env, suffix)  # (1)
        boot = bootstrap_outputs(boot_dir, tf_env)
        assert boot["state_bucket"] == state_bucket
        assert set(boot["github_environment_variables"][ENV]) == {"AWS_DEPLOY_ROLE_ARN"}
        assert [t["env"] for t in json.loads(boot["plan_targets"])] == [ENV]
        s3.delete_bucket_policy(Bucket=state_bucket)  # moto is plain HTTP: see the docstring
        await rehearse(boot, clients, tf_env, receiver, tmp_path, suffix)
    finally:
        destroyed = await asyncio.to_thread(destroy_bootstrap, boot_dir, tf_env, s3, state_bucket)
    assert destroyed.returncode == 0, output_of(destroyed)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=state_bucket)


async def rehearse(
    boot: dict[str, Any],
    clients: dict[str, Any],
    tf_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
    suffix: str,
) -> None:
    """Steps 2-7 in the bootstrapped account, and the environment's destroy."""
    s3, state_bucket = clients["s3"], boot["state_bucket"]
    package = tmp_path / "build" / "mirrord-lambda.zip"
    config = edit_config(tmp_path, boot, package, suffix)  # (2)
    validated = await run_cli("config", "validate", "--file", str(config))
    assert validated.code == 0, validated.stderr
    make_package(package)  # (3)

    infra = infra_copy(tmp_path)  # (4) render, init with backend.hcl, apply
    rendered = await run_cli(
        "config", "render", "--env", ENV, "--file", str(config), "--infra", str(infra)
    )
    assert rendered.code == 0, rendered.stderr
    folder = infra / "environments" / ENV
    tfvars = json.loads((folder / "terraform.tfvars.json").read_text())
    bucket = tfvars["bucket_name"]
    assert bucket == f"r{suffix}-{ENV}-{MOTO_ACCOUNT}"
    # One source for the state: what config.yaml renders is what the bootstrap made.
    assert (folder / "backend.hcl").read_text() == boot["backend_hcl"][ENV]
    await asyncio.to_thread(backend_agrees, tmp_path / "bootstrap", tf_env, folder / "backend.hcl")
    assert tfvars["image_uri"] == f"{boot['ecr_repository_url']}:{ENV}"
    assert workflow_reads(tmp_path, ENV) == {
        "region": "us-east-1",
        "repository": boot["ecr_repository_name"],
    }

    def tf(*args: str) -> subprocess.CompletedProcess[str]:
        return terraform(*args, cwd=folder, env=tf_env, timeout=900)

    plugins = [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []
    extra = moto_backend(folder, moto_url=tf_env["AWS_ENDPOINT_URL"])
    init = await asyncio.to_thread(
        tf,
        "init",
        "-input=false",
        "-backend-config=backend.hcl",
        f"-backend-config={extra}",
        *plugins,
    )
    assert init.returncode == 0, output_of(init)
    lock = (infra / "environments" / "dev" / ".terraform.lock.hcl").read_text()
    assert lock == (ROOT / "infra/environments/dev/.terraform.lock.hcl").read_text(), (
        "init changed the committed lock file"
    )

    # The guard: credentials of one account, account_id another: no plan, no change.
    wrong = await asyncio.to_thread(tf, "plan", "-input=false", f"-var=account_id={OTHER_ACCOUNT}")
    assert wrong.returncode != 0, output_of(wrong)
    assert "not allowed" in wrong.stderr, output_of(wrong)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket)

    try:
        apply = await asyncio.to_thread(tf, "apply", "-auto-approve", "-input=false")
        assert apply.returncode == 0, output_of(apply)
        state_key = f"mirrord/{ENV}/terraform.tfstate"
        s3.head_object(Bucket=state_bucket, Key=state_key)  # the state is in the backend
        shown = await asyncio.to_thread(tf, "output", "-json", "mirrord")
        assert shown.returncode == 0, output_of(shown)
        out = json.loads(shown.stdout)
        await deployed_mirror_syncs(clients, out, receiver, tmp_path)
    finally:
        with contextlib.suppress(ClientError):
            s3.delete_bucket_policy(Bucket=bucket)
        empty_bucket(s3, bucket)
        destroy = await asyncio.to_thread(
            tf, "destroy", "-auto-approve", "-input=false", "-refresh=false"
        )
    assert destroy.returncode == 0, output_of(destroy)


async def deployed_mirror_syncs(
    clients: dict[str, Any], out: dict[str, Any], receiver: Receiver, work: Path
) -> None:
    """Steps 5-7 on the applied environment."""
    s3, sqs, lam = clients["s3"], clients["sqs"], clients["lambda"]
    bucket = out["bucket_name"]
    # (5) the Slack webhook into the secret Terraform made without a value
    clients["secretsmanager"].put_secret_value(
        SecretId=out["slack_secret_arn"],
        SecretString=json.dumps({"webhook_url": receiver.url}),  # the doc's JSON form
    )
    s3.delete_bucket_policy(Bucket=bucket)  # moto is plain HTTP: see the module docstring

    # (6) the enqueue Lambda with {"source": "manual"}: its handler, its environment
    enqueue_env = lam.get_function_configuration(FunctionName=out["enqueue_function_name"])[
        "Environment"
    ]["Variables"]
    async with Emulator(sample_catalog()) as emu:
        upstream = {"MIRRORD_API_URL": emu.api_url}
        invoke = (
            "import json, sys; from mirrord.lambdas.enqueue import handler; "
            "print(json.dumps(handler({'source': 'manual'}, None)))"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            invoke,
            env={**os.environ, **enqueue_env, **upstream},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-4000:]
        result = json.loads(stdout.decode().splitlines()[-1])
        assert result["route"] == "fargate", result
        assert result["bottles"] > 0

        # … and the job followed: the daemon with the task definition's environment
        task = clients["ecs"].describe_task_definition(taskDefinition=out["task_definition_arn"])
        (container,) = task["taskDefinition"]["containerDefinitions"]
        task_env = {e["name"]: e["value"] for e in container["environment"]}
        daemon_env = {
            **task_env,
            **upstream,
            "MIRRORD_BREW_MIRROR": "true",  # brew_mirror = true's value: see the docstring
            "MIRRORD_HEALTH_FILE": str(work / "healthy"),
        }
        log = await run_daemon_until_done(daemon_env, sqs, out["queue_url"])
    status = json.loads(s3.get_object(Bucket=bucket, Key="status.json")["Body"].read())
    assert status["last_success"], log.decode()[-4000:]
    assert status["remaining"] == 0
    assert receiver.bodies, "no Slack message through the secret's webhook"

    # (7) check-client, as brew would see the mirror through CloudFront
    targets = [f"--target={t}" for t in status["platforms"]]
    with bucket_front(s3, bucket) as front:
        check = await run_cli("check-client", "--base", front.url, *targets)
    assert check.code == 0, check.stdout.decode()[-3000:] + check.stderr.decode()[-3000:]
