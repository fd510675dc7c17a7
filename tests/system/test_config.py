"""config.yaml: validation, rendering, and agreement with the Terraform root module."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import ROOT, run_cli

from mirrord.core.deployconfig import ROOT_VARIABLES, parse
from mirrord.core.errors import ConfigError

GOOD = (ROOT / "config.yaml").read_text()


def test_shipped_config_is_valid_and_environments_inherit_defaults() -> None:
    """The repository's config.yaml validates; an environment overrides the defaults."""
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
        (lambda d: d["environments"]["prod"].pop("image_uri"), "prod.image_uri: required"),
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
        (lambda d: d["environments"].update(qa={"aws_region": "us-east-1"}), "environments.qa"),
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
    """`config validate` exits 0; `config render --env` writes the tfvars JSON; a bad
    file exits 2 with one line per problem and writes nothing."""
    ok = await run_cli("config", "validate", "--file", str(ROOT / "config.yaml"))
    assert ok.code == 0
    out = tmp_path / "prod" / "terraform.tfvars.json"
    rendered = await run_cli(
        "config", "render", "--env", "prod", "--file", str(ROOT / "config.yaml"), "--out", str(out)
    )
    assert rendered.code == 0
    assert orjson.loads(out.read_bytes())["bucket_name"] == "mirrord-prod-bottles"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace("mirrord-prod-bottles", "Bad_Bucket").replace("task_cpu: 2048", "task_cpu: 3")
    )
    result = await run_cli(
        "config", "render", "--env", "prod", "--file", str(bad), "--out", str(tmp_path / "x.json")
    )
    assert result.code == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 4  # bucket (prod) + task_cpu in each of the three environments
    assert not (tmp_path / "x.json").exists()
    missing_env = await run_cli(
        "config", "render", "--env", "qa", "--file", str(ROOT / "config.yaml")
    )
    assert missing_env.code == 2
    assert b"qa" in missing_env.stderr


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
