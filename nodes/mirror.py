"""Mirroring another node's registry one way through its HTTP change feed.

Across an operator boundary (a secondary node run by an industry body, a mirror of it, upward
reporting) the link is the authenticated change feed of :mod:`nodes.http.replication_api`.
A :class:`Mirror` long-polls the source's ``GET /api/replication/log`` after its cursor,
applies the entries together with the new cursor in one transaction
(:meth:`registry.stores.feed.SqlFeed.apply`), and lets this host's caches go for the keys that
changed (the apply also logs them in this node's own change log, for its other hosts).  The
cursor lives in the database and moves only with the entries it covers, so the mirror resumes
exactly where it stopped after a crash, a restart or an outage of either side.

When the source answers that the changes after the cursor are gone (HTTP 410: pruned past
the cursor, or a replaced database), or logs a bulk load (:data:`registry.changelog.ALL_KEY`),
the mirror re-synchronises: it copies the source's snapshot page by page, deleting what the
source no longer has, then follows the log from the head the source had before the first page.
Nothing is silently missed.  A mirror's copy is the source's: writes made here to mirrored
keys are overwritten.

Errors back off from 0.2 s to 2 s and are logged once per outage, with a second line when the
source is back.  With several worker processes only the one holding the lock file pulls.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import httpx

from nodes.changefeed import running
from registry.changelog import ALL_KEY, MAX_BATCH, FeedEntry
from registry.stores.feed import SnapshotPage, SqlFeed

log = logging.getLogger(__name__)

LOG_PATH = "/api/replication/log"
SNAPSHOT_PATH = "/api/replication/snapshot"
FEDERATION_USER = "federation"
BEHIND = 410
T = TypeVar("T")
LEADER_RETRY = 1.0
"""Seconds between a waiting worker's attempts to take the mirror lock."""


class FeedError(Exception):
    """The source's answer could not be used; the message says why."""


class Stopped(Exception):
    """The Mirror was stopped while waiting."""


