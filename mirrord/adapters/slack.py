"""Slack: job notifications through one incoming webhook.

* :class:`Slack` posts a core.messages.Message with a session it is handed (it owns none).
* :func:`check_webhook_url` says whether a URL may serve as the webhook.
* :class:`SlackProgress` is a ``report.Progress`` that also posts progress while a job runs.

Slack is a courtesy, never a dependency: every failure here is logged as a warning and
swallowed (``asyncio.CancelledError`` excepted), so no sync fails because of Slack. The
webhook URL is a secret: it appears in no log line, exception message or repr; logs name
it only as ``"slack webhook"``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from mirrord.core.errors import InputError
from mirrord.core.messages import Message, progress_message, with_environment
from mirrord.core.report import Progress
from mirrord.core.retry import parse_retry_after

log = structlog.get_logger("mirrord.slack")

TARGET = "slack webhook"  # how logs name the webhook: never its URL
MAX_RETRY_AFTER = 5.0  # seconds we wait for a 429/5xx before the one retry
DEFAULT_RETRY_DELAY = 1.0  # when a 429/5xx says nothing about when to come back

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_SLACK_REASON = re.compile(r"[a-z_]{1,64}")  # Slack's error bodies: "no_service", …


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One POST to the webhook, as the log may tell it (never the URL)."""

    ok: bool
    status: int | None = None
    error: str = ""  # kind: "http_status", "timeout", "connection", an exception's type
    reason: str | None = None  # Slack's own error word, e.g. "no_service"
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status is not None and (self.status == 429 or self.status >= 500)


class Slack:
    """Sends Messages to one webhook; owns no session (passed in)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        webhook_url: str | None,
        *,
        timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        environment: str | None = None,
    ) -> None:
        self._session = session
        self._url = webhook_url
        self._environment = environment  # named in every message (MIRRORD_ENVIRONMENT)
        self._timeout = timeout
        self._sleep = sleep

    def __repr__(self) -> str:
        return (
            f"Slack(enabled={self.enabled}, timeout={self._timeout}, "
            f"environment={self._environment!r})"
        )

    @property
    def enabled(self) -> bool:
        return self._url is not None

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def max_send_s(self) -> float:
        """The longest one ``send()`` can take: two attempts and the wait between."""
        return 2 * self._timeout + MAX_RETRY_AFTER

    async def send(self, message: Message) -> bool:
        """Post ``message``, naming the environment; True on 2xx. Never raises (but for cancellation): a failure
        is one ``slack_failed`` warning. One retry on 429/5xx, after ``Retry-After``
        (at most 5 s)."""
        if self._url is None:
            return False
        body = orjson.dumps(with_environment(message, self._environment).payload())
        outcome = await self._attempt(self._url, body)
        attempts = 1
        if outcome.retryable:
            delay = outcome.retry_after if outcome.retry_after is not None else DEFAULT_RETRY_DELAY
            delay = min(max(delay, 0.0), MAX_RETRY_AFTER)
            log.debug("slack_retry", target=TARGET, status=outcome.status, delay_s=delay)
            await self._sleep(delay)
            outcome = await self._attempt(self._url, body)
            attempts = 2
        if outcome.ok:
            return True
        log.warning(
            "slack_failed",
            target=TARGET,
            status=outcome.status,
            error=outcome.error,
            reason=outcome.reason,
            attempts=attempts,
        )
        return False

    async def _attempt(self, url: str, body: bytes) -> _Outcome:
        """The one place aiohttp's errors become an outcome. They are reduced to their
        kind: aiohttp's messages carry the URL."""
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,  # a webhook never redirects; never re-send elsewhere
            ) as resp:
                answer = await resp.content.read(256)
                if 200 <= resp.status < 300:
                    return _Outcome(ok=True, status=resp.status)
                word = answer.decode("utf-8", "replace").strip()
                return _Outcome(
                    ok=False,
                    status=resp.status,
                    error="http_status",
                    reason=word if _SLACK_REASON.fullmatch(word) else None,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After"), time.time()),
                )
        except TimeoutError:
            return _Outcome(ok=False, error="timeout")
        except aiohttp.ClientConnectionError:
            return _Outcome(ok=False, error="connection")
        except Exception as exc:  # a bad URL, a broken session: still never the caller's problem
            return _Outcome(ok=False, error=type(exc).__name__)


