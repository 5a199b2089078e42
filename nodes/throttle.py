"""Rate limits on failures and on anonymous work, kept with the ``limits`` library.

A :class:`Throttle` counts events (failed authentications, anonymous applications) per
*subject*, a ``(kind, who)`` pair such as ``("identity", "300:88.100/ADMIN")`` or
``("source", "192.0.2.7")``, in moving windows: each kind has one or more limits in the
library's notation (``"10/minute;100/hour"``, so that a client that keeps failing waits longer
and longer: the back-off).  :meth:`Throttle.check` raises :class:`Throttled` (HTTP 429 with
``Retry-After``) while any limit of any subject is spent; callers check *before* the expensive
work (scrypt, an application's hash) and :meth:`Throttle.hit` after a failure.

Where the counts live: in Redis when the node has one (``IDIS_REDIS_URL``), so every worker
and every host of the node shares them; otherwise in each worker's memory.  Without Redis a
node with W workers thus allows up to W times a limit at worst (the kernel spreads
connections over the workers); the limits are small enough that this still bounds the CPU an
attacker can burn, and it needs no extra moving part.  Redis down never fails a request: the
counts go on in memory until it answers again (one log line per outage).

Each refusal episode of a subject is logged once (not once per refused request), and
:attr:`Throttle.refused` / :attr:`Throttle.failures` count for the node's statistics.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from resolver.errors import Throttled

log = logging.getLogger(__name__)

Subject = tuple[str, str]
"""``(kind, who)``: which limits apply (the kind) to whom."""

RETRY_STORE = 10.0
"""Seconds the in-memory counts stand in for an unreachable Redis before it is tried again."""
MAX_EPISODES = 10_000


def parse_limits(text: str) -> list[RateLimitItem]:
    """``"10/minute;100/hour"`` → the library's limit items (raises ValueError if malformed)."""
    items = parse_many(text) if text.strip() else []
    if not items:
        raise ValueError(f"{text!r}: give limits such as '10/minute;100/hour'")
    return items


class Throttle:
    """Counts per subject against ``limits`` (kind → its limits; see the module docstring).

    ``redis_url`` None keeps the counts in this process.  ``namespace`` separates nodes that
    share a Redis.
    """

    def __init__(
        self,
        limits: Mapping[str, Sequence[RateLimitItem]],
        *,
        redis_url: str | None = None,
        namespace: str = "idis",
        timeout: float = 0.1,
    ) -> None:
        self._limits = {kind: list(items) for kind, items in limits.items()}
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            # The library tells Redis from Valkey by the scheme: a socket is redis+unix://.
            if redis_url.startswith("unix://"):
                redis_url = "redis+" + redis_url
            storage = RedisStorage(
                redis_url,
                implementation="redispy",
                key_prefix=f"{namespace}:throttle",
                wrap_exceptions=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            self._storage = storage
            self._shared = MovingWindowRateLimiter(storage)
        self._store_down_until = 0.0
        self._episodes: dict[Subject, float] = {}
        self.counted: Counter[str] = Counter()
        """Events counted and let through (:meth:`acquire`, :meth:`hit`) since start in this
        worker, per kind of subject."""
        self.refused: Counter[str] = Counter()
        """Requests refused (429) since start in this worker, per kind of subject."""

    def _limiter(self) -> MovingWindowRateLimiter:
        if self._shared is not None and time.monotonic() >= self._store_down_until:
            return self._shared
        return self._memory

    def _store_failed(self, error: StorageError) -> None:
        if self._store_down_until <= time.monotonic():
            log.warning(
                "rate-limit store unreachable (%s): counting in this process for now",
                error.storage_error,
            )
        self._store_down_until = time.monotonic() + RETRY_STORE

    def _known_refused(self, subjects: Sequence[Subject], what: str) -> None:
        """Raise :class:`Throttled` at once for a subject this worker refused and whose window
        has not moved on since: a flood of refused requests costs no store round trip."""
        now = time.time()
        for subject in subjects:
            until = self._episodes.get(subject, 0.0)
            if until > now:
                self.refused[subject[0]] += 1
                wait = max(1, math.ceil(until - now))
                raise Throttled(f"too many {what}: retry after {wait} s", retry_after=wait)

    async def check(self, subjects: Sequence[Subject], what: str = "requests") -> None:
        """Raise :class:`Throttled` if any limit of any subject is spent."""
        await self._pass(subjects, what, consume=False)

    async def acquire(self, subjects: Sequence[Subject], what: str = "requests") -> None:
        """Count one event against each subject, or raise :class:`Throttled` if a limit is
        spent.  One atomic step per limit (the library's ``hit``), so concurrent requests
        cannot all pass a check before any is counted: for work that must stay bounded."""
        await self._pass(subjects, what, consume=True)
        self.counted.update(kind for kind, _ in subjects)

    async def _pass(self, subjects: Sequence[Subject], what: str, *, consume: bool) -> None:
        self._known_refused(subjects, what)
        limiter = self._limiter()
        step = limiter.hit if consume else limiter.test
        try:
            for subject in subjects:
                for item in self._limits.get(subject[0], ()):
                    if not await step(item, *subject):
                        stats = await limiter.get_window_stats(item, *subject)
                        self._refuse(subject, stats.reset_time, item, what)
        except StorageError as error:
            self._store_failed(error)  # the memory limiter from now on: no second failure
            await self._pass(subjects, what, consume=consume)

    def _refuse(self, subject: Subject, reset: float, item: RateLimitItem, what: str) -> None:
        self.refused[subject[0]] += 1
        now = time.time()
        wait = max(1, math.ceil(reset - now))
        if self._episodes.get(subject, 0.0) < now:  # a new episode: say so once
            if len(self._episodes) >= MAX_EPISODES:
                self._episodes = {s: t for s, t in self._episodes.items() if t >= now}
            log.warning("throttled %s %s: more than %s %s", subject[0], subject[1], item, what)
        self._episodes[subject] = now + wait
        raise Throttled(f"too many {what}: retry after {wait} s", retry_after=wait)

    async def hit(self, subjects: Sequence[Subject]) -> None:
        """Count one event against each subject."""
        self.counted.update(kind for kind, _ in subjects)
        try:
            await self._hit(self._limiter(), subjects)
        except StorageError as error:
            self._store_failed(error)
            await self._hit(self._memory, subjects)

    async def _hit(self, limiter: MovingWindowRateLimiter, subjects: Sequence[Subject]) -> None:
        for subject in subjects:
            for item in self._limits.get(subject[0], ()):
                await limiter.hit(item, *subject)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per kind of subject: events counted and requests refused, in this worker."""
        return {
            kind: {"counted": self.counted[kind], "refused": self.refused[kind]}
            for kind in self._limits
        }

    async def close(self) -> None:
        if self._shared is not None:
            # The redis.asyncio client the library's bridge made (limits has no close of its own).
            client = getattr(self._storage.bridge, "storage", None)
            if client is not None:
                await client.aclose()
