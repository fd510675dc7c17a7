"""AWS Lambda entry points: ``enqueue.handler`` (weekly cron), ``sync.handler`` and
``alarm.handler`` (the alarm topic to Slack)."""

from __future__ import annotations

import os

from mirrord.app import configure_logging
from mirrord.core.settings import Settings, from_env


def settings_from_env() -> Settings:
    settings = from_env(os.environ)
    configure_logging(settings.log_level)
    return settings
