"""The node's second-level cache in Redis: a :class:`resolver.ports.SharedCache`.

A cache failure means less cache, never an error (as unbound's ``cachedb`` puts it).  Every
operation has short socket timeouts and no retries; any Redis or socket error makes it answer
``None`` or drop the write, and opens a circuit breaker: Redis is left alone for ``backoff``
seconds, then one operation probes it.  A dead Redis therefore costs nothing per request, and
the log gets one warning per outage and one info line when Redis is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Timeouts surface as redis' TimeoutError, but a refused or reset socket can reach us as OSError.
_FAILURES = (RedisError, OSError)


class RedisCache:
    """Blobs under ``prefix + key`` in the Redis at ``url`` (``redis://127.0.0.1:6379/0``)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "idis:",
        timeout: float = 0.05,
        connect_timeout: float = 0.05,
        backoff: float = 1.0,
    ) -> None:
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),  # a retry would double the cost of a failure
        )
        self._prefix = prefix
        self._backoff = backoff
        self._down = False
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """Whether the last operation found Redis out of reach."""
        return self._down

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        try:
            blob = await self._redis.get(self._prefix + key)
        except _FAILURES as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return blob if isinstance(blob, bytes) else None

    async def set(self, key: str, blob: bytes, ttl: float) -> None:
        """Store ``blob`` for ``ttl`` seconds (at least one millisecond)."""
        if not self._available():
            return
        try:
            await self._redis.set(self._prefix + key, blob, px=max(1, int(ttl * 1000)))
        except _FAILURES as exc:
            self._failed(exc)
            return
        self._succeeded()

    async def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` in one round trip."""
        names = [self._prefix + key for key in keys]
        if not names or not self._available():
            return
        try:
            await self._redis.delete(*names)
        except _FAILURES as exc:
            self._failed(exc)
            return
        self._succeeded()

    async def close(self) -> None:
        """Close the connection pool."""
        try:
            await self._redis.aclose()
        except _FAILURES as exc:
            log.debug("closing the Redis cache: %s", exc)

    def _available(self) -> bool:
        if not self._down:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        # Let this operation probe Redis; concurrent ones keep skipping until it has answered.
        self._retry_at = now + self._backoff
        return True

    def _failed(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + self._backoff
        if not self._down:
            self._down = True
            log.warning(
                "Redis cache unavailable (%s: %s); serving without it, retrying every %gs",
                type(exc).__name__,
                exc,
                self._backoff,
            )

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            log.info("Redis cache is back")
