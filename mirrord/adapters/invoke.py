"""AWS Lambda's Invoke API: how the enqueuer hands a small job to the sync Lambda."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from mirrord.core.errors import StoreError
from mirrord.core.jobs import Job

if TYPE_CHECKING:  # the stubs are a dev dependency: the Lambda zip and the image lack them
    from types_aiobotocore_lambda.client import LambdaClient


class SyncFunction:
    """The sync Lambda, called asynchronously (InvocationType=Event) with a job as its
    event; an instance is an enqueue Invoker. botocore's errors become ``StoreError``."""

    def __init__(self, client: LambdaClient, name: str) -> None:
        self._client = client
        self.name = name

    async def __call__(self, job: Job) -> None:
        try:
            answer = await self._client.invoke(
                FunctionName=self.name, InvocationType="Event", Payload=job.body()
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"Lambda Invoke {self.name}: {exc}", key=self.name) from exc
        if answer.get("StatusCode") != 202:  # Event invocations are queued, never run inline
            raise StoreError(f"Lambda Invoke {self.name}: status {answer.get('StatusCode')}")


def lambda_invoker(client: LambdaClient | None, function: str | None) -> SyncFunction | None:
    """The sync Lambda as an Invoker when MIRRORD_SYNC_FUNCTION names one, else None."""
    if not function or client is None:
        return None
    return SyncFunction(client, function)
