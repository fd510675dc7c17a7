"""config.yaml's CloudFront options (custom domain, reader token, bytes alarm): accepted
when well formed and together, refused with the key named otherwise, as infra/variables.tf
refuses them at plan time (tests/system/test_infra.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml
from test_config import filled

from mirrord.core.deployconfig import parse
from mirrord.core.errors import ConfigError

GOOD = yaml.safe_load(filled())  # the shipped sample, filled in as a team would
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/9f3e2a1b-0c4d-4e5f-8a6b-7c8d9e0f1a2b"
HASH = hashlib.sha256(b"a token").hexdigest()


def with_prod(**values: Any) -> str:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["environments"]["prod"].update(values)
    return yaml.safe_dump(data)


def test_the_options_are_off_by_default_and_accepted_when_set() -> None:
    off = parse(with_prod()).tfvars("prod")
    assert off["mirror_domain"] is None
    assert off["mirror_certificate_arn"] is None
    assert off["mirror_route53_zone_id"] is None
    assert off["mirror_token_sha256"] == []
    assert off["mirror_daily_gb_alarm"] is None
    on = parse(
        with_prod(
            mirror_domain="brew.example.com",
            mirror_certificate_arn=CERT,
            mirror_route53_zone_id="Z0123456789ABCDEFGHIJ",
            mirror_token_sha256=[HASH],
            mirror_daily_gb_alarm=50,
        )
    ).tfvars("prod")
    assert on["mirror_domain"] == "brew.example.com"
    assert on["mirror_token_sha256"] == [HASH]
    assert on["mirror_daily_gb_alarm"] == 50


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"mirror_domain": "Brew Example"}, "prod.mirror_domain: must be null or a DNS name"),
        ({"mirror_domain": "brew.example.com"}, "prod.mirror_domain: needs mirror_certificate_arn"),
        ({"mirror_certificate_arn": CERT}, "prod.mirror_domain: needs mirror_certificate_arn"),
        (
            {
                "mirror_domain": "brew.example.com",
                "mirror_certificate_arn": CERT.replace("us-east-1", "eu-west-1"),
            },
            "prod.mirror_certificate_arn: must be null or an ACM certificate ARN in us-east-1",
        ),
        ({"mirror_route53_zone_id": "Z0123"}, "prod.mirror_route53_zone_id: needs mirror_domain"),
        ({"mirror_token_sha256": ["a token"]}, "prod.mirror_token_sha256: must be a list of"),
        ({"mirror_token_sha256": HASH}, "prod.mirror_token_sha256: must be a list of"),
        ({"mirror_daily_gb_alarm": 0}, "prod.mirror_daily_gb_alarm: must be null or a positive"),
        ({"mirror_daily_gb_alarm": True}, "prod.mirror_daily_gb_alarm: must be null or a positive"),
        (
            {"mirror_daily_gb_alarm": 50, "aws_region": "eu-west-1"},
            "prod.mirror_daily_gb_alarm: CloudFront's metrics are in us-east-1 only",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_key(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_prod(**values))
    assert needle in str(err.value)
