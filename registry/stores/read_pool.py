"""Held PostgreSQL connections for the per-request read, with none of a general pool's costs.

asyncpg's ``Pool`` costs about as much client CPU per ``fetchrow`` as the query itself: an
acquire context, a connection proxy, a task shielding each release, an inactivity timer re-armed
on every use.  The store's hot read is one autocommit statement that leaves no session state, so
a connection needs no reset and no supervision between reads: a deque of them is enough.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

_T = TypeVar("_T")

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


class ReadPool:
    """At most ``size`` connections to ``dsn`` for single autocommit statements that only read
    and leave no session state behind (nothing is reset between uses).

    Connections open on demand and stay open.  They are handed out in turn (first released,
    first reused) so that all of them stay warm, and readers waiting for one are served in the
    order they came.  A connection found closed (the server restarted, or its backend was
    terminated) is dropped, and its place goes to the next reader, who opens a new one; a read
    whose connection was lost is retried once on another, which is safe because it only reads.
    Errors the server reports about the statement itself reach the caller and leave the
    connection in use.  Nothing connects before the first read or :meth:`open`.

    With ``max_age``, a connection older than that many seconds is closed after its read and
    replaced by the next reader: with a multi-host DSN naming the site's own server first, reads
    that fell over to another server while it was down come back to it.
    """

    def __init__(
        self,
        dsn: str,
        size: int,
        connect: Connect = asyncpg.connect,
        max_age: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a read pool needs at least one connection")
        self._dsn = dsn
        self._size = size
        self._connect = connect
        self._max_age = max_age
        self._born: dict[int, float] = {}
        self._idle: deque[asyncpg.Connection] = deque()
        self._open = 0
        """Connections open or being opened, and places handed to waiting readers to open one."""
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closed = False
        self._returned: asyncio.Event | None = None
        """While closing: set when a connection in use comes back or its place is freed."""

    async def open(self) -> None:
        """Open a first connection now (if none is), so that a bad DSN fails here."""
        self._give(await self._take())

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """``Connection.fetchrow`` on a connection of the pool (asyncpg prepares ``query`` once
        per connection and reuses the statement)."""
        return await self._read(lambda conn: conn.fetchrow(query, *args))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """``Connection.fetch``, like :meth:`fetchrow`."""
        return await self._read(lambda conn: conn.fetch(query, *args))

    async def _read(self, read: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        retry = True
        while True:
            conn = await self._take()
            try:
                result = await read(conn)
            except BaseException as error:
                lost = conn.is_closed()
                if not lost and isinstance(error, asyncpg.PostgresError):
                    self._give(conn)  # the statement failed, not the connection
                    raise
                # Lost, or cancelled mid-statement (its protocol state unknown): close it.
                self._discard(conn)
                if not (lost and retry and isinstance(error, Exception)):
                    raise
                retry = False  # lost before or during the read: once more, on another one
                continue
            if self._max_age is not None and self._aged(conn):
                self._discard(conn)
            else:
                self._give(conn)
            return result

    def _aged(self, conn: asyncpg.Connection) -> bool:
        assert self._max_age is not None
        return time.monotonic() - self._born.get(id(conn), 0.0) > self._max_age

    async def close(self) -> None:
        """Fail waiting and later reads, and close every connection once its read has ended."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_closed())
        if self._returned is None:
            self._returned = asyncio.Event()
        while True:
            while self._idle:
                conn = self._idle.popleft()
                self._open -= 1
                try:
                    await conn.close(timeout=2)
                except (TimeoutError, OSError, asyncpg.PostgresError):
                    conn.terminate()
            if not self._open:
                return
            self._returned.clear()
            await self._returned.wait()

    async def _take(self) -> asyncpg.Connection:
        if self._closed:
            raise _closed()
        while self._idle:
            conn = self._idle.popleft()
            if not conn.is_closed():
                return conn
            self._born.pop(id(conn), None)
            self._open -= 1  # lost while idle; no reader waits while any connection is idle
        if self._open < self._size:
            self._open += 1
            return await self._connect_in_place()
        waiter: asyncio.Future[asyncpg.Connection | None]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed something just as this reader was cancelled: pass it on.
                passed = waiter.result()
                if passed is None:
                    self._free_place()
                else:
                    self._give(passed)
            raise
        if handed is not None:
            return handed
        # A connection was dropped and its place handed to this reader: open one in it.
        return await self._connect_in_place()

    async def _connect_in_place(self) -> asyncpg.Connection:
        """Open a connection in a place already counted in ``_open``; free it on failure."""
        try:
            conn = await self._connect(self._dsn)
        except BaseException:
            self._free_place()
            raise
        if self._max_age is not None:
            self._born[id(conn)] = time.monotonic()
        return conn

    def _give(self, conn: asyncpg.Connection) -> None:
        """Return a connection: to the first waiting reader, else to the end of the idle line."""
        if self._closed:
            self._idle.append(conn)  # close() closes it
            self._came_back()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: asyncpg.Connection) -> None:
        self._born.pop(id(conn), None)
        conn.terminate()
        self._free_place()

    def _free_place(self) -> None:
        """A connection's place is free: hand it to the first waiting reader, else forget it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._open -= 1
        self._came_back()

    def _came_back(self) -> None:
        if self._returned is not None:
            self._returned.set()


def _closed() -> asyncpg.InterfaceError:
    return asyncpg.InterfaceError("the read pool is closed")
