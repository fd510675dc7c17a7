"""AWS Lambda entry points: ``enqueue.handler`` (weekly cron) and ``sync.handler``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

from mirrord.app import configure_logging
from mirrord.settings import Settings, from_env


def settings_from_env() -> Settings:
    settings = from_env(os.environ)
    configure_logging(settings.log_level)
    return settings


def run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Each invocation gets a fresh loop: clients are opened and closed inside it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
