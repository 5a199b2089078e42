"""Following the federation peers' journals: the puller side of :mod:`registry.replication`.

A :class:`Replicator` runs one loop per peer.  Each loop reads its cursor from the database,
long-polls the peer's ``GET /api/replication/log`` (:mod:`nodes.http.replication_api`) for the
entries after it, applies them together with the new cursor in one transaction, and lets the
node's caches go for the keys that changed.  Because the cursor lives in the database and
moves only with the entries it covers, a loop resumes exactly where it stopped after a crash,
a restart or an outage of either side, and applying an entry twice changes nothing.

Errors (a peer down, refusing our credentials, answering nonsense) back off from 0.2 s to 2 s
and are logged once per outage, with a second line when the peer is back.

With several worker processes on one node, every worker starts a Replicator but only the one
holding the lock file pulls; the others wait to take over if it dies.  (Correctness does not
depend on it: applies are serialized in the database and skip entries at or below the cursor.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import httpx

from registry.replication import MAX_BATCH, Entry, Journal

log = logging.getLogger(__name__)

LOG_PATH = "/api/replication/log"
FEDERATION_USER = "federation"
T = TypeVar("T")
LEADER_RETRY = 1.0
"""Seconds between a waiting worker's attempts to take the replication lock."""


class ReplicationError(Exception):
    """A peer's answer could not be used; the message says why."""


class Stopped(Exception):
    """The Replicator was stopped while waiting."""


@dataclass
class PeerState:
    """What one peer's loop has done, for the status endpoint and the logs."""

    name: str
    url: str
    cursor: int = 0
    head: int = 0
    applied: int = 0
    conflicts: int = 0
    errors: int = 0
    connected: bool = False
    last_contact: float | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "cursor": self.cursor,
            "head": self.head,
            "behind": max(0, self.head - self.cursor),
            "applied": self.applied,
            "conflicts": self.conflicts,
            "errors": self.errors,
            "connected": self.connected,
            "last_contact": self.last_contact,
            "last_error": self.last_error,
        }


