"""config.yaml: validation, rendering, and agreement with the Terraform root module."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import ROOT, run_cli

from mirrord.core.deployconfig import ROOT_VARIABLES, parse
from mirrord.core.errors import ConfigError

SHIPPED = (ROOT / "config.yaml").read_text()
ACCOUNTS = {"dev": "111122223333", "staging": "222233334444", "prod": "333344445555"}


def filled(text: str = SHIPPED) -> str:
    """The shipped sample with what it asks a team to fill in: account ids, state bucket."""
    data = yaml.safe_load(text)
    for env, account in ACCOUNTS.items():
        data["environments"][env]["account_id"] = account
    data["defaults"]["state"]["bucket"] = "acme-tfstate"
    return yaml.safe_dump(data)


GOOD = filled()


def test_shipped_sample_says_what_to_fill_in() -> None:
    """No placeholder validates: each environment's account_id and the state bucket are
    named as required, with how to find them; nothing else is wrong with the sample."""
    with pytest.raises(ConfigError) as info:
        parse(SHIPPED)
    problems = info.value.problems
    assert sorted(p.split(":")[0] for p in problems) == sorted(
        [*(f"{e}.account_id" for e in ACCOUNTS), *(f"{e}.state.bucket" for e in ACCOUNTS)]
    ), problems
    assert all("required" in p for p in problems)
    assert any("aws sts get-caller-identity" in p for p in problems)
    assert any("infra/bootstrap" in p for p in problems)


def test_filled_config_is_valid_and_environments_inherit_defaults() -> None:
    """The sample, filled in, validates; an environment overrides the defaults."""
    config = parse(GOOD)
    assert set(config.environments) == {"dev", "staging", "prod"}
    assert config.tfvars("dev")["platforms"] == "arm64_tahoe"
    assert config.tfvars("staging")["platforms"] == "auto"
    assert config.tfvars("prod")["environment"] == "prod"


def test_one_switch_serves_brew_and_one_pauses_the_schedule() -> None:
    """brew_mirror (CloudFront and MIRRORD_BREW_MIRROR together) and schedule_enabled
    default to on, and an environment can turn either off alone."""
    data = yaml.safe_load(GOOD)
    data["defaults"].pop("brew_mirror", None)
    data["defaults"].pop("schedule_enabled", None)
    data["environments"]["dev"].update(brew_mirror=False, schedule_enabled=False)
    config = parse(yaml.safe_dump(data))
    assert config.tfvars("prod")["brew_mirror"] is True
    assert config.tfvars("prod")["schedule_enabled"] is True
    assert config.tfvars("dev")["brew_mirror"] is False
    assert config.tfvars("dev")["schedule_enabled"] is False
    assert "enable_cloudfront" not in config.tfvars("dev")


def test_rendered_variables_are_exactly_the_root_modules() -> None:
    """render emits every variable infra/variables.tf declares and nothing else: adding a
    variable to one side only fails here."""
    declared = set(
        re.findall(r'^variable\s+"(\w+)"', (ROOT / "infra/variables.tf").read_text(), re.M)
    )
    assert declared, "infra/variables.tf declares no variables"
    assert declared == ROOT_VARIABLES
    assert set(parse(GOOD).tfvars("prod")) == declared


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["environments"]["prod"].update(bucket_name="Bad_Bucket"), "prod.bucket_name"),
        (lambda d: d["environments"]["prod"].pop("aws_region"), "prod.aws_region: required"),
        (lambda d: d["environments"]["dev"].update(concurrency="many"), "dev.concurrency"),
        (lambda d: d["environments"]["dev"].update(task_cpu=3000), "dev.task_cpu"),
        (lambda d: d["environments"]["dev"].update(platforms="arm64_windows"), "dev.platforms"),
        (lambda d: d["environments"]["dev"].update(colour="blue"), "dev.colour: unknown setting"),
        (lambda d: d["defaults"].update(log_retention_days=42), "log_retention_days"),
        (lambda d: d["defaults"].update(alarm_emails=["not-an-email"]), "alarm_emails"),
        (lambda d: d["defaults"].update(use_nat_gateway="yes"), "use_nat_gateway"),
        (
            lambda d: d["environments"]["dev"].update(brew_mirror="yes"),
            "dev.brew_mirror: must be true or false (got 'yes')",
        ),
        (
            lambda d: d["environments"]["prod"].update(schedule_enabled="paused"),
            "prod.schedule_enabled: must be true or false (got 'paused')",
        ),
        (lambda d: d["defaults"].update(schedule_enabled=0), "staging.schedule_enabled: must be"),
        (
            lambda d: d["defaults"].update(enable_cloudfront=True),
            "defaults.enable_cloudfront: replaced by brew_mirror",
        ),
        (
            lambda d: d["environments"]["prod"].update(enable_cloudfront=False),
            "prod.enable_cloudfront: replaced by brew_mirror",
        ),
        (lambda d: d["defaults"].update(external_hash_url="http://x/y"), "external_hash_url"),
        (lambda d: d["environments"].update(qa={"aws_region": "us-east-1"}), "qa.account_id"),
        (lambda d: d["environments"].update(Prod={}), "environments.Prod: an environment's"),
        (lambda d: d["environments"].update(q={}), "environments.q: an environment's name"),
        (lambda d: d["environments"].update(moto={}), "environments.moto: reserved"),
        (lambda d: d["environments"]["dev"].update(account_id=111122223333), "quotes"),
        (lambda d: d["environments"]["dev"].update(account_id="12345"), "dev.account_id"),
        (lambda d: d["environments"]["dev"].pop("account_id"), "dev.account_id: required"),
        (lambda d: d["defaults"].pop("state"), "prod.state.bucket: required"),
        (lambda d: d["defaults"]["state"].update(bucket="A_B"), "dev.state.bucket: must be"),
        (lambda d: d["defaults"]["state"].update(lock=True), "dev.state.lock: unknown"),
        (lambda d: d["environments"]["dev"].update(image_tag="a b"), "dev.image_tag"),
        (lambda d: d.update(version=2), "version"),
        (
            lambda d: d["environments"]["prod"].update(concurrency=64, task_memory=2048),
            "prod.task_memory",
        ),
        # 64 × 3 × 16 + 512 = 3,584 MiB: the task's 8 GB hold it, the Lambda's 2 GB do not.
        (lambda d: d["environments"]["prod"].update(concurrency=64), "prod.sync_memory_size"),
        (lambda d: d["defaults"].update(sync_memory_size=20480), "prod.sync_memory_size: must be"),
        (lambda d: d["defaults"].update(task_memory="lots"), "task_memory"),
        (lambda d: d["environments"]["dev"].update(aws_region="eu-west-\u0661"), "dev.aws_region"),
        (lambda d: d["defaults"].update(formulae=["jq", "../x"]), "dev.formulae: must be"),
        (lambda d: d["defaults"].update(formulae="jq"), "prod.formulae: must be a list"),
        (lambda d: d["defaults"].update(fallback_urls=["http://m/b"]), "dev.fallback_urls"),
        (lambda d: d["defaults"].update(fallback_urls=["https://u:p@m/b"]), "fallback_urls"),
        (lambda d: d["defaults"].update(prune_keep_versions=0), "dev.prune_keep_versions"),
        (lambda d: d["defaults"].update(prune_keep_days=-1), "dev.prune_keep_days"),
        (lambda d: d["defaults"].update(prune_after_sync="yes"), "dev.prune_after_sync"),
        (
            lambda d: d["defaults"].update(
                kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/\u00e9t\u00e9"
            ),
            "kms_key_arn",
        ),
    ],
)
def test_each_problem_names_environment_and_key(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    """Every bad value is reported as <environment>.<key> with what was expected."""
    data = yaml.safe_load(GOOD)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse(yaml.safe_dump(data))
    assert any(needle in p for p in info.value.problems), info.value.problems


def test_all_problems_reported_at_once() -> None:
    """Two bad environments: both problems listed, not just the first."""
    data = yaml.safe_load(GOOD)
    data["environments"]["dev"]["concurrency"] = 0
    data["environments"]["prod"]["aws_region"] = "moon"
    with pytest.raises(ConfigError) as info:
        parse(yaml.safe_dump(data))
    assert len(info.value.problems) == 2


@pytest.mark.parametrize("text", ["", "- a list", "version: 1\nenvironments: {", "version: 1"])
def test_unusable_file_is_a_clear_error(text: str) -> None:
    """Empty, non-mapping, broken YAML, or no environments: a ConfigError, no traceback."""
    with pytest.raises(ConfigError):
        parse(text)


async def test_cli_validate_and_render(tmp_path: Path) -> None:
    """`config validate` exits 0 on a filled-in file and 2 on the sample; `config render
    --env --out` writes the tfvars JSON; a bad file exits 2 with one line per problem and
    writes nothing."""
    good = tmp_path / "config.yaml"
    good.write_text(GOOD)
    ok = await run_cli("config", "validate", "--file", str(good))
    assert ok.code == 0
    sample = await run_cli("config", "validate", "--file", str(ROOT / "config.yaml"))
    assert sample.code == 2
    assert b"dev.account_id: required" in sample.stderr
    out = tmp_path / "prod" / "terraform.tfvars.json"
    rendered = await run_cli(
        "config", "render", "--env", "prod", "--file", str(good), "--out", str(out)
    )
    assert rendered.code == 0
    assert orjson.loads(out.read_bytes())["bucket_name"] == "mirrord-prod-333344445555"
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("task_cpu: 2048", "task_cpu: 3").replace("us-east-1", "moon", 1))
    result = await run_cli(
        "config", "render", "--env", "prod", "--file", str(bad), "--out", str(tmp_path / "x.json")
    )
    assert result.code == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 4, lines  # one region + task_cpu in each of the three environments
    assert not (tmp_path / "x.json").exists()
    missing_env = await run_cli("config", "render", "--env", "qa", "--file", str(good))
    assert missing_env.code == 2
    assert b"qa" in missing_env.stderr


def test_any_environment_name_derives_unique_names() -> None:
    """A new environment needs only account_id and aws_region: the bucket is
    <name_prefix>-<env>-<account_id> and the image is in that account's ECR, named by
    image_repository (default name_prefix) and image_tag (default the environment)."""
    data = yaml.safe_load(GOOD)
    data["environments"]["eu-prod"] = {"account_id": "444455556666", "aws_region": "eu-west-1"}
    data["environments"]["qa"] = {
        "account_id": "555566667777",
        "aws_region": "us-west-2",
        "image_repository": "tools/mirrord",
        "image_tag": "v1",
        "bucket_name": "acme-qa-bottles",
        "state": {"bucket": "qa-state", "region": "us-east-2"},
    }
    config = parse(yaml.safe_dump(data))
    eu = config.tfvars("eu-prod")
    assert eu["environment"] == "eu-prod"
    assert eu["account_id"] == "444455556666"
    assert eu["bucket_name"] == "mirrord-eu-prod-444455556666"
    assert eu["image_uri"] == "444455556666.dkr.ecr.eu-west-1.amazonaws.com/mirrord:eu-prod"
    assert "image_repository" not in eu
    assert "state" not in eu
    qa = config.tfvars("qa")
    assert qa["bucket_name"] == "acme-qa-bottles"
    assert qa["image_uri"] == "555566667777.dkr.ecr.us-west-2.amazonaws.com/tools/mirrord:v1"
    assert 'region       = "eu-west-1"' in config.backend("eu-prod")  # aws_region by default
    assert 'bucket       = "qa-state"' in config.backend("qa")
    assert 'region       = "us-east-2"' in config.backend("qa")
    assert 'key          = "mirrord/qa/terraform.tfstate"' in config.backend("qa")
    assert "use_lockfile = true" in config.backend("qa")
    explicit = yaml.safe_load(GOOD)
    explicit["environments"]["dev"]["image_uri"] = "ghcr.io/acme/mirrord:1"
    assert parse(yaml.safe_dump(explicit)).tfvars("dev")["image_uri"] == "ghcr.io/acme/mirrord:1"


def infra_copy(tmp_path: Path) -> Path:
    infra = tmp_path / "infra"
    shutil.copytree(
        ROOT / "infra",
        infra,
        symlinks=True,
        ignore=shutil.ignore_patterns(".terraform", "*.tf*.json"),
    )
    return infra


async def test_render_makes_an_environment_folder(tmp_path: Path) -> None:
    """`config render --env NAME` makes infra/environments/NAME/ a root like prod/: the
    same links, the tfvars JSON and backend.hcl; again, it leaves the links alone; a
    file in a link's place is refused, not overwritten."""
    infra = infra_copy(tmp_path)
    data = yaml.safe_load(GOOD)
    data["environments"]["rehearsal"] = {"account_id": "444455556666", "aws_region": "eu-west-1"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    args = ("config", "render", "--file", str(config), "--infra", str(infra), "--env")
    for _ in range(2):
        result = await run_cli(*args, "rehearsal")
        assert result.code == 0, result.stderr
    folder = infra / "environments" / "rehearsal"
    prod = ROOT / "infra" / "environments" / "prod"
    for name in ("main.tf", "outputs.tf", "versions.tf", "variables.tf", ".terraform.lock.hcl"):
        assert (folder / name).is_symlink(), name
        assert os.readlink(folder / name) == os.readlink(prod / name), name
        assert (folder / name).resolve().is_file(), name
    tfvars = orjson.loads((folder / "terraform.tfvars.json").read_bytes())
    assert tfvars["environment"] == "rehearsal"
    assert (folder / "backend.hcl").read_text() == parse(yaml.safe_dump(data)).backend("rehearsal")
    dev = await run_cli(*args, "dev")  # dev holds the shared files themselves
    assert dev.code == 0, dev.stderr
    assert not (infra / "environments" / "dev" / "main.tf").is_symlink()
    (folder / "main.tf").unlink()
    (folder / "main.tf").write_text("# my own\n")
    refused = await run_cli(*args, "rehearsal")
    assert refused.code == 2
    assert b"main.tf: exists and is not the shared ../dev/main.tf" in refused.stderr
    assert (folder / "main.tf").read_text() == "# my own\n"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("aws_region", "eu-west-\u0661"),  # Arabic-Indic one: \d took it
        ("aws_region", "eu-west-\uff11"),  # fullwidth one
        ("kms_key_arn", "arn:aws:kms:eu-west-1:\u0661" + "1" * 11 + ":key/abc"),
        ("kms_key_arn", "arn:aws:kms:eu-west-1:" + "1" * 12 + ":key/\u00e9t\u00e9"),  # \w took é
    ],
)
def test_patterns_take_ascii_only(key: str, value: str) -> None:
    """Digits and letters of other scripts are no region or ARN: Terraform and AWS would
    refuse them only at apply time."""
    data = yaml.safe_load(GOOD)
    data["environments"]["prod"][key] = value
    with pytest.raises(ConfigError) as info:
        parse(yaml.safe_dump(data))
    assert any(f"prod.{key}" in p for p in info.value.problems), info.value.problems


