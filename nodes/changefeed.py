"""Following the registry's change log from every idis process: one change feed for every cache.

Each process (every worker, on every host of every site) polls the change log of its local
database (:meth:`registry.changelog.ChangeLog.changes_after`, ``seq > cursor``, a primary-key
range read that usually returns nothing) every ``interval`` seconds, and hands the keys it finds
to the node's :class:`registry.invalidation.Invalidator`, which bumps them on the host's
generation board (dropping them from the memory cache of every worker of the host) and deletes
them from the site's Redis.  A write made on any host is thus dropped everywhere within about
one interval plus the replication delay to the local database.  Polling rather than LISTEN /
NOTIFY because the log is read on streaming standbys too, where notifications never arrive.

The writing process still invalidates synchronously before acknowledging (the generation board
is the fast path between the workers of one host); the follower's second bump of the same keys
costs one extra cache miss.

When a process starts following, or finds that changes past its cursor were pruned before it
read them (:meth:`ChangeLog.change_horizon`), it cannot know what it missed and drops every
cached answer of its host instead.

The follower also prunes the log (bounded, one short transaction every ``prune_every``
seconds): changes older than ``retention`` seconds go.  Failures (the database unreachable, a
standby refusing the prune) are logged once per outage and retried; they never stop a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

from registry.changelog import MAX_BATCH, ChangeLog
from registry.invalidation import Invalidator

log = logging.getLogger(__name__)

W = TypeVar("W", bound="Worker")

PRUNE_LIMIT = 10_000
"""The most changes one prune deletes (one short transaction)."""


class ChangeFollower:
    """Polls ``changes`` every ``interval`` seconds and invalidates what changed."""

    def __init__(
        self,
        changes: ChangeLog,
        invalidator: Invalidator,
        *,
        interval: float = 0.1,
        retention: float = 7 * 86400.0,
        prune_every: float = 60.0,
        limit: int = MAX_BATCH,
        origin: int | None = None,
    ) -> None:
        self._changes = changes
        self._origin = origin
        self._invalidator = invalidator
        self._interval = interval
        self._retention = retention
        self._prune_every = prune_every
        self._limit = limit
        self._cursor: int | None = None
        self._next_prune = time.monotonic() + prune_every
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self.invalidated = 0
        """Keys handed to the invalidator so far."""
        self.resets = 0
        """Times every cached answer was dropped (on start, and after missing changes)."""
        self.pruned = 0
        self.current_at = time.time()
        """When the last poll that read the log to its end started (wall clock, comparable
        across processes): every change logged before it has been handled.  Before the first,
        when this follower was made."""

    @property
    def cursor(self) -> int | None:
        """The last seq handled (None before the first successful poll)."""
        return self._cursor

    def stats(self) -> dict[str, Any]:
        return {
            "cursor": self._cursor,
            "invalidated": self.invalidated,
            "resets": self.resets,
            "pruned": self.pruned,
            "following": self._down_since is None and self._cursor is not None,
        }

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name="change-follower")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                more = await self.poll_once()
            except Exception as error:  # the database down or failing over: try again
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "change log unreadable, caches follow it when it is back: %s", error
                    )
                await asyncio.sleep(min(1.0, self._interval * 5))
                continue
            if self._down_since is not None:
                log.warning(
                    "change log readable again after %.1f s", time.monotonic() - self._down_since
                )
                self._down_since = None
            await self._maybe_prune()
            if not more:
                await asyncio.sleep(self._interval)

    async def poll_once(self) -> bool:
        """One poll: invalidate what changed since the cursor.  True if more may be waiting."""
        started = time.time()
        if self._cursor is None:
            # Whatever this host cached before now (in memory, or in Redis under its board's
            # generations) may predate writes it never heard of.
            self._cursor = await self._changes.change_head()
            self._reset()
            self.current_at = started
            return False
        cursor = self._cursor
        changes = await self._changes.changes_after(cursor, self._limit)
        if (changes and changes[0].seq != cursor + 1) or self._prune_due():
            # A gap is usually a rolled-back write's seq, but may be changes pruned unread.
            horizon = await self._changes.change_horizon()
            if horizon > cursor:
                log.warning("changes %d to %d were pruned unread: dropping all", cursor, horizon)
                self._reset()
                cursor = horizon
        # This host's own writes were invalidated here before they were acknowledged: doing
        # it again would only drop the answers cached since.
        keys = list(
            dict.fromkeys(c.key for c in changes if c.origin != self._origin or c.origin is None)
        )
        if keys:
            await self._invalidator.written(keys)
            self.invalidated += len(keys)
        if changes:
            cursor = max(cursor, changes[-1].seq)
        self._cursor = cursor
        more = len(changes) == self._limit
        if not more:
            self.current_at = started
        return more

    def _reset(self) -> None:
        self._invalidator.everything()
        self.resets += 1

    def _prune_due(self) -> bool:
        return time.monotonic() >= self._next_prune

    async def _maybe_prune(self) -> None:
        if not self._prune_due():
            return
        try:
            pruned = await self._changes.prune_changes(self._retention, PRUNE_LIMIT)
        except Exception as error:  # a standby's read-only database, or the database down
            log.debug("change log not pruned: %s", error)
            pruned = 0
        self.pruned += pruned
        # A full prune leaves more behind: the next one comes soon.
        self._next_prune = time.monotonic() + (1.0 if pruned == PRUNE_LIMIT else self._prune_every)


class Worker(Protocol):
    def start(self) -> asyncio.Task[None]: ...

    async def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def running(worker: W, app: Any, name: str) -> AsyncIterator[W]:
    """Run ``worker`` in the background for the duration of the block (the application's
    lifespan), stopping it at the end; with ``app``, it is also ``app.state.<name>``, for
    ``GET /api/replication/status``."""
    if app is not None:
        setattr(app.state, name, worker)
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def following(node: Any, app: Any = None) -> contextlib.AbstractAsyncContextManager[ChangeFollower]:
    """Follow the change log of a :class:`nodes.bootstrap.Node` for the duration of the block
    (the application's lifespan); with ``app``, it is also ``app.state.follower``."""
    settings = node.settings.change_log
    follower = ChangeFollower(
        node.store,
        node.invalidator,
        interval=settings.poll_interval,
        retention=settings.retention,
        prune_every=settings.prune_interval,
        origin=node.store.origin,
    )
    # The lag as an age (nodes/metrics.py): read when a snapshot is taken, nothing per poll.
    node.metrics.gauge(lambda: [("idis_change_feed_lag_seconds", (), follower.current_at)])
    return running(follower, app, "follower")
