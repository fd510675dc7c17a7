"""Composition root: logging, and the clients every command shares, built once.

Nothing else in mirrord creates a session or a client; everything below takes them as
arguments, so tests hand in clients pointed at the moto server and the emulator.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp
import orjson
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from mirrord import __version__
from mirrord.retry import Backoff, RetryPolicy
from mirrord.s3 import S3Store
from mirrord.settings import Settings
from mirrord.upstream import Registry


def configure_logging(level: str = "info", stream: BinaryIO | None = None) -> None:
    """structlog's production recipe: JSON lines (orjson) on stderr, contextvars merged
    so every line of a job carries its ``job_id``."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stderr.buffer),
        cache_logger_on_first_use=False,
    )


@dataclass(frozen=True, slots=True)
class App:
    settings: Settings
    http: aiohttp.ClientSession
    registry: Registry
    store: S3Store
    backoff: Backoff


def s3_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.concurrency * 2 + 4,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        # Real S3 over https does not sign bodies; over plain http botocore would hash
        # every byte a second time. The parts carry CRC32 and the object our SHA-256.
        s3={"payload_signing_enabled": False},
        user_agent_extra=f"mirrord/{__version__}",
    )


@asynccontextmanager
async def open_app(settings: Settings, **s3_kwargs: Any) -> AsyncIterator[App]:
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency * 2 + 4,  # registry + blob storage per transfer
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    backoff = Backoff(RetryPolicy(max_attempts=settings.max_attempts), rng=random.Random())  # noqa: S311 - jitter, not secrets
    async with (
        aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": f"mirrord/{__version__}"},
        ) as http,
        get_session().create_client("s3", config=s3_config(settings), **s3_kwargs) as s3,
    ):
        yield App(
            settings=settings,
            http=http,
            registry=Registry(http, backoff),
            store=S3Store(s3, settings.bucket),
            backoff=backoff,
        )