async def test_brewfile_becomes_the_rendered_subset(tmp_path: Path) -> None:
    """An environment's `brewfile` (relative to config.yaml) is read when the file is
    validated or rendered: its homebrew/core formulae, then `formulae`, become the
    `formulae` variable (MIRRORD_FORMULAE); one that cannot be read, or names no
    formula, is a problem naming the environment."""
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "Brewfile").write_text(
        'tap "hashicorp/tap"\nbrew "wget"\nbrew "jq"\nbrew "hashicorp/tap/terraform"\n'
        'cask "firefox"\n'
    )
    (tmp_path / "Casks").write_text('cask "firefox"\n')
    data = yaml.safe_load(GOOD)
    data["environments"]["prod"].update(brewfile="team/Brewfile", formulae=["xz", "jq"])
    data["environments"]["staging"]["brewfile"] = "missing/Brewfile"
    data["environments"]["dev"]["brewfile"] = "Casks"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    result = await run_cli("config", "validate", "--file", str(config))
    assert result.code == 2
    said = sorted(result.stderr.decode().splitlines())
    assert len(said) == 2, said
    assert "dev.brewfile: Casks names no homebrew/core formula" in said[0]
    assert "staging.brewfile: missing/Brewfile cannot be read" in said[1]
    del data["environments"]["staging"]["brewfile"], data["environments"]["dev"]["brewfile"]
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "prod.json"
    rendered = await run_cli(
        "config", "render", "--env", "prod", "--file", str(config), "--out", str(out)
    )
    assert rendered.code == 0, rendered.stderr
    tfvars = orjson.loads(out.read_bytes())
    assert tfvars["formulae"] == ["wget", "jq", "xz"]
    assert "brewfile" not in tfvars  # config.yaml's own key, not a Terraform variable
    assert parse(GOOD).tfvars("prod")["formulae"] == []  # the sample: the whole catalog
