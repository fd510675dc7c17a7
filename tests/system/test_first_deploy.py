"""The first deploy of docs/first-deploy.md, rehearsed against moto, step by step.

A NEW environment name ("rehearsal"), in moto's account, goes from config.yaml to a
synced mirror that `mirrord check-client` accepts: validate → `make package` → render →
terraform init with the rendered backend.hcl (the state in a moto bucket, locked by S3's
own lock file) → apply of the SAME shared root every real environment uses (only
AWS_ENDPOINT_URL points it at moto) → the Slack webhook into the secret → the enqueue
handler with {"source": "manual"} and the deployed settings → the daemon runs the job →
check-client through a CloudFront stand-in. And the guard: with another account_id than
the credentials' the plan fails before any change.

Where moto stops the rehearsal, the step is changed, with the reason at the spot:
- bootstrap: a placeholder makes the state bucket (infra/bootstrap, once merged, will be
  applied here instead: see ``bootstrap``);
- `make image` and the push: no Docker here; the task definition names an image nothing
  runs (the daemon runs as a local process with the task definition's environment);
- autoscaling, monitoring and brew_mirror off in the apply (as tests/system/test_infra.py:
  moto's Application Auto Scaling never settles, it has no PutCompositeAlarm and no
  CloudFront cache policies); the daemon then gets MIRRORD_BREW_MIRROR=true, as
  brew_mirror = true gives every runtime (test_infra's plan test), so brew's files exist;
- the Lambda runtime: moto cannot run it, so the handler runs in a Python process with
  the deployed function's environment; size_threshold_gb = 0 sends the job to the queue;
- TLS: moto speaks plain HTTP, which the bucket's TLS-only policy refuses: lifted.
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
from test_infra import (
    MOTO_ACCOUNT,
    PLUGIN_DIR,
    empty_bucket,
    output_of,
    terraform,
    terraform_env,
)

ENV = "rehearsal"  # no folder of that name exists in the repository
OTHER_ACCOUNT = "210987654321"
pytestmark = pytest.mark.slow


def bootstrap(s3: Any, account: str, suffix: str) -> str:
    """Step 1, PLACEHOLDER until infra/bootstrap is merged: there, apply infra/bootstrap
    (state bucket, ECR repository, OIDC roles) against moto and return its state bucket
    output. Here: the versioned state bucket it would make."""
    state_bucket = f"tfstate-{suffix}-{account}"
    s3.create_bucket(Bucket=state_bucket)
    s3.put_bucket_versioning(Bucket=state_bucket, VersioningConfiguration={"Status": "Enabled"})
    return state_bucket


def edit_config(tmp: Path, state_bucket: str, package: Path, suffix: str) -> Path:
    """Step 2: the shipped config.yaml, with what a team fills in and a new environment."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["defaults"]["state"]["bucket"] = state_bucket
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

    state_bucket = bootstrap(s3, MOTO_ACCOUNT, suffix)  # (1)
    package = tmp_path / "build" / "mirrord-lambda.zip"
    config = edit_config(tmp_path, state_bucket, package, suffix)  # (2)
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

    def tf(*args: str) -> subprocess.CompletedProcess[str]:
        return terraform(*args, cwd=folder, env=tf_env, timeout=900)

    plugins = [f"-plugin-dir={PLUGIN_DIR}"] if PLUGIN_DIR.is_dir() else []
    extra = moto_backend(folder, moto_url)
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
        empty_bucket(s3, state_bucket)
        s3.delete_bucket(Bucket=state_bucket)
    assert destroy.returncode == 0, output_of(destroy)


async def deployed_mirror_syncs(
    clients: dict[str, Any], out: dict[str, Any], receiver: Receiver, work: Path
) -> None:
    """Steps 5-7 on the applied environment."""
    s3, sqs, lam = clients["s3"], clients["sqs"], clients["lambda"]
    bucket = out["bucket_name"]
    # (5) the Slack webhook into the secret Terraform made without a value
    clients["secretsmanager"].put_secret_value(
        SecretId=out["slack_secret_arn"], SecretString=receiver.url
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
