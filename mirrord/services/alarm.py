"""Alarms to Slack: every message of the alarm topic posted to the team's webhook.

A Slack outage does not raise. The alarm Lambda is invoked asynchronously by SNS; an
error would make Lambda run the whole batch again (twice), re-posting what did arrive,
and a Slack that is down for minutes outlasts those retries anyway. The adapter already
retries a 429/5xx once. So an unsent message is one ``alarm_not_posted`` error log line
with its plain text, kept in the function's log group, and the topic's e-mail
subscribers still receive the alarm from SNS itself.
"""

from __future__ import annotations

from typing import Any

import structlog

from mirrord.adapters.slack import Slack
from mirrord.core.alarms import alarm_messages

log = structlog.get_logger("mirrord.alarm")


async def forward(slack: Slack, event: Any) -> dict[str, int]:
    """Post each record of an SNS event; how many were posted and how many not."""
    posted = unsent = 0
    for message in alarm_messages(event):
        if await slack.send(message):
            posted += 1
            continue
        unsent += 1
        log.error(
            "alarm_not_posted",
            slack_enabled=slack.enabled,
            text=message.text,
        )
    return {"posted": posted, "unsent": unsent}
