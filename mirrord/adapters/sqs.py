"""The SQS job queue: every call the daemon and the Lambdas make, errors translated once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from mirrord.core.errors import QueueError
from mirrord.core.jobs import Job

if TYPE_CHECKING:  # the stubs are a dev dependency: the Lambda zip and the image lack them
    from types_aiobotocore_sqs.client import SQSClient


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    handbacks: int = 0  # clean hand-backs (SIGTERM) this job has had before (HANDBACKS)


# ASCII digits, at most 6: the daemon backs off 2**count seconds (capped), and a count
# past a million would only mean the queue's redrive policy is gone.
_COUNT = re.compile(r"[0-9]{1,6}")


def _receive_count(value: Any) -> int:
    """SQS's ApproximateReceiveCount; 1 (as if first seen) when absent or unreadable."""
    return int(value) if isinstance(value, str) and _COUNT.fullmatch(value) else 1


# The message attribute (docs/design.md §8) counting a job's clean hand-backs: a daemon
# stopped mid-job sends the job again as a new message (SQS's receive count cannot be
# reset, and a deploy is no failure) with this one higher.
HANDBACKS = "mirrord_handbacks"


def _handbacks(attributes: Any) -> int:
    """The ``HANDBACKS`` attribute; 0 when absent or unreadable (an older sender)."""
    value = attributes.get(HANDBACKS, {}) if isinstance(attributes, dict) else {}
    text = value.get("StringValue") if isinstance(value, dict) else None
    return int(text) if isinstance(text, str) and _COUNT.fullmatch(text) else 0


class JobQueue:
    def __init__(self, client: SQSClient, url: str) -> None:
        self._client = client
        self.url = url

    @contextmanager
    def _call(self, op: str) -> Iterator[None]:
        """The one place botocore's errors become ``QueueError``."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"SQS {op}: {exc}", key=self.url) from exc

    async def receive(self, *, wait_s: int = 20, visibility_s: int) -> list[Received]:
        """Long-poll for one message; it stays invisible for ``visibility_s``."""
        with self._call("receive_message"):
            r = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=[HANDBACKS],
            )
        return [
            Received(
                m["MessageId"],
                m["ReceiptHandle"],
                m.get("Body", ""),
                _receive_count(m.get("Attributes", {}).get("ApproximateReceiveCount")),
                _handbacks(m.get("MessageAttributes")),
            )
            for m in r.get("Messages", [])
        ]

    async def send(self, job: Job) -> str:
        return await self.send_body(job.body().decode())

    async def send_body(self, body: str, *, handbacks: int = 0) -> str:
        """Send ``body`` as it is (a handed-back job keeps what a newer sender put in
        it), with the ``HANDBACKS`` attribute when ``handbacks`` is not 0."""
        extra: dict[str, Any] = {}
        if handbacks:
            extra["MessageAttributes"] = {
                HANDBACKS: {"DataType": "Number", "StringValue": str(handbacks)}
            }
        with self._call("send_message"):
            r = await self._client.send_message(QueueUrl=self.url, MessageBody=body, **extra)
        return str(r["MessageId"])

    async def delete(self, receipt: str) -> None:
        with self._call("delete_message"):
            await self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    async def hide(self, receipt: str, seconds: int) -> None:
        """Keep the message invisible ``seconds`` from now (heartbeat), or with 0 make
        it visible again at once (hand the job back)."""
        with self._call("change_message_visibility"):
            await self._client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
            )
