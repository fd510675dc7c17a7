"""deploy.yml's promotion and rollback, run as GitHub would run them: the steps' own bash,
read from the workflow, with the aws CLI against ECR in a moto server.

* staging's "Tag the image as tested here" adds <env>-ok-<commit> and the zip's sha256 tag;
* a release ("promote") finds exactly that digest, and fails, saying why, when staging
  never tested the commit or the zip differs;
* a dispatch ("rollback") finds the environment's own tested digest, or staging's.
No image is built here (no Docker): the build branch is make image, tested in
test_packaging.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import ROOT
from mirrord_dev.procs import moto_client

WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
AWS = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "aws"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ZIP = hashlib.sha256(b"the lambda zip").hexdigest()


def step(name: str) -> str:
    """The run: script of the deploy job's step ``name``."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    for s in jobs["deploy"]["steps"]:
        if s.get("name") == name:
            script: str = s["run"]
            return script
    raise AssertionError(f"deploy.yml has no step {name!r}")


FIND = "Build, or find the tested image"
TAG = "Tag the image as tested here"


@pytest.fixture
def ecr(moto: str) -> Any:
    client = moto_client("ecr", moto)
    name = f"mirrord-{uuid.uuid4().hex[:8]}"
    client.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    yield client, name
    client.delete_repository(repositoryName=name, force=True)


def push(client: Any, repo: str, tag: str, salt: str = "") -> str:
    """An image manifest under ``tag``, as `docker push` leaves it; its digest."""
    manifest = orjson.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": "sha256:" + hashlib.sha256(f"config{salt}".encode()).hexdigest(),
            },
            # moto derives the image digest from the layers' digests
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 1024,
                    "digest": "sha256:" + hashlib.sha256(f"layer{salt}".encode()).hexdigest(),
                }
            ],
        }
    ).decode()
    image = client.put_image(repositoryName=repo, imageManifest=manifest, imageTag=tag)["image"]
    digest: str = image["imageId"]["imageDigest"]
    return digest


