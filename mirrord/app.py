"""Composition root: logging, and the adapters every command shares, built once from
the settings (the job they run is services/job.py).

Nothing else in mirrord creates a session or a client; everything below takes them as
arguments, so tests hand in clients pointed at the moto server and the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, TypeVar

import aiohttp
import orjson
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.handlers import add_expect_header

from mirrord import __version__
from mirrord.adapters.registry import Registry
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.secrets import resolve_webhook
from mirrord.adapters.slack import Slack
from mirrord.adapters.sqs import JobQueue
from mirrord.adapters.terminal import TerminalLogger
from mirrord.adapters.web import check_target, guarded_session, upstream_connector
from mirrord.core.errors import SettingsError
from mirrord.core.messages import Message
from mirrord.core.retry import Backoff, RetryPolicy
from mirrord.core.settings import Settings

if TYPE_CHECKING:  # the stubs are a dev dependency: types only
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_s3 import S3Client

log = structlog.get_logger("mirrord.app")
T = TypeVar("T")


def configure_logging(
    level: str = "info", stream: BinaryIO | None = None, *, human: bool | None = None
) -> None:
    """structlog's production recipe: JSON lines (orjson) on stderr, contextvars merged
    so every line of a job carries its ``job_id``: what ECS, Lambda, pipes and tests read.
    A person at a terminal (``human``; default: stderr is a TTY) gets one readable line
    per event instead, written above the progress bar (report.TerminalLogger)."""
    if human is None:
        human = stream is None and sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if human:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(
                colors=_colours(sys.stderr), exception_formatter=structlog.dev.plain_traceback
            ),
        ]

        def factory(*_: Any) -> Any:
            return TerminalLogger(sys.stderr)

    else:
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = structlog.BytesLoggerFactory(stream or sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _colours(stream: TextIO) -> bool:
    """ANSI colours only on a terminal that shows them, and never against NO_COLOR
    (no-color.org) or TERM=dumb."""
    term = os.environ.get("TERM", "")
    return stream.isatty() and not os.environ.get("NO_COLOR") and term not in ("", "dumb")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh loop: uvloop where it exists (not on every platform),
    else asyncio's. The CLI runs one per command, the Lambdas one per invocation."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass(frozen=True, slots=True)
class App:
    """The adapters, typed. ``s3`` and ``lambda_client`` are the aiobotocore clients behind
    them, for what no adapter does (setting up a test bucket, the Lambda Invoke of
    ``mirrord enqueue``)."""

    settings: Settings
    http: aiohttp.ClientSession
    registry: Registry
    store: S3Store
    backoff: Backoff
    s3: S3Client
    slack: Slack
    queue: JobQueue | None  # when MIRRORD_QUEUE_URL is set
    lambda_client: LambdaClient | None  # when MIRRORD_SYNC_FUNCTION is set
    fallback: Registry | None = None  # other mirrors' flat files, when MIRRORD_FALLBACK_URLS

    def store_for(self, bucket: str) -> S3Store:
        """Another bucket (an external hash file) on the same client."""
        return S3Store(self.s3, bucket)


def s3_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.concurrency * 2 + 4,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        # Real S3 over https does not sign bodies; over plain http botocore would hash
        # every byte a second time. The parts carry CRC32C and the object our SHA-256.
        s3={"payload_signing_enabled": False},
        # Every request's parameters are built here, not by users; validating them again
        # cost ~4 % of a small-bottle sync's CPU (make bench). S3 still rejects bad ones.
        parameter_validation=False,
        user_agent_extra=f"mirrord/{__version__}",
    )


@asynccontextmanager
async def open_app(settings: Settings, **s3_kwargs: Any) -> AsyncIterator[App]:
    """The app for one command or invocation. Only the clients these settings call for
    are built: each costs ~0.1 s of start-up (its service model, an SSL context), paid by
    every `mirrord sync`; the Secrets Manager one lives only to read the webhook."""
    connector = upstream_connector(settings.concurrency * 2 + 4)  # registry + storage each
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    backoff = Backoff(RetryPolicy(max_attempts=settings.max_attempts), rng=random.Random())  # noqa: S311  # nosec B311  # retry jitter, not a secret
    session = get_session()
    if not session.get_config_variable("region"):
        # botocore reads AWS_DEFAULT_REGION (and profiles), not AWS_REGION; without one it
        # fails deep inside the first client with a traceback.
        raise SettingsError("no AWS region: set AWS_DEFAULT_REGION (or a profile's region)")
    plain = _plain_config(settings)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                headers={"User-Agent": f"mirrord/{__version__}"},
            )
        )
        s3 = await stack.enter_async_context(
            session.create_client("s3", config=s3_config(settings), **s3_kwargs)
        )
        # botocore asks for "100 Continue" before every body it sends: one more round trip
        # and response per upload, to save resending a part S3 would refuse. Parts are
        # at most MIRRORD_PART_SIZE and refusals rare, so the body goes at once.
        s3.meta.events.unregister("before-call.s3", add_expect_header)
        queue = None
        if settings.queue_url:
            sqs = await stack.enter_async_context(session.create_client("sqs", config=plain))
            queue = JobQueue(sqs, settings.queue_url)
        lambda_client = None
        if settings.sync_function:
            lambda_client = await stack.enter_async_context(
                session.create_client("lambda", config=plain)
            )
        yield App(
            settings=settings,
            http=http,
            registry=Registry(
                http,
                backoff,
                max_bytes=settings.max_bottle_bytes,
                realm_hosts=settings.auth_realm_hosts,
            ),
            store=S3Store(s3, settings.bucket),
            backoff=backoff,
            s3=s3,
            slack=Slack(http, await _webhook(session, settings), environment=settings.environment),
            queue=queue,
            lambda_client=lambda_client,
            fallback=await _fallback(stack, settings, backoff),
        )


async def _fallback(stack: AsyncExitStack, s: Settings, backoff: Backoff) -> Registry | None:
    """The streamer for MIRRORD_FALLBACK_URLS: servers someone else runs, so a guarded
    session of its own (its resolver refuses private addresses unless allowed) and every
    hop checked as the external hash file's are; the same retries and size bound."""
    if not s.fallback_urls:
        return None
    session = await stack.enter_async_context(
        guarded_session(
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            allow_private=s.fallback_allow_private,
            user_agent=f"mirrord/{__version__}",
            limit=s.concurrency + 2,
        )
    )

    def check(url: str) -> None:
        check_target(
            url,
            allow_http=s.fallback_allow_http,
            allow_private=s.fallback_allow_private,
            opt_in="MIRRORD_FALLBACK",
        )

    return Registry(session, backoff, max_bytes=s.max_bottle_bytes, check=check)