class Mirror:
    """Follows the change feed at ``source`` (a base URL) into ``feed``.

    ``on_applied`` is awaited with the keys each apply changed, after it committed (the node's
    :meth:`registry.invalidation.Invalidator.written`).  ``wait`` is the long poll's length;
    ``timeout`` bounds connecting and every other step of a request.  ``lock_path``, if given,
    names the lock file that elects one puller among the node's worker processes.
    """

    def __init__(
        self,
        feed: SqlFeed,
        source: str,
        secret: str,
        *,
        on_applied: Callable[[Sequence[str]], Awaitable[None]] | None = None,
        wait: float = 5.0,
        limit: int = MAX_BATCH,
        timeout: float = 3.0,
        backoff: tuple[float, float] = (0.2, 2.0),
        lock_path: Path | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._feed = feed
        self.source = source.rstrip("/")
        self._auth = httpx.BasicAuth(FEDERATION_USER, secret)
        self._on_applied = on_applied
        self._wait = wait
        self._limit = limit
        self._timeout = httpx.Timeout(timeout, read=wait + timeout)
        self._backoff = backoff
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.active = False
        """True while this process is the one pulling."""
        self.cursor: int | None = None
        self.head = 0
        self.applied = 0
        self.resyncs = 0
        self.errors = 0
        self.connected = False
        self.last_error: str | None = None
        self.current_at = time.time()
        """When the last request that read the source's log to its end was sent (wall clock):
        every change the source logged before it is applied here."""
        self.current = False
        """True from such an answer until a request fails or finds a full page: the next long
        poll, waiting, would return at once with anything new."""

    def lag_moment(self) -> float:
        """The mirror's lag as an age (nodes/metrics.py): 0 while :attr:`current`, else
        :attr:`current_at`."""
        return 0.0 if self.current else self.current_at

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "active": self.active,
            "cursor": self.cursor,
            "head": self.head,
            "behind": max(0, self.head - (self.cursor or 0)),
            "applied": self.applied,
            "resyncs": self.resyncs,
            "errors": self.errors,
            "connected": self.connected,
            "last_error": self.last_error,
            "lag_seconds": 0.0 if self.current else round(time.time() - self.current_at, 3),
        }

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a background task (stop it with :meth:`stop`)."""
        self._task = asyncio.create_task(self.run(), name="mirror")
        return self._task

    async def stop(self) -> None:
        """Stop pulling and wait until it has.  Waits on the network and back-off pauses end
        at once; database work in progress is let finish, so an apply commits whole."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Pull until stopped (or cancelled)."""
        try:
            await self._lead()
            if self._stop.is_set():
                return
            self.active = True
            client = self._client or httpx.AsyncClient(timeout=self._timeout)
            try:
                await self._follow(client)
            finally:
                if self._client is None:
                    await client.aclose()
        finally:
            self.active = False
            self._release()

    async def pull_once(self, client: httpx.AsyncClient) -> int:
        """One round: read and apply what the source's log holds after our cursor (long-polling
        up to ``wait``), re-synchronising first if needed.  The number of entries read; raises
        :class:`FeedError` or an httpx error when the source cannot be used."""
        cursor = await self._feed.cursor(self.source)
        self.cursor = cursor
        if cursor is None:
            await self.resync(client)
            return 0
        params = {"after": cursor, "limit": self._limit, "wait": self._wait}
        asked = time.time()
        body = await self._get(client, LOG_PATH, params)
        if body.get("responseCode") == BEHIND:
            log.warning("mirror of %s: %s", self.source, body.get("message"))
            await self.resync(client)
            return 0
        try:
            self.head = int(body["head"])
            last = int(body["last"])
            entries = [FeedEntry.from_json(raw) for raw in body["entries"]]
        except (KeyError, TypeError, ValueError) as error:
            raise FeedError(f"malformed answer: {error}") from None
        if not entries:
            self._read_to_end(asked)
            return 0
        seqs = [cursor] + [e.seq for e in entries]
        if any(a >= b for a, b in pairwise(seqs)) or last != entries[-1].seq:
            raise FeedError("entries out of order")
        if any(e.key == ALL_KEY for e in entries):
            # A bulk load at the source bypassed its log: only a snapshot has it.
            await self.resync(client)
            return len(entries)
        changed = await self._feed.apply(self.source, entries, last)
        await self._applied(changed)
        self.cursor = last
        self.applied += len(entries)
        if len(entries) < self._limit:
            self._read_to_end(asked)
        else:
            self.current = False
        return len(entries)

    def _read_to_end(self, asked: float) -> None:
        self.current_at, self.current = asked, True

    async def resync(self, client: httpx.AsyncClient) -> None:
        """Copy the source's snapshot, then continue its log from the head it had before."""
        self.current = False
        after, head = "", None
        while True:
            body = await self._get(client, SNAPSHOT_PATH, {"after": after, "limit": self._limit})
            try:
                page = SnapshotPage(
                    int(body["head"]),
                    tuple(str(p) for p in body["homes"]),
                    [FeedEntry.from_json(raw) for raw in body["records"]],
                    None if body["next"] is None else str(body["next"]),
                )
            except (KeyError, TypeError, ValueError) as error:
                raise FeedError(f"malformed snapshot: {error}") from None
            if head is None:
                head = page.head
            await self._applied(await self._feed.apply_page(page, after))
            if page.next is None:
                break
            after = page.next
        await self._feed.set_cursor(self.source, head)
        self.cursor, self.head = head, max(self.head, head)
        self.resyncs += 1
        log.warning("mirror of %s re-synchronised from a snapshot at seq %d", self.source, head)

    async def _get(
        self, client: httpx.AsyncClient, path: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        response = await self._unless_stopped(
            client.get(self.source + path, params=params, auth=self._auth, timeout=self._timeout)
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise FeedError(f"HTTP {response.status_code}: not a JSON object")
        code = body.get("responseCode")
        if not (response.status_code == 200 and code == 1) and code != BEHIND:
            raise FeedError(
                f"HTTP {response.status_code}, responseCode {code}: "
                f"{body.get('message', 'no message')}"
            )
        self.connected = True
        return body

    async def _applied(self, keys: Sequence[str]) -> None:
        if keys and self._on_applied is not None:
            await self._on_applied(list(keys))

    async def _follow(self, client: httpx.AsyncClient) -> None:
        first, ceiling = self._backoff
        delay, down_since = first, None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                got = await self.pull_once(client)
            except Stopped:
                return
            except Exception as error:  # any failure: back off and try again
                self.errors += 1
                self.connected = self.current = False
                self.last_error = f"{type(error).__name__}: {error}"
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("mirror of %s failing: %s", self.source, error)
                await self._pause(delay)
                delay = min(delay * 2, ceiling)
                continue
            if down_since is not None:
                log.warning(
                    "mirror of %s resumed after %.1f s at seq %s",
                    self.source,
                    time.monotonic() - down_since,
                    self.cursor,
                )
                down_since = None
            delay = first
            if not got and time.monotonic() - started < self._wait / 2:
                # An empty answer should have waited for ``wait``; one that did not (a source
                # that ignores long polls, or a re-synchronisation) must not make this spin.
                await self._pause(first)

    async def _lead(self) -> None:
        """Wait until this process holds the lock file (at once without one)."""
        if self._lock_path is None:
            return
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    await self._pause(LEADER_RETRY)
                    continue
                self._lock_fd, fd = fd, -1
                return
        finally:
            if fd >= 0:
                os.close(fd)

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless stopped first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, or cancel it and raise :class:`Stopped` when stopped first."""
        work = asyncio.ensure_future(awaitable)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise Stopped
        return work.result()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None


@contextlib.asynccontextmanager
async def mirroring(node: Any, feed: SqlFeed, app: Any = None) -> AsyncIterator[Mirror | None]:
    """Run the node's Mirror (if ``IDIS_MIRROR__SOURCE`` is set) for the duration of the
    block; with ``app``, it is also ``app.state.mirror``, for ``GET /api/replication/status``."""
    settings = node.settings
    if not settings.mirror.source:
        yield None
        return
    assert settings.mirror.secret, "Settings refuse a mirror source without a secret"
    mirror = Mirror(
        feed,
        settings.mirror.source,
        settings.mirror.secret,
        on_applied=node.invalidator.written,
        lock_path=settings.data_dir / "mirror.lock",
    )
    # Only the worker that pulls reports the lag.
    node.metrics.gauge(
        lambda: [("idis_mirror_lag_seconds", (), mirror.lag_moment())] if mirror.active else []
    )
    async with running(mirror, app, "mirror"):
        yield mirror