def run_step(
    name: str, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """The step's script under bash -e (GitHub's `shell: bash`), with its outputs."""
    if not AWS.exists():
        pytest.fail(f"{AWS} is missing: install the test extra (make venv)")
    outputs = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    outputs.touch()
    full = {
        **os.environ,
        "PATH": f"{AWS.parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_REGION": "us-east-1",
        "GIT_SHA": COMMIT,
        "PROMOTE_FROM": "staging",
        "GITHUB_OUTPUT": str(outputs),
        **env,
    }
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step(name)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    found = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc, found


def test_a_release_of_a_commit_staging_never_tested_fails_clearly(ecr: Any, tmp_path: Path) -> None:
    client, repo = ecr
    push(client, repo, f"staging-{COMMIT}")  # pushed, but never smoke-tested
    proc, out = run_step(
        FIND, tmp_path, IMAGE_MODE="promote", DEPLOY_ENV="prod", ECR_REPOSITORY=repo, ZIP_SHA256=ZIP
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"no image of commit {COMMIT} was deployed and smoke-tested in staging" in proc.stdout
    assert "uri" not in out


def test_staging_tags_what_it_tested_and_the_release_deploys_that_digest(
    ecr: Any, tmp_path: Path
) -> None:
    client, repo = ecr
    tested = push(client, repo, f"staging-{COMMIT}")
    push(client, repo, f"staging-{'f' * 40}", salt="another commit")
    proc, _ = run_step(
        TAG,
        tmp_path,
        DEPLOY_ENV="staging",
        ECR_REPOSITORY=repo,
        IMAGE_DIGEST=tested,
        ZIP_SHA256=ZIP,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tags = {
        t
        for d in client.describe_images(repositoryName=repo)["imageDetails"]
        if d["imageDigest"] == tested
        for t in d["imageTags"]
    }
    assert tags == {f"staging-{COMMIT}", f"staging-ok-{COMMIT}", f"staging-zip-{COMMIT}-{ZIP}"}

    # A re-run of the same deploy leaves the (immutable) tags alone and succeeds.
    again, _ = run_step(
        TAG,
        tmp_path,
        DEPLOY_ENV="staging",
        ECR_REPOSITORY=repo,
        IMAGE_DIGEST=tested,
        ZIP_SHA256=ZIP,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already there" in again.stdout

    proc, out = run_step(
        FIND, tmp_path, IMAGE_MODE="promote", DEPLOY_ENV="prod", ECR_REPOSITORY=repo, ZIP_SHA256=ZIP
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["digest"] == tested
    assert out["uri"].endswith(f"/{repo}@{tested}")


def test_a_release_whose_zip_differs_from_the_tested_one_fails(ecr: Any, tmp_path: Path) -> None:
    client, repo = ecr
    tested = push(client, repo, f"staging-{COMMIT}")
    run_step(
        TAG,
        tmp_path,
        DEPLOY_ENV="staging",
        ECR_REPOSITORY=repo,
        IMAGE_DIGEST=tested,
        ZIP_SHA256=ZIP,
    )
    other = hashlib.sha256(b"a different zip").hexdigest()
    proc, out = run_step(
        FIND,
        tmp_path,
        IMAGE_MODE="promote",
        DEPLOY_ENV="prod",
        ECR_REPOSITORY=repo,
        ZIP_SHA256=other,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (
        f"the Lambda zip built here (sha256 {other}) is not the one staging deployed" in proc.stdout
    )
    assert "uri" not in out


def test_a_rollback_prefers_the_environments_own_tested_digest(ecr: Any, tmp_path: Path) -> None:
    """prod once ran (and tested) an image of this commit: a rollback of prod finds it
    first; without it, staging's."""
    client, repo = ecr
    staging = push(client, repo, f"staging-{COMMIT}")
    run_step(
        TAG,
        tmp_path,
        DEPLOY_ENV="staging",
        ECR_REPOSITORY=repo,
        IMAGE_DIGEST=staging,
        ZIP_SHA256=ZIP,
    )
    proc, out = run_step(
        FIND,
        tmp_path,
        IMAGE_MODE="rollback",
        DEPLOY_ENV="prod",
        ECR_REPOSITORY=repo,
        ZIP_SHA256=ZIP,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["digest"] == staging
    assert "staging deployed and smoke-tested it" in proc.stdout

    prod = push(client, repo, f"prod-only-{COMMIT}", salt="prod's own")
    run_step(
        TAG, tmp_path, DEPLOY_ENV="prod", ECR_REPOSITORY=repo, IMAGE_DIGEST=prod, ZIP_SHA256=ZIP
    )
    proc, out = run_step(
        FIND,
        tmp_path,
        IMAGE_MODE="rollback",
        DEPLOY_ENV="prod",
        ECR_REPOSITORY=repo,
        ZIP_SHA256=ZIP,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["digest"] == prod


CONFIG = "Read the region and the image repository (config.yaml)"


def read_config(tmp_path: Path, tfvars: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
    """deploy.yml's config step on a rendered infra/environments/prod/terraform.tfvars.json."""
    folder = tmp_path / "infra" / "environments" / "prod"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "terraform.tfvars.json").write_bytes(orjson.dumps(tfvars))
    outputs = tmp_path / "github-output"
    outputs.write_text("")
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step(CONFIG)],
        env={**os.environ, "DEPLOY_ENV": "prod", "GITHUB_OUTPUT": str(outputs)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    found = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return proc.returncode, proc.stdout, found


def test_the_region_and_repository_come_from_config_yaml(tmp_path: Path) -> None:
    """Both jobs read the region and the ECR repository from the rendered image_uri (no
    GitHub variable holds them); an image_uri outside ECR or in another region fails,
    saying what to set."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    plan = [s["run"] for s in jobs["plan"]["steps"] if s.get("name") == CONFIG]
    assert plan == [step(CONFIG)]
    repo = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
    code, _, out = read_config(
        tmp_path, {"aws_region": "eu-west-1", "image_uri": f"{repo}/team/mirrord:prod"}
    )
    assert code == 0
    assert out == {"region": "eu-west-1", "repository": "team/mirrord"}
    for uri in (
        "ghcr.io/example/mirrord:prod",
        f"{repo}/mirrord:prod".replace("eu-west-1", "us-east-1"),
    ):
        code, stdout, out = read_config(tmp_path, {"aws_region": "eu-west-1", "image_uri": uri})
        assert code == 1
        assert f"prod's image_uri ({uri}) is not an ECR repository in its aws_region" in stdout
        assert out == {}
