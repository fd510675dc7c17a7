"""The SQS job queue: every call the daemon and the Lambdas make, errors translated once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from botocore.exceptions import ClientError

from mirrord.core.errors import QueueError
from mirrord.core.jobs import Job

_ERRORS = (ClientError, botocore.exceptions.BotoCoreError)


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt: str
    body: str
    receive_count: int


# ASCII digits, at most 6: the daemon backs off 2**count seconds (capped), and a count
# past a million would only mean the queue's redrive policy is gone.
_COUNT = re.compile(r"[0-9]{1,6}")


def _receive_count(value: Any) -> int:
    """SQS's ApproximateReceiveCount; 1 (as if first seen) when absent or unreadable."""
    return int(value) if isinstance(value, str) and _COUNT.fullmatch(value) else 1


class JobQueue:
    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    async def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, op)(QueueUrl=self.url, **kwargs)
        except _ERRORS as exc:
            raise QueueError(f"SQS {op}: {exc}", key=self.url) from exc

    async def receive(self, *, wait_s: int = 20, visibility_s: int) -> list[Received]:
        """Long-poll for one message; it stays invisible for ``visibility_s``."""
        r = await self._call(
            "receive_message",
            MaxNumberOfMessages=1,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Received(
                m["MessageId"],
                m["ReceiptHandle"],
                m.get("Body", ""),
                _receive_count(m.get("Attributes", {}).get("ApproximateReceiveCount")),
            )
            for m in r.get("Messages", [])
        ]

    async def send(self, job: Job) -> str:
        r = await self._call("send_message", MessageBody=job.body().decode())
        return str(r["MessageId"])

    async def delete(self, receipt: str) -> None:
        await self._call("delete_message", ReceiptHandle=receipt)

    async def hide(self, receipt: str, seconds: int) -> None:
        """Keep the message invisible ``seconds`` from now (heartbeat), or with 0 make
        it visible again at once (hand the job back)."""
        await self._call(
            "change_message_visibility", ReceiptHandle=receipt, VisibilityTimeout=seconds
        )