class Replicator:
    """Pulls the journals of ``peers`` (``(name, base URL)`` pairs) into ``journal``.

    ``on_applied`` is awaited with the keys each apply changed, after it committed (the node's
    :meth:`registry.invalidation.Invalidator.written`).  ``wait`` is the long poll's length;
    ``timeout`` bounds connecting and every other step of a request.  ``lock_path``, if given,
    names the lock file that elects one puller among the node's worker processes.
    """

    def __init__(
        self,
        journal: Journal,
        peers: Sequence[tuple[str, str]],
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
        names = [name for name, _ in peers]
        if len(set(names)) != len(names):
            raise ValueError(f"peer names must be distinct: {names}")
        if journal.journal_as is not None and journal.journal_as in names:
            raise ValueError(f"{journal.journal_as!r} is this node; it is not its own peer")
        self._journal = journal
        self._peers = [PeerState(name, url.rstrip("/")) for name, url in peers]
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
        self._loops: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.active = False
        """True while this process is the one pulling."""

    def stats(self) -> dict[str, Any]:
        return {"active": self.active, "peers": [peer.as_dict() for peer in self._peers]}

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a background task (stop it with :meth:`stop`)."""
        self._task = asyncio.create_task(self.run(), name="replicator")
        return self._task

    async def stop(self) -> None:
        """Stop pulling and wait until every loop has.  Waits on the network and back-off
        pauses end at once; database work in progress is let finish rather than cut off, so
        an apply commits whole and no driver call is abandoned mid-flight."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Pull from every peer until stopped (or cancelled)."""
        try:
            await self._lead()
            if self._stop.is_set():
                return
            self.active = True
            client = self._client or httpx.AsyncClient(timeout=self._timeout)
            try:
                self._loops = [asyncio.create_task(self._follow(client, p)) for p in self._peers]
                await asyncio.gather(*self._loops, return_exceptions=True)
            finally:
                if self._client is None:
                    await client.aclose()
        finally:
            for loop in self._loops:
                loop.cancel()
            self.active = False
            self._release()

    async def pull_once(self, peer: str, client: httpx.AsyncClient) -> int:
        """One round with ``peer``: read, apply and invalidate what its log holds after our
        cursor (long-polling up to ``wait``).  The number of entries read; raises
        :class:`ReplicationError` or an httpx error when the peer cannot be used."""
        state = next(p for p in self._peers if p.name == peer)
        cursor = await self._journal.cursor(peer)
        state.cursor = cursor
        params = {"after": cursor, "limit": self._limit, "wait": self._wait}
        response = await self._unless_stopped(
            client.get(state.url + LOG_PATH, params=params, auth=self._auth, timeout=self._timeout)
        )
        body = _body(response)
        if response.status_code != 200 or body.get("responseCode") != 1:
            raise ReplicationError(
                f"HTTP {response.status_code}, responseCode {body.get('responseCode')}: "
                f"{body.get('message', 'no message')}"
            )
        if body.get("node") != peer:
            # Origins are recorded by name, and every member must name a peer alike.
            raise ReplicationError(f"the node at {state.url} is {body.get('node')!r}, not {peer!r}")
        try:
            head = int(body["head"])
            entries = [Entry.from_json(raw) for raw in body["entries"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ReplicationError(f"malformed answer: {error}") from None
        state.head = head
        state.connected, state.last_contact = True, time.time()
        if head < cursor:
            # The peer's log is older than what we applied: its database was restored or
            # replaced.  Read it again from the start; applying entries again is harmless.
            log.warning(
                "replication: %s's log ends at %d, before our cursor %d", peer, head, cursor
            )
            await self._journal.reset_cursor(peer, 0)
            state.cursor = 0
            return 0
        if not entries:
            return 0
        seqs = [cursor] + [e.seq for e in entries]
        if any(a >= b for a, b in pairwise(seqs)):
            raise ReplicationError("entries out of order")
        applied = await self._journal.apply_replica(peer, entries)
        if applied.keys and self._on_applied is not None:
            await self._on_applied(list(applied.keys))
        if applied.conflicts:
            log.warning(
                "replication: %d write(s) from %s met records of another origin, last writer"
                " kept: %s",
                len(applied.conflicts),
                peer,
                ", ".join(applied.conflicts[:10]),
            )
        state.cursor = applied.last
        state.applied += applied.applied
        state.conflicts += len(applied.conflicts)
        return len(entries)

    async def _follow(self, client: httpx.AsyncClient, state: PeerState) -> None:
        first, ceiling = self._backoff
        delay, down_since = first, None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                got = await self.pull_once(state.name, client)
            except Stopped:
                return
            except Exception as error:  # any failure: back off and try again
                state.errors += 1
                state.connected = False
                state.last_error = f"{type(error).__name__}: {error}"
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "replication from %s (%s) failing: %s", state.name, state.url, error
                    )
                await self._pause(delay)
                delay = min(delay * 2, ceiling)
                continue
            if down_since is not None:
                log.warning(
                    "replication from %s resumed after %.1f s at seq %d",
                    state.name,
                    time.monotonic() - down_since,
                    state.cursor,
                )
                down_since = None
            delay = first
            if not got and time.monotonic() - started < self._wait / 2:
                # An empty answer should have waited for ``wait``; one that did not (a peer
                # that ignores long polls, or a cursor reset) must not make this loop spin.
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


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def build_replicator(node: Any) -> Replicator | None:
    """The Replicator of a :class:`nodes.bootstrap.Node`, or None if it has nothing to pull.

    Top-level and disaster-recovery nodes with federation peers pull from each of them except
    themselves (so all members can share one peer list).  Raises ValueError when peers are
    configured on a store that does not journal (settings already refuse peers without a secret).
    """
    settings = node.settings
    federation = settings.federation
    peers = [(p.name, p.url) for p in federation.peers if p.name != settings.name]
    if settings.role not in ("top-level", "dr") or not peers:
        return None
    assert federation.secret, "Settings refuse peers without a secret"
    if getattr(node.store, "journal_as", None) != settings.name:
        raise ValueError("a replicating node's store must journal under the node's name")
    return Replicator(
        node.store,
        peers,
        federation.secret,
        on_applied=node.invalidator.written,
        lock_path=settings.data_dir / "replication.lock",
    )


@contextlib.asynccontextmanager
async def replicating(node: Any, app: Any = None) -> AsyncIterator[Replicator | None]:
    """Run the node's Replicator (if it has one) for the duration of the block; for the
    application's lifespan.  With ``app``, it is also ``app.state.replicator``, for
    ``GET /api/replication/status``."""
    replicator = build_replicator(node)
    if replicator is None:
        yield None
        return
    if app is not None:
        app.state.replicator = replicator
    replicator.start()
    try:
        yield replicator
    finally:
        await replicator.stop()
