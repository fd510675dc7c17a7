"""A bottle the registry failed, fetched from the fallback mirrors instead
(MIRRORD_FALLBACK_URLS: other mirrors' flat ``bottles/`` folders, core/fallback.py).

The registry's own retries come first: only a bottle it failed for good (an
``UpstreamError`` after its attempts: a 5xx that lasted, a 404, a timeout) is asked of the
fallbacks, in their order, each with the transfer's usual checks (the catalog's sha256,
the size cap, ``If-None-Match``), so bytes a fallback gets wrong are rejected like the
registry's and nothing of them is visible. Bytes the registry got wrong are not retried
elsewhere: that is quarantine's business (the hash file counts them across runs).

The first fallback that serves the bottle wins; its object's metadata says
``source: fallback`` and its ``source-url``. Each fallback that could not is a miss with
its reason; when none could, the bottle fails with the registry's reason and every
fallback's, in one message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from mirrord.adapters.web import source_url
from mirrord.core.errors import FatalUpstreamError, IntegrityError, UpstreamError
from mirrord.core.fallback import fallback_url
from mirrord.core.models import Bottle
from mirrord.core.report import FallbackMiss, Fallbacks, FallbackServed
from mirrord.core.settings import Settings
from mirrord.services.transfer import Source

log = structlog.get_logger("mirrord.services.fallback")

# (source to stream from, URL to read) → the stored size; the sync's transfer, bound to
# its bottle, key, store and limits.
Fetch = Callable[[Source, str], Awaitable[int]]


class FallbackMirrors:
    """The fallback mirrors of one sync, and what they did (``report``)."""

    def __init__(self, source: Source, bases: tuple[str, ...]) -> None:
        self._source = source
        self._bases = bases
        self._served: list[FallbackServed] = []
        self._misses: list[FallbackMiss] = []

    @classmethod
    def of(cls, settings: Settings, source: Source | None) -> FallbackMirrors | None:
        """From the settings and the app's fallback streamer; None when there are none."""
        if source is None or not settings.fallback_urls:
            return None
        return cls(source, settings.fallback_urls)

    def report(self) -> Fallbacks:
        sources = tuple(source_url(b) for b in self._bases)
        return Fallbacks(sources, tuple(self._served), tuple(self._misses))

    async def fetch(self, bottle: Bottle, failed: UpstreamError, fetch: Fetch) -> int:
        """``bottle`` from the first fallback that serves it; ``failed`` is the
        registry's error. Raises a ``FatalUpstreamError`` naming every reason when none
        does; a ``StoreError`` (S3, not the fallback) goes up as it is."""
        key, reasons = bottle.hash_key, [str(failed)]
        for base in self._bases:
            shown, url = source_url(base), fallback_url(base, bottle)
            try:
                size = await fetch(self._source, url)
            except (UpstreamError, IntegrityError) as exc:
                self._misses.append(FallbackMiss(key, shown, str(exc)))
                reasons.append(f"fallback {shown}: {exc}")
                log.warning("fallback_failed", key=key, source=shown, error=str(exc))
                continue
            self._served.append(FallbackServed(key, shown, source_url(url), str(failed)))
            log.info("fallback_served", key=key, source=shown, upstream_error=str(failed))
            return size
        raise FatalUpstreamError(
            "; ".join(reasons), url=failed.url, status=failed.status
        ) from failed
