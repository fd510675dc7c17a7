"""``mirrord daemon``: the Fargate service. Wakes on an SQS job, runs it, deletes it.

* Long-polls the queue (20 s). A body that is not a valid job is logged with its message
  id and left alone, with a growing delay, so SQS moves it to the DLQ after
  ``maxReceiveCount``; the daemon never crashes on input.
* While a job runs, a heartbeat keeps the message invisible and renews the bucket lock.
* One sync per bucket: a second daemon (or a duplicate delivery) waits for the lock while
  keeping its message, then finds the work done.
* The message is deleted only when the job ran to its end, bottles and publication
  (``Report.unfinished``); a job that raised, whatever it raised, is left to be delivered
  again, and the daemon serves on. On SIGTERM the job stops starting transfers, in-flight
  ones get ``MIRRORD_STOP_GRACE``, the checkpoint is written, a publication under way
  stops, the job is handed back for the next task, and the daemon returns (exit 0).
* A hand-back is no failure: SQS's receive count, which sends a message to the DLQ past
  ``maxReceiveCount``, cannot be reset, so the job is sent again as a new message (its
  body unchanged, the ``mirrord_handbacks`` attribute one higher) and the old one deleted.
  Past ``HANDBACK_LIMIT`` hand-backs of one job (a task stopped over and over, e.g. by a
  failing health check), the message is only made visible again, so its receives count
  and a loop still ends in the DLQ.
* A message with ``"shard": "K/N"`` (docs/design.md §12) runs that shard of the job
  (services/shard.py), then the fan-in if it was the last to end (services/fanin.py);
  the message is deleted once the shard's record is written (and the fan-in, if it fell
  to this shard, finished). A shard failing on its last receive
  (``MIRRORD_MAX_RECEIVES``, the queue's maxReceiveCount) is given up on: a record names
  its missing bottles, the fan-in runs without them, and the message is deleted (the
  failure is reported by key, not left to the DLQ).
* The Slack webhook is resolved again for every job (app.with_fresh_webhook): a
  rotated secret reaches a running daemon at its next job.
* Liveness: the file ``MIRRORD_HEALTH_FILE`` is written at least every heartbeat;
  ``mirrord health`` (the ECS health check, health.py) fails when it is older than
  allowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiofiles
import structlog

from mirrord.adapters.sqs import JobQueue, Received
from mirrord.app import App, with_fresh_webhook
from mirrord.core.errors import JobError, LockBusy, MirrordError
from mirrord.core.jobs import Job, parse_job
from mirrord.core.report import Report, running_emf
from mirrord.core.shards import Shard
from mirrord.core.tasks import background
from mirrord.services.fanin import finalize_if_last, give_up
from mirrord.services.job import run_exclusive
from mirrord.services.prune import prune_after
from mirrord.services.shard import ShardStopped, run_shard

log = structlog.get_logger("mirrord.daemon")
T = TypeVar("T")
POLL_SECONDS = 20
POISON_DELAY_CAP = 300
# Deploys during one job: a weekly job outliving 20 of them is no deploy pattern but a
# loop, which then goes the way of a failure (the receive count, the DLQ).
HANDBACK_LIMIT = 20


async def beat(path: str) -> None:
    """The heartbeat file ``mirrord health`` reads the age of: written through aiofiles
    (a thread), so a slow or stalled task volume never holds up the event loop that
    renews the SQS lease. Its content, the time of the beat, is for a person reading it.
    Shielded: a beat cancelled with its job (the heartbeat ends) still closes its file,
    which a cancelled aiofiles open would leave to the garbage collector."""
    await asyncio.shield(_write_beat(path))


async def _write_beat(path: str) -> None:
    try:
        async with aiofiles.open(path, "w") as f:
            await f.write(f"{time.time():.0f}\n")
    except OSError as exc:  # a health file we cannot write must not stop the work
        log.warning("health_file_unwritable", path=path, error=str(exc))


class Daemon:
    def __init__(
        self,
        app: App,
        queue: JobQueue,
        *,
        stop: asyncio.Event,
        owner: str,
        handback_limit: int = HANDBACK_LIMIT,
    ) -> None:
        s = app.settings
        self._handback_limit = handback_limit
        self._app = app
        self._queue = queue
        self._stop = stop
        self._owner = owner
        self._beat = s.heartbeat_seconds
        # Three heartbeats may fail before SQS or a rival considers the job abandoned.
        self._visibility = max(int(s.heartbeat_seconds * 3), 1)
        self.jobs_done = 0

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``, or None as soon as the stop event is set (the work is cancelled)."""
        async with background(work) as task, background(self._stop.wait()) as stopping:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            return task.result() if task.done() else None

    async def serve(self) -> None:
        log.info("daemon_started", owner=self._owner, queue=self._queue.url)
        while not self._stop.is_set():
            await beat(self._app.settings.health_file)
            try:
                messages = await self._unless_stopped(
                    self._queue.receive(wait_s=POLL_SECONDS, visibility_s=self._visibility)
                )
            except MirrordError as exc:  # SQS unreachable: back off, stay alive
                log.warning("receive_failed", error=str(exc))
                await self._unless_stopped(asyncio.sleep(5))
                continue
            for message in messages or ():
                try:
                    await self.handle(message)
                except MirrordError as exc:  # S3 or SQS failing mid-job: the message returns
                    log.error("message_failed", message_id=message.message_id, error=str(exc))
                except Exception as exc:  # a bug here: the same, and the traceback to fix it
                    log.error(
                        "message_crashed",
                        message_id=message.message_id,
                        kind=type(exc).__name__,
                        error=str(exc),
                        exc_info=exc,
                    )
        log.info("daemon_stopped", owner=self._owner, jobs=self.jobs_done)

    async def handle(self, message: Received) -> None:
        try:
            job = parse_job(message.body, releases=self._app.settings.releases)
        except JobError as exc:
            delay = min(2**message.receive_count, POISON_DELAY_CAP)
            log.error(
                "bad_message",
                message_id=message.message_id,
                error=str(exc),
                receive_count=message.receive_count,
                retry_in_s=delay,
            )
            await self._queue.hide(message.receipt, delay)
            return
        with structlog.contextvars.bound_contextvars(
            job_id=job.job_id, message_id=message.message_id
        ):
            report = await self._run(job, message)
            if report is not None and not self._stop.is_set():
                # MIRRORD_PRUNE_AFTER_SYNC: after a clean scheduled sync of the whole
                # catalog (services/prune.py, ``due``), its message already deleted.
                await prune_after(await with_fresh_webhook(self._app), job, report, self._owner)

    async def _heartbeat(self, receipt: str) -> None:
        """Keep the message invisible (also while waiting for the lock); log how long the
        job has run as an EMF record (the job-too-long alarm)."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(self._beat)
            await beat(self._app.settings.health_file)
            if self._app.settings.emf:
                running = running_emf(
                    time.monotonic() - started, route="fargate", now_ms=int(time.time() * 1000)
                )
                log.info("job_running", **running)
            try:
                await self._queue.hide(receipt, self._visibility)
            except MirrordError as exc:
                log.warning("heartbeat_failed", error=str(exc))

    async def _run(self, job: Job, message: Received) -> Report | None:
        """The job, or its shard; the report of a whole job that ran (None otherwise)."""
        async with background(self._heartbeat(message.receipt)):
            if self._stop.is_set():
                await self._hand_back(message)
                return None
            if job.shard is not None:
                return await self._run_shard(job, job.shard, message)
            try:
                # Lost to a takeover: the lock stops ours (the daemon exits; ECS starts
                # another).
                # The webhook is read per job: a rotated secret needs no restart.
                report = await run_exclusive(
                    await with_fresh_webhook(self._app),
                    job,
                    owner=self._owner,
                    route="fargate",
                    stop=self._stop,
                    wait=True,
                    every=min(self._beat, 30),
                )
            except LockBusy:  # stopped while waiting for the lock: the next task runs it
                await self._hand_back(message)
                return None
            except MirrordError as exc:
                log.error("job_failed", error=str(exc), kind=type(exc).__name__)
                return None  # the message comes back after its visibility timeout
            await self._settle(report, message)
            return report

    async def _settle(self, report: Report | None, message: Received) -> None:
        """After a job (or a shard and, if it fell to it, the fan-in; None: not the last):
        delete the message when all ran to its end; else hand it back or let it return."""
        if report is None or not report.unfinished:
            await self._queue.delete(message.receipt)
            self.jobs_done += 1
        elif self._stop.is_set():
            await self._hand_back(message)  # the next task carries on
            log.info("job_handed_back", remaining=report.remaining)
        else:  # a publication that failed: again after the visibility timeout, not now
            log.warning("job_unfinished", remaining=report.remaining)

    async def _run_shard(self, job: Job, shard: Shard, message: Received) -> Report | None:
        """Shard ``shard`` of ``job`` (waiting for its locks as a plain job waits for the
        bucket's), then ``finalize_if_last``. Stopped (SIGTERM, a lost lock) before its
        record or its fan-in: handed back, never given up. A failure leaves the message
        to return, except on its last receive: then ``give_up`` writes the shard's record
        (its missing bottles failed, by key) and the fan-in goes on. The message is
        deleted only once ``finalize_if_last`` returned: a fan-in lost to a crash is
        taken over by the message's next delivery (its record is found, not redone).
        The fan-in's report when this shard ran it, else None."""
        app = await with_fresh_webhook(self._app)
        with structlog.contextvars.bound_contextvars(shard=str(shard)):
            try:
                await run_shard(
                    app,
                    job,
                    shard,
                    owner=self._owner,
                    stop=self._stop,
                    wait=True,
                    every=min(self._beat, 30),
                )
            except (LockBusy, ShardStopped) as exc:  # stopped: the next task carries on
                log.info("shard_stopped", reason=str(exc))
                await self._hand_back(message)
                return None
            except MirrordError as exc:
                if self._stop.is_set():  # a failure while stopping is no verdict
                    await self._hand_back(message)
                    return None
                last = message.receive_count >= self._app.settings.max_receives
                log.error(
                    "shard_failed",
                    error=str(exc),
                    kind=type(exc).__name__,
                    receive_count=message.receive_count,
                    given_up=last,
                )
                if not last:
                    return None  # the message comes back after its visibility timeout
                await give_up(app, job, shard, str(exc))
            try:
                report = await finalize_if_last(
                    app, job, shard.count, owner=self._owner, route="fargate", stop=self._stop
                )
            except LockBusy:  # stopped while the fan-in waited for the bucket
                await self._hand_back(message)
                return None
            await self._settle(report, message)
            return report

    async def _hand_back(self, message: Received) -> None:
        """Give the job to the next task without using up one of its receives: send it
        again as a new message with one more hand-back, then delete this one (a crash
        between the two leaves a duplicate, which the bucket lock makes harmless). Past
        the limit, or when the send fails, make this message visible again instead."""
        handbacks = message.handbacks + 1
        if handbacks > self._handback_limit:
            log.warning("handback_limit_reached", handbacks=message.handbacks)
            await self._queue.hide(message.receipt, 0)
            return
        try:
            await self._queue.send_body(message.body, handbacks=handbacks)
        except MirrordError as exc:
            log.warning("handback_send_failed", error=str(exc))
            await self._queue.hide(message.receipt, 0)
            return
        await self._queue.delete(message.receipt)
        log.info("job_requeued", handbacks=handbacks)