@asynccontextmanager
async def open_slack(settings: Settings) -> AsyncIterator[Slack]:
    """Slack alone (the alarm Lambda): an HTTP session and the webhook from the secret,
    none of the bucket's clients."""
    session = get_session()
    async with aiohttp.ClientSession(headers={"User-Agent": f"mirrord/{__version__}"}) as http:
        yield Slack(http, await _webhook(session, settings), environment=settings.environment)


async def _webhook(session: AioSession, settings: Settings) -> str | None:
    if not settings.slack_secret_id or settings.slack_webhook_url:
        return await resolve_webhook(
            None, secret_id=settings.slack_secret_id, direct_url=settings.slack_webhook_url
        )
    async with session.create_client("secretsmanager", config=_plain_config(settings)) as sm:
        return await resolve_webhook(sm, secret_id=settings.slack_secret_id, direct_url=None)


def _plain_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.connect_timeout,
        # SQS long polls hold a request for 20 s: the read timeout must outlast them.
        read_timeout=max(settings.read_timeout, 30.0),
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        user_agent_extra=f"mirrord/{__version__}",
    )


async def with_fresh_webhook(app: App) -> App:
    """``app`` with the Slack webhook resolved again: the daemon calls it for every job,
    so a rotated secret (docs/operations.md) reaches a running task at its next job
    instead of at its next restart. One GetSecretValue a job."""
    return replace(app, slack=Slack(app.http, await _webhook(get_session(), app.settings)))


async def notify_once(settings: Settings, message: Message) -> bool:
    """Post one message to the settings' webhook (direct, or its secret): no bucket, no
    S3; what ``mirrord notify`` sends. False when Slack is off or refused it."""
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    headers = {"User-Agent": f"mirrord/{__version__}"}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        if not settings.slack_webhook_url and not settings.slack_secret_id:
            raise SettingsError("no Slack webhook: set MIRRORD_SLACK_WEBHOOK_URL or _SECRET_ID")
        session = get_session()
        if not settings.slack_webhook_url and not session.get_config_variable("region"):
            raise SettingsError("no AWS region: set AWS_DEFAULT_REGION to read the secret")
        slack = Slack(http, await _webhook(session, settings))
        if not slack.enabled:  # the warning (slack_secret_unusable) said why
            raise SettingsError("the Slack webhook is unusable (see the warning above)")
        return await slack.send(message)
