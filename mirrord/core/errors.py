"""The one exception tree of mirrord.

Every adapter translates the exceptions of its library (aiohttp, botocore) into these,
once, with ``raise … from exc``; nothing above the adapters catches a foreign exception.
``asyncio.CancelledError`` is never caught by these classes and never swallowed.

    MirrordError
    ├── SettingsError          a bad setting or flag (exit 2)
    ├── InputError             bad input from outside; names what was wrong
    │   ├── JobError           a job message that cannot be run
    │   ├── ConfigError        config.yaml unusable; lists every problem
    │   ├── CatalogError       formula.json unreadable or of the wrong shape
    │   ├── FormulaError       one formula entry rejected (the rest go on)
    │   └── HashFileError      bottles_hash.json corrupt: never silently replaced
    ├── UpstreamError          Homebrew API / GHCR / blob storage
    │   ├── RetryableError     worth another attempt (5xx, 408, 429, cut, timeout)
    │   └── FatalUpstreamError not worth another attempt (404, other 4xx)
    │       └── RefusedAddress an untrusted URL aims where it must not (SSRF)
    ├── IntegrityError         bytes do not match the catalog's sha256 or size
    ├── StoreError             S3
    │   ├── PreconditionFailed a conditional write lost (412)
    │   └── QueueError         SQS
    ├── LockBusy               another sync holds the bucket lock
    ├── LockLost               our lease lapsed and someone took the lock over
    └── JobCrashed             a job ended on an exception mirrord does not expect: a bug
"""

from __future__ import annotations

from typing import Protocol


class MirrordError(Exception):
    """Base of every error mirrord raises on purpose."""


class SettingsError(MirrordError):
    """A setting or flag is invalid; the message names it."""


class InputError(MirrordError):
    """Input from outside the program is malformed."""


class CatalogError(InputError):
    """The formula catalog as a whole cannot be used."""


class FormulaError(InputError):
    """One formula entry cannot be used; carries the formula's name when known."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"formula {name!r}: {message}")
        self.name = name
        self.reason = message


class HashFileError(InputError):
    """The hash file exists but is not a valid v1 or v2 file."""


class UpstreamError(MirrordError):
    """A download from the Homebrew API, the registry or blob storage failed."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        attempt: int = 0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempt = attempt
        self.retry_after = retry_after


class RetryableError(UpstreamError):
    """Transient: a timeout, a cut connection, 5xx, 408 or 429."""


class FatalUpstreamError(UpstreamError):
    """Permanent for this run: 404 and other 4xx, a redirect without Location."""


class RefusedAddress(FatalUpstreamError):
    """An untrusted URL (the external hash file), or a redirect it answers with, names a
    scheme or resolves to an address it must not reach: private, loopback, link-local
    (the instance metadata service), multicast or reserved."""


class IntegrityError(MirrordError):
    """Downloaded bytes do not hash to the catalog's sha256, or the size is wrong."""

    def __init__(self, key: str, message: str, *, actual: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.actual = actual  # the sha256 of what was served; None when cut off early


class StoreError(MirrordError):
    """An S3 request failed after the SDK's own retries."""

    def __init__(self, message: str, *, key: str = "", code: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.code = code


class PreconditionFailed(StoreError):
    """A conditional write (If-Match / If-None-Match) was refused with 412."""


class JobCrashed(MirrordError):
    """A job ended on an exception mirrord does not expect: a bug. ``run_job`` raises it
    once the traceback is logged and Slack told, so every entry point treats it as any
    failed job: the daemon's message comes back, the CLI prints one line and exits 1."""


class JobError(InputError):
    """A job message that cannot be run as it is."""


class ConfigError(InputError):
    """config.yaml is unusable; ``problems`` lists every reason, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class LockLost(MirrordError):
    """Someone else holds the lock now (ours expired and was taken over)."""


class _Holder(Protocol):
    """What LockBusy says about the holder (adapters.lock.Holder)."""

    @property
    def owner(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def left(self) -> float: ...


class LockBusy(MirrordError):
    """Another sync holds the bucket."""

    def __init__(self, holder: _Holder) -> None:
        super().__init__(
            f"another sync holds the bucket: {holder.owner} (job {holder.job_id}), "
            f"lease renewed for another {max(0, int(holder.left))}s "
            "(`mirrord sync --wait` waits for it)"
        )
        self.holder = holder


class QueueError(StoreError):
    """An SQS request failed after the SDK's own retries."""
