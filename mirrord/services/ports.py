"""What a service is given: the adapters, built once from the settings by the composition
root (mirrord.app.App is the one implementation). Services name this protocol, never the
App, so the floors stay one-way and a service is typed against exactly what it uses."""

from __future__ import annotations

from typing import Protocol

import aiohttp

from mirrord.adapters.registry import Registry
from mirrord.adapters.s3 import S3Store
from mirrord.adapters.slack import Slack
from mirrord.adapters.sqs import JobQueue
from mirrord.core.retry import Backoff
from mirrord.core.settings import Settings


class Adapters(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def http(self) -> aiohttp.ClientSession: ...
    @property
    def backoff(self) -> Backoff: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def store(self) -> S3Store: ...
    @property
    def slack(self) -> Slack: ...
    @property
    def queue(self) -> JobQueue | None: ...
    @property
    def fallback(self) -> Registry | None:
        """Streams other mirrors' flat files (MIRRORD_FALLBACK_URLS); None without them."""
        ...

    def store_for(self, bucket: str) -> S3Store:
        """The store of another bucket, on the same S3 client."""
        ...
