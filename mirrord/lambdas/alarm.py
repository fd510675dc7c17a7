"""The alarm Lambda: every message of the alarm topic (CloudWatch alarms, the enqueue
Lambda's failure record, budget alerts) posted to Slack with the environment's name
(services/alarm.py says how; it never raises for Slack's sake).

Subscribed to the SNS topic ``<name>-alarms``; needs only MIRRORD_SLACK_SECRET_ID (and
MIRRORD_ENVIRONMENT), no bucket.
"""

from __future__ import annotations

import os
from typing import Any

from mirrord.app import configure_logging, open_slack, run_loop
from mirrord.core.settings import from_env
from mirrord.services.alarm import forward


async def _main(event: Any) -> dict[str, int]:
    settings = from_env(os.environ, require_bucket=False)
    configure_logging(settings.log_level)
    async with open_slack(settings) as slack:
        return await forward(slack, event)


def handler(event: Any, context: Any) -> dict[str, int]:
    """AWS Lambda entry point (``mirrord.lambdas.alarm.handler``)."""
    return run_loop(_main(event))