def check_webhook_url(url: str) -> str:
    """``url`` if it is an https:// URL (http:// only on loopback, for local runs);
    else ``InputError`` — whose message never contains the URL."""
    url = url.strip()
    if not url or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise InputError("slack webhook is empty or contains whitespace")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise InputError("slack webhook is not a valid URL") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host in _LOCAL_HOSTS:
        return url
    if parts.scheme == "http":
        raise InputError("slack webhook must be https:// (http:// only for localhost)")
    raise InputError("slack webhook is not an https:// URL")


class SlackProgress:
    """A report.Progress (start/add_bytes/done/close) that posts progress every 10 % of bottles
    or every 15 minutes, whichever first, and forwards every call to an inner Progress.

    Sends run as one background task (a worker is never blocked). While a send is in
    flight, only the newest progress waits behind it: stale news is dropped, not queued.
    Nothing is posted at 100 % (``success_message`` covers the end). ``close()`` is sync
    as the Protocol wants; await ``aclose()`` afterwards to let the last send finish.
    """

    def __init__(
        self,
        slack: Slack,
        inner: Progress,
        *,
        job_id: str,
        every_fraction: float = 0.10,
        every_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < every_fraction <= 1:
            raise ValueError("every_fraction must be in (0, 1]")
        self._slack = slack
        self._inner = inner
        self._job_id = job_id
        self._fraction = every_fraction
        self._every = every_seconds
        self._clock = clock
        self._total = self._done = self._failed = self._bytes = 0
        self._started = self._last_post = clock()
        self._step_posted = 0  # how many every_fraction steps have been posted
        self._queued: Message | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # Progress protocol -------------------------------------------------------------

    def start(self, total: int) -> None:
        self._inner.start(total)
        self._total = total
        self._done = self._failed = self._bytes = 0
        self._started = self._last_post = self._clock()
        self._step_posted = 0

    def add_bytes(self, n: int) -> None:
        self._inner.add_bytes(n)
        self._bytes += n
        # A huge bottle can take longer than the interval: the clock is checked here too.
        if self._slack.enabled and self._clock() - self._last_post >= self._every:
            self._maybe_post()

    def done(self, ok: bool) -> None:
        self._inner.done(ok)
        self._done += 1
        self._failed += not ok
        if self._slack.enabled:
            self._maybe_post()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inner.close()

    async def aclose(self, *, wait_s: float | None = None) -> None:
        """``close()`` if not yet done, then wait for the outstanding send — at most
        ``wait_s`` (default: the longest one Slack send can take), then abandon it."""
        self.close()
        await self.flush(wait_s=wait_s)

    async def flush(self, *, wait_s: float | None = None) -> None:
        """Wait for outstanding sends, bounded as in ``aclose()``."""
        task = self._task
        if task is None or task.done():
            return
        bound = self._slack.max_send_s if wait_s is None else wait_s
        try:
            # wait_for cancels the drain at the bound and waits for it to end.
            await asyncio.wait_for(task, bound)
        except TimeoutError:
            log.warning("slack_progress_abandoned", target=TARGET, waited_s=bound)

    # internals ---------------------------------------------------------------------

    def _step(self, done: int) -> int:
        """How many whole every_fraction steps ``done`` bottles make (float-safe)."""
        return math.floor(round(done / (self._total * self._fraction), 9))

    def _maybe_post(self) -> None:
        if self._closed or self._total <= 0 or self._done >= self._total:
            return
        now = self._clock()
        step = self._step(self._done)
        if step <= self._step_posted and now - self._last_post < self._every:
            return
        self._step_posted = max(step, self._step_posted)
        self._last_post = now
        self._post(
            progress_message(
                job_id=self._job_id,
                done=self._done,
                total=self._total,
                bytes_done=self._bytes,
                elapsed_s=now - self._started,
                failed=self._failed,
            )
        )

    def _post(self, message: Message) -> None:
        self._queued = message
        if self._task is not None and not self._task.done():
            return  # the running drain picks it up
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: no one could await a send
            self._queued = None
            log.debug("slack_progress_skipped", reason="no running event loop")
            return
        self._task = loop.create_task(self._drain(), name="mirrord-slack-progress")

    async def _drain(self) -> None:
        while self._queued is not None:
            message, self._queued = self._queued, None
            await self._slack.send(message)
